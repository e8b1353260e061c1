//! A provisioned job with disk-image devices, and the real `odt-appliance` serving it on
//! loopback ports: start, unlock, status, stop, SIGKILL, restart on the same ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins;
use crate::run::{run, run_ok};

/// A job and its provisioned devices in a temporary directory.
pub struct Job {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// The job directory (`odt job new --out`).
    pub job_dir: PathBuf,
    /// The data device images.
    pub devices: Vec<PathBuf>,
    /// The customer's unlock sheet (`odt provision --code-file`): the code, and the
    /// certificate fingerprint on a comment line.
    pub code_file: PathBuf,
    /// SHA-256 fingerprint of the appliance's certificate, as job.toml records it.
    pub fingerprint: String,
}

impl Job {
    /// `odt job new` and `odt provision` of `count` sparse images of `size` (e.g. "4G"),
    /// with extra provision arguments (e.g. `--segment-size 8M`).
    pub fn provision(size: &str, count: usize, extra: &[&str]) -> Job {
        let dir = tempfile::Builder::new()
            .prefix("odt-e2e-")
            .tempdir()
            .expect("temp dir");
        let set = odt_test_support::fixture::provision_with_cli(
            &bins::odt(),
            dir.path(),
            count,
            size,
            extra,
        );
        let (job_dir, devices, code_file) = (set.job_dir, set.devices, set.code_file);
        let fingerprint = fingerprint_of(&job_dir);
        Job {
            dir,
            job_dir,
            devices,
            code_file,
            fingerprint,
        }
    }

    /// A scratch path inside the job's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The certificate fingerprint job.toml records (`tls_fingerprint`).
pub fn fingerprint_of(job_dir: &Path) -> String {
    let text = std::fs::read_to_string(job_dir.join("job.toml")).expect("job.toml");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tls_fingerprint = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("job.toml records the certificate fingerprint")
}

/// Settings of one appliance run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--allow` entries.
    pub allow: Vec<String>,
    /// `--test-hooks`.
    pub test_hooks: bool,
    /// More arguments for `serve`.
    pub extra: Vec<String>,
}

/// A running `odt-appliance serve`.
pub struct Appliance {
    devices: Vec<PathBuf>,
    code_file: PathBuf,
    /// `XDG_RUNTIME_DIR` of the `odt` commands: their sessions stay in the job's folder.
    runtime: PathBuf,
    /// The certificate fingerprint to pin.
    pub fingerprint: String,
    log: PathBuf,
    ready: PathBuf,
    opts: Options,
    child: Option<Child>,
    /// NFS (and MOUNT) port on 127.0.0.1.
    pub nfs_port: u16,
    /// Control API address.
    pub control: SocketAddr,
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

impl Appliance {
    /// Starts the appliance on the job's devices on free loopback ports (locked).
    pub fn start(job: &Job, opts: Options) -> Appliance {
        let runtime = job.path("runtime");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        let mut a = Appliance {
            devices: job.devices.clone(),
            code_file: job.code_file.clone(),
            runtime,
            fingerprint: job.fingerprint.clone(),
            log: job.path("appliance.log"),
            ready: job.path("ready.json"),
            opts,
            child: None,
            nfs_port: 0,
            control: "127.0.0.1:0".parse().unwrap(),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.ready);
        // Restarts reuse the ports (a client's mount keeps its port); the old socket may
        // linger for a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("appliance log");
            let mut cmd = Command::new(bins::appliance());
            cmd.arg("serve");
            for d in &self.devices {
                cmd.arg("--device").arg(d);
            }
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{}", self.nfs_port))
                .arg("--control")
                .arg(self.control.to_string())
                .arg("--ready-file")
                .arg(&self.ready);
            for a in &self.opts.allow {
                cmd.arg("--allow").arg(a);
            }
            if self.opts.test_hooks {
                cmd.arg("--test-hooks");
            }
            cmd.args(&self.opts.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .env(
                    "RUST_LOG",
                    std::env::var("ODT_APPLIANCE_LOG")
                        .unwrap_or_else(|_| "info,nfsserve=off".into()),
                );
            let mut child = cmd.spawn().expect("starting odt-appliance");
            let started = Instant::now();
            loop {
                if let Ok(text) = std::fs::read_to_string(&self.ready)
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                {
                    let nfs: SocketAddr = v["nfs"].as_str().unwrap().parse().unwrap();
                    self.nfs_port = nfs.port();
                    self.control = v["control"].as_str().unwrap().parse().unwrap();
                    self.child = Some(child);
                    return;
                }
                if let Some(st) = child.try_wait().unwrap() {
                    if Instant::now() < deadline
                        && self.log_text().contains("Address already in use")
                    {
                        std::thread::sleep(Duration::from_millis(300));
                        break;
                    }
                    panic!(
                        "odt-appliance exited ({st}) before serving:\n{}",
                        self.log_text()
                    );
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    panic!(
                        "odt-appliance did not get ready in 30 s:\n{}",
                        self.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the appliance logged (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the running process, KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// `odt COMMAND --appliance CONTROL ARGS...` with this appliance's session directory, so that
    /// sessions stay in the job's folder.
    pub fn odt(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bins::odt());
        // The command, then the address: callers append the value of their last option.
        c.args(&args[..1])
            .arg("--appliance")
            .arg(self.control.to_string())
            .args(&args[1..])
            .env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }

    /// `odt unlock` with the job's unlock sheet; panics unless it succeeds. Leaves a
    /// session for the next commands.
    pub fn unlock(&self) -> String {
        run_ok(
            self.odt(&["unlock", "--code-file"]).arg(&self.code_file),
            Duration::from_secs(60),
        )
    }

    /// `odt unlock --fingerprint FP --code-file FILE` without asserting success.
    pub fn try_unlock(&self, code_file: &Path) -> std::process::Output {
        run(
            self.odt(&["unlock", "--fingerprint", &self.fingerprint, "--code-file"])
                .arg(code_file),
            None,
            Duration::from_secs(60),
        )
    }

    /// `odt status --json` signed in with the job's unlock sheet.
    pub fn status(&self) -> serde_json::Value {
        let out = run_ok(
            self.odt(&["status", "--json", "--code-file"])
                .arg(&self.code_file),
            Duration::from_secs(60),
        );
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("odt status --json printed no JSON ({e}): {out}"))
    }

    /// `odt seal` signed in with the job's unlock sheet; panics with its output unless it
    /// succeeds.
    pub fn seal(&self) -> String {
        run_ok(
            self.odt(&["seal", "--code-file"]).arg(&self.code_file),
            Duration::from_secs(600),
        )
    }

    /// Stops with SIGTERM (a clean stop); panics unless it exits 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "-TERM");
        let started = Instant::now();
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!(
                    "odt-appliance did not stop within 60 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            st.success(),
            "odt-appliance stopped with {st}:\n{}",
            self.log_text()
        );
    }

    /// Kills with SIGKILL (a power cut, as far as the process is concerned).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the appliance");
    }

    /// Starts again on the same devices and ports (locked).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// A clean stop and a start on the same ports (locked again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// NFS URL of the export root (libnfs syntax, for `nfs-ls` and the Python binding).
    pub fn url_root(&self) -> String {
        format!(
            "nfs://127.0.0.1/?nfsport={0}&mountport={0}&version=3",
            self.nfs_port
        )
    }

    /// NFS URL of a file (`path` relative to the export root; for `nfs-cp`, `nfs-cat`).
    pub fn url_file(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1//{}?nfsport={1}&mountport={1}",
            path.trim_start_matches('/'),
            self.nfs_port
        )
    }

    /// Devices of this appliance.
    pub fn devices(&self) -> &[PathBuf] {
        &self.devices
    }

    /// The code file.
    pub fn code_file(&self) -> &Path {
        &self.code_file
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! The bootable appliance image in qemu: `images/build` once, then `images/boot-test --hold`
//! with provisioned data disks and the NFS and control ports forwarded to the host's
//! loopback; the power button or a power cut (SIGKILL of qemu) to end a boot.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bins::repo;
use crate::run::describe;

fn log(msg: impl AsRef<str>) {
    eprintln!("image: {}", msg.as_ref());
}

/// Runs a command that must succeed, logging how long it took; returns its stdout.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> String {
    let what = describe(cmd);
    let started = Instant::now();
    let out = crate::run::run_ok(cmd, limit);
    log(format!(
        "ok in {:.1}s: {what}",
        started.elapsed().as_secs_f64()
    ));
    out
}

/// Fails the test with an install hint unless `name` is on PATH.
pub fn need_tool(name: &str, why: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` not found on PATH ({why}): run scripts/install-test-deps"
    );
}

/// Builds the image with the release firmware into `out` (`images/build`); returns the
/// image file.
pub fn build(out: &Path) -> PathBuf {
    need_tool("qemu-system-x86_64", "boots the appliance image");
    let firmware = crate::bins::appliance();
    run_timed(
        Command::new(repo().join("images/build"))
            .arg("--appliance-bin")
            .arg(&firmware)
            .arg("--out")
            .arg(out),
        Duration::from_secs(300),
    );
    out.join("odt-appliance.img")
}

/// How to boot.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// qemu's cache mode for the data disks (`boot-test --disk-cache`); its default when
    /// `None`.
    pub disk_cache: Option<String>,
}

/// The appliance, booted by `images/boot-test --hold`. Dropping it without
/// [`ImageAppliance::power_off`] or [`ImageAppliance::power_cut`] stops qemu (SIGTERM to
/// boot-test, which kills qemu).
pub struct ImageAppliance {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr_log: PathBuf,
    /// The host port forwarded to the appliance's NFS (and MOUNT) port.
    pub nfs_port: u16,
    /// The host address forwarded to the control API.
    pub control: String,
}

impl ImageAppliance {
    /// Boots `image` with `disks` and waits until the appliance answers (boot-test's
    /// READY line). `dir` keeps boot-test's stderr (`boot-test.log`) and the guest console
    /// (`console.log`), overwritten at each boot.
    pub fn boot(
        image: &Path,
        disks: &[PathBuf],
        odt: &Path,
        fingerprint: &str,
        dir: &Path,
        opts: &BootOptions,
    ) -> ImageAppliance {
        let stderr_log = dir.join("boot-test.log");
        let console = dir.join("console.log");
        let mut cmd = Command::new(repo().join("images/boot-test"));
        cmd.arg("--image").arg(image);
        for d in disks {
            cmd.arg("--data").arg(d);
        }
        if let Some(mode) = &opts.disk_cache {
            cmd.args(["--disk-cache", mode]);
        }
        cmd.arg("--odt")
            .arg(odt)
            .args(["--fingerprint", fingerprint])
            .arg("--console-log")
            .arg(&console)
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run images/boot-test: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut app = ImageAppliance {
            child: Some(child),
            stdin,
            lines: rx,
            stderr_log,
            nfs_port: 0,
            control: String::new(),
        };
        // boot-test gives up on its own after 240 s; this is only a backstop.
        let ready = loop {
            match app.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(l) if l.starts_with("READY ") => break l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if started.elapsed() > Duration::from_secs(300) {
                        panic!(
                            "images/boot-test printed no READY line within 300 s\n{}",
                            app.stderr_text()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = app.child.as_mut().unwrap().wait().unwrap();
                    app.child = None;
                    panic!(
                        "images/boot-test ended ({status}) before the appliance was ready\n{}",
                        app.stderr_text()
                    );
                }
            }
        };
        // READY nfs=127.0.0.1:P control=127.0.0.1:P
        for word in ready.split_whitespace().skip(1) {
            if let Some(v) = word.strip_prefix("nfs=") {
                app.nfs_port = v.rsplit(':').next().unwrap().parse().unwrap();
            } else if let Some(v) = word.strip_prefix("control=") {
                app.control = v.to_string();
            }
        }
        assert!(
            app.nfs_port != 0 && !app.control.is_empty(),
            "bad READY line: {ready}"
        );
        log(format!(
            "appliance ready in {:.1}s: {ready}",
            started.elapsed().as_secs_f64()
        ));
        app
    }

    /// boot-test's stderr so far, for failure messages.
    pub fn stderr_text(&self) -> String {
        format!(
            "--- images/boot-test stderr ---\n{}",
            std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
        )
    }

    /// NFS URL of the export root (libnfs syntax, for the Python binding and `nfs-ls`).
    pub fn url_root(&self) -> String {
        format!(
            "nfs://127.0.0.1/?nfsport={0}&mountport={0}&version=3",
            self.nfs_port
        )
    }

    /// NFS URL of a file for `nfs-cp` (libnfs: the root export needs the double slash).
    pub fn url_file(&self, path: &Path) -> String {
        format!(
            "nfs://127.0.0.1//{}?nfsport={1}&mountport={1}&version=3",
            path.display(),
            self.nfs_port
        )
    }

    fn wait_exit(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let started = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if started.elapsed() > limit {
                child.kill().ok();
                child.wait().ok();
                panic!(
                    "images/boot-test did not end within {limit:?} of {what}\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses the power button (via boot-test) and waits for a clean power-off.
    pub fn power_off(mut self) {
        let started = Instant::now();
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "poweroff").unwrap();
        drop(stdin);
        let status = self.wait_exit(Duration::from_secs(120), "the power button");
        assert!(
            status.success(),
            "images/boot-test failed at power-off ({status})\n{}",
            self.stderr_text()
        );
        log(format!(
            "powered off cleanly in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    }

    /// Cuts the power: boot-test kills qemu with SIGKILL at once (no shutdown, nothing
    /// flushed), says `CUT` and exits.
    pub fn power_cut(mut self) {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "power-cut").unwrap();
        stdin.flush().unwrap();
        let status = self.wait_exit(Duration::from_secs(30), "the power cut");
        // The reader thread forwards boot-test's last lines until its stdout closes.
        let cut = std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(5)).ok())
            .any(|l| l == "CUT");
        assert!(
            status.success() && cut,
            "images/boot-test did not cut the power ({status}, CUT printed: {cut})\n{}",
            self.stderr_text()
        );
    }
}

impl Drop for ImageAppliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: boot-test's exit trap kills qemu.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            child.kill().ok();
            child.wait().ok();
        }
    }
}

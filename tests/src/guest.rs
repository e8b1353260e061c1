//! The Linux kernel NFS client in a qemu guest (`tests/guest/run`, see its README): runs a
//! busybox script with the export mounted at `/mnt` and a host directory shared at
//! `/share` for signals between the test and the guest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bins::repo;
use crate::run::run;

/// A guest run in the background.
pub struct GuestRun {
    handle: Option<JoinHandle<Output>>,
    share: PathBuf,
}

/// Boots the guest against NFS port `port` and runs `script` (busybox sh) in it.
pub fn start(port: u16, script: &str, share: &Path, timeout: Duration, nfs_opts: &str) -> GuestRun {
    let script_file = share.join(".guest-script.sh");
    std::fs::write(&script_file, script).expect("writing the guest script");
    let mut cmd = Command::new(repo().join("tests/guest/run"));
    cmd.args(["--nfs-port", &port.to_string(), "--script"])
        .arg(&script_file)
        .arg("--share")
        .arg(share)
        .args(["--timeout", &timeout.as_secs().to_string()]);
    if !nfs_opts.is_empty() {
        cmd.args(["--nfs-opts", nfs_opts]);
    }
    let limit = timeout + Duration::from_secs(120);
    let handle = std::thread::spawn(move || run(&mut cmd, None, limit));
    GuestRun {
        handle: Some(handle),
        share: share.to_path_buf(),
    }
}

impl GuestRun {
    /// Waits until the guest creates `/share/NAME` (or panics after `limit`, or if the guest
    /// ended first, with its output).
    pub fn wait_for(&mut self, name: &str, limit: Duration) {
        let started = Instant::now();
        while !self.share.join(name).exists() {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let o = self
                    .handle
                    .take()
                    .expect("checked")
                    .join()
                    .expect("guest runner");
                panic!(
                    "the guest ended before signalling {name}: {}\n--- stdout\n{}\n--- stderr\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            assert!(
                started.elapsed() < limit,
                "the guest did not signal {name} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `/share/NAME` for the guest.
    pub fn signal(&self, name: &str) {
        std::fs::write(self.share.join(name), b"go\n").expect("signal file");
    }

    /// Waits for the guest to finish; its output and exit status.
    pub fn finish(self) -> Output {
        self.handle
            .expect("not finished yet")
            .join()
            .expect("guest runner")
    }
}

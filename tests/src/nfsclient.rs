//! NFS clients nobody here wrote: Debian's libnfs-utils (`nfs-cp`, `nfs-cat`, `nfs-ls`) and
//! the PyPI `libnfs` binding (through `tests/py/nfstool.py`, which checks every call).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::bins::repo;
use crate::run::{describe, run};

/// Fails the test with an install hint unless the clients are present.
pub fn require_clients() {
    for tool in ["nfs-cp", "nfs-cat", "nfs-ls", "python3", "sha256sum"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: run scripts/install-test-deps (Debian libnfs-utils, python3)"
        );
    }
    let probe = Command::new("python3")
        .args(["-c", "import libnfs"])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "python3 cannot import libnfs (PyPI binding): run scripts/install-test-deps\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

fn checked(cmd: &mut Command, limit: Duration) -> Output {
    let what = describe(cmd);
    let o = run(cmd, None, limit);
    assert!(
        o.status.success(),
        "`{what}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `nfs-cp SRC DST`, unchecked.
pub fn nfs_cp(src: &str, dst: &str, limit: Duration) -> Output {
    run(Command::new("nfs-cp").args([src, dst]), None, limit)
}

/// `nfs-cp SRC DST`; panics unless it succeeds.
pub fn nfs_cp_ok(src: &str, dst: &str, limit: Duration) {
    checked(Command::new("nfs-cp").args([src, dst]), limit);
}

/// `nfs-cat URL` into a local file; panics unless it succeeds within `limit`.
pub fn nfs_cat_to(url: &str, dst: &Path, limit: Duration) {
    let f = std::fs::File::create(dst).expect("nfs-cat destination");
    let mut cmd = Command::new("nfs-cat");
    cmd.arg(url);
    let what = describe(&cmd);
    let mut child = cmd
        .stdout(f)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting nfs-cat");
    let started = std::time::Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().expect("waiting for nfs-cat") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("`{what}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "`{what}` failed ({st})");
}

/// `nfs-ls URL`, unchecked.
pub fn nfs_ls(url: &str) -> Output {
    run(
        Command::new("nfs-ls").arg(url),
        None,
        Duration::from_secs(60),
    )
}

fn tool() -> std::path::PathBuf {
    repo().join("tests/py/nfstool.py")
}

/// `nfstool.py ARGS...`, unchecked.
pub fn nfstool(args: &[&str], limit: Duration) -> Output {
    run(Command::new("python3").arg(tool()).args(args), None, limit)
}

/// `nfstool.py ARGS...`; stdout, panics unless it succeeds.
pub fn nfstool_ok(args: &[&str], limit: Duration) -> String {
    let o = checked(Command::new("python3").arg(tool()).args(args), limit);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Copies a local tree into the export root with the Python binding.
pub fn put_tree(local: &Path, root_url: &str, limit: Duration) {
    nfstool_ok(&["put", &local.to_string_lossy(), root_url], limit);
}

/// "sha256 size path" / "dir - path" lines of the whole export.
pub fn manifest(root_url: &str, limit: Duration) -> String {
    nfstool_ok(&["manifest", root_url], limit)
}

/// The same manifest for a local tree.
pub fn manifest_local(dir: &Path, limit: Duration) -> String {
    nfstool_ok(&["manifest-local", &dir.to_string_lossy()], limit)
}

/// SHA-256 of a local file (hex), by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let o = checked(
        Command::new("sha256sum").arg(path),
        Duration::from_secs(300),
    );
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

//! libnfs clients against the real appliance: a VM export (OVF package with a 2 GiB sparse
//! disk) copied with `nfs-cp`, thousands of small files and awkward names (spaces, Unicode,
//! 255-byte names, a 40-level path) copied with the Python binding; everything read back
//! byte-identical, then again after a restart of the appliance (which comes back locked).
//!
//! Needs libnfs-utils and PyPI libnfs (`scripts/install-test-deps`); nothing is skipped.

use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::nfsclient::{
    manifest, manifest_local, nfs_cat_to, nfs_cp_ok, nfs_ls, nfstool, nfstool_ok, put_tree,
    require_clients,
};
use odt_e2e::vmtree::{awkward_names, write_awkward_tree, write_vm_export};

const MIN: Duration = Duration::from_secs(60);
const DISK: u64 = 2 << 30;
const SMALL_FILES: usize = 2000;

fn sorted_lines(a: &str, b: &str) -> String {
    let mut v: Vec<&str> = a
        .lines()
        .chain(b.lines())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort_unstable();
    v.join("\n")
}

fn same(remote: &str, expected: &str, when: &str) {
    let remote = sorted_lines(remote, "");
    if remote != expected {
        let r: std::collections::BTreeSet<&str> = remote.lines().collect();
        let e: std::collections::BTreeSet<&str> = expected.lines().collect();
        let missing: Vec<_> = e.difference(&r).take(20).collect();
        let extra: Vec<_> = r.difference(&e).take(20).collect();
        panic!(
            "{when}: the export differs from the source\nmissing or different: {missing:#?}\nunexpected: {extra:#?}"
        );
    }
}

fn step(t0: std::time::Instant, what: &str) {
    eprintln!("nfs_libnfs: {:>6.1} s  {what}", t0.elapsed().as_secs_f64());
}

#[test]
fn vm_export_and_awkward_tree_survive_a_restart() {
    require_clients();
    let t0 = std::time::Instant::now();
    let job = Job::provision("8G", 1, &[]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    step(t0, "provisioned, started, unlocked");

    // Source data: an OVF package and a tree of small files and awkward names.
    let src_vm = job.path("src-vm");
    let vm = write_vm_export(&src_vm, "vm-alpha", DISK, 7);
    let src_tree = job.path("src-tree");
    write_awkward_tree(&src_tree, SMALL_FILES, 11);
    let expected = sorted_lines(
        &manifest_local(&src_vm, 5 * MIN),
        &manifest_local(&src_tree, 5 * MIN),
    );

    step(t0, "source data written");
    // The tree with the Python binding (it can mkdir); the VM files with nfs-cp.
    put_tree(&src_tree, &app.url_root(), 10 * MIN);
    step(t0, "tree copied (Python libnfs)");
    assert_eq!(
        nfstool_ok(&["try-mkdir", &app.url_root(), "/vm-alpha"], MIN).trim(),
        "ok"
    );
    for f in &vm.files {
        let local = vm.dir.join(f);
        nfs_cp_ok(
            &local.to_string_lossy(),
            &app.url_file(&format!("vm-alpha/{f}")),
            10 * MIN,
        );
    }

    step(t0, "VM export copied (nfs-cp)");
    // Read everything back: the whole export, byte for byte.
    same(
        &manifest(&app.url_root(), 10 * MIN),
        &expected,
        "after the copy",
    );
    step(t0, "read back and compared");
    // nfs-cat reads the package's descriptor and manifest back as written.
    for f in ["vm-alpha.ovf", "vm-alpha.mf"] {
        let back = job.path(f);
        nfs_cat_to(&app.url_file(&format!("vm-alpha/{f}")), &back, 5 * MIN);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(vm.dir.join(f)).unwrap(),
            "{f}"
        );
    }
    // nfs-ls lists the root and the awkward names.
    let ls = nfs_ls(&app.url_root());
    assert!(
        ls.status.success(),
        "nfs-ls failed: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let ls = String::from_utf8_lossy(&ls.stdout);
    for name in [
        "vm-alpha",
        "small",
        "names",
        "deep",
        "empty-file",
        "empty-dir",
    ] {
        assert!(
            ls.lines().any(|l| l.ends_with(&format!(" {name}"))),
            "nfs-ls misses {name}:\n{ls}"
        );
    }
    let names_url = format!(
        "nfs://127.0.0.1/names?nfsport={0}&mountport={0}&version=3",
        app.nfs_port
    );
    let ls = String::from_utf8_lossy(&nfs_ls(&names_url).stdout).into_owned();
    for n in awkward_names() {
        assert!(ls.contains(&n), "nfs-ls of /names misses {n:?}:\n{ls}");
    }

    // Status counts what was copied.
    let st = app.status();
    let files = expected.lines().filter(|l| !l.starts_with("dir ")).count() as u64;
    let bytes: u64 = expected
        .lines()
        .filter(|l| !l.starts_with("dir "))
        .map(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(st["state"], "unlocked");
    assert_eq!(st["store"]["files"].as_u64(), Some(files), "{st}");
    assert_eq!(st["store"]["logical_bytes"].as_u64(), Some(bytes), "{st}");
    assert!(
        st["store"]["stored_bytes"].as_u64().unwrap() < bytes / 4,
        "the sparse disk must not be stored as its full size: {st}"
    );

    step(t0, "nfs-cat, nfs-ls, status checked");
    // Restart: locked again (nothing readable), then everything back after unlock.
    app.restart();
    assert_eq!(app.status()["state"], "locked");
    // Locked, the share shows only the hint that says how to unlock (no data), and a
    // file of the tree is refused.
    let shown = manifest(&app.url_root(), 5 * MIN);
    assert!(
        shown.lines().count() == 1 && shown.contains("APPLIANCE-LOCKED.txt"),
        "a locked appliance served more than its hint: {shown}"
    );
    let first = format!("/vm-alpha/{}", vm.files[0]);
    let denied = nfstool(&["cat", &app.url_root(), &first], 5 * MIN);
    assert!(
        !denied.status.success(),
        "a locked appliance served {first}"
    );
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("EACCES"),
        "locked access must fail as permission denied: {}",
        String::from_utf8_lossy(&denied.stderr)
    );
    app.unlock();
    same(
        &manifest(&app.url_root(), 10 * MIN),
        &expected,
        "after a restart",
    );
    step(t0, "restarted, unlocked, read back and compared");
    app.stop();
    let log = app.log_text();
    assert!(
        !log.contains(" ERROR "),
        "the appliance logged errors:\n{log}"
    );
}

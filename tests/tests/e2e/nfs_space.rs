//! Space, as clients and `odt status` see it (issue 17):
//! - a write that cannot fit answers NFS3ERR_NOSPC and a write after the seal NFS3ERR_ROFS;
//!   the Linux kernel client shows them as "No space left on device" and "Read-only file
//!   system". libnfs 4.0 turns every failed WRITE into EFAULT (its message then carries the
//!   raw NFS status byte) and reports the status itself only at COMMIT (fsync): the test
//!   pins that down so that the reply on the wire is proven right by the kernel;
//! - `odt status` counts the space held by deleted and overwritten data, also after a
//!   restart (the count is rebuilt from the journal).
//!
//! Needs libnfs-utils, PyPI libnfs and the qemu guest (`scripts/install-test-deps`).

use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::guest;
use odt_e2e::nfsclient::{nfs_cp_ok, nfstool_ok, put_tree, require_clients};

const MIN: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

fn random_file(path: &std::path::Path, bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; bytes];
    rng.fill_bytes(&mut v);
    std::fs::write(path, v).unwrap();
}

/// What libnfs makes of a failed WRITE or COMMIT that carried `status` (an NFS3ERR_*):
/// at fsync (COMMIT) the errno itself; at write, EFAULT with the status byte in its
/// message (libnfs 4.0 drops the status of WRITE replies).
fn libnfs_saw(out: &str, errno: &str, status: u8) -> bool {
    let out = out.trim();
    out.starts_with(&format!("fsync {errno} "))
        || out.starts_with(&format!("write {errno} "))
        || (out.starts_with("write EFAULT ") && out.contains(&format!("\\x{status:02x}")))
}

#[test]
fn full_and_sealed_devices_say_so_to_the_kernel_client_and_libnfs() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    require_clients();
    // 192 MiB device, 8 MiB segments: about 150 MiB for data, files up to its capacity.
    let job = Job::provision(
        "192M",
        1,
        &["--segment-size", "8M", "--journal-size", "16M"],
    );
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    let share = job.path("share");
    std::fs::create_dir_all(&share).unwrap();
    let script = r#"
fail() { echo "GUEST FAIL: $*"; exit 1; }
echo hello > /mnt/small.txt || fail "small file"
sync
# Two files, each under the device's capacity (a bigger one would be FBIG), together more
# than its free space: the kernel reports the server's NOSPC.
dd if=/dev/urandom of=/mnt/fill.bin bs=1M count=100 conv=fsync 2> /root/err || fail "100 MiB: $(cat /root/err)"
dd if=/dev/urandom of=/mnt/big.bin bs=1M count=100 conv=fsync 2> /root/err && fail "200 MiB fit"
echo "FULL $(cat /root/err)"
touch /share/full
n=0
while [ ! -e /share/sealed ]; do sleep 1; n=$((n+1)); [ $n -lt 600 ] || fail "no seal signal"; done
dd if=/dev/urandom of=/mnt/small.txt bs=1k count=1 conv=notrunc,fsync 2> /root/err && fail "write after the seal"
echo "SEALED-WRITE $(cat /root/err)"
(echo x > /mnt/new.txt) 2> /root/err && fail "create after the seal"
echo "SEALED-CREATE $(cat /root/err)"
cat /mnt/small.txt
echo "guest done"
"#;
    let mut g = guest::start(app.nfs_port, script, &share, Duration::from_secs(600), "");
    g.wait_for("full", Duration::from_secs(500));

    // libnfs on the full device: a file grown by 8 MiB.
    let libnfs_full = nfstool_ok(
        &[
            "try-write",
            &app.url_root(),
            "/libnfs.bin",
            &(8 * MIB).to_string(),
        ],
        5 * MIN,
    );
    assert!(
        libnfs_saw(&libnfs_full, "ENOSPC", 28),
        "libnfs on a full device: {libnfs_full}"
    );

    app.seal();
    g.signal("sealed");
    let out = g.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("guest done"),
        "the guest script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- appliance log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} line: {stdout}"))
            .to_string()
    };
    assert!(
        line("FULL ").contains("No space left on device"),
        "{stdout}"
    );
    assert!(
        line("SEALED-WRITE ").contains("Read-only file system"),
        "{stdout}"
    );
    assert!(
        line("SEALED-CREATE ").contains("Read-only file system"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hello\n"),
        "reads work once sealed: {stdout}"
    );

    // libnfs writing into an existing file after the seal.
    let libnfs_sealed = nfstool_ok(&["try-write", &app.url_root(), "/small.txt", "1000"], MIN);
    assert!(
        libnfs_saw(&libnfs_sealed, "EROFS", 30),
        "libnfs after the seal: {libnfs_sealed}"
    );
    let log = app.log_text();
    assert!(log.contains("NFS3ERR_NOSPC"), "{log}");
    assert!(log.contains("NFS3ERR_ROFS"), "{log}");
}

#[test]
fn status_counts_the_space_deleted_and_overwritten_data_holds() {
    require_clients();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    // The dead records stay until a write needs their room (the background cleaner would
    // give it back within seconds: tests/tests/e2e/space_reclaim.rs).
    let mut app = Appliance::start(
        &job,
        Options {
            extra: vec!["--no-background-cleaning".into()],
            ..Options::default()
        },
    );
    app.unlock();
    let (a, b) = (job.path("a.bin"), job.path("b.bin"));
    random_file(&a, 20 << 20, 1);
    random_file(&b, 20 << 20, 2);
    nfs_cp_ok(&a.to_string_lossy(), &app.url_file("a.bin"), MIN);
    nfs_cp_ok(&b.to_string_lossy(), &app.url_file("b.bin"), MIN);
    let store = |app: &Appliance| app.status()["store"].clone();
    let num = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("status has no {k}: {v}"))
    };
    let before = store(&app);
    // Random data is stored raw: 20 records of 1 MiB plus a header each, per file.
    let stored = |files: u64| files * 20 * MIB;
    assert!(
        num(&before, "dead_bytes") < 8 * MIB,
        "only segment ends are dead yet: {before}"
    );

    // Delete a; overwrite b with other content (opened with O_TRUNC, then written).
    nfstool_ok(&["rm", &app.url_root(), "/a.bin"], MIN);
    let again = job.path("again");
    std::fs::create_dir_all(&again).unwrap();
    random_file(&again.join("b.bin"), 20 << 20, 3);
    put_tree(&again, &app.url_root(), MIN);
    let after = store(&app);
    let dead = num(&after, "dead_bytes") - num(&before, "dead_bytes");
    let taken = num(&before, "free_bytes") - num(&after, "free_bytes");
    // Dead: the records of a and of b's first version, plus the room left at the end of the
    // segments b's new version filled. Taken from the free space: b's new records and that
    // same room. The three versions are stored alike (20 raw records each), so the
    // difference is one version's records.
    assert!(
        dead >= stored(2),
        "40 MiB of records became dead, status says {dead}: {before} -> {after}"
    );
    let one_version = dead - taken;
    assert!(
        one_version >= stored(1) && one_version < stored(1) + 20 * 256,
        "dead {dead} - taken {taken} is not one version's records: {before} -> {after}"
    );
    let human = app
        .odt(&["status", "--code-file"])
        .arg(app.code_file())
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("held by deleted or overwritten data"),
        "{human}"
    );

    // Rebuilt from the journal after a restart.
    app.restart();
    app.unlock();
    let again = store(&app);
    assert_eq!(
        num(&again, "dead_bytes"),
        num(&after, "dead_bytes"),
        "{after} -> {again}"
    );
    assert_eq!(num(&again, "free_bytes"), num(&after, "free_bytes"));
    app.stop();
}

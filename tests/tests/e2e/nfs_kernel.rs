//! The Linux kernel NFS client (in a qemu TCG guest, `tests/guest/run`) against the real
//! appliance: mount, copy with `dd` and `cp` (the kernel sends UNSTABLE writes, out of
//! order, then COMMIT), `sync`, checksums; then the appliance restarts under the live mount
//! and the same mount keeps working (persistent file handles): old files read back, new
//! files written. The host checks every checksum with its own client (PyPI libnfs).

use std::collections::BTreeMap;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::guest;
use odt_e2e::nfsclient::{manifest, require_clients};

const SCRIPT: &str = r#"
set -e
fail() { echo "GUEST FAIL: $*"; exit 1; }
dd if=/dev/urandom of=/root/a.bin bs=1M count=40 2>/dev/null
mkdir -p /root/tree/sub
i=1
while [ $i -le 40 ]; do dd if=/dev/urandom of=/root/tree/sub/f$i bs=1k count=$i 2>/dev/null; i=$((i+1)); done
dd if=/root/a.bin of=/mnt/a.bin bs=1M 2>/dev/null
cp -r /root/tree /mnt/tree
sync
echo 3 > /proc/sys/vm/drop_caches
a=$(sha256sum /root/a.bin | cut -d' ' -f1)
m=$(sha256sum /mnt/a.bin | cut -d' ' -f1)
[ "$a" = "$m" ] || fail "a.bin read back differs: $a vs $m"
(cd /root && find tree -type f | sort | xargs sha256sum) > /root/sums
(cd /mnt && find tree -type f | sort | xargs sha256sum) > /root/msums
cmp /root/sums /root/msums || fail "tree read back differs"
echo "SUM a.bin $a"
echo "phase 1 done"
touch /share/phase1

# The host restarts the appliance now. Same mount, no remount: the handles must hold.
n=0
while [ ! -e /share/restarted ]; do sleep 1; n=$((n+1)); [ $n -lt 600 ] || fail "no restart signal"; done
echo 3 > /proc/sys/vm/drop_caches
m=$(sha256sum /mnt/a.bin | cut -d' ' -f1)
[ "$a" = "$m" ] || fail "a.bin after the restart differs: $m"
[ "$(ls /mnt/tree/sub | wc -l)" = 40 ] || fail "tree listing after the restart"
(cd /mnt && find tree -type f | sort | xargs sha256sum) > /root/msums2
cmp /root/sums /root/msums2 || fail "tree after the restart differs"
dd if=/dev/urandom of=/root/b.bin bs=1M count=16 2>/dev/null
cp /root/b.bin /mnt/b.bin
sync
echo 3 > /proc/sys/vm/drop_caches
b=$(sha256sum /root/b.bin | cut -d' ' -f1)
m=$(sha256sum /mnt/b.bin | cut -d' ' -f1)
[ "$b" = "$m" ] || fail "b.bin read back differs"
echo "SUM b.bin $b"
for f in /root/tree/sub/*; do echo "SUM tree/sub/${f##*/} $(sha256sum $f | cut -d' ' -f1)"; done
echo "phase 2 done"
"#;

#[test]
fn kernel_client_copies_and_keeps_its_mount_across_a_restart() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    require_clients();
    let job = Job::provision("4G", 1, &[]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let share = job.path("share");
    std::fs::create_dir_all(&share).unwrap();

    let mut g = guest::start(app.nfs_port, SCRIPT, &share, Duration::from_secs(900), "");
    g.wait_for("phase1", Duration::from_secs(600));
    app.restart();
    app.unlock();
    g.signal("restarted");
    let out = g.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("phase 2 done"),
        "the guest script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- appliance log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );

    // The host's own client sees what the guest wrote, byte for byte.
    let guest_sums: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("SUM "))
        .map(|l| {
            let (p, s) = l.split_once(' ').unwrap();
            (p.to_string(), s.to_string())
        })
        .collect();
    assert_eq!(guest_sums.len(), 42, "{stdout}");
    let host: BTreeMap<String, String> = manifest(&app.url_root(), Duration::from_secs(300))
        .lines()
        .filter(|l| !l.starts_with("dir "))
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let sum = it.next().unwrap().to_string();
            let _size = it.next();
            (it.next().unwrap().to_string(), sum)
        })
        .collect();
    assert_eq!(host, guest_sums, "host and guest disagree about the files");
    app.stop();
}

/// Plain READDIR (the kernel with `nordirplus`) over a directory of many pages: every
/// entry once (nfsserve alone restarts every page at the first entry, and the listing
/// never ends), and `df` shows the device's real capacity.
#[test]
fn kernel_client_lists_large_directories_without_readdirplus() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    require_clients();
    let job = Job::provision("4G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    let src = job.path("many");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..3000 {
        std::fs::write(
            src.join(format!("big/entry-with-a-longish-name-{i:05}")),
            b"",
        )
        .unwrap();
    }
    odt_e2e::nfsclient::put_tree(&src, &app.url_root(), Duration::from_secs(600));
    let share = job.path("share");
    std::fs::create_dir_all(&share).unwrap();
    let script = r#"
set -e
echo "COUNT $(ls -1 /mnt/big | wc -l)"
echo "UNIQUE $(ls -1 /mnt/big | sort -u | wc -l)"
df -k /mnt | tail -1 | awk '{print "DF", $2, $4}'
"#;
    let g = guest::start(
        app.nfs_port,
        script,
        &share,
        Duration::from_secs(300),
        "nordirplus",
    );
    let out = g.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "guest: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("COUNT 3000\n"), "{stdout}");
    assert!(stdout.contains("UNIQUE 3000\n"), "{stdout}");
    let capacity = app.status()["store"]["capacity_bytes"].as_u64().unwrap();
    let df = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DF "))
        .expect("df line");
    let total_kib: u64 = df.split(' ').next().unwrap().parse().unwrap();
    // The kernel rounds to its block size (1 MiB here).
    assert!(
        total_kib.abs_diff(capacity / 1024) < 1024,
        "df shows the device ({} KiB), not nfsserve's 1 TiB: {df}",
        capacity / 1024
    );
}

/// A tree with hard links (within and across directories), relative, absolute and
/// dangling symbolic links, modes and times, copied by GNU `cp -a` and `rsync -aH` through
/// the kernel client: each copy is identical to the source in content, link structure
/// (inode sharing and link counts), link targets, modes, owners and times. Then the
/// appliance restarts and the copies still read back the same (the links are journaled).
#[test]
fn kernel_client_cp_a_and_rsync_ah_keep_hard_links_and_symlinks() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    require_clients();
    let job = Job::provision("2G", 1, &[]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let share = job.path("share");
    std::fs::create_dir_all(&share).unwrap();
    let script = r#"
set -e
fail() { echo "GUEST FAIL: $*"; exit 1; }
G=/opt/gnu/bin
mkdir -p /root/ht/a/b /root/ht/empty
dd if=/dev/urandom of=/root/ht/a/data bs=1k count=300 2>/dev/null
echo hello > /root/ht/a/b/small
ln /root/ht/a/data /root/ht/a/b/data-link
ln /root/ht/a/b/small /root/ht/small-2
ln /root/ht/a/b/small /root/ht/a/small-3
ln -s ../data /root/ht/a/b/rel-symlink
ln -s /root/ht/a/data /root/ht/abs-symlink
ln -s /does/not/exist /root/ht/dangling
chmod 640 /root/ht/a/b/small
chmod 700 /root/ht/a/b
touch -t 202001020304.05 /root/ht/a/data
touch -t 201912312359.59 /root/ht/a/b/small
# What a tree is, inode numbers aside: per entry its type, mode, owner, links, size and
# mtime, a symlink's target, a file's content.
describe() {
  (cd "$1" && find . | sort | while read -r f; do
     line=$(stat -c '%F %a %u:%g %h' "$f")
     case $(stat -c %F "$f") in
       "symbolic link") line="$line -> $(readlink "$f")" ;;
       directory) line="$line $(stat -c %Y "$f")" ;;
       *) line="$line $(stat -c '%s %Y' "$f") $(sha256sum < "$f" | cut -d' ' -f1)" ;;
     esac
     echo "$f $line"
   done)
}
# Which names share an inode, as groups of names.
groups() {
  (cd "$1" && find . -type f | sort | while read -r f; do echo "$(stat -c %i "$f") $f"; done) \
    | sort -k1,1 -k2 | awk '{ if ($1 != last) { if (NR > 1) print line; line = $2 } else line = line " " $2; last = $1 } END { print line }' | sort
}
describe /root/ht > /root/want
groups /root/ht > /root/want-groups
$G/cp -a /root/ht /mnt/ht-cp
$G/rsync -aH /root/ht/ /mnt/ht-rsync/
sync
echo 3 > /proc/sys/vm/drop_caches
for d in /mnt/ht-cp /mnt/ht-rsync; do
  describe "$d" > /root/got
  cmp /root/want /root/got || { diff /root/want /root/got; fail "$d differs"; }
  groups "$d" > /root/got-groups
  cmp /root/want-groups /root/got-groups || { cat /root/got-groups; fail "$d hard links differ"; }
done
cat /root/want-groups
echo "phase 1 done"
touch /share/phase1
n=0
while [ ! -e /share/restarted ]; do sleep 1; n=$((n+1)); [ $n -lt 600 ] || fail "no restart signal"; done
echo 3 > /proc/sys/vm/drop_caches
for d in /mnt/ht-cp /mnt/ht-rsync; do
  describe "$d" > /root/got
  cmp /root/want /root/got || { diff /root/want /root/got; fail "$d differs after the restart"; }
  groups "$d" > /root/got-groups
  cmp /root/want-groups /root/got-groups || fail "$d hard links differ after the restart"
done
echo "phase 2 done"
"#;
    let mut g = guest::start(app.nfs_port, script, &share, Duration::from_secs(600), "");
    g.wait_for("phase1", Duration::from_secs(500));
    app.restart();
    app.unlock();
    g.signal("restarted");
    let out = g.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("phase 2 done"),
        "the guest script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- appliance log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );
    // The source had two groups of hard links, both kept.
    assert!(
        stdout.contains("./a/b/data-link ./a/data") || stdout.contains("./a/data ./a/b/data-link"),
        "{stdout}"
    );
    app.stop();
}

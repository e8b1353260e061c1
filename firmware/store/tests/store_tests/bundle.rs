//! The pre-seal bundle check on a real store: a good OVF package and OVA pass; each kind of
//! broken export is reported by name.

use odt_store::Store;
use odt_store::format::journal::Time;
use odt_store::trip::bundle::{self, Severity};
use odt_store::trip::bundle_digests::{self, Tracker};
use odt_test_support::prelude::*;
use sha2::Digest;

fn put(s: &Store, dir: u64, name: &str, data: &[u8]) -> u64 {
    let f = s.create(dir, name.as_bytes(), 0o644).unwrap();
    if !data.is_empty() {
        s.write(f.id, 0, data).unwrap();
    }
    f.id
}

fn ovf(disk: &str, size: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/></References>
  <DiskSection><Info>disks</Info></DiskSection>
</Envelope>"#
    )
}

fn mf(entries: &[(&str, &[u8])]) -> String {
    entries
        .iter()
        .map(|(n, d)| format!("SHA256({n})= {}\n", hex::encode(sha2::Sha256::digest(d))))
        .collect()
}

/// A minimal ustar archive.
fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn later() -> Time {
    Time {
        secs: Time::now().secs + 3600,
        nanos: 0,
    }
}

#[test]
fn good_and_broken_bundles() {
    let fx = Fixture::new(1, 128 * MIB);
    let s = fx.open();
    bundle_digests::attach(&s);
    let disk = pattern(1, 3 * MIB as usize + 77);
    // Good package.
    let good = s.mkdir(s.root(), b"vm-good", 0o755).unwrap().id;
    let desc = ovf("vm-good-disk1.vmdk", disk.len());
    put(&s, good, "vm-good.ovf", desc.as_bytes());
    let good_disk = put(&s, good, "vm-good-disk1.vmdk", &disk);
    // Hashed on the way in: the seal's digest check need not read it back.
    let want: [u8; 32] = sha2::Sha256::digest(&disk).into();
    assert_eq!(
        Tracker::of(&s).and_then(|t| t.sha256(good_disk, disk.len() as u64)),
        Some(want)
    );
    put(
        &s,
        good,
        "vm-good.mf",
        mf(&[
            ("vm-good.ovf", desc.as_bytes()),
            ("vm-good-disk1.vmdk", &disk),
        ])
        .as_bytes(),
    );
    // Missing disk.
    let d = s.mkdir(s.root(), b"vm-missing", 0o755).unwrap().id;
    put(
        &s,
        d,
        "vm-missing.ovf",
        ovf("vm-missing-disk1.vmdk", 100).as_bytes(),
    );
    // Wrong digest.
    let d = s.mkdir(s.root(), b"vm-digest", 0o755).unwrap().id;
    put(
        &s,
        d,
        "vm-digest.ovf",
        ovf("disk.vmdk", disk.len()).as_bytes(),
    );
    let mut other = disk.clone();
    other[12345] ^= 1;
    put(&s, d, "disk.vmdk", &other);
    put(
        &s,
        d,
        "vm-digest.mf",
        mf(&[("disk.vmdk", &disk)]).as_bytes(),
    );
    // Truncated disk.
    let d = s.mkdir(s.root(), b"vm-short", 0o755).unwrap().id;
    put(
        &s,
        d,
        "vm-short.ovf",
        ovf("disk.vmdk", disk.len()).as_bytes(),
    );
    put(&s, d, "disk.vmdk", &disk[..MIB as usize]);
    // Descriptor that is not XML.
    let d = s.mkdir(s.root(), b"vm-notxml", 0o755).unwrap().id;
    put(&s, d, "vm-notxml.ovf", b"this is <not xml");
    // OVA, good and with a bad member digest.
    let small = pattern(2, 5000);
    let odesc = ovf("a-disk1.vmdk", small.len());
    let ova_good = tar(&[
        ("a.ovf", odesc.as_bytes()),
        ("a-disk1.vmdk", &small),
        (
            "a.mf",
            mf(&[("a.ovf", odesc.as_bytes()), ("a-disk1.vmdk", &small)]).as_bytes(),
        ),
    ]);
    put(&s, s.root(), "a.ova", &ova_good);
    let ova_bad = tar(&[
        ("b.ovf", odesc.as_bytes()),
        ("a-disk1.vmdk", &small[..4000]),
        ("b.mf", mf(&[("a-disk1.vmdk", &small)]).as_bytes()),
    ]);
    put(&s, s.root(), "b.ova", &ova_bad);
    put(&s, s.root(), "notes.txt", b"loose file");

    let r = bundle::check(&s, later()).unwrap();
    let find = |p: &str| {
        r.bundles
            .iter()
            .find(|b| b.path == p)
            .unwrap_or_else(|| panic!("{p} not found: {r:?}"))
    };
    let errors = |p: &str| -> Vec<String> {
        find(p)
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone())
            .collect()
    };
    assert!(
        find("vm-good/vm-good.ovf").ok(),
        "{:?}",
        find("vm-good/vm-good.ovf")
    );
    assert_eq!(find("vm-good/vm-good.ovf").digests_checked, 2);
    assert_eq!(find("vm-good/vm-good.ovf").files.len(), 3);
    let e = errors("vm-missing/vm-missing.ovf");
    assert!(
        e.iter()
            .any(|m| m.contains("missing file vm-missing/vm-missing-disk1.vmdk")),
        "{e:?}"
    );
    let e = errors("vm-digest/vm-digest.ovf");
    assert!(
        e.iter()
            .any(|m| m.contains("vm-digest/disk.vmdk") && m.contains("digest")),
        "{e:?}"
    );
    let e = errors("vm-short/vm-short.ovf");
    assert!(
        e.iter()
            .any(|m| m.contains("vm-short/disk.vmdk") && m.contains("short")),
        "{e:?}"
    );
    let e = errors("vm-notxml/vm-notxml.ovf");
    assert!(e.iter().any(|m| m.contains("not valid XML")), "{e:?}");
    assert!(find("a.ova").ok(), "{:?}", find("a.ova"));
    assert_eq!(find("a.ova").digests_checked, 2);
    let e = errors("b.ova");
    assert!(e.iter().any(|m| m.contains("a-disk1.vmdk")), "{e:?}");
    assert_eq!(r.errors(), 5);
    assert_eq!(r.loose_files, 1);

    // Just written: warned as possibly still being copied, but not an error.
    let r = bundle::check(&s, Time::now()).unwrap();
    let g = r
        .bundles
        .iter()
        .find(|b| b.path == "vm-good/vm-good.ovf")
        .unwrap();
    assert!(g.ok() && g.findings.iter().any(|f| f.message.contains("still")));
}

fn chunked_ovf(disk: &str, size: usize, chunk: usize, compression: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}" ovf:chunkSize="{chunk}"{compression}/></References>
</Envelope>"#
    )
}

/// An OVA written by the `tar` crate: GNU long names, as GNU tar and ovftool write them
/// for names past 100 bytes.
fn gnu_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn chunked_files_long_names_and_compression() {
    let fx = Fixture::new(1, 128 * MIB);
    let s = fx.open();
    let disk = pattern(3, 2500);
    // Chunked: 1000 + 1000 + 500, and the .mf names each chunk.
    let d = s.mkdir(s.root(), b"vm-chunked", 0o755).unwrap().id;
    let desc = chunked_ovf("disk.vmdk", disk.len(), 1000, "");
    put(&s, d, "vm-chunked.ovf", desc.as_bytes());
    let chunks: Vec<&[u8]> = disk.chunks(1000).collect();
    for (n, c) in chunks.iter().enumerate() {
        put(&s, d, &format!("disk.vmdk.{n:09}"), c);
    }
    let lines: Vec<(String, &[u8])> = chunks
        .iter()
        .enumerate()
        .map(|(n, c)| (format!("disk.vmdk.{n:09}"), *c))
        .collect();
    let refs: Vec<(&str, &[u8])> = lines.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    put(&s, d, "vm-chunked.mf", mf(&refs).as_bytes());
    // Chunked with the middle chunk missing.
    let d = s.mkdir(s.root(), b"vm-gap", 0o755).unwrap().id;
    put(&s, d, "vm-gap.ovf", desc.as_bytes());
    put(&s, d, "disk.vmdk.000000000", chunks[0]);
    put(&s, d, "disk.vmdk.000000002", chunks[2]);
    // A compression nobody reads.
    let d = s.mkdir(s.root(), b"vm-bz", 0o755).unwrap().id;
    put(
        &s,
        d,
        "vm-bz.ovf",
        chunked_ovf("disk.vmdk", 1000, 1000, r#" ovf:compression="bzip2""#).as_bytes(),
    );
    put(&s, d, "disk.vmdk.000000000", chunks[0]);
    // OVA with a member name past ustar's 100 bytes.
    let long = format!(
        "{}-disk1.vmdk",
        "a-very-long-virtual-machine-name".repeat(4)
    );
    let odesc = ovf(&long, disk.len());
    let ova = gnu_tar(&[
        ("long.ovf", odesc.as_bytes()),
        (&long, &disk),
        (
            "long.mf",
            mf(&[("long.ovf", odesc.as_bytes()), (&long, &disk)]).as_bytes(),
        ),
    ]);
    put(&s, s.root(), "long.ova", &ova);
    // The same archive cut short inside the disk.
    put(&s, s.root(), "cut.ova", &ova[..2500]);

    let r = bundle::check(&s, later()).unwrap();
    let find = |p: &str| {
        r.bundles
            .iter()
            .find(|b| b.path == p)
            .unwrap_or_else(|| panic!("{p} not found: {r:?}"))
    };
    let errors = |p: &str| -> String {
        find(p)
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let c = find("vm-chunked/vm-chunked.ovf");
    assert!(c.ok(), "{c:?}");
    assert_eq!(c.files.len(), 5, "{c:?}");
    assert_eq!(c.digests_checked, 3);
    let e = errors("vm-gap/vm-gap.ovf");
    assert!(
        e.contains("chunks of vm-gap/disk.vmdk hold 1000 bytes"),
        "{e}"
    );
    let e = errors("vm-bz/vm-bz.ovf");
    assert!(e.contains("only gzip"), "{e}");
    let l = find("long.ova");
    assert!(l.ok(), "{l:?}");
    assert_eq!(l.digests_checked, 2);
    let e = errors("cut.ova");
    assert!(e.contains("truncated"), "{e}");
    assert_eq!(r.loose_files, 1, "the stray chunk of vm-gap");
}

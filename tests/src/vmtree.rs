//! Test data shaped like what customers copy: a VM export (OVF package: descriptor,
//! multi-GiB sparse disk, SHA-256 manifest) and a tree of many small files with awkward
//! names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::nfsclient::sha256_file;

/// An OVF package on local disk.
pub struct VmExport {
    /// The package's directory.
    pub dir: PathBuf,
    /// Its name (directory name and file stem).
    pub name: String,
    /// File names inside `dir`: descriptor, disk, manifest.
    pub files: Vec<String>,
}

/// Writes `parent/name/` with `name.ovf`, a sparse `name-disk1.vmdk` of `disk_size` bytes
/// holding random data in a few places (aligned and unaligned, start, middle, end), and
/// `name.mf` with the SHA-256 of both.
pub fn write_vm_export(parent: &Path, name: &str, disk_size: u64, seed: u64) -> VmExport {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let disk_name = format!("{name}-disk1.vmdk");
    let mut disk = File::create(dir.join(&disk_name)).unwrap();
    disk.set_len(disk_size).unwrap();
    let islands = [
        (0, 4 << 20),
        (disk_size / 3 / 65536 * 65536, 1 << 20),
        (disk_size / 2 + 4097, (3 << 20) + 123),
        (disk_size - 100 * 1024, 100 * 1024),
    ];
    for (at, len) in islands {
        let mut buf = vec![0u8; len as usize];
        rng.fill_bytes(&mut buf);
        disk.seek(SeekFrom::Start(at)).unwrap();
        disk.write_all(&buf).unwrap();
    }
    disk.sync_all().unwrap();
    drop(disk);

    let ovf_name = format!("{name}.ovf");
    let ovf = ovf_descriptor(name, &disk_name, disk_size);
    std::fs::write(dir.join(&ovf_name), ovf).unwrap();
    let mf_name = format!("{name}.mf");
    let mf = format!(
        "SHA256({ovf_name})= {}\nSHA256({disk_name})= {}\n",
        sha256_file(&dir.join(&ovf_name)),
        sha256_file(&dir.join(&disk_name))
    );
    std::fs::write(dir.join(&mf_name), mf).unwrap();
    VmExport {
        dir,
        name: name.to_string(),
        files: vec![ovf_name, disk_name, mf_name],
    }
}

/// Names that trip up careless code: spaces, Unicode, the 255-byte limit (ASCII and
/// multi-byte), shell and URL characters.
pub fn awkward_names() -> Vec<String> {
    vec![
        "with space.txt".into(),
        "  leading and trailing spaces  ".into(),
        "ünïcödé – 名前 – ε.txt".into(),
        format!("{}.txt", "a".repeat(251)),
        format!("{}x", "é".repeat(127)),
        "-leading-dash".into(),
        "#hash&amp;%20?.txt".into(),
        "quote'\"s and \\backslash".into(),
        "emoji 🚚📦.bin".into(),
    ]
}

/// Writes a tree of `small_files` small files (0 to 8 KiB, 100 per directory), the
/// awkward names, a 40-level deep path, an empty file and an empty directory.
pub fn write_awkward_tree(root: &Path, small_files: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..small_files {
        let d = root.join(format!("small/d{:03}", i / 100));
        std::fs::create_dir_all(&d).unwrap();
        let len = rng.random_range(0..8192usize);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        std::fs::write(d.join(format!("file{i:05}.dat")), buf).unwrap();
    }
    let names = root.join("names");
    std::fs::create_dir_all(&names).unwrap();
    for (i, n) in awkward_names().iter().enumerate() {
        std::fs::write(names.join(n), format!("file {i} named {n:?}\n")).unwrap();
    }
    let mut deep = root.join("deep");
    for l in 0..40 {
        deep = deep.join(format!("level {l:02}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let mut leaf = vec![0u8; 70_000];
    rng.fill_bytes(&mut leaf);
    std::fs::write(deep.join("leaf.bin"), leaf).unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
}

/// An OVF descriptor for a one-disk VM `name` whose disk file `disk_name` holds `disk_size`
/// bytes (referenced with its size, as the seal's bundle check expects).
pub fn ovf_descriptor(name: &str, disk_name: &str, disk_size: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="{disk_name}" ovf:id="file1" ovf:size="{disk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{disk_size}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Every entry under `root` (skipping `skip` at the top): relative path -> file contents,
/// or `None` for a directory. Symlinks and other types fail the test.
pub fn read_tree(root: &Path, skip: &str) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, skip: &str, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if dir == root && e.file_name() == skip {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.insert(rel, None);
                walk(root, &p, skip, out);
            } else if t.is_file() {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            } else {
                panic!("{}: neither a file nor a directory", p.display());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

/// Every file below `dir` but an ingest's own state (`.odt-ingest`): path relative to
/// `dir` -> content, following symlinks (unlike [`read_tree`], which refuses them and lists
/// directories). What a datastore holds, to compare before and after a command.
pub fn read_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.file_name().unwrap() == ".odt-ingest" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

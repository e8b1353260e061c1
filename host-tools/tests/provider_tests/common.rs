//! Shared by the provider-side end-to-end tests: real image files provisioned with the real
//! `odt` binary, populated and sealed through the `odt_store` library (as the appliance
//! would), then driven with the real `odt verify`, `odt ingest` and `odt erase`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use odt_store::trip::job::Job;
use odt_store::{Access, Locked, Store};
use odt_test_support::MIB;

/// Path of the `odt` binary under test.
pub fn odt_bin() -> &'static str {
    env!("CARGO_BIN_EXE_odt")
}

/// Runs `odt` with `args`; returns its output.
pub fn odt(args: &[&str]) -> Output {
    Command::new(odt_bin())
        .args(args)
        .output()
        .expect("odt runs")
}

/// Exit code, stdout and stderr of a finished run.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses a `--json` report.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            stdout(o),
            stderr(o)
        )
    })
}

/// What one file should hold: zeros except `data` pieces.
#[derive(Debug, Clone)]
pub struct ExpectFile {
    pub size: u64,
    pub data: Vec<(u64, Vec<u8>)>,
    pub mode: u32,
    /// Modification time the store reports (secs, nanos).
    pub mtime: (i64, u32),
}

/// An entry of the expected tree, by datastore path.
#[derive(Debug, Clone)]
pub enum Expect {
    Dir,
    File(ExpectFile),
    Link(Vec<u8>),
}

/// A provisioned job with its device images.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub job: PathBuf,
    pub devices: Vec<PathBuf>,
}

impl Setup {
    /// `odt job new` + `odt provision` of `n` image files of `size` bytes each.
    pub fn new(n: usize, size: u64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let set = odt_test_support::fixture::provision_with_cli(
            Path::new(odt_bin()),
            dir.path(),
            n,
            &size.to_string(),
            &["--segment-size", "8M"],
        );
        Setup {
            dir,
            job: set.job_dir,
            devices: set.devices,
        }
    }

    /// Opens the store read-write with the job's ingest identity (as the appliance would
    /// with the unlock code).
    pub fn open_rw(&self) -> Store {
        let l = Locked::open(&self.devices, Access::ReadWrite).unwrap();
        let id = Job::load_identity(&self.job).unwrap();
        let s = l.secrets_from_identity(&id).unwrap();
        l.unlock(s, Access::ReadWrite).unwrap()
    }

    /// `--device A --device B ...` arguments (devices given in reverse order: any order works).
    pub fn device_args(&self) -> Vec<String> {
        let mut v = vec!["--device".to_string()];
        v.extend(self.devices.iter().rev().map(|p| p.display().to_string()));
        v
    }

    /// Runs `odt CMD --job JOB --device ... EXTRA...`.
    pub fn run(&self, cmd: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> =
            vec![cmd.into(), "--job".into(), self.job.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.device_args());
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        odt(&a)
    }

    /// `odt ingest ... --to DS --json`.
    pub fn ingest(&self, ds: &Path, extra: &[&str]) -> Output {
        let mut e = vec!["--to", ds.to_str().unwrap(), "--json"];
        e.extend_from_slice(extra);
        self.run("ingest", &e)
    }
}

/// Builds a tree in the store and records what the datastore must hold.
pub struct Builder<'a> {
    pub store: &'a Store,
    pub expect: BTreeMap<String, Expect>,
}

impl<'a> Builder<'a> {
    pub fn new(store: &'a Store) -> Self {
        Builder {
            store,
            expect: BTreeMap::new(),
        }
    }

    fn lookup_dir(&self, path: &[u8]) -> u64 {
        let mut id = self.store.root();
        if path.is_empty() {
            return id;
        }
        for c in path.split(|&b| b == b'/') {
            id = self.store.lookup(id, c).unwrap();
        }
        id
    }

    fn split(path: &[u8]) -> (&[u8], &[u8]) {
        match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        }
    }

    /// Datastore path the entry is expected at (same as the device path unless renamed).
    pub fn mkdir(&mut self, path: &[u8], mode: u32, expect_at: Option<&str>) {
        let (parent, name) = Self::split(path);
        let d = self.lookup_dir(parent);
        self.store.mkdir(d, name, mode).unwrap();
        if let Some(at) = expect_at {
            self.expect.insert(at.to_string(), Expect::Dir);
        }
    }

    /// Writes a file from `pieces` (offset, bytes), extended to `size`.
    pub fn file(
        &mut self,
        path: &[u8],
        mode: u32,
        size: u64,
        pieces: Vec<(u64, Vec<u8>)>,
        expect_at: Option<&str>,
    ) -> u64 {
        let (parent, name) = Self::split(path);
        let d = self.lookup_dir(parent);
        let a = self.store.create(d, name, mode).unwrap();
        for (off, data) in &pieces {
            // In 1 MiB writes, as NFS clients send them.
            let mut at = 0;
            while at < data.len() {
                let n = (MIB as usize).min(data.len() - at);
                self.store
                    .write(a.id, off + at as u64, &data[at..at + n])
                    .unwrap();
                at += n;
            }
        }
        let cur = self.store.getattr(a.id).unwrap().size;
        if size != cur {
            self.store
                .setattr(
                    a.id,
                    odt_store::format::journal::AttrChange {
                        size: Some(size),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        let attr = self.store.getattr(a.id).unwrap();
        if let Some(at) = expect_at {
            self.expect.insert(
                at.to_string(),
                Expect::File(ExpectFile {
                    size,
                    data: pieces,
                    mode,
                    mtime: (attr.mtime.secs, attr.mtime.nanos),
                }),
            );
        }
        a.id
    }

    pub fn symlink(&mut self, path: &[u8], target: &[u8], expect_at: Option<&str>) {
        let (parent, name) = Self::split(path);
        let d = self.lookup_dir(parent);
        self.store.symlink(d, name, target).unwrap();
        if let Some(at) = expect_at {
            self.expect
                .insert(at.to_string(), Expect::Link(target.to_vec()));
        }
    }
}

/// Seals the store (no bundle check) and returns the seal code.
pub fn seal(store: &Store) -> String {
    odt_store::trip::seal::seal(store, vec![]).unwrap().code
}

/// Streams `path` and compares it with `e` (content, mode, mtime). Returns a problem.
pub fn check_file(path: &Path, e: &ExpectFile) -> Result<(), String> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|err| format!("{}: {err}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() != e.size {
        return Err(format!(
            "{}: size {} instead of {}",
            path.display(),
            meta.len(),
            e.size
        ));
    }
    if meta.mode() & 0o777 != e.mode & 0o777 {
        return Err(format!(
            "{}: mode {:o} instead of {:o}",
            path.display(),
            meta.mode() & 0o777,
            e.mode
        ));
    }
    if (meta.mtime(), meta.mtime_nsec() as u32) != e.mtime {
        return Err(format!(
            "{}: mtime {}.{} instead of {}.{}",
            path.display(),
            meta.mtime(),
            meta.mtime_nsec(),
            e.mtime.0,
            e.mtime.1
        ));
    }
    let mut f = std::fs::File::open(path).unwrap();
    let step = 8 * MIB;
    let mut buf = vec![0u8; step as usize];
    let mut want = vec![0u8; step as usize];
    let mut at = 0u64;
    while at < e.size {
        let n = step.min(e.size - at) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        want[..n].fill(0);
        for (off, d) in &e.data {
            let (s, end) = (*off, off + d.len() as u64);
            let (lo, hi) = (s.max(at), end.min(at + n as u64));
            if lo < hi {
                want[(lo - at) as usize..(hi - at) as usize]
                    .copy_from_slice(&d[(lo - s) as usize..(hi - s) as usize]);
            }
        }
        if buf[..n] != want[..n] {
            let i = (0..n).find(|&i| buf[i] != want[i]).unwrap();
            return Err(format!(
                "{}: differs at byte {}",
                path.display(),
                at + i as u64
            ));
        }
        at += n as u64;
    }
    Ok(())
}

/// Every entry below `root` (except `.odt-ingest`), by relative path.
pub fn walk(root: &Path) -> BTreeMap<String, std::fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if rel.as_os_str().is_empty() && e.file_name() == ".odt-ingest" {
                continue;
            }
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r.to_string_lossy().into_owned(), m);
        }
    }
    out
}

/// Checks that the datastore holds exactly `expect` (plus nothing else).
pub fn check_tree(ds: &Path, expect: &BTreeMap<String, Expect>) {
    let found = walk(ds);
    let found_names: Vec<&String> = found.keys().collect();
    let want_names: Vec<&String> = expect.keys().collect();
    assert_eq!(found_names, want_names, "datastore tree differs");
    for (rel, e) in expect {
        let p = ds.join(rel);
        match e {
            Expect::Dir => assert!(found[rel].is_dir(), "{rel} is not a directory"),
            Expect::File(f) => check_file(&p, f).unwrap(),
            Expect::Link(t) => {
                use std::os::unix::ffi::OsStrExt;
                assert!(
                    found[rel].file_type().is_symlink(),
                    "{rel} is not a symlink"
                );
                assert_eq!(
                    std::fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                    &t[..]
                );
            }
        }
    }
}

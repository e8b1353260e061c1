//! VM bundles: finding OVF packages (`.ovf` descriptor, the files its References section
//! names, optional `.mf` digests and `.cert`) and `.ova` archives in the store, and checking
//! them before the seal — referenced files present with the declared sizes, `.mf` digests
//! right, nothing still being written — so a customer hears of a broken export while it can
//! still be fixed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::engine::Store;
use crate::error::{Error, ErrorKind, Result, StoreError};
use crate::format::journal::{Kind, SealedBundle, Time};
use crate::trip::bundle_digests::Tracker;
use crate::trip::ovf::{Member, chunk_name, tar_members};
pub use crate::trip::ovf::{MfEntry, Reference, parse_descriptor, parse_mf};

/// Largest descriptor or manifest read into memory.
const MAX_TEXT: u64 = 16 << 20;
/// A file written this recently may still be being copied.
const BUSY_SECS: i64 = 10;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Sealing would ship a broken bundle: refused unless forced.
    Error,
    /// Worth a look; does not stop the seal.
    Warning,
}

/// One finding about a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Whether it stops the seal.
    pub severity: Severity,
    /// What is wrong, where, and what to do.
    pub message: String,
}

/// One bundle and what the check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCheck {
    /// Path of the descriptor (`.ovf` or `.ova`) from the root.
    pub path: String,
    /// Files of the bundle (descriptor, referenced files, manifest, certificate).
    pub files: Vec<String>,
    /// Sum of the sizes of its files.
    pub bytes: u64,
    /// Whether a `.mf` manifest was found and every digest in it checked.
    pub digests_checked: u32,
    /// What the check found (empty: good).
    pub findings: Vec<Finding>,
}

impl BundleCheck {
    fn new(path: &str, size: u64) -> BundleCheck {
        BundleCheck {
            path: path.to_string(),
            files: vec![path.to_string()],
            bytes: size,
            digests_checked: 0,
            findings: Vec::new(),
        }
    }

    /// No error-level finding.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Error)
    }

    /// The bundle as the seal records it.
    pub fn sealed(&self) -> SealedBundle {
        SealedBundle {
            path: self.path.as_bytes().to_vec(),
            files: self.files.len() as u32,
            bytes: self.bytes,
            problems: self.findings.iter().map(|f| f.message.clone()).collect(),
        }
    }
}

/// The check of every bundle in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BundleReport {
    /// Every bundle found, by descriptor path.
    pub bundles: Vec<BundleCheck>,
    /// Files that belong to no bundle.
    pub loose_files: u64,
}

impl BundleReport {
    /// Number of bundles with errors.
    pub fn errors(&self) -> usize {
        self.bundles.iter().filter(|b| !b.ok()).count()
    }
}

/// What a bundle check knows of one entry of the store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File id in the store.
    pub id: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub mtime: Time,
}

/// Every entry of the store but the root, by path.
pub fn entries(store: &Store) -> BTreeMap<String, Entry> {
    let view = store.view();
    let root = view.root().id();
    view.entries()
        .filter(|i| i.id() != root)
        .map(|i| {
            (
                String::from_utf8_lossy(&view.path(i.id())).into_owned(),
                Entry {
                    id: i.id(),
                    kind: i.kind(),
                    size: i.size(),
                    mtime: i.mtime(),
                },
            )
        })
        .collect()
}

/// Checks every bundle. `now` decides what counts as still being written.
pub fn check(store: &Store, now: Time) -> Result<BundleReport> {
    let entries = entries(store);
    let mut report = BundleReport::default();
    let mut claimed: Vec<String> = Vec::new();
    for (path, e) in &entries {
        if e.kind != Kind::File {
            continue;
        }
        let lower = path.to_ascii_lowercase();
        let b = if lower.ends_with(".ovf") {
            check_ovf(store, &entries, path, e, now)?
        } else if lower.ends_with(".ova") {
            check_ova(store, path, e, now)?
        } else {
            continue;
        };
        claimed.extend(b.files.iter().cloned());
        report.bundles.push(b);
    }
    report.loose_files = entries
        .iter()
        .filter(|(p, e)| e.kind == Kind::File && !claimed.contains(p))
        .count() as u64;
    Ok(report)
}

fn err(message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        message,
    }
}

fn warn(message: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        message,
    }
}

fn read_all(store: &Store, id: u64, size: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let n = (size - out.len() as u64).min(1 << 20) as u32;
        let (b, _) = store.read(id, out.len() as u64, n)?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Joins a descriptor-relative href to the descriptor's directory; refuses escapes.
pub fn resolve(dir: &str, href: &str) -> Option<String> {
    if href.contains("://") || href.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for c in href.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// The files holding a reference's content and what is wrong with them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    /// (path, size) of the file itself, or of its chunks in order.
    pub files: Vec<(String, u64)>,
    /// Missing files, wrong sizes, gaps in the chunks.
    pub problems: Vec<String>,
}

/// Finds the content of reference `r` at path `target`: the file itself or, for a chunked
/// reference (`ovf:chunkSize`), `target.000000000`, `target.000000001`, ... `size_of`
/// answers the size of the regular file at a path, None if there is none.
pub fn content_files(
    target: &str,
    r: &Reference,
    size_of: impl Fn(&str) -> Option<u64>,
) -> Content {
    let mut c = Content::default();
    let Some(chunk) = r.chunk_size else {
        match size_of(target) {
            None => c
                .problems
                .push(format!("missing file {target} (named in the descriptor)")),
            Some(size) => {
                if let Some(want) = r.size
                    && want != size
                {
                    c.problems.push(format!(
                        "{target} has {size} bytes but the descriptor declares {want} \
                         ({}: truncated or still being copied?)",
                        if size < want { "short" } else { "too long" }
                    ));
                }
                c.files.push((target.to_string(), size));
            }
        }
        return c;
    };
    let mut total = 0u64;
    while let Some(size) = size_of(&chunk_name(target, c.files.len() as u64)) {
        if let Some((prev, prev_size)) = c.files.last()
            && *prev_size != chunk
        {
            c.problems.push(format!(
                "chunk {prev} has {prev_size} bytes but is not the last chunk: the chunk size \
                 is {chunk}"
            ));
        }
        total += size;
        c.files
            .push((chunk_name(target, c.files.len() as u64), size));
        if c.files.len() as u64 > r.size.unwrap_or(u64::MAX) / chunk + 1 {
            break;
        }
    }
    if c.files.is_empty() {
        c.problems.push(format!(
            "missing file {} (the first chunk of {target}, named in the descriptor)",
            chunk_name(target, 0)
        ));
    } else if let Some(want) = r.size
        && want != total
    {
        c.problems.push(format!(
            "the {} chunks of {target} hold {total} bytes but the descriptor declares {want} \
             (a chunk missing, truncated or still being copied?)",
            c.files.len()
        ));
    }
    c
}

fn busy(e: &Entry, now: Time) -> bool {
    now.secs - e.mtime.secs < BUSY_SECS
}

fn check_ovf(
    store: &Store,
    entries: &BTreeMap<String, Entry>,
    path: &str,
    e: &Entry,
    now: Time,
) -> Result<BundleCheck> {
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let stem = &path[..path.len() - 4];
    let mut b = BundleCheck::new(path, e.size);
    if e.size > MAX_TEXT {
        b.findings.push(err(format!(
            "descriptor of {} bytes is too large to be an OVF descriptor",
            e.size
        )));
        return Ok(b);
    }
    let text = read_all(store, e.id, e.size)?;
    let refs = match std::str::from_utf8(&text)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(parse_descriptor)
    {
        Ok(r) => r,
        Err(why) => {
            b.findings.push(err(format!("descriptor {path}: {why}")));
            return Ok(b);
        }
    };
    if busy(e, now) {
        b.findings.push(warn(format!(
            "{path} was written less than {BUSY_SECS} s ago: is the export still running?"
        )));
    }
    for r in &refs {
        let Some(target) = resolve(dir, &r.href) else {
            b.findings.push(err(format!(
                "reference {:?} points outside the bundle",
                r.href
            )));
            continue;
        };
        if let Err(why) = r.gzip() {
            b.findings.push(err(why));
        }
        if let Some(Entry { kind, .. }) = entries.get(&target)
            && *kind != Kind::File
        {
            b.findings
                .push(err(format!("{target} is not a regular file")));
            continue;
        }
        let content = content_files(&target, r, |p| {
            entries
                .get(p)
                .filter(|t| t.kind == Kind::File)
                .map(|t| t.size)
        });
        b.findings.extend(content.problems.into_iter().map(err));
        for (f, size) in content.files {
            b.bytes += size;
            if busy(&entries[&f], now) {
                b.findings.push(warn(format!(
                    "{f} was written less than {BUSY_SECS} s ago: is the copy still running?"
                )));
            }
            b.files.push(f);
        }
    }
    let cert = format!("{stem}.cert");
    if entries.contains_key(&cert) {
        b.files.push(cert);
    }
    let mf = format!("{stem}.mf");
    let Some(m) = entries.get(&mf) else {
        b.findings.push(warn(
            "no .mf manifest: file digests cannot be checked".into(),
        ));
        return Ok(b);
    };
    b.files.push(mf.clone());
    b.bytes += m.size;
    if m.size > MAX_TEXT {
        b.findings
            .push(err(format!("{mf} is too large to be a manifest")));
        return Ok(b);
    }
    let lines = match String::from_utf8(read_all(store, m.id, m.size)?)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(|t| parse_mf(&t))
    {
        Ok(l) => l,
        Err(why) => {
            b.findings.push(err(format!("manifest {mf}: {why}")));
            return Ok(b);
        }
    };
    for l in lines {
        let Some(target) = resolve(dir, &l.file) else {
            b.findings.push(err(format!(
                "manifest names {:?}, outside the bundle",
                l.file
            )));
            continue;
        };
        let Some(t) = entries.get(&target).filter(|t| t.kind == Kind::File) else {
            b.findings
                .push(err(format!("manifest names {target}, which is missing")));
            continue;
        };
        match file_digest(store, t.id, &l.algorithm, 0, t.size) {
            Ok(None) => b.findings.push(warn(format!(
                "manifest uses {} for {target}, which this appliance cannot check",
                l.algorithm
            ))),
            Ok(Some(got)) if got == l.digest => b.digests_checked += 1,
            Ok(Some(got)) => b.findings.push(err(format!(
                "{target}: {} digest is {got}, the manifest says {} (corrupt or incomplete copy)",
                l.algorithm, l.digest
            ))),
            Err(e) => match e.kind() {
                ErrorKind::Store(StoreError::Damaged {
                    start, end, why, ..
                }) => b.findings.push(err(format!(
                    "{target}: bytes {start}..{end} are damaged on the appliance: {why}"
                ))),
                _ => return Err(e),
            },
        }
    }
    Ok(b)
}

/// An OVA is a tar archive whose first member is the descriptor; checks the archive's
/// structure, the descriptor, declared sizes and `.mf` digests of the members.
fn check_ova(store: &Store, path: &str, e: &Entry, now: Time) -> Result<BundleCheck> {
    let mut b = BundleCheck::new(path, e.size);
    if busy(e, now) {
        b.findings.push(warn(format!(
            "{path} was written less than {BUSY_SECS} s ago: is the export still running?"
        )));
    }
    let members = match ova_members(store, e.id, e.size)? {
        Ok(m) => m,
        Err(why) => {
            b.findings.push(err(format!("{path}: {why}")));
            return Ok(b);
        }
    };
    let Some(Member {
        name: first,
        offset: off,
        size,
    }) = members.first().cloned()
    else {
        b.findings.push(err(format!("{path} holds no files")));
        return Ok(b);
    };
    if !first.to_ascii_lowercase().ends_with(".ovf") {
        b.findings.push(err(format!(
            "{path}: the first member is {first:?}, not the .ovf descriptor"
        )));
        return Ok(b);
    }
    if size > MAX_TEXT {
        b.findings
            .push(err(format!("{path}: descriptor too large")));
        return Ok(b);
    }
    let (desc, _) = store.read(e.id, off, size as u32)?;
    let refs = match std::str::from_utf8(&desc)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(parse_descriptor)
    {
        Ok(r) => r,
        Err(why) => {
            b.findings
                .push(err(format!("descriptor {first} in {path}: {why}")));
            return Ok(b);
        }
    };
    let member_size = |name: &str| members.iter().find(|m| m.name == name).map(|m| m.size);
    for r in &refs {
        if let Err(why) = r.gzip() {
            b.findings.push(err(format!("{path}: {why}")));
        }
        let content = content_files(&r.href, r, member_size);
        b.findings.extend(
            content
                .problems
                .into_iter()
                .map(|p| err(format!("{path}: {}", p.replace("file ", "member ")))),
        );
    }
    if let Some(mf) = members
        .iter()
        .find(|m| m.name.to_ascii_lowercase().ends_with(".mf"))
    {
        let (text, _) = store.read(e.id, mf.offset, mf.size.min(MAX_TEXT) as u32)?;
        match String::from_utf8(text)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| parse_mf(&t))
        {
            Err(why) => b
                .findings
                .push(err(format!("{path}: manifest {}: {why}", mf.name))),
            Ok(lines) => {
                for l in lines {
                    let Some(m) = members.iter().find(|m| m.name == l.file) else {
                        b.findings.push(err(format!(
                            "{path}: manifest names missing member {}",
                            l.file
                        )));
                        continue;
                    };
                    let got = file_digest(store, e.id, &l.algorithm, m.offset, m.size)?;
                    match got {
                        None => b.findings.push(warn(format!(
                            "{path}: cannot check {} digests",
                            l.algorithm
                        ))),
                        Some(g) if g == l.digest => b.digests_checked += 1,
                        Some(g) => b.findings.push(err(format!(
                            "{path}: member {}: {} digest is {g}, the manifest says {}",
                            l.file, l.algorithm, l.digest
                        ))),
                    }
                }
            }
        }
    } else {
        b.findings.push(warn(format!(
            "{path} has no .mf manifest: digests cannot be checked"
        )));
    }
    Ok(b)
}

/// A store file as a seekable byte stream (for the tar reader).
struct StoreFile<'a> {
    store: &'a Store,
    id: u64,
    size: u64,
    pos: u64,
}

impl std::io::Read for StoreFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64)
            .min(self.size.saturating_sub(self.pos))
            .min(1 << 20);
        if n == 0 {
            return Ok(0);
        }
        let (b, _) = self
            .store
            .read(self.id, self.pos, n as u32)
            .map_err(std::io::Error::other)?;
        buf[..b.len()].copy_from_slice(&b);
        self.pos += b.len() as u64;
        Ok(b.len())
    }
}

impl std::io::Seek for StoreFile<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// The members of the OVA archive in file `id` (`size` bytes), read through the tar
/// headers only. `Ok(Err(why))` if the archive is not a valid tar (truncated, a damaged
/// header); `Err` for a store error, such as a damaged record under a header.
pub fn ova_members(
    store: &Store,
    id: u64,
    size: u64,
) -> Result<std::result::Result<Vec<Member>, String>> {
    let file = StoreFile {
        store,
        id,
        size,
        pos: 0,
    };
    match tar_members(file) {
        Ok(m) => Ok(Ok(m)),
        Err(e) => match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(store_error)) => Err(*store_error),
            Some(Err(other)) => Ok(Err(format!(
                "not a valid tar archive (truncated or damaged?): {other}"
            ))),
            None => Ok(Err("not a valid tar archive".into())),
        },
    }
}

/// Hex digest of `size` bytes at `off` of file `id` with a `.mf` algorithm; `None` if the
/// algorithm is not one we know.
fn file_digest(
    store: &Store,
    id: u64,
    algorithm: &str,
    off: u64,
    size: u64,
) -> Result<Option<String>> {
    if off == 0
        && algorithm == "SHA256"
        && let Some(d) = Tracker::of(store).and_then(|t| t.sha256(id, size))
    {
        return Ok(Some(hex::encode(d)));
    }
    let mut h: Box<dyn sha2::digest::DynDigest> = match algorithm {
        "SHA1" => Box::new(sha1::Sha1::new()),
        "SHA256" => Box::new(sha2::Sha256::new()),
        "SHA512" => Box::new(sha2::Sha512::new()),
        _ => return Ok(None),
    };
    let mut at = 0;
    while at < size {
        let n = (size - at).min(4 << 20) as u32;
        let (b, _) = store.read(id, off + at, n)?;
        if b.is_empty() {
            break;
        }
        h.update(&b);
        at += b.len() as u64;
    }
    Ok(Some(hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_cannot_escape() {
        assert_eq!(
            resolve("vm1", "disk.vmdk").as_deref(),
            Some("vm1/disk.vmdk")
        );
        assert_eq!(
            resolve("vm1", "../vm2/disk.vmdk").as_deref(),
            Some("vm2/disk.vmdk")
        );
        assert_eq!(resolve("", "../x"), None);
        assert_eq!(resolve("vm1", "/etc/passwd"), None);
        assert_eq!(resolve("vm1", "http://example.org/disk"), None);
    }
}

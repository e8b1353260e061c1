//! VM bundles: finding OVF packages (`.ovf` descriptor, the files its References section
//! names, optional `.mf` digests and `.cert`) and `.ova` archives in the store, and checking
//! them before the seal — referenced files present with the declared sizes, `.mf` digests
//! right, nothing still being written — so a customer hears of a broken export while it can
//! still be fixed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::engine::Store;
use crate::error::{ErrorKind, Result, StoreError};
use crate::format::journal::{Kind, SealedBundle, Time};
use crate::trip::bundle_digests::Tracker;

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
    pub severity: Severity,
    pub message: String,
}

/// One bundle and what the check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCheck {
    /// Path of the descriptor (`.ovf` or `.ova`) from the root.
    pub path: String,
    /// Files of the bundle (descriptor, referenced files, manifest, certificate).
    pub files: Vec<String>,
    pub bytes: u64,
    /// Whether a `.mf` manifest was found and every digest in it checked.
    pub digests_checked: u32,
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

struct Entry {
    id: u64,
    kind: Kind,
    size: u64,
    mtime: Time,
}

/// Checks every bundle. `now` decides what counts as still being written.
pub fn check(store: &Store, now: Time) -> Result<BundleReport> {
    let view = store.view();
    let root = view.root().id();
    let entries: BTreeMap<String, Entry> = view
        .entries()
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
        .collect();
    drop(view);
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

/// A file reference in a descriptor: href and declared size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub href: String,
    pub size: Option<u64>,
}

/// Parses an OVF descriptor's References section.
pub fn parse_descriptor(text: &str) -> std::result::Result<Vec<Reference>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not valid XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return Err(format!(
            "the root element is <{}>, not an OVF <Envelope>",
            root.tag_name().name()
        ));
    }
    let attr = |n: roxmltree::Node, name: &str| {
        n.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value().to_string())
    };
    let mut refs = Vec::new();
    for r in root
        .children()
        .filter(|n| n.tag_name().name() == "References")
    {
        for f in r.children().filter(|n| n.tag_name().name() == "File") {
            let href = attr(f, "href").ok_or("a <File> in References has no href")?;
            let size = match attr(f, "size") {
                None => None,
                Some(s) => Some(s.trim().parse::<u64>().map_err(|_| {
                    format!("file {href:?} has a size that is not a number: {s:?}")
                })?),
            };
            refs.push(Reference { href, size });
        }
    }
    Ok(refs)
}

/// One line of a `.mf`: algorithm, file name, expected hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfEntry {
    pub algorithm: String,
    pub file: String,
    pub digest: String,
}

/// Parses a `.mf` manifest (`SHA256(disk.vmdk)= abc…` per line).
pub fn parse_mf(text: &str) -> std::result::Result<Vec<MfEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("line {} is not `ALGO(file)= digest`: {line:?}", n + 1);
        let open = line.find('(').ok_or_else(bad)?;
        let close = line.rfind(")=").ok_or_else(bad)?;
        if close < open {
            return Err(bad());
        }
        out.push(MfEntry {
            algorithm: line[..open].trim().to_ascii_uppercase(),
            file: line[open + 1..close].to_string(),
            digest: line[close + 2..].trim().to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// Joins a descriptor-relative href to the descriptor's directory; refuses escapes.
fn resolve(dir: &str, href: &str) -> Option<String> {
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
        match entries.get(&target) {
            None => b.findings.push(err(format!(
                "missing file {target} (named in the descriptor)"
            ))),
            Some(t) if t.kind != Kind::File => b
                .findings
                .push(err(format!("{target} is not a regular file"))),
            Some(t) => {
                b.files.push(target.clone());
                b.bytes += t.size;
                if let Some(want) = r.size
                    && want != t.size
                {
                    b.findings.push(err(format!(
                        "{target} has {} bytes but the descriptor declares {want} \
                         ({}: truncated or still being copied?)",
                        t.size,
                        if t.size < want { "short" } else { "too long" }
                    )));
                }
                if busy(t, now) {
                    b.findings.push(warn(format!(
                        "{target} was written less than {BUSY_SECS} s ago: is the copy still running?"
                    )));
                }
            }
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
    // Walk the ustar headers: name at 0..100, size (octal) at 124..136.
    let mut members: Vec<(String, u64, u64)> = Vec::new();
    let mut at = 0u64;
    loop {
        if at + 512 > e.size {
            b.findings.push(err(format!(
                "{path} ends inside the tar archive at byte {at} (truncated?)"
            )));
            break;
        }
        let (h, _) = store.read(e.id, at, 512)?;
        if h.iter().all(|&x| x == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_txt = String::from_utf8_lossy(&h[124..136])
            .trim_matches(|c: char| c == '\0' || c == ' ')
            .to_string();
        let Ok(size) = u64::from_str_radix(&size_txt, 8) else {
            b.findings
                .push(err(format!("{path}: tar header at byte {at} is damaged")));
            break;
        };
        members.push((name, at + 512, size));
        at += 512 + size.div_ceil(512) * 512;
    }
    let Some((first, off, size)) = members.first().cloned() else {
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
    for r in &refs {
        match members.iter().find(|m| m.0 == r.href) {
            None => b.findings.push(err(format!(
                "{path}: missing member {} (named in the descriptor)",
                r.href
            ))),
            Some(m) => {
                if let Some(want) = r.size
                    && want != m.2
                {
                    b.findings.push(err(format!(
                        "{path}: member {} has {} bytes but the descriptor declares {want}",
                        r.href, m.2
                    )));
                }
            }
        }
    }
    if let Some(mf) = members
        .iter()
        .find(|m| m.0.to_ascii_lowercase().ends_with(".mf"))
    {
        let (text, _) = store.read(e.id, mf.1, mf.2.min(MAX_TEXT) as u32)?;
        match String::from_utf8(text)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| parse_mf(&t))
        {
            Err(why) => b
                .findings
                .push(err(format!("{path}: manifest {}: {why}", mf.0))),
            Ok(lines) => {
                for l in lines {
                    let Some(m) = members.iter().find(|m| m.0 == l.file) else {
                        b.findings.push(err(format!(
                            "{path}: manifest names missing member {}",
                            l.file
                        )));
                        continue;
                    };
                    let got = file_digest(store, e.id, &l.algorithm, m.1, m.2)?;
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
    fn descriptor_and_manifest_parsing() {
        let ovf = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="68608"/>
    <File ovf:href="vm.nvram" ovf:id="file2"/>
  </References>
</Envelope>"#;
        let r = parse_descriptor(ovf).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Reference {
                href: "vm-disk1.vmdk".into(),
                size: Some(68608)
            }
        );
        assert_eq!(r[1].size, None);
        assert!(
            parse_descriptor("<Envelope><References>")
                .unwrap_err()
                .contains("not valid XML")
        );
        assert!(
            parse_descriptor("<html/>")
                .unwrap_err()
                .contains("not an OVF")
        );
        let mf = parse_mf("SHA256(vm.ovf)= ABCDEF\nSHA1(a b.vmdk)= 0123\n").unwrap();
        assert_eq!(mf[0].algorithm, "SHA256");
        assert_eq!(mf[0].digest, "abcdef");
        assert_eq!(mf[1].file, "a b.vmdk");
        assert!(parse_mf("garbage").is_err());
    }

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

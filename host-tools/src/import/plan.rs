//! What to import from a sealed device: one VM per OVF bundle (an `.ovf` with its files, or
//! an `.ova`), each with its descriptor, the store files to read front to back, and the
//! byte ranges of those files that make up each file the descriptor references.

use std::collections::{BTreeMap, HashMap};

use odt_store::Store;
use odt_store::format::journal::Kind;
use odt_store::trip::bundle::{Entry, content_files, entries, ova_members, resolve};
use odt_store::trip::ovf::{Envelope, STREAM_OPTIMIZED, parse_envelope};

use super::ImportError;

/// Largest descriptor read into memory.
const MAX_DESCRIPTOR: u64 = 16 << 20;

/// A store file read whole, its BLAKE3 root compared with the sealed one.
#[derive(Debug, Clone)]
pub struct Source {
    /// File id in the store.
    pub id: u64,
    /// Path on the device.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The BLAKE3 root the seal's manifest holds for it.
    pub root: [u8; 32],
}

/// Part of a source that belongs to a referenced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Index into [`Bundle::sources`].
    pub source: usize,
    /// Offset in that source.
    pub start: u64,
    /// Bytes.
    pub len: u64,
}

/// A file the descriptor references, as the ranges of sources holding it.
#[derive(Debug, Clone)]
pub struct Item {
    /// The name the descriptor's References give it.
    pub href: String,
    /// Where its bytes are, in order.
    pub ranges: Vec<Range>,
    /// Stored gzip-compressed (`ovf:compression="gzip"`): decompressed on the way.
    pub gzip: bool,
    /// The DiskSection's format when this file is a disk.
    pub disk_format: Option<String>,
}

impl Item {
    /// Bytes as stored (compressed, if gzip).
    pub fn stored_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// Why this disk cannot be uploaded as it is, if so.
    pub fn unsupported(&self) -> Option<String> {
        match self.disk_format.as_deref() {
            Some(STREAM_OPTIMIZED) | None => None,
            Some(f) => Some(format!(
                "disk {} has format {f}, which an import cannot upload (only streamOptimized \
                 VMDKs): use `odt ingest --to DIR` and convert it there",
                self.href
            )),
        }
    }
}

/// One bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Path of the `.ovf` or `.ova` on the device.
    pub path: String,
    /// The OVF descriptor's text.
    pub descriptor: String,
    /// What was parsed from it.
    pub envelope: Envelope,
    /// The files read, in the order they are read.
    pub sources: Vec<Source>,
    /// Every file the descriptor references.
    pub items: Vec<Item>,
    /// BLAKE3 over the bundle's files and their sealed roots: what the VM is marked with.
    pub digest: String,
    /// Reasons the bundle cannot be imported (it is refused, not attempted).
    pub problems: Vec<String>,
    /// Damage found on the device while reading the descriptor or the OVA's headers (the
    /// bundle is quarantined before anything is sent to vCenter).
    pub damage: Option<String>,
}

impl Bundle {
    /// The VM's name: the VirtualSystem's Name, else its ovf:id.
    pub fn vm_name(&self) -> Option<&str> {
        self.envelope.vm_name.as_deref()
    }

    /// The referenced file named `href`.
    pub fn item(&self, href: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.href == href)
    }
}

/// Reads `size` bytes at `off` of file `id`. Every record is opened with its tag and its
/// plaintext compared with the digest the journal recorded for it; the seal signs that
/// journal's hash, so what this returns is what was sealed.
fn read_text(store: &Store, id: u64, off: u64, size: u64) -> Result<Vec<u8>, odt_store::Error> {
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let n = (size - out.len() as u64).min(1 << 20) as u32;
        let (b, _) = store.read(id, off + out.len() as u64, n)?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Finds the bundles (in path order); `wanted` keeps only those whose path or VM name is
/// listed (all if empty). Bundles whose files the seal does not cover are refused.
pub fn build(
    store: &Store,
    roots: &HashMap<u64, [u8; 32]>,
    wanted: &[String],
) -> Result<Vec<Bundle>, ImportError> {
    let entries = entries(store);
    let mut out = Vec::new();
    for (path, e) in &entries {
        if e.kind != Kind::File {
            continue;
        }
        let lower = path.to_ascii_lowercase();
        let b = if lower.ends_with(".ovf") {
            folder_bundle(store, roots, &entries, path, e)?
        } else if lower.ends_with(".ova") {
            ova_bundle(store, roots, path, e)?
        } else {
            continue;
        };
        let keep = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| *w == b.path || Some(w.as_str()) == b.vm_name());
        if keep {
            out.push(b);
        }
    }
    for w in wanted {
        if !out
            .iter()
            .any(|b| *w == b.path || Some(w.as_str()) == b.vm_name())
        {
            return Err(ImportError::Usage(format!(
                "--bundle {w:?} names no bundle on the device (give the path of its .ovf or \
                 .ova, or its VM name)"
            )));
        }
    }
    Ok(out)
}

fn new_bundle(path: &str) -> Bundle {
    Bundle {
        path: path.to_string(),
        descriptor: String::new(),
        envelope: Envelope::default(),
        sources: Vec::new(),
        items: Vec::new(),
        digest: String::new(),
        problems: Vec::new(),
        damage: None,
    }
}

/// A read's result; damage on the device goes into the bundle (which is then quarantined)
/// instead of stopping the import.
fn undamaged<T>(b: &mut Bundle, r: Result<T, odt_store::Error>) -> Result<Option<T>, ImportError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if matches!(
                e.kind(),
                odt_store::error::ErrorKind::Store(odt_store::error::StoreError::Damaged { .. })
            ) =>
        {
            b.damage = Some(e.to_string());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn source(
    roots: &HashMap<u64, [u8; 32]>,
    path: &str,
    id: u64,
    size: u64,
) -> Result<Source, String> {
    let root = roots
        .get(&id)
        .ok_or_else(|| format!("{path} is not in the seal's manifest (written after the seal?)"))?;
    Ok(Source {
        id,
        path: path.to_string(),
        size,
        root: *root,
    })
}

/// Parses the descriptor text; on failure the bundle gets the problem.
fn descriptor(b: &mut Bundle, text: Vec<u8>, name: &str) -> bool {
    match String::from_utf8(text)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(|t| parse_envelope(&t).map(|e| (t, e)))
    {
        Ok((t, e)) => {
            b.descriptor = t;
            b.envelope = e;
            if b.envelope.vm_name.is_none() {
                b.problems.push(format!(
                    "descriptor {name} has no single VirtualSystem (a vApp of several VMs?): \
                     import it with ovftool from `odt ingest --to DIR`"
                ));
            }
            true
        }
        Err(why) => {
            b.problems.push(format!("descriptor {name}: {why}"));
            false
        }
    }
}

/// Whether a reference is gzip-compressed; None (and a problem) if it uses another
/// compression.
fn gzip_of(b: &mut Bundle, r: &odt_store::trip::ovf::Reference) -> Option<bool> {
    r.gzip().map_err(|why| b.problems.push(why)).ok()
}

fn item(b: &Bundle, href: &str, ranges: Vec<Range>, gzip: bool) -> Item {
    Item {
        href: href.to_string(),
        ranges,
        gzip,
        disk_format: b
            .envelope
            .disk_of(href)
            .map(|d| d.format.clone().unwrap_or_default()),
    }
}

/// The digest the VM carries: BLAKE3 over `path NUL root` of every file, in read order.
fn digest(parts: &[(String, [u8; 32])]) -> String {
    let mut h = blake3::Hasher::new();
    for (p, r) in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
        h.update(r);
    }
    h.finalize().to_hex()[..32].to_string()
}

fn folder_bundle(
    store: &Store,
    roots: &HashMap<u64, [u8; 32]>,
    entries: &BTreeMap<String, Entry>,
    path: &str,
    e: &Entry,
) -> Result<Bundle, ImportError> {
    let mut b = new_bundle(path);
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    if e.size > MAX_DESCRIPTOR {
        b.problems
            .push(format!("{path} is too large to be an OVF descriptor"));
        return Ok(b);
    }
    let Some(text) = undamaged(&mut b, read_text(store, e.id, 0, e.size))? else {
        return Ok(b);
    };
    let mut parts = Vec::new();
    match roots.get(&e.id) {
        Some(r) if *r == *blake3::hash(&text).as_bytes() => parts.push((path.to_string(), *r)),
        Some(_) => b.problems.push(format!(
            "{path}: its content does not hash to the root the seal recorded"
        )),
        None => b.problems.push(format!(
            "{path} is not in the seal's manifest (written after the seal?)"
        )),
    }
    if !descriptor(&mut b, text, path) {
        return Ok(b);
    }
    for r in b.envelope.references.clone() {
        let Some(gzip) = gzip_of(&mut b, &r) else {
            continue;
        };
        let Some(target) = resolve(dir, &r.href) else {
            b.problems
                .push(format!("reference {:?} points outside the bundle", r.href));
            continue;
        };
        let content = content_files(&target, &r, |p| {
            entries
                .get(p)
                .filter(|t| t.kind == Kind::File)
                .map(|t| t.size)
        });
        b.problems.extend(content.problems);
        let mut ranges = Vec::new();
        for (f, size) in content.files {
            let id = entries[&f].id;
            match source(roots, &f, id, size) {
                Ok(s) => {
                    parts.push((f.clone(), s.root));
                    b.sources.push(s);
                    ranges.push(Range {
                        source: b.sources.len() - 1,
                        start: 0,
                        len: size,
                    });
                }
                Err(why) => b.problems.push(why),
            }
        }
        let it = item(&b, &r.href, ranges, gzip);
        b.items.push(it);
    }
    b.digest = digest(&parts);
    Ok(b)
}

fn ova_bundle(
    store: &Store,
    roots: &HashMap<u64, [u8; 32]>,
    path: &str,
    e: &Entry,
) -> Result<Bundle, ImportError> {
    let mut b = new_bundle(path);
    match source(roots, path, e.id, e.size) {
        Ok(s) => {
            b.digest = digest(&[(path.to_string(), s.root)]);
            b.sources.push(s);
        }
        Err(why) => {
            b.problems.push(why);
            return Ok(b);
        }
    }
    let members = match undamaged(&mut b, ova_members(store, e.id, e.size))? {
        None => return Ok(b),
        Some(Ok(m)) => m,
        Some(Err(why)) => {
            b.problems.push(format!("{path}: {why}"));
            return Ok(b);
        }
    };
    let Some(first) = members.first() else {
        b.problems.push(format!("{path} holds no files"));
        return Ok(b);
    };
    if !first.name.to_ascii_lowercase().ends_with(".ovf") || first.size > MAX_DESCRIPTOR {
        b.problems.push(format!(
            "{path}: the first member is {:?}, not an OVF descriptor",
            first.name
        ));
        return Ok(b);
    }
    // The descriptor is checked record by record here, before it is sent to vCenter; the
    // OVA's whole-file root is compared only once the upload has read all of it.
    let Some(text) = undamaged(&mut b, read_text(store, e.id, first.offset, first.size))? else {
        return Ok(b);
    };
    let name = format!("{} in {path}", first.name);
    if !descriptor(&mut b, text, &name) {
        return Ok(b);
    }
    for r in b.envelope.references.clone() {
        let Some(gzip) = gzip_of(&mut b, &r) else {
            continue;
        };
        let content = content_files(&r.href, &r, |n| {
            members.iter().find(|m| m.name == n).map(|m| m.size)
        });
        b.problems
            .extend(content.problems.into_iter().map(|p| format!("{path}: {p}")));
        let ranges = content
            .files
            .iter()
            .filter_map(|(n, _)| members.iter().find(|m| m.name == *n))
            .map(|m| Range {
                source: 0,
                start: m.offset,
                len: m.size,
            })
            .collect();
        let it = item(&b, &r.href, ranges, gzip);
        b.items.push(it);
    }
    Ok(b)
}

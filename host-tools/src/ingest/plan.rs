//! What the ingest will write: the device's tree mapped to safe datastore paths, the VM
//! bundles in it, and every entry that is refused or renamed, with the reason.
//!
//! The plan is a snapshot of the (read-only) namespace; workers never touch the namespace
//! again except to read file bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use odt_store::engine::{Entry, ROOT, View};
use odt_store::format::journal::{Kind, Time};
use odt_store::format::tree_hash;
use serde::Serialize;

use super::safe_path::{self, Verdict};

/// Name of the ingest's own directory at the datastore root.
pub const STATE_DIR: &str = ".odt-ingest";
/// Deepest directory nesting accepted (a hostile journal could nest without end).
pub const MAX_DEPTH: usize = 512;

/// A directory to create.
#[derive(Debug, Clone)]
pub struct PlannedDir {
    /// Its id in the store.
    pub id: u64,
    /// Components from the datastore root (safe names).
    pub rel: Vec<OsString>,
    /// Permission bits.
    pub mode: u32,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
}

/// A regular file to write.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// Its id in the store.
    pub id: u64,
    /// Components from the datastore root (safe names); the last is the file's name.
    pub rel: Vec<OsString>,
    /// The path on the device, printable.
    pub device_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
    /// File ranges `(offset, len)` backed by records; everything else is a hole.
    pub data: Vec<(u64, u64)>,
    /// The record behind each range of `data`.
    pub recs: Vec<RecInfo>,
    /// Hash of the file's size, mode, times and extent map: a resumed ingest redoes a file
    /// whose fingerprint changed.
    pub fingerprint: [u8; 32],
}

impl PlannedFile {
    /// Bytes backed by records (what is read and written; holes are not).
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|(_, l)| l).sum()
    }

    /// The datastore path relative to its root, printable.
    pub fn rel_display(&self) -> String {
        rel_display(&self.rel)
    }

    /// The records behind `[off, off+len)`.
    pub fn records(&self, off: u64, len: u64) -> impl Iterator<Item = &RecInfo> + '_ {
        let first = self.data.partition_point(|(s, l)| s + l <= off);
        self.data[first..]
            .iter()
            .zip(&self.recs[first..])
            .take_while(move |((s, _), _)| *s < off + len)
            .map(|(_, r)| r)
    }

    /// The verified chaining value of the chunk at `chunk_start` if one record supplies that
    /// whole chunk and the file's root merges chunk values (so hashing it again can be
    /// skipped; see [`tree_hash`]).
    pub fn chunk_digest(&self, chunk_start: u64) -> Option<[u8; 32]> {
        if !tree_hash::chaining_value_counts(self.size, chunk_start) {
            return None;
        }
        let i = self.data.partition_point(|(s, _)| *s < chunk_start);
        let (s, l) = *self.data.get(i)?;
        let r = &self.recs[i];
        (s == chunk_start
            && tree_hash::record_is_chunk(s, l, chunk_start)
            && tree_hash::record_is_chunk(r.start, r.plain_len as u64, chunk_start))
        .then_some(r.digest)
    }

    /// Pieces of `[off, off+len)`: `(offset, len, backed_by_a_record)`.
    pub fn pieces(&self, off: u64, len: u64) -> Vec<(u64, u64, bool)> {
        let end = off + len;
        let mut out = Vec::new();
        let mut at = off;
        let first = self.data.partition_point(|(s, l)| s + l <= off);
        for &(s, l) in &self.data[first..] {
            if s >= end {
                break;
            }
            let (s, e) = (s.max(at), (s + l).min(end));
            if s > at {
                out.push((at, s - at, false));
            }
            out.push((s, e - s, true));
            at = e;
        }
        if at < end {
            out.push((at, end - at, false));
        }
        out
    }
}

/// Where a record is and what the journal says of it (for prefetching and to reuse its
/// verified digest; the store reads and checks the record itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecInfo {
    /// Device index.
    pub dev: u32,
    /// Byte address on that device.
    pub addr: u64,
    /// Bytes on the device (header and ciphertext).
    pub len: u32,
    /// File offset of the record's first plaintext byte.
    pub start: u64,
    /// Plaintext length of the whole record.
    pub plain_len: u32,
    /// The record's digest: for a record that is one whole chunk, the BLAKE3 chaining value
    /// of that chunk at its offset (the store checks it on every read).
    pub digest: [u8; 32],
}

/// A symbolic link to create.
#[derive(Debug, Clone)]
pub struct PlannedLink {
    /// Its id in the store.
    pub id: u64,
    /// Components from the datastore root (safe names); the last is the link's name.
    pub rel: Vec<OsString>,
    /// What the link points to, as stored (never followed).
    pub target: Vec<u8>,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
}

/// A further name of a file that has several (a hard link): made with `link` to the file's
/// first name once that is written, so the datastore keeps one copy as the device did.
#[derive(Debug, Clone)]
pub struct PlannedHardLink {
    /// The file.
    pub id: u64,
    /// This name's components from the datastore root (safe names).
    pub rel: Vec<OsString>,
    /// The file's first name (in path order), the one written with its bytes.
    pub target: Vec<OsString>,
    /// This name on the device, printable.
    pub device_path: String,
}

/// An entry that is not written, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    /// Path on the device (printable).
    pub path: String,
    /// Why it is not written, as one sentence.
    pub why: String,
    /// Entries below it that are skipped with it.
    pub entries_below: u64,
}

/// An entry written under another name, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Renaming {
    /// Path on the device (printable).
    pub device_path: String,
    /// The path it has in the datastore.
    pub datastore_path: String,
    /// Why it was renamed.
    pub why: String,
}

/// A VM bundle: a directory holding an `.ovf` descriptor, or an `.ova` archive.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bundle {
    /// Datastore path of the bundle's folder (or of the `.ova`).
    pub path: String,
    /// Descriptors found in it.
    pub descriptors: Vec<String>,
    /// Files in it.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// The whole plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Parents before children.
    pub dirs: Vec<PlannedDir>,
    /// Regular files, in path order, each once: under its first name in path order.
    pub files: Vec<PlannedFile>,
    /// The other names of files that have several.
    pub hard_links: Vec<PlannedHardLink>,
    /// Symbolic links.
    pub symlinks: Vec<PlannedLink>,
    /// Entries not written, and why.
    pub refused: Vec<Refusal>,
    /// Entries written under another name.
    pub renamed: Vec<Renaming>,
    /// The VM bundles found.
    pub bundles: Vec<Bundle>,
    /// For each file (same order as `files`), the index of its bundle.
    pub file_bundle: Vec<Option<usize>>,
}

/// Printable form of safe components.
pub fn rel_display(rel: &[OsString]) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|c| safe_path::display(c.as_bytes()))
        .collect();
    parts.join("/")
}

fn fingerprint(i: Entry<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("odt 2026 ingest file fingerprint");
    h.update(&i.id().to_le_bytes());
    h.update(&i.size().to_le_bytes());
    h.update(&i.mode().to_le_bytes());
    for t in [i.atime(), i.mtime()] {
        h.update(&t.secs.to_le_bytes());
        h.update(&t.nanos.to_le_bytes());
    }
    for (off, e) in i.extents() {
        h.update(&off.to_le_bytes());
        h.update(&e.len.to_le_bytes());
        h.update(&e.rec.generation.to_le_bytes());
        h.update(&e.rec.hash);
    }
    *h.finalize().as_bytes()
}

fn count_below(ns: &View, id: u64) -> u64 {
    let mut n = 0;
    let mut stack = vec![id];
    while let Some(d) = stack.pop() {
        if let Some(i) = ns.get(d) {
            for (_, c) in i.children() {
                n += 1;
                stack.push(c);
            }
        }
    }
    n
}

fn ext_lower(name: &[u8]) -> Option<String> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    Some(String::from_utf8_lossy(&name[dot + 1..]).to_ascii_lowercase())
}

/// Maps the namespace to datastore paths.
pub fn build(ns: &View) -> Plan {
    let mut plan = Plan::default();
    // (dir id, its safe components, its device path)
    let mut stack: Vec<(u64, Vec<OsString>, Vec<u8>)> = vec![(ROOT, Vec::new(), Vec::new())];
    while let Some((dir_id, rel, dev_path)) = stack.pop() {
        let Some(dir) = ns.get(dir_id) else { continue };
        let child_dev = |name: &[u8]| {
            let mut p = dev_path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        // Kept names first, so that a rewritten name never takes a name the device uses.
        let mut used: HashSet<OsString> = HashSet::new();
        let mut decided: Vec<(u64, Vec<u8>, OsString)> = Vec::new();
        let mut rewrites: Vec<(u64, Vec<u8>, OsString, String)> = Vec::new();
        for (name, id) in dir.children() {
            let verdict = if rel.is_empty() && name == STATE_DIR.as_bytes() {
                Verdict::Neutralised {
                    name: OsString::from(format!("%2E{}", &STATE_DIR[1..])),
                    why: "the name is reserved for the ingest's own state",
                }
            } else {
                safe_path::check_component(name)
            };
            match verdict {
                Verdict::Keep(n) => {
                    used.insert(n.clone());
                    decided.push((id, name.to_vec(), n));
                }
                Verdict::Neutralised { name: n, why } => {
                    rewrites.push((id, name.to_vec(), n, why.to_string()))
                }
                Verdict::Refused(why) => plan.refused.push(Refusal {
                    path: safe_path::display(&child_dev(name)),
                    why: why.to_string(),
                    entries_below: count_below(ns, id),
                }),
            }
        }
        for (id, raw, mut n, mut why) in rewrites {
            if used.contains(&n) {
                let base = n.clone();
                let mut k = 2;
                loop {
                    let mut cand = base.clone();
                    cand.push(format!("~{k}"));
                    if !used.contains(&cand) && cand.len() <= safe_path::MAX_COMPONENT {
                        n = cand;
                        why.push_str("; a suffix keeps it apart from another name");
                        break;
                    }
                    k += 1;
                    if k > 10_000 {
                        break;
                    }
                }
                if used.contains(&n) {
                    plan.refused.push(Refusal {
                        path: safe_path::display(&child_dev(&raw)),
                        why: "no free name for it once escaped".into(),
                        entries_below: count_below(ns, id),
                    });
                    continue;
                }
            }
            used.insert(n.clone());
            let mut r = rel.clone();
            r.push(n.clone());
            plan.renamed.push(Renaming {
                device_path: safe_path::display(&child_dev(&raw)),
                datastore_path: rel_display(&r),
                why,
            });
            decided.push((id, raw, n));
        }
        let mut descriptors_here = Vec::new();
        for (id, raw, n) in decided {
            let Some(i) = ns.get(id) else { continue };
            let mut r = rel.clone();
            r.push(n.clone());
            let dpath = child_dev(&raw);
            match i.kind() {
                Kind::Dir => {
                    if r.len() > MAX_DEPTH {
                        plan.refused.push(Refusal {
                            path: safe_path::display(&dpath),
                            why: format!("directories nest deeper than {MAX_DEPTH} levels"),
                            entries_below: count_below(ns, id),
                        });
                        continue;
                    }
                    plan.dirs.push(PlannedDir {
                        id,
                        rel: r.clone(),
                        mode: i.mode(),
                        atime: i.atime(),
                        mtime: i.mtime(),
                    });
                    stack.push((id, r, dpath));
                }
                Kind::File => {
                    match ext_lower(&raw).as_deref() {
                        Some("ovf") => descriptors_here.push(n.clone()),
                        Some("ova") => plan.bundles.push(Bundle {
                            path: rel_display(&r),
                            descriptors: vec![safe_path::display(n.as_bytes())],
                            files: 0,
                            bytes: 0,
                        }),
                        _ => {}
                    }
                    plan.files.push(PlannedFile {
                        id,
                        rel: r,
                        device_path: safe_path::display(&dpath),
                        size: i.size(),
                        mode: i.mode(),
                        atime: i.atime(),
                        mtime: i.mtime(),
                        data: i.extents().map(|(o, e)| (o, e.len)).collect(),
                        recs: i
                            .extents()
                            .map(|(_, e)| RecInfo {
                                dev: e.rec.loc.dev,
                                addr: e.rec.loc.addr,
                                len: e.rec.loc.len,
                                start: e.rec.start,
                                plain_len: e.rec.plain_len,
                                digest: e.rec.hash,
                            })
                            .collect(),
                        fingerprint: fingerprint(i),
                    });
                }
                Kind::Symlink => {
                    let depth = r.len() - 1;
                    match safe_path::check_symlink_target(depth, i.target()) {
                        Ok(()) => plan.symlinks.push(PlannedLink {
                            id,
                            rel: r,
                            target: i.target().to_vec(),
                            atime: i.atime(),
                            mtime: i.mtime(),
                        }),
                        Err(why) => plan.refused.push(Refusal {
                            path: format!(
                                "{} -> {}",
                                safe_path::display(&dpath),
                                safe_path::display(i.target())
                            ),
                            why: why.to_string(),
                            entries_below: 0,
                        }),
                    }
                }
            }
        }
        if !descriptors_here.is_empty() {
            descriptors_here.sort();
            plan.bundles.push(Bundle {
                // A bundle at the top of the share is named by the folder it is in: "/".
                path: if rel.is_empty() {
                    "/".to_string()
                } else {
                    rel_display(&rel)
                },
                descriptors: descriptors_here
                    .iter()
                    .map(|d| safe_path::display(d.as_bytes()))
                    .collect(),
                files: 0,
                bytes: 0,
            });
        }
    }
    plan.dirs
        .sort_by(|a, b| a.rel.len().cmp(&b.rel.len()).then(a.rel.cmp(&b.rel)));
    plan.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    split_hard_links(&mut plan);
    plan.symlinks.sort_by(|a, b| a.rel.cmp(&b.rel));
    plan.bundles.sort_by(|a, b| a.path.cmp(&b.path));
    assign_bundles(&mut plan);
    plan
}

/// Keeps each file once, under its first name, and turns its other names into hard links.
fn split_hard_links(plan: &mut Plan) {
    let mut first: HashMap<u64, Vec<OsString>> = HashMap::new();
    let files = std::mem::take(&mut plan.files);
    for f in files {
        match first.get(&f.id) {
            Some(target) => plan.hard_links.push(PlannedHardLink {
                id: f.id,
                rel: f.rel,
                target: target.clone(),
                device_path: f.device_path,
            }),
            None => {
                first.insert(f.id, f.rel.clone());
                plan.files.push(f);
            }
        }
    }
}

/// Each file belongs to the innermost bundle folder holding it (an `.ova` is its own).
fn assign_bundles(plan: &mut Plan) {
    let by_path: BTreeMap<String, usize> = plan
        .bundles
        .iter()
        .enumerate()
        .map(|(i, b)| (b.path.clone(), i))
        .collect();
    let mut out = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let mut found = None;
        for k in (0..=f.rel.len()).rev() {
            if let Some(&i) = by_path.get(&rel_display(&f.rel[..k])) {
                found = Some(i);
                break;
            }
        }
        if let Some(i) = found {
            plan.bundles[i].files += 1;
            plan.bundles[i].bytes += f.size;
        }
        out.push(found);
    }
    plan.file_bundle = out;
}

/// The last component of a planned path.
pub fn file_name(rel: &[OsString]) -> &OsStr {
    rel.last().map(|s| s.as_os_str()).unwrap_or(OsStr::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use odt_store::engine::namespace::Namespace;
    use odt_store::format::journal::{Loc, Op};

    fn create(ns: &mut Namespace, parent: u64, name: &[u8], kind: Kind, target: &[u8]) -> u64 {
        let id = ns.next_id();
        ns.apply(&Op::Create {
            id,
            parent,
            name: name.to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            time: Time::default(),
            target: target.to_vec(),
        })
        .unwrap();
        id
    }

    fn write(ns: &mut Namespace, id: u64, offset: u64, len: u32) {
        ns.apply(&Op::Write {
            id,
            offset,
            len,
            generation: 1,
            loc: Some(Loc {
                dev: 0,
                addr: 4096,
                len: len + 80,
            }),
            hash: [1; 32],
            time: Time::default(),
        })
        .unwrap();
    }

    #[test]
    fn a_file_with_several_names_is_written_once_and_linked_under_the_others() {
        let mut ns = Namespace::new();
        let a = create(&mut ns, ROOT, b"a", Kind::Dir, b"");
        let b = create(&mut ns, ROOT, b"b", Kind::Dir, b"");
        let f = create(&mut ns, b, b"data", Kind::File, b"");
        write(&mut ns, f, 0, 100);
        for (parent, name) in [(a, &b"one"[..]), (b, b"two"), (ROOT, b"z")] {
            ns.apply(&Op::Link {
                id: f,
                parent,
                name: name.to_vec(),
                time: Time::default(),
            })
            .unwrap();
        }
        let plan = build(&View::from(ns));

        let files: Vec<String> = plan.files.iter().map(|f| f.rel_display()).collect();
        assert_eq!(
            files,
            ["a/one"],
            "written once, under its first name in path order"
        );
        let links: Vec<(String, String)> = plan
            .hard_links
            .iter()
            .map(|l| (rel_display(&l.rel), rel_display(&l.target)))
            .collect();
        assert_eq!(
            links,
            [
                ("b/data".to_string(), "a/one".to_string()),
                ("b/two".to_string(), "a/one".to_string()),
                ("z".to_string(), "a/one".to_string()),
            ]
        );
    }

    /// The namespace applies ops without the store's name checks, so hostile names can be
    /// built here exactly as a forged journal would carry them.
    #[test]
    fn hostile_names_are_refused_or_renamed() {
        let mut ns = Namespace::new();
        let vm = create(&mut ns, ROOT, b"vm1", Kind::Dir, b"");
        create(&mut ns, vm, b"vm1.ovf", Kind::File, b"");
        create(&mut ns, vm, b"..", Kind::File, b"");
        create(&mut ns, vm, b"../../etc/passwd", Kind::File, b"");
        create(&mut ns, vm, b"/etc/shadow", Kind::File, b"");
        create(&mut ns, vm, b"nul\0byte", Kind::File, b"");
        create(&mut ns, vm, b"bad\xffname", Kind::File, b"");
        // An escaped name colliding with a real one gets a suffix.
        create(&mut ns, vm, b"bad%FFname", Kind::File, b"");
        create(&mut ns, vm, b"up", Kind::Symlink, b"../../etc");
        create(&mut ns, vm, b"abs", Kind::Symlink, b"/etc/passwd");
        create(&mut ns, vm, b"ok", Kind::Symlink, b"vm1.ovf");
        create(&mut ns, vm, b"..foo", Kind::File, b"");
        let evil = create(&mut ns, ROOT, b"a/b", Kind::Dir, b"");
        create(&mut ns, evil, b"inside", Kind::File, b"");
        create(&mut ns, ROOT, STATE_DIR.as_bytes(), Kind::File, b"");
        let plan = build(&View::from(ns));

        let files: Vec<String> = plan.files.iter().map(|f| f.rel_display()).collect();
        assert_eq!(
            files,
            [
                "%2Eodt-ingest",
                "vm1/..foo",
                "vm1/bad%FFname",
                "vm1/bad%FFname~2",
                "vm1/vm1.ovf"
            ]
        );
        let refused: Vec<&str> = plan.refused.iter().map(|r| r.path.as_str()).collect();
        for want in [
            "vm1/..",
            "vm1/../../etc/passwd",
            "vm1//etc/shadow",
            "vm1/nul\\u{0}byte",
            "vm1/up -> ../../etc",
            "vm1/abs -> /etc/passwd",
            "a/b",
        ] {
            assert!(refused.contains(&want), "{want} not refused: {refused:?}");
        }
        let a_b = plan.refused.iter().find(|r| r.path == "a/b").unwrap();
        assert_eq!(a_b.entries_below, 1);
        assert_eq!(plan.symlinks.len(), 1);
        assert_eq!(plan.bundles.len(), 1);
        assert_eq!(plan.bundles[0].path, "vm1");
        // Every planned component is a single safe name.
        for rel in plan
            .files
            .iter()
            .map(|f| &f.rel)
            .chain(plan.dirs.iter().map(|d| &d.rel))
        {
            for c in rel {
                let b = c.as_bytes();
                assert!(
                    !b.is_empty()
                        && b != b"."
                        && b != b".."
                        && !b.contains(&b'/')
                        && !b.contains(&0)
                );
            }
        }
    }

    #[test]
    fn escaped_name_taking_a_real_name_gets_a_suffix() {
        let mut ns = Namespace::new();
        create(&mut ns, ROOT, b"x\xff", Kind::File, b"");
        create(&mut ns, ROOT, b"x%FF", Kind::File, b"");
        let plan = build(&View::from(ns));
        let files: Vec<String> = plan.files.iter().map(|f| f.rel_display()).collect();
        assert_eq!(files, ["x%FF", "x%FF~2"]);
        assert_eq!(plan.renamed.len(), 1);
        assert_eq!(plan.renamed[0].datastore_path, "x%FF~2");
    }

    #[test]
    fn bundles_and_pieces() {
        let mut ns = Namespace::new();
        let a = create(&mut ns, ROOT, b"exports", Kind::Dir, b"");
        let vm = create(&mut ns, a, b"web", Kind::Dir, b"");
        create(&mut ns, vm, b"web.OVF", Kind::File, b"");
        let disk = create(&mut ns, vm, b"web-disk1.vmdk", Kind::File, b"");
        write(&mut ns, disk, 0, 100);
        write(&mut ns, disk, 1 << 20, 50);
        create(&mut ns, a, b"appliance.ova", Kind::File, b"");
        create(&mut ns, ROOT, b"README", Kind::File, b"");
        let plan = build(&View::from(ns));
        let paths: Vec<&str> = plan.bundles.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(paths, ["exports/appliance.ova", "exports/web"]);
        assert_eq!(plan.bundles[1].files, 2);
        assert_eq!(plan.bundles[1].bytes, (1 << 20) + 50);
        let d = plan.files.iter().find(|f| f.id == disk).unwrap();
        assert_eq!(d.data_bytes(), 150);
        assert_eq!(
            d.pieces(0, 2 << 20),
            vec![
                (0, 100, true),
                (100, (1 << 20) - 100, false),
                (1 << 20, 50, true),
                ((1 << 20) + 50, (1 << 20) - 50, false)
            ]
        );
        assert_eq!(d.pieces(50, 20), vec![(50, 20, true)]);
        assert_eq!(d.pieces(200, 20), vec![(200, 20, false)]);
        assert_eq!(d.records(0, 2 << 20).count(), 2);
        assert_eq!(d.records(1 << 20, 1).count(), 1);
        assert_eq!(d.records(200, 20).count(), 0);
        // Partial records never stand in for a chunk's hash.
        assert_eq!(d.chunk_digest(0), None);
        let readme = plan
            .files
            .iter()
            .position(|f| f.rel_display() == "README")
            .unwrap();
        assert_eq!(plan.file_bundle[readme], None);
        // Dirs come parents first.
        assert_eq!(rel_display(&plan.dirs[0].rel), "exports");
    }
}

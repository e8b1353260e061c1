//! The namespace: directories, files, symlinks, their attributes and each file's extent map.
//!
//! It lives in memory and is rebuilt at open by replaying the journal. Every change goes
//! through [`Namespace::apply`], both live and on replay, so the two cannot disagree; `apply`
//! validates before it mutates, so a refused op leaves no trace.

use std::collections::BTreeMap;

use crate::error::NamespaceError;
use crate::format::journal::{AttrChange, Kind, Op, Time};

mod image;
mod inode;
mod live;
mod segments;

/// Results of namespace operations.
pub type Result<T, E = NamespaceError> = std::result::Result<T, E>;

pub use image::Rebuild;
pub use inode::{Extent, Inode, RecRef};
pub use live::{LiveRecords, SegmentGeometry};
pub use segments::{DevSegments, Segments};

/// Id of the root directory (NFS reserves 0).
pub const ROOT: u64 = 1;
/// Longest symlink target accepted.
pub const MAX_SYMLINK: usize = 1024;
/// Longest name accepted.
pub const MAX_NAME: usize = 255;
/// Most names one file may have (its link count).
pub const MAX_LINKS: u32 = 65_000;

/// Checks a name given by a client.
pub fn check_name(name: &[u8]) -> Result<()> {
    let show = || String::from_utf8_lossy(name).into_owned();
    if name.is_empty() {
        return Err(NamespaceError::InvalidName {
            name: show(),
            why: "empty",
        });
    }
    if name.len() > MAX_NAME {
        return Err(NamespaceError::NameTooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(NamespaceError::InvalidName {
            name: show(),
            why: "reserved",
        });
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(NamespaceError::InvalidName {
            name: show(),
            why: "contains '/' or NUL",
        });
    }
    Ok(())
}

/// The whole namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    inodes: BTreeMap<u64, Inode>,
    next_id: u64,
    totals: Totals,
    live: LiveRecords,
    /// Highest session epoch seen.
    pub epoch: u32,
    /// The seal op, once the store is sealed.
    pub seal: Option<Op>,
    /// The custody log.
    pub custody: crate::format::journal::CustodyLog,
    /// Which segments of each device the log uses and which are free.
    segments: Segments,
}

/// Entries by kind and the sum of file sizes, kept up to date as ops apply (status and
/// FSSTAT read them without walking every inode under the store lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub file_bytes: u64,
}

impl Totals {
    /// Counts (or, with `add` false, uncounts) one inode. Wrapping, so adding and taking
    /// away stay exact inverses: sparse files may add up to more than 2^64 bytes (a sum
    /// that large wraps instead of aborting the appliance).
    fn count(&mut self, i: &Inode, add: bool) {
        let n = |v: &mut u64, by: u64| {
            *v = if add {
                v.wrapping_add(by)
            } else {
                v.wrapping_sub(by)
            }
        };
        match i.kind {
            Kind::File => {
                n(&mut self.files, 1);
                n(&mut self.file_bytes, i.size);
            }
            Kind::Dir => n(&mut self.dirs, 1),
            Kind::Symlink => n(&mut self.symlinks, 1),
        }
    }

    /// Totals of a walk over `inodes` (what the kept totals must equal).
    pub fn of<'a>(inodes: impl Iterator<Item = &'a Inode>) -> Totals {
        let mut t = Totals::default();
        for i in inodes {
            t.count(i, true);
        }
        t
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

fn mode_default(kind: Kind) -> u32 {
    match kind {
        Kind::Dir => 0o755,
        Kind::File => 0o644,
        Kind::Symlink => 0o777,
    }
}

impl Namespace {
    /// An empty namespace with its root directory.
    pub fn new() -> Namespace {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode::new(ROOT, Kind::Dir, ROOT, Vec::new(), 0o755, Time::default()),
        );
        Namespace {
            inodes,
            next_id: ROOT + 1,
            totals: Totals {
                dirs: 1,
                ..Totals::default()
            },
            live: LiveRecords::default(),
            epoch: 0,
            seal: None,
            custody: Default::default(),
            segments: Segments::default(),
        }
    }

    /// The id the next created entry gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Looks up an inode.
    pub fn get(&self, id: u64) -> Result<&Inode> {
        self.inodes.get(&id).ok_or(NamespaceError::NotFound)
    }

    /// All inodes, by id.
    pub fn inodes(&self) -> impl Iterator<Item = &Inode> {
        self.inodes.values()
    }

    /// Number of entries (root included).
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Finds `name` in directory `dir`.
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64> {
        let d = self.get(dir)?;
        if d.kind != Kind::Dir {
            return Err(NamespaceError::NotDir);
        }
        if name == b"." {
            return Ok(dir);
        }
        if name == b".." {
            return Ok(d.parent);
        }
        d.entries.get(name).copied().ok_or(NamespaceError::NotFound)
    }

    /// The path of an inode from the root, as bytes joined by `/` (root is empty).
    pub fn path(&self, id: u64) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut at = id;
        while at != ROOT {
            let Some(i) = self.inodes.get(&at) else { break };
            parts.push(i.name.clone());
            at = i.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    fn dir(&self, id: u64) -> Result<&Inode> {
        let d = self.get(id)?;
        if d.kind != Kind::Dir {
            return Err(NamespaceError::NotDir);
        }
        Ok(d)
    }

    /// The regular file `id` (a directory or symlink is an error saying so).
    pub fn file(&self, id: u64) -> Result<&Inode> {
        let f = self.get(id)?;
        match f.kind {
            Kind::File => Ok(f),
            Kind::Dir => Err(NamespaceError::IsDir),
            Kind::Symlink => Err(NamespaceError::Invalid("not a regular file".into())),
        }
    }

    fn is_ancestor(&self, anc: u64, mut id: u64) -> bool {
        loop {
            if id == anc {
                return true;
            }
            if id == ROOT {
                return false;
            }
            match self.inodes.get(&id) {
                Some(i) => id = i.parent,
                None => return false,
            }
        }
    }

    /// Checks that `op` can apply, then applies it.
    pub fn apply(&mut self, op: &Op) -> Result<()> {
        self.validate(op)?;
        // The one inode whose kind or size an op can create, change or remove is uncounted
        // before and counted again after.
        let touched = match op {
            Op::Create { id, .. }
            | Op::SetAttr { id, .. }
            | Op::Write { id, .. }
            | Op::Link { id, .. } => Some(*id),
            Op::Remove { parent, name, .. } => self.inodes[parent].entries.get(name).copied(),
            Op::Rename {
                to_parent, to_name, ..
            } => self.inodes[to_parent].entries.get(to_name).copied(),
            Op::Session { .. }
            | Op::Seal { .. }
            | Op::ChunkCv { .. }
            | Op::Custody { .. }
            | Op::Move { .. }
            | Op::SegmentOpened { .. }
            | Op::SegmentFreed { .. } => None,
        };
        let count = |ns: &mut Namespace, add: bool| {
            if let Some(i) = touched.and_then(|id| ns.inodes.get(&id)) {
                ns.totals.count(i, add);
            }
        };
        count(self, false);
        self.mutate(op);
        count(self, true);
        Ok(())
    }

    /// Entries by kind and bytes of all files.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The records some file's extents are served from.
    pub fn live(&self) -> &LiveRecords {
        &self.live
    }

    /// Starts counting live bytes per segment (see [`LiveRecords::set_segments`]).
    pub fn set_segment_geometry(&mut self, geometry: &[SegmentGeometry]) {
        self.live.set_segments(geometry);
    }

    /// Which segments the log uses and which are free.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    fn validate(&self, op: &Op) -> Result<()> {
        match op {
            Op::Session { .. } | Op::Custody { .. } => Ok(()),
            Op::Seal { .. } if self.seal.is_some() => Err(NamespaceError::Inconsistent(
                "the store is sealed twice".into(),
            )),
            Op::Seal { .. } => Ok(()),
            Op::Create {
                id, parent, name, ..
            } => {
                if self.inodes.contains_key(id) || *id == 0 {
                    return Err(NamespaceError::Inconsistent(format!(
                        "inode {id} created twice"
                    )));
                }
                if self.dir(*parent)?.entries.contains_key(name) {
                    return Err(NamespaceError::Exists);
                }
                Ok(())
            }
            Op::Remove { parent, name, .. } => {
                let id = *self
                    .dir(*parent)?
                    .entries
                    .get(name)
                    .ok_or(NamespaceError::NotFound)?;
                let i = self.get(id)?;
                if i.kind == Kind::Dir && !i.entries.is_empty() {
                    return Err(NamespaceError::NotEmpty);
                }
                Ok(())
            }
            Op::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
                ..
            } => {
                let src = *self
                    .dir(*from_parent)?
                    .entries
                    .get(from_name)
                    .ok_or(NamespaceError::NotFound)?;
                let to_dir = self.dir(*to_parent)?;
                let s = self.get(src)?;
                if s.kind == Kind::Dir && self.is_ancestor(src, *to_parent) {
                    return Err(NamespaceError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                if let Some(&dst) = to_dir.entries.get(to_name) {
                    if dst == src {
                        return Ok(());
                    }
                    let d = self.get(dst)?;
                    match (s.kind == Kind::Dir, d.kind == Kind::Dir) {
                        (true, false) => return Err(NamespaceError::NotDir),
                        (false, true) => return Err(NamespaceError::IsDir),
                        (true, true) if !d.entries.is_empty() => {
                            return Err(NamespaceError::NotEmpty);
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            Op::SetAttr { id, change, .. } => {
                let i = self.get(*id)?;
                if change.size.is_some() && i.kind != Kind::File {
                    return Err(if i.kind == Kind::Dir {
                        NamespaceError::IsDir
                    } else {
                        NamespaceError::Invalid("cannot resize a symlink".into())
                    });
                }
                Ok(())
            }
            Op::Write {
                id, offset, len, ..
            } => {
                self.file(*id)?;
                if offset.checked_add(*len as u64).is_none() {
                    return Err(NamespaceError::Invalid(
                        "write past the largest file offset".into(),
                    ));
                }
                Ok(())
            }
            Op::ChunkCv { id, .. } | Op::Move { id, .. } => self.file(*id).map(|_| ()),
            Op::SegmentOpened { dev, segment, .. } => {
                if self.segments.is_in_use(*dev, *segment) {
                    return Err(NamespaceError::Inconsistent(format!(
                        "segment {segment} of device {} opened twice",
                        dev + 1
                    )));
                }
                Ok(())
            }
            Op::SegmentFreed { dev, segment } => {
                if !self.segments.is_in_use(*dev, *segment) {
                    return Err(NamespaceError::Inconsistent(format!(
                        "segment {segment} of device {} freed but not in use",
                        dev + 1
                    )));
                }
                Ok(())
            }
            Op::Link {
                id, parent, name, ..
            } => {
                let i = self.get(*id)?;
                if i.kind == Kind::Dir {
                    return Err(NamespaceError::IsDir);
                }
                if i.links.len() + 1 >= MAX_LINKS as usize {
                    return Err(NamespaceError::Invalid(format!(
                        "a file has at most {MAX_LINKS} names"
                    )));
                }
                if self.dir(*parent)?.entries.contains_key(name) {
                    return Err(NamespaceError::Exists);
                }
                Ok(())
            }
        }
    }

    fn touch_dir(&mut self, id: u64, time: Time) {
        if let Some(d) = self.inodes.get_mut(&id) {
            d.mtime = time;
            d.ctime = time;
        }
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) {
        let id = self
            .inodes
            .get_mut(&parent)
            .and_then(|p| p.entries.remove(name));
        // A file with other names keeps its inode.
        if let Some(id) = id
            && self
                .inodes
                .get_mut(&id)
                .is_some_and(|i| i.drop_name(parent, name))
        {
            return;
        }
        let Some(i) = id.and_then(|id| self.inodes.remove(&id)) else {
            return;
        };
        for e in i.extents.values() {
            self.live.remove(e.rec.loc);
        }
        if i.kind == Kind::Dir
            && let Some(p) = self.inodes.get_mut(&parent)
        {
            p.subdirs -= 1;
        }
    }

    fn mutate(&mut self, op: &Op) {
        match op {
            Op::Session { epoch, .. } => self.epoch = self.epoch.max(*epoch),
            Op::Seal { .. } => self.seal = Some(op.clone()),
            Op::Custody { event } => self.custody.apply(event),
            Op::Create {
                id,
                parent,
                name,
                kind,
                mode,
                uid,
                gid,
                time,
                target,
            } => {
                let mut i = Inode::new(
                    *id,
                    *kind,
                    *parent,
                    name.clone(),
                    if *mode == 0 {
                        mode_default(*kind)
                    } else {
                        *mode
                    },
                    *time,
                );
                i.uid = *uid;
                i.gid = *gid;
                i.target = target.clone();
                if *kind == Kind::Symlink {
                    i.size = target.len() as u64;
                }
                self.inodes.insert(*id, i);
                let p = self.inodes.get_mut(parent).unwrap();
                p.entries.insert(name.clone(), *id);
                if *kind == Kind::Dir {
                    p.subdirs += 1;
                }
                self.touch_dir(*parent, *time);
                self.next_id = self.next_id.max(id + 1);
            }
            Op::Remove { parent, name, time } => {
                self.unlink(*parent, name);
                self.touch_dir(*parent, *time);
            }
            Op::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
                time,
            } => {
                let src = self.inodes[from_parent].entries[from_name];
                if self.inodes[to_parent].entries.get(to_name) == Some(&src) {
                    return;
                }
                if self.inodes[to_parent].entries.contains_key(to_name) {
                    self.unlink(*to_parent, to_name);
                }
                let is_dir = self.inodes[&src].kind == Kind::Dir;
                let from = self.inodes.get_mut(from_parent).unwrap();
                from.entries.remove(from_name);
                if is_dir {
                    from.subdirs -= 1;
                }
                let to = self.inodes.get_mut(to_parent).unwrap();
                to.entries.insert(to_name.clone(), src);
                if is_dir {
                    to.subdirs += 1;
                }
                let s = self.inodes.get_mut(&src).unwrap();
                s.move_name((*from_parent, from_name), (*to_parent, to_name));
                s.ctime = *time;
                self.touch_dir(*from_parent, *time);
                self.touch_dir(*to_parent, *time);
            }
            Op::SetAttr { id, change, time } => {
                let i = self.inodes.get_mut(id).unwrap();
                let AttrChange {
                    mode,
                    uid,
                    gid,
                    size,
                    atime,
                    mtime,
                } = change;
                if let Some(m) = mode {
                    i.mode = m & 0o7777;
                }
                if let Some(u) = uid {
                    i.uid = *u;
                }
                if let Some(g) = gid {
                    i.gid = *g;
                }
                if let Some(s) = size {
                    i.truncate(*s, &mut self.live);
                    i.mtime = *time;
                }
                if let Some(a) = atime {
                    i.atime = *a;
                }
                if let Some(m) = mtime {
                    i.mtime = *m;
                }
                i.ctime = *time;
            }
            Op::Write {
                id,
                offset,
                len,
                generation,
                loc,
                hash,
                time,
            } => {
                let i = self.inodes.get_mut(id).unwrap();
                let len = *len as u64;
                if len > 0 {
                    i.punch(*offset, offset + len, &mut self.live);
                    if let Some(loc) = loc {
                        self.live.add(*loc);
                        i.extents.insert(
                            *offset,
                            Extent {
                                len,
                                rec: RecRef {
                                    loc: *loc,
                                    start: *offset,
                                    plain_len: len as u32,
                                    hash: *hash,
                                    generation: *generation,
                                },
                            },
                        );
                    }
                }
                i.size = i.size.max(offset + len);
                i.mtime = *time;
                i.ctime = *time;
            }
            Op::ChunkCv { id, chunk, cv } => {
                let i = self.inodes.get_mut(id).unwrap();
                i.chunk_cvs.insert(*chunk, *cv);
            }
            Op::Move {
                id,
                start,
                from,
                to,
            } => {
                let i = self.inodes.get_mut(id).unwrap();
                // Records never cross a chunk, so the extents served from this one start
                // within one chunk of its first byte.
                let end = start.saturating_add(crate::format::record::MAX_PLAIN as u64);
                for e in i.extents.range_mut(*start..end).map(|(_, e)| e) {
                    if e.rec.loc == *from {
                        e.rec.loc = *to;
                        self.live.remove(*from);
                        self.live.add(*to);
                    }
                }
            }
            Op::SegmentOpened { dev, segment, seq } => self.segments.open(*dev, *segment, *seq),
            Op::SegmentFreed { dev, segment } => self.segments.release(*dev, *segment),
            Op::Link {
                id,
                parent,
                name,
                time,
            } => {
                self.inodes
                    .get_mut(parent)
                    .unwrap()
                    .entries
                    .insert(name.clone(), *id);
                let i = self.inodes.get_mut(id).unwrap();
                i.links.push((*parent, name.clone()));
                i.ctime = *time;
                self.touch_dir(*parent, *time);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::journal::Loc;

    fn loc(addr: u64) -> Option<Loc> {
        Some(Loc {
            dev: 0,
            addr,
            len: 100,
        })
    }

    fn write(ns: &mut Namespace, id: u64, offset: u64, len: u32, addr: u64) {
        ns.apply(&Op::Write {
            id,
            offset,
            len,
            generation: addr,
            loc: if addr == 0 { None } else { loc(addr) },
            hash: [0; 32],
            time: Time::now(),
        })
        .unwrap();
    }

    fn create(ns: &mut Namespace, parent: u64, name: &str, kind: Kind) -> u64 {
        let id = ns.next_id();
        ns.apply(&Op::Create {
            id,
            parent,
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            time: Time::now(),
            target: vec![],
        })
        .unwrap();
        id
    }

    #[test]
    fn overwrite_splits_extents() {
        let mut ns = Namespace::new();
        let f = create(&mut ns, ROOT, "f", Kind::File);
        write(&mut ns, f, 0, 100, 1000);
        write(&mut ns, f, 40, 20, 2000);
        let p = ns.get(f).unwrap().pieces(0, 100);
        let summary: Vec<(u64, u64, u64, u64)> = p
            .iter()
            .map(|(o, l, e)| {
                let e = e.unwrap();
                (*o, *l, e.rec.loc.addr, e.rec.start)
            })
            .collect();
        assert_eq!(
            summary,
            vec![(0, 40, 1000, 0), (40, 20, 2000, 40), (60, 40, 1000, 0)]
        );
        write(&mut ns, f, 50, 100, 0);
        let p = ns.get(f).unwrap().pieces(0, 150);
        assert_eq!(p.len(), 3);
        assert!(p[2].2.is_none() && p[2].0 == 50 && p[2].1 == 100);
        assert_eq!(ns.get(f).unwrap().size, 150);
    }

    #[test]
    fn records_die_with_the_last_extent_that_refers_to_them() {
        let mut ns = Namespace::new();
        let f = create(&mut ns, ROOT, "f", Kind::File);
        let g = create(&mut ns, ROOT, "g", Kind::File);
        let live = |ns: &Namespace| {
            assert_eq!(ns.live(), &LiveRecords::of(ns.inodes()), "kept = walked");
            ns.live()
                .within(0, 0, u64::MAX)
                .map(|(a, _)| a)
                .collect::<Vec<_>>()
        };
        write(&mut ns, f, 0, 100, 1000);
        write(&mut ns, f, 40, 20, 2000);
        write(&mut ns, g, 0, 10, 3000);
        assert_eq!(live(&ns), vec![1000, 2000, 3000]);
        assert_eq!(ns.live().bytes(), 300);
        // Both halves of the split record go; zeros written over the middle one.
        write(&mut ns, f, 0, 40, 4000);
        write(&mut ns, f, 60, 40, 0);
        assert_eq!(live(&ns), vec![2000, 3000, 4000]);
        // Truncating to inside an extent keeps its record.
        let t = Time::now();
        let size = |s| Op::SetAttr {
            id: f,
            change: AttrChange {
                size: Some(s),
                ..AttrChange::default()
            },
            time: t,
        };
        ns.apply(&size(50)).unwrap();
        assert_eq!(live(&ns), vec![2000, 3000, 4000]);
        ns.apply(&size(30)).unwrap();
        assert_eq!(live(&ns), vec![3000, 4000]);
        // A second name keeps the file's records; the last name's removal drops them.
        ns.apply(&Op::Link {
            id: g,
            parent: ROOT,
            name: b"g2".to_vec(),
            time: t,
        })
        .unwrap();
        let remove = |name: &str| Op::Remove {
            parent: ROOT,
            name: name.as_bytes().to_vec(),
            time: t,
        };
        ns.apply(&remove("g")).unwrap();
        assert_eq!(live(&ns), vec![3000, 4000]);
        // Renaming f over g2 removes g's last name.
        ns.apply(&Op::Rename {
            from_parent: ROOT,
            from_name: b"f".to_vec(),
            to_parent: ROOT,
            to_name: b"g2".to_vec(),
            time: t,
        })
        .unwrap();
        assert_eq!(live(&ns), vec![4000]);
        ns.apply(&remove("g2")).unwrap();
        assert_eq!(live(&ns), Vec::<u64>::new());
        assert_eq!(ns.live().bytes(), 0);
    }

    #[test]
    fn rename_rules() {
        let mut ns = Namespace::new();
        let d = create(&mut ns, ROOT, "d", Kind::Dir);
        let e = create(&mut ns, d, "e", Kind::Dir);
        let t = Time::now();
        let into_self = Op::Rename {
            from_parent: ROOT,
            from_name: b"d".to_vec(),
            to_parent: e,
            to_name: b"x".to_vec(),
            time: t,
        };
        assert!(matches!(
            ns.apply(&into_self),
            Err(NamespaceError::Invalid(_))
        ));
        let f = create(&mut ns, ROOT, "f", Kind::File);
        let over_dir = Op::Rename {
            from_parent: ROOT,
            from_name: b"f".to_vec(),
            to_parent: ROOT,
            to_name: b"d".to_vec(),
            time: t,
        };
        assert!(matches!(ns.apply(&over_dir), Err(NamespaceError::IsDir)));
        let mv = Op::Rename {
            from_parent: ROOT,
            from_name: b"f".to_vec(),
            to_parent: e,
            to_name: b"g".to_vec(),
            time: t,
        };
        ns.apply(&mv).unwrap();
        assert_eq!(ns.lookup(e, b"g").unwrap(), f);
        assert_eq!(ns.path(f), b"d/e/g");
        assert!(matches!(
            ns.apply(&Op::Remove {
                parent: ROOT,
                name: b"d".to_vec(),
                time: t
            }),
            Err(NamespaceError::NotEmpty)
        ));
    }
}

//! The namespace as checkpoint items (see [`crate::format::checkpoint`]) and back.
//!
//! Items go out one inode at a time, so a checkpoint is streamed rather than built whole;
//! a large file's extent and chunk maps are split into runs of [`ITEM_RUN`]. Coming back,
//! everything that follows from the inodes is rebuilt rather than trusted: directory
//! entries (from every inode's names), subdirectory counts, totals and live records; and
//! what cannot hold in a namespace built by ops is refused (a name twice, a parent that is
//! not a directory, an entry the root does not reach, overlapping extents).

use std::collections::{BTreeMap, HashSet};

use super::{Extent, Inode, LiveRecords, Namespace, ROOT, RecRef, Result, Totals, check_name};
use crate::error::NamespaceError;
use crate::format::checkpoint::{ExtentImage, Head, ITEM_RUN, InodeImage, Item, VERSION};
use crate::format::journal::{Kind, Tails};

fn bad(why: impl Into<String>) -> NamespaceError {
    NamespaceError::Inconsistent(format!("checkpoint: {}", why.into()))
}

impl Namespace {
    /// The checkpoint head of this namespace, for op batches resuming at `next_seq` with
    /// the device tails `tails`.
    pub fn checkpoint_head(&self, next_seq: u64, tails: Tails) -> Head {
        Head {
            version: VERSION,
            next_seq,
            tails,
            epoch: self.epoch,
            next_id: self.next_id,
            seal: self.seal.clone(),
            custody: self.custody.clone(),
            segments: self.segments.image(),
            inodes: self.inodes.len() as u64,
        }
    }

    /// Hands every inode's items to `emit`, by id (the head and the end are the caller's).
    pub fn for_each_item<E>(
        &self,
        mut emit: impl FnMut(Item) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for i in self.inodes.values() {
            emit(Item::Inode(InodeImage {
                id: i.id,
                kind: i.kind,
                mode: i.mode,
                uid: i.uid,
                gid: i.gid,
                size: i.size,
                atime: i.atime,
                mtime: i.mtime,
                ctime: i.ctime,
                parent: i.parent,
                name: i.name.clone(),
                links: i.links.clone(),
                target: i.target.clone(),
            }))?;
            let mut run = Vec::new();
            for (&offset, e) in &i.extents {
                run.push(ExtentImage {
                    offset,
                    len: e.len,
                    loc: e.rec.loc,
                    start: e.rec.start,
                    plain_len: e.rec.plain_len,
                    hash: e.rec.hash,
                    generation: e.rec.generation,
                });
                if run.len() == ITEM_RUN {
                    emit(Item::Extents(std::mem::take(&mut run)))?;
                }
            }
            if !run.is_empty() {
                emit(Item::Extents(run))?;
            }
            let mut run = Vec::new();
            for (&chunk, cv) in &i.chunk_cvs {
                run.push((chunk, *cv));
                if run.len() == ITEM_RUN {
                    emit(Item::ChunkCvs(std::mem::take(&mut run)))?;
                }
            }
            if !run.is_empty() {
                emit(Item::ChunkCvs(run))?;
            }
        }
        Ok(())
    }
}

/// A namespace being rebuilt from checkpoint items.
#[derive(Debug)]
pub struct Rebuild {
    ns: Namespace,
    expected: u64,
    current: Option<u64>,
}

impl Rebuild {
    /// Starts from the checkpoint's head.
    pub fn new(head: &Head) -> Result<Rebuild> {
        if head.version != VERSION {
            return Err(bad(format!(
                "version {} (this build reads {VERSION})",
                head.version
            )));
        }
        let mut ns = Namespace::new();
        ns.inodes.clear();
        ns.totals = Totals::default();
        ns.next_id = head.next_id;
        ns.epoch = head.epoch;
        ns.seal = head.seal.clone();
        ns.custody = head.custody.clone();
        ns.segments = super::Segments::from_image(&head.segments).map_err(bad)?;
        if !matches!(
            ns.seal,
            None | Some(crate::format::journal::Op::Seal { .. })
        ) {
            return Err(bad("the seal is not a seal op"));
        }
        Ok(Rebuild {
            ns,
            expected: head.inodes,
            current: None,
        })
    }

    /// Adds the next item (neither the head nor the end).
    pub fn add(&mut self, item: Item) -> Result<()> {
        match item {
            Item::Head(_) | Item::End { .. } => Err(bad("a head or end amid the inodes")),
            Item::Inode(im) => {
                if self.current.is_some_and(|c| c >= im.id) || im.id == 0 {
                    return Err(bad(format!("inode {} out of order", im.id)));
                }
                if im.id >= self.ns.next_id {
                    return Err(bad(format!("inode {} at or past the next id", im.id)));
                }
                if self.ns.inodes.len() as u64 >= self.expected {
                    return Err(bad("more inodes than the head announces"));
                }
                let mut i = Inode::new(im.id, im.kind, im.parent, im.name, im.mode, im.atime);
                i.uid = im.uid;
                i.gid = im.gid;
                i.size = im.size;
                i.mtime = im.mtime;
                i.ctime = im.ctime;
                i.links = im.links;
                i.target = im.target;
                self.current = Some(im.id);
                self.ns.inodes.insert(im.id, i);
                Ok(())
            }
            Item::Extents(run) => {
                let i = self.file()?;
                for e in run {
                    let end = e.offset.checked_add(e.len).ok_or(bad("extent end"))?;
                    let prev_end = i.extents.last_key_value().map(|(o, p)| o + p.len);
                    if e.len == 0 || prev_end.is_some_and(|p| p > e.offset) {
                        return Err(bad(format!(
                            "extent at {} of inode {} overlaps or is empty",
                            e.offset, i.id
                        )));
                    }
                    if end > i.size {
                        return Err(bad(format!("extent past the end of inode {}", i.id)));
                    }
                    i.extents.insert(
                        e.offset,
                        Extent {
                            len: e.len,
                            rec: RecRef {
                                loc: e.loc,
                                start: e.start,
                                plain_len: e.plain_len,
                                hash: e.hash,
                                generation: e.generation,
                            },
                        },
                    );
                }
                Ok(())
            }
            Item::ChunkCvs(run) => {
                let i = self.file()?;
                for (chunk, cv) in run {
                    if i.chunk_cvs
                        .last_key_value()
                        .is_some_and(|(c, _)| *c >= chunk)
                    {
                        return Err(bad(format!("chunk values of inode {} out of order", i.id)));
                    }
                    i.chunk_cvs.insert(chunk, cv);
                }
                Ok(())
            }
        }
    }

    fn file(&mut self) -> Result<&mut Inode> {
        let i = self
            .current
            .and_then(|c| self.ns.inodes.get_mut(&c))
            .ok_or(bad("extents before any inode"))?;
        if i.kind != Kind::File {
            return Err(bad(format!("extents of inode {}, not a file", i.id)));
        }
        Ok(i)
    }

    /// The namespace, once every inode is in: entries, counts and live records rebuilt.
    pub fn finish(mut self) -> Result<Namespace> {
        let ns = &mut self.ns;
        if ns.inodes.len() as u64 != self.expected {
            return Err(bad(format!(
                "{} inodes where the head announces {}",
                ns.inodes.len(),
                self.expected
            )));
        }
        match ns.inodes.get(&ROOT) {
            Some(r) if r.kind == Kind::Dir && r.parent == ROOT && r.links.is_empty() => {}
            _ => return Err(bad("no root directory")),
        }
        let mut names: BTreeMap<u64, Vec<(Vec<u8>, u64)>> = BTreeMap::new();
        for i in ns.inodes.values() {
            if i.id == ROOT {
                continue;
            }
            if i.kind == Kind::Dir && !i.links.is_empty() {
                return Err(bad(format!("directory {} has several names", i.id)));
            }
            for (p, n) in i.names() {
                check_name(n).map_err(|_| bad(format!("a bad name of inode {}", i.id)))?;
                names.entry(p).or_default().push((n.to_vec(), i.id));
            }
        }
        for (p, list) in names {
            let d = match ns.inodes.get_mut(&p) {
                Some(d) if d.kind == Kind::Dir => d,
                _ => return Err(bad(format!("parent {p} is not a directory"))),
            };
            for (n, id) in list {
                if d.entries.insert(n, id).is_some() {
                    return Err(bad(format!("a name twice in directory {p}")));
                }
            }
        }
        let dirs: Vec<(u64, u64)> = ns
            .inodes
            .values()
            .filter(|i| i.kind == Kind::Dir && i.id != ROOT)
            .map(|i| (i.id, i.parent))
            .collect();
        for (_, p) in &dirs {
            ns.inodes.get_mut(p).expect("checked above").subdirs += 1;
        }
        // Every directory reaches the root (no cycle cut off from the tree).
        let mut reached: HashSet<u64> = HashSet::from([ROOT]);
        for (d, _) in &dirs {
            let mut path = Vec::new();
            let mut at = *d;
            while !reached.contains(&at) {
                if path.len() > dirs.len() {
                    return Err(bad(format!("directory {d} is not under the root")));
                }
                path.push(at);
                at = ns.inodes[&at].parent;
            }
            reached.extend(path);
        }
        ns.live = LiveRecords::of(ns.inodes.values());
        ns.totals = Totals::of(ns.inodes.values());
        Ok(self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::journal::{AttrChange, Loc, Op, Time};

    fn sample() -> Namespace {
        let mut ns = Namespace::new();
        let t = Time { secs: 5, nanos: 7 };
        let mut id = 1;
        let mut create = |ns: &mut Namespace, parent, name: &str, kind| {
            id += 1;
            ns.apply(&Op::Create {
                id,
                parent,
                name: name.into(),
                kind,
                mode: 0o640,
                uid: 3,
                gid: 4,
                time: t,
                target: if kind == Kind::Symlink {
                    b"x/y".to_vec()
                } else {
                    vec![]
                },
            })
            .unwrap();
            id
        };
        let d = create(&mut ns, ROOT, "d", Kind::Dir);
        let e = create(&mut ns, d, "e", Kind::Dir);
        let f = create(&mut ns, e, "f", Kind::File);
        create(&mut ns, ROOT, "l", Kind::Symlink);
        for k in 0..(ITEM_RUN as u64 + 10) {
            ns.apply(&Op::Write {
                id: f,
                offset: k * 100,
                len: 60,
                generation: k,
                loc: Some(Loc {
                    dev: 0,
                    addr: 4096 + k * 200,
                    len: 90,
                }),
                hash: [k as u8; 32],
                time: t,
            })
            .unwrap();
            ns.apply(&Op::ChunkCv {
                id: f,
                chunk: k,
                cv: [1; 32],
            })
            .unwrap();
        }
        // A record split by an overwrite in its middle, and a hard link.
        ns.apply(&Op::Write {
            id: f,
            offset: 20,
            len: 10,
            generation: 99,
            loc: None,
            hash: [0; 32],
            time: t,
        })
        .unwrap();
        ns.apply(&Op::Link {
            id: f,
            parent: ROOT,
            name: b"f2".to_vec(),
            time: t,
        })
        .unwrap();
        ns.apply(&Op::SetAttr {
            id: d,
            change: AttrChange {
                mode: Some(0o700),
                ..AttrChange::default()
            },
            time: t,
        })
        .unwrap();
        ns.epoch = 4;
        ns
    }

    fn items(ns: &Namespace) -> Vec<Item> {
        let mut v = Vec::new();
        ns.for_each_item(|i| {
            v.push(i);
            Ok::<_, ()>(())
        })
        .unwrap();
        v
    }

    fn rebuild(head: &Head, items: Vec<Item>) -> Result<Namespace> {
        let mut r = Rebuild::new(head)?;
        for i in items {
            r.add(i)?;
        }
        r.finish()
    }

    #[test]
    fn a_namespace_comes_back_equal() {
        let ns = sample();
        let head = ns.checkpoint_head(9, vec![1, 2]);
        let its = items(&ns);
        assert!(
            its.iter().filter(|i| matches!(i, Item::Extents(_))).count() >= 2,
            "a long extent map is split"
        );
        let back = rebuild(&head, its.clone()).unwrap();
        assert_eq!(back, ns);
        assert_eq!(items(&back), its);
    }

    #[test]
    fn inconsistent_items_are_refused() {
        let ns = sample();
        let head = ns.checkpoint_head(9, vec![1]);
        let its = items(&ns);
        let mut bad_cases: Vec<Vec<Item>> = Vec::new();
        // An inode left out (its children lose their parent or the count is off).
        bad_cases.push(
            its.iter()
                .filter(|i| !matches!(i, Item::Inode(im) if im.id == 2))
                .cloned()
                .collect(),
        );
        // Two names alike in one directory.
        let mut v = its.clone();
        for i in v.iter_mut() {
            if let Item::Inode(im) = i
                && im.id == 5
            {
                im.name = b"d".to_vec();
            }
        }
        bad_cases.push(v);
        // A directory cycle cut off from the root.
        let mut v = its.clone();
        for i in v.iter_mut() {
            if let Item::Inode(im) = i
                && im.id == 2
            {
                im.parent = 3;
            }
        }
        bad_cases.push(v);
        // Overlapping extents.
        let mut v = its.clone();
        for i in v.iter_mut() {
            if let Item::Extents(run) = i {
                run[1].offset = run[0].offset;
                break;
            }
        }
        bad_cases.push(v);
        for (n, case) in bad_cases.into_iter().enumerate() {
            assert!(rebuild(&head, case).is_err(), "case {n} accepted");
        }
        let newer = Head {
            version: VERSION + 1,
            ..head
        };
        assert!(Rebuild::new(&newer).is_err());
    }
}

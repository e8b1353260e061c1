//! Namespace operations: lookups, attributes, creating, removing, renaming and listing
//! entries. Each change is applied under the store lock and returns once it is durable.

use super::{Attr, DirEntry, Store, lock};
use crate::engine::namespace::{MAX_SYMLINK, ROOT, check_name};
use crate::error::{NamespaceError, Result, StoreError};
use crate::format::journal::{self, AttrChange, Kind, Op, Time};

/// The bits of a directory cookie that hold the entry's id.
const COOKIE_ID: u64 = (1 << 56) - 1;

impl Store {
    /// Id of the root directory.
    pub fn root(&self) -> u64 {
        ROOT
    }

    /// Finds `name` in directory `dir`.
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64> {
        Ok(lock(&self.core).ns.lookup(dir, name)?)
    }

    /// Attributes of an entry.
    pub fn getattr(&self, id: u64) -> Result<Attr> {
        Ok(Attr::of(lock(&self.core).ns.get(id)?))
    }

    /// Path of an entry from the root, for messages and manifests.
    pub fn path(&self, id: u64) -> String {
        String::from_utf8_lossy(&lock(&self.core).ns.path(id)).into_owned()
    }

    /// Changes attributes (a size change truncates or extends the file).
    pub fn setattr(&self, id: u64, change: AttrChange) -> Result<Attr> {
        let _admitted = self.writable()?;
        let resize = change.size;
        if let Some(size) = resize {
            self.check_size(id, size)?;
        }
        let same_size = resize.map(|size| AttrChange {
            size: Some(size),
            ..AttrChange::default()
        }) == Some(change.clone());
        if same_size
            && let now = self.getattr(id)?
            && now.kind == Kind::File
            && Some(now.size) == resize
        {
            // A truncate to the current size changes nothing, not even the times (POSIX
            // updates them only when the size changes); `cp` and libnfs send one after every
            // create. Nothing to journal, but the state the reply reports must be durable:
            // commit whatever is queued (usually nothing, which returns at once).
            self.sync()?;
            return self.getattr(id);
        }
        self.submit(vec![Op::SetAttr {
            id,
            change,
            time: Time::now(),
        }])?;
        if let Some(size) = resize
            && let Some(o) = self.observer()
        {
            o.resized(id, size);
        }
        self.getattr(id)
    }

    /// Sets a file's size without the capacity limit, as a store written before the limit
    /// may hold one: for tests of what the seal does with such a file. Not for anything
    /// else.
    #[doc(hidden)]
    pub fn resize_without_limit(&self, id: u64, size: u64) -> Result<()> {
        let _admitted = self.writable()?;
        self.submit(vec![Op::SetAttr {
            id,
            change: AttrChange {
                size: Some(size),
                ..AttrChange::default()
            },
            time: Time::now(),
        }])
    }

    /// Refuses a file size beyond [`Store::max_file_size`], naming the file.
    pub(super) fn check_size(&self, id: u64, size: u64) -> Result<()> {
        let limit = self.max_file_size();
        if size > limit {
            return Err(StoreError::FileTooLarge {
                file: self.path(id),
                size,
                limit,
            }
            .into());
        }
        Ok(())
    }

    fn create_entry(
        &self,
        dir: u64,
        name: &[u8],
        kind: Kind,
        mode: u32,
        target: &[u8],
    ) -> Result<Attr> {
        let _admitted = self.writable()?;
        check_name(name)?;
        if target.len() > MAX_SYMLINK {
            return Err(StoreError::Invalid(format!(
                "symlink target of {} bytes (at most {MAX_SYMLINK})",
                target.len()
            ))
            .into());
        }
        let id = {
            let mut core = lock(&self.core);
            self.reserve_journal(&core, 1)?;
            let id = core.ns.next_id();
            let op = Op::Create {
                id,
                parent: dir,
                name: name.to_vec(),
                kind,
                mode,
                uid: 0,
                gid: 0,
                time: Time::now(),
                target: target.to_vec(),
            };
            core.ns_mut().apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            let ticket = core.open_batch;
            drop(core);
            self.wait_durable(ticket)?;
            id
        };
        if kind == Kind::File
            && let Some(o) = self.observer()
        {
            o.created(id, name);
        }
        self.getattr(id)
    }

    /// Creates an empty regular file; `Exists` if the name is taken.
    pub fn create(&self, dir: u64, name: &[u8], mode: u32) -> Result<Attr> {
        self.create_entry(dir, name, Kind::File, mode, b"")
    }

    /// Creates a directory.
    pub fn mkdir(&self, dir: u64, name: &[u8], mode: u32) -> Result<Attr> {
        self.create_entry(dir, name, Kind::Dir, mode, b"")
    }

    /// Creates a symbolic link.
    pub fn symlink(&self, dir: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        if target.is_empty() {
            return Err(StoreError::Invalid("empty symlink target".into()).into());
        }
        self.create_entry(dir, name, Kind::Symlink, 0o777, target)
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let core = lock(&self.core);
        let i = core.ns.get(id)?;
        if i.kind != Kind::Symlink {
            return Err(StoreError::Invalid("not a symbolic link".into()).into());
        }
        Ok(i.target.clone())
    }

    /// Removes a file or symlink (`IsDir` for a directory).
    pub fn remove(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(dir, name, false)
    }

    /// Removes an empty directory (`NotDir` for anything else).
    pub fn rmdir(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(dir, name, true)
    }

    fn remove_entry(&self, dir: u64, name: &[u8], want_dir: bool) -> Result<()> {
        let _admitted = self.writable()?;
        check_name(name)?;
        let ticket = {
            let mut core = lock(&self.core);
            self.reserve_journal(&core, 1)?;
            let id = core.ns.lookup(dir, name)?;
            let is_dir = core.ns.get(id)?.kind == Kind::Dir;
            if is_dir != want_dir {
                return Err(if is_dir {
                    NamespaceError::IsDir.into()
                } else {
                    NamespaceError::NotDir.into()
                });
            }
            let op = Op::Remove {
                parent: dir,
                name: name.to_vec(),
                time: Time::now(),
            };
            core.ns_mut().apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            core.open_batch
        };
        self.wait_durable(ticket)
    }

    /// Gives file (or symlink) `id` another name, `name` in `dir` (a hard link); `Exists` if
    /// the name is taken, `IsDir` for a directory.
    pub fn link(&self, id: u64, dir: u64, name: &[u8]) -> Result<Attr> {
        let _admitted = self.writable()?;
        check_name(name)?;
        self.submit(vec![Op::Link {
            id,
            parent: dir,
            name: name.to_vec(),
            time: Time::now(),
        }])?;
        self.getattr(id)
    }

    /// Moves `from_dir/from_name` to `to_dir/to_name`, replacing a compatible target.
    pub fn rename(
        &self,
        from_dir: u64,
        from_name: &[u8],
        to_dir: u64,
        to_name: &[u8],
    ) -> Result<()> {
        let _admitted = self.writable()?;
        check_name(from_name)?;
        check_name(to_name)?;
        self.submit(vec![Op::Rename {
            from_parent: from_dir,
            from_name: from_name.to_vec(),
            to_parent: to_dir,
            to_name: to_name.to_vec(),
            time: Time::now(),
        }])
    }

    /// Lists up to `max` entries of `dir` in name order, starting after the entry whose
    /// [`DirEntry::cookie`] is `after` (0 = from the start). Returns the entries and whether
    /// the listing is complete.
    ///
    /// A cookie is the entry's id, and in its top byte which of the file's names in this
    /// directory it is (a file may have several: hard links). Resuming finds the name again
    /// in the ordered entries; if it was removed or moved away meanwhile, the listing starts
    /// over rather than fails.
    pub fn readdir(&self, dir: u64, after: u64, max: usize) -> Result<(Vec<DirEntry>, bool)> {
        let core = lock(&self.core);
        let d = core.ns.get(dir)?;
        if d.kind != Kind::Dir {
            return Err(NamespaceError::NotDir.into());
        }
        let (after_id, nth) = (after & COOKIE_ID, (after >> 56) as usize);
        let resume = match core.ns.get(after_id) {
            Ok(i) if after_id != 0 => i
                .names_in(dir)
                .get(nth)
                .copied()
                .filter(|n| d.entries.get(*n) == Some(&after_id)),
            _ => None,
        };
        let from = match resume {
            Some(name) => std::ops::Bound::Excluded(name),
            None => std::ops::Bound::Unbounded,
        };
        let mut it = d
            .entries
            .range::<[u8], _>((from, std::ops::Bound::Unbounded))
            .peekable();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((name, &id)) = it.next() else { break };
            let i = core.ns.get(id)?;
            let nth = match i.links.is_empty() {
                true => 0,
                false => i
                    .names_in(dir)
                    .iter()
                    .position(|n| *n == name.as_slice())
                    .unwrap_or(0),
            };
            out.push(DirEntry {
                name: name.clone(),
                cookie: id | (nth as u64) << 56,
                attr: Attr::of(i),
            });
        }
        let end = it.peek().is_none();
        Ok((out, end))
    }

    /// Lists every entry of `dir` (for host tools).
    pub fn list(&self, dir: u64) -> Result<Vec<DirEntry>> {
        Ok(self.readdir(dir, 0, usize::MAX)?.0)
    }
}

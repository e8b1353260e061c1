//! The ingest never replaces what it did not write.
//!
//! Before anything is written, every datastore path of the plan is looked up: a path that
//! holds something this ingest did not put there (its resume state says which files it
//! finished, and which it was placing when killed, with their BLAKE3; equal symlinks and
//! hard links to its own files are its own too) is a conflict.
//! Conflicts stop the ingest with their list unless `--on-conflict skip` (leave what is
//! there, do not write the entry) or `rename` (write the entry under a free name beside it)
//! was given. A datastore inside the job folder or a device's folder, or holding them, is
//! refused outright ([`check_location`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};
use serde::Serialize;

use super::datastore::Datastore;
use super::error::IngestError;
use super::plan::{Plan, rel_display};
use super::state::{DoneEntry, State};

/// What to do with a path that already holds something the ingest did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Stop before writing anything, listing the conflicts (exit 8).
    #[default]
    Refuse,
    /// Leave what is there; the entry (and, for a directory, all below it) is not written.
    Skip,
    /// Write the entry under a free name beside it (`NAME.odt-N.EXT`).
    Rename,
}

/// A datastore path that already held something the ingest did not write.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// The datastore path the device's entry maps to.
    pub path: String,
    /// What the entry is (`file`, `directory`, `symlink`, `hard link`).
    pub entry: &'static str,
    /// What is in the datastore there.
    pub found: String,
    /// Where the entry went instead (`--on-conflict rename`).
    pub renamed_to: Option<String>,
}

/// What [`resolve`] did to the plan.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Every conflict found (each renamed or skipped unless the mode is refuse).
    pub conflicts: Vec<Conflict>,
    /// Files left out (skip mode): (datastore path, device path, size, why).
    pub skipped_files: Vec<(String, String, u64, String)>,
    /// Files written under another name: their new datastore path, and why.
    pub renamed_files: HashMap<String, String>,
    /// Files an earlier run placed and was killed before recording as done, found by
    /// their intent record and BLAKE3: [`State::adopt`] them.
    pub adopted: Vec<DoneEntry>,
}

/// `p` made absolute with symlinks resolved, for the part of it that exists.
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut rest = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return abs,
        }
    }
}

/// Refuses a datastore inside the job folder or a device's folder, or containing one of
/// them: an ingest there could replace the job's keys or a device image.
pub fn check_location(
    datastore: &Path,
    job_dir: &Path,
    devices: &[PathBuf],
) -> Result<(), IngestError> {
    let ds = resolved(datastore);
    let mut guarded = vec![("the job folder", resolved(job_dir))];
    for d in devices {
        let dev = resolved(d);
        if let Some(parent) = dev.parent() {
            guarded.push(("the folder of device", parent.to_path_buf()));
        }
    }
    for (what, dir) in guarded {
        let relation = if ds == dir {
            Some("is")
        } else if ds.starts_with(&dir) {
            Some("is inside")
        } else if dir.starts_with(&ds) {
            Some("contains")
        } else {
            None
        };
        if let Some(relation) = relation {
            return Err(IngestError::UnsafeDatastore {
                datastore: datastore.display().to_string(),
                why: format!("it {relation} {what} {}", dir.display()),
            });
        }
    }
    Ok(())
}

fn describe(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        _ => "a special file",
    }
}

/// The `k`th free-name candidate for `name`: `disk.odt-2.vmdk`, `notes.odt-2`.
fn candidate(name: &OsStr, k: u32, keep_ext: bool) -> OsString {
    let b = name.as_bytes();
    let dot = b
        .iter()
        .rposition(|&c| c == b'.')
        .filter(|&d| d > 0 && keep_ext);
    let (stem, ext) = match dot {
        Some(d) => (&b[..d], &b[d..]),
        None => (b, &b[b.len()..]),
    };
    let mut v = stem.to_vec();
    v.extend_from_slice(format!(".odt-{k}").as_bytes());
    v.extend_from_slice(ext);
    std::ffi::OsStr::from_bytes(&v).to_os_string()
}

/// Kinds of planned entries, with what makes an existing one the ingest's own.
enum Entry<'a> {
    Dir,
    File { id: u64 },
    Symlink { target: &'a [u8] },
    HardLink { target: &'a [OsString] },
}

impl Entry<'_> {
    fn name(&self) -> &'static str {
        match self {
            Entry::Dir => "directory",
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
            Entry::HardLink { .. } => "hard link",
        }
    }
}

struct Resolver<'a> {
    ds: &'a Datastore,
    state: &'a State,
    /// Every datastore path the plan uses (a renamed entry must not take one).
    planned: HashSet<Vec<OsString>>,
    /// Original directory path -> its path after renames.
    moved: Vec<(Vec<OsString>, Vec<OsString>)>,
    /// Original directory paths left out.
    skipped_dirs: Vec<Vec<OsString>>,
    /// Files an earlier run placed but did not record as done (found by their intent).
    adopted: RefCell<Vec<DoneEntry>>,
}

impl Resolver<'_> {
    /// `rel` after the renames of its directories.
    fn rewrite(&self, rel: &[OsString]) -> Vec<OsString> {
        let best = self
            .moved
            .iter()
            .filter(|(old, _)| rel.starts_with(old))
            .max_by_key(|(old, _)| old.len());
        match best {
            Some((old, new)) => new.iter().chain(&rel[old.len()..]).cloned().collect(),
            None => rel.to_vec(),
        }
    }

    /// The skipped directory `rel` lies in, if any.
    fn skipped_below(&self, rel: &[OsString]) -> Option<&Vec<OsString>> {
        self.skipped_dirs.iter().find(|d| rel.starts_with(d))
    }

    /// What at `rel` (already rewritten) would be replaced: `None` if nothing, or only
    /// this ingest's own work.
    fn foreign_at(
        &self,
        rel: &[OsString],
        entry: &Entry<'_>,
    ) -> Result<Option<String>, IngestError> {
        let (name, parent) = rel.split_last().expect("an entry has a name");
        let dir = match self.ds.open_dir(parent) {
            Ok(Some(d)) => d,
            // A parent that is missing holds nothing; one that is not a directory is a
            // conflict of that directory, listed on its own.
            Ok(None) | Err(IngestError::NotADirectory { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(found) = self.ds.existing(&dir, name) else {
            return Ok(None);
        };
        let own = match entry {
            Entry::Dir => found.file_type == FileType::Directory,
            Entry::File { id } => {
                // Its own: recorded as written, or recorded as about to be placed by a run
                // killed before it recorded it as written, with the very bytes it placed.
                let path = rel_display(rel);
                found.file_type == FileType::RegularFile
                    && (self.state.wrote(&path) == Some(*id)
                        || self.state.intent(*id, &path).is_some_and(|i| {
                            let placed = super::placed::is_placed(&dir, name, i.size, &i.blake3);
                            if placed {
                                self.adopted.borrow_mut().push(i.clone());
                            }
                            placed
                        }))
            }
            Entry::Symlink { target } => {
                found.file_type == FileType::Symlink
                    && rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
                        .is_ok_and(|t| t.as_bytes() == *target)
            }
            Entry::HardLink { target } => {
                let (tn, tp) = target.split_last().expect("a file has a name");
                let stat = |d: &std::os::fd::OwnedFd, n: &OsStr| {
                    rustix::fs::statat(d, n, AtFlags::SYMLINK_NOFOLLOW).ok()
                };
                match (self.ds.open_dir(tp).ok().flatten(), stat(&dir, name)) {
                    (Some(td), Some(here)) => stat(&td, tn)
                        .is_some_and(|t| t.st_dev == here.st_dev && t.st_ino == here.st_ino),
                    _ => false,
                }
            }
        };
        Ok((!own).then(|| describe(found.file_type).to_string()))
    }

    /// A free path beside `rel` for the entry: nothing there (or the entry's own earlier
    /// work) and no other planned entry's path.
    fn free_beside(
        &self,
        rel: &[OsString],
        entry: &Entry<'_>,
    ) -> Result<Vec<OsString>, IngestError> {
        let (name, parent) = rel.split_last().expect("an entry has a name");
        let keep_ext = !matches!(entry, Entry::Dir);
        for k in 1..10_000 {
            let mut cand = parent.to_vec();
            cand.push(candidate(name, k, keep_ext));
            if self.planned.contains(&cand) {
                continue;
            }
            let (cn, cp) = cand.split_last().expect("a name");
            let taken = match self.ds.open_dir(cp)? {
                Some(d) => self.ds.existing(&d, cn).is_some(),
                None => false,
            };
            if !taken || self.foreign_at(&cand, entry)?.is_none() {
                return Ok(cand);
            }
        }
        Err(IngestError::Conflict {
            path: format!("{}/{}", self.ds.path().display(), rel_display(rel)),
            why: "no free name beside it for --on-conflict rename".into(),
        })
    }

    /// Checks one entry; returns its path after renames, or `None` if it is left out.
    fn check(
        &mut self,
        orig: &[OsString],
        entry: Entry<'_>,
        mode: OnConflict,
        out: &mut Resolution,
    ) -> Result<Option<Vec<OsString>>, IngestError> {
        if self.skipped_below(orig).is_some() {
            return Ok(None);
        }
        let rel = self.rewrite(orig);
        let Some(found) = self.foreign_at(&rel, &entry)? else {
            return Ok(Some(rel));
        };
        let mut c = Conflict {
            path: rel_display(&rel),
            entry: entry.name(),
            found,
            renamed_to: None,
        };
        let placed = match mode {
            OnConflict::Refuse => Some(rel),
            OnConflict::Skip => {
                if matches!(entry, Entry::Dir) {
                    self.skipped_dirs.push(orig.to_vec());
                }
                None
            }
            OnConflict::Rename => {
                let new = self.free_beside(&rel, &entry)?;
                self.planned.insert(new.clone());
                if matches!(entry, Entry::Dir) {
                    self.moved.push((orig.to_vec(), new.clone()));
                }
                c.renamed_to = Some(rel_display(&new));
                Some(new)
            }
        };
        out.conflicts.push(c);
        Ok(placed)
    }
}

/// Finds the conflicts of `plan` in the datastore and, for skip and rename, rewrites the
/// plan accordingly. In refuse mode the plan is left as it is: the caller stops if
/// [`Resolution::conflicts`] is not empty.
pub fn resolve(
    plan: &mut Plan,
    ds: &Datastore,
    state: &State,
    mode: OnConflict,
) -> Result<Resolution, IngestError> {
    let mut out = Resolution::default();
    let planned: HashSet<Vec<OsString>> = plan
        .dirs
        .iter()
        .map(|d| d.rel.clone())
        .chain(plan.files.iter().map(|f| f.rel.clone()))
        .chain(plan.symlinks.iter().map(|l| l.rel.clone()))
        .chain(plan.hard_links.iter().map(|l| l.rel.clone()))
        .collect();
    let mut r = Resolver {
        ds,
        state,
        planned,
        moved: Vec::new(),
        skipped_dirs: Vec::new(),
        adopted: RefCell::new(Vec::new()),
    };
    // Directories first, parents before children (the plan sorts them by depth).
    let mut dirs = Vec::new();
    for d in std::mem::take(&mut plan.dirs) {
        if let Some(rel) = r.check(&d.rel, Entry::Dir, mode, &mut out)? {
            dirs.push(super::plan::PlannedDir { rel, ..d });
        }
    }
    plan.dirs = dirs;
    // Original file paths, for hard links and for the skip reasons.
    let mut file_moves: HashMap<Vec<OsString>, Option<Vec<OsString>>> = HashMap::new();
    let files = std::mem::take(&mut plan.files);
    let bundles = std::mem::take(&mut plan.file_bundle);
    for (f, b) in files.into_iter().zip(bundles) {
        let orig = f.rel.clone();
        let placed = r.check(&orig, Entry::File { id: f.id }, mode, &mut out)?;
        file_moves.insert(orig.clone(), placed.clone());
        match placed {
            Some(rel) => {
                if rel != r.rewrite(&orig) {
                    out.renamed_files.insert(
                        rel_display(&rel),
                        format!("{} exists in the datastore", rel_display(&r.rewrite(&orig))),
                    );
                }
                plan.files.push(super::plan::PlannedFile { rel, ..f });
                plan.file_bundle.push(b);
            }
            None => {
                let why = match r.skipped_below(&orig) {
                    Some(d) if *d != orig => format!(
                        "its directory {} was skipped: something else is there in the datastore",
                        rel_display(d)
                    ),
                    _ => "something else is at its path in the datastore".to_string(),
                };
                out.skipped_files
                    .push((rel_display(&orig), f.device_path.clone(), f.size, why));
            }
        }
    }
    let mut links = Vec::new();
    for l in std::mem::take(&mut plan.symlinks) {
        let entry = Entry::Symlink { target: &l.target };
        if let Some(rel) = r.check(&l.rel, entry, mode, &mut out)? {
            links.push(super::plan::PlannedLink { rel, ..l });
        }
    }
    plan.symlinks = links;
    let mut hard = Vec::new();
    for l in std::mem::take(&mut plan.hard_links) {
        // A name of a file that was left out is left out too.
        let target = match file_moves.get(&l.target) {
            Some(Some(t)) => t.clone(),
            Some(None) => continue,
            None => r.rewrite(&l.target),
        };
        let entry = Entry::HardLink { target: &target };
        if let Some(rel) = r.check(&l.rel, entry, mode, &mut out)? {
            hard.push(super::plan::PlannedHardLink { rel, target, ..l });
        }
    }
    plan.hard_links = hard;
    out.adopted = r.adopted.into_inner();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_keep_the_extension_of_files_only() {
        assert_eq!(
            candidate(OsStr::new("disk.vmdk"), 1, true),
            "disk.odt-1.vmdk"
        );
        assert_eq!(candidate(OsStr::new("notes"), 2, true), "notes.odt-2");
        assert_eq!(candidate(OsStr::new(".hidden"), 1, true), ".hidden.odt-1");
        assert_eq!(candidate(OsStr::new("vm.d"), 3, false), "vm.d.odt-3");
    }

    #[test]
    fn a_datastore_in_or_around_the_job_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        let devs = dir.path().join("devs");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::create_dir_all(&devs).unwrap();
        let dev = vec![devs.join("d0.img")];
        std::fs::write(&dev[0], b"").unwrap();
        for bad in [
            job.clone(),
            job.join("sub/new"),
            dir.path().to_path_buf(),
            devs.join("ds"),
        ] {
            let e = check_location(&bad, &job, &dev).unwrap_err();
            assert!(
                matches!(e, IngestError::UnsafeDatastore { .. }),
                "{bad:?}: {e}"
            );
        }
        check_location(&dir.path().join("datastore"), &job, &dev).unwrap();
    }
}

//! What earlier runs finished, so that a resumed ingest does not redo verified files, and
//! which files it placed, so that it knows its own work from anyone else's.
//!
//! `DATASTORE_DIR/.odt-ingest/state.json` names the job and device set the datastore is
//! being filled from; `done.jsonl` gets one line per file after that file is complete
//! under its final name (synced, renamed, directory synced). A line lost in a crash only
//! means the file is done again; a torn last line is ignored. A file counts as done only
//! if its line matches the file's current fingerprint and the datastore still holds a
//! regular file of the right size and modification time at its path.
//!
//! `placing.jsonl` is the intent record: before a finished temporary is renamed into place,
//! its path, size and BLAKE3 are appended there and synced. A run killed between the
//! rename and its `done.jsonl` line finds the file at that path on resume, hashes it, and
//! takes it as its own only if the BLAKE3 is the recorded one; anything else there
//! (whatever its size or times) is a conflict.
//!
//! Loading ([`State::load`]) writes nothing: an ingest refused after looking leaves the
//! datastore as it was. [`State::start`] creates the files once the ingest goes ahead.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::datastore::Datastore;
use super::error::IngestError;
use super::plan::PlannedFile;

const HEADER_FILE: &str = "state.json";
const DONE_FILE: &str = "done.jsonl";
const INTENT_FILE: &str = "placing.jsonl";
const VERSION: u32 = 1;

/// Which ingest a datastore holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Layout version of the state file.
    pub version: u32,
    /// The job the ingest is for.
    pub job_id: String,
    /// Hex of the device set id.
    pub set_id: String,
    /// When the first run started, in Unix seconds.
    pub started_unix: u64,
}

/// One finished file (in `done.jsonl`), or one about to be renamed into place (in
/// `placing.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneEntry {
    /// Its id in the store.
    pub id: u64,
    /// Hex of the plan fingerprint.
    pub fingerprint: String,
    /// Datastore path (printable).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex BLAKE3 of the content as written.
    pub blake3: String,
}

/// An append-only log of entries in the state directory.
struct Log {
    name: &'static str,
    file: Mutex<Option<File>>,
}

impl Log {
    fn new(name: &'static str) -> Log {
        Log {
            name,
            file: Mutex::new(None),
        }
    }

    /// The entries of the log, and whether its last line is torn.
    fn read(&self, ds: &Datastore) -> Result<(Vec<DoneEntry>, bool), IngestError> {
        let Some(bytes) = ds.read_state_file(self.name)? else {
            return Ok((Vec::new(), false));
        };
        // A torn last line (crash mid-append) does not parse and is skipped.
        let entries = bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<DoneEntry>(line).ok())
            .collect();
        Ok((entries, bytes.last().is_some_and(|&b| b != b'\n')))
    }

    fn err(&self, op: &'static str, err: std::io::Error) -> IngestError {
        IngestError::Datastore {
            op,
            path: format!(".odt-ingest/{}", self.name),
            source: err,
        }
    }

    /// Opens the log for appending (created if missing).
    fn open(&self, ds: &Datastore, torn: bool) -> Result<(), IngestError> {
        let mut f = ds.append_state_file(self.name)?;
        if torn {
            // End the torn line so that the next entry starts a line of its own.
            f.write_all(b"\n").map_err(|e| self.err("append to", e))?;
        }
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        Ok(())
    }

    /// Appends entries; durable at once if `sync`. Panics before [`Log::open`] (a caller
    /// bug: [`State::start`] comes before any write).
    fn append(&self, entries: &[&DoneEntry], sync: bool) -> Result<(), IngestError> {
        let mut lines = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut lines, e).expect("entry serialises");
            lines.push(b'\n');
        }
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let f = f
            .as_mut()
            .expect("the ingest state is started before writing");
        f.write_all(&lines).map_err(|e| self.err("append to", e))?;
        if sync {
            f.sync_data().map_err(|e| self.err("fsync", e))?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), IngestError> {
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_ref() {
            Some(f) => f.sync_data().map_err(|e| self.err("fsync", e)),
            None => Ok(()),
        }
    }
}

/// The resume state of one datastore.
pub struct State {
    /// Which ingest the datastore holds.
    pub header: Header,
    /// Whether `state.json` is still to be written ([`State::start`]).
    header_new: bool,
    done: HashMap<u64, DoneEntry>,
    /// Datastore path -> id of the file earlier runs finished there.
    by_path: HashMap<String, u64>,
    /// File id -> the latest placement an earlier run recorded for it.
    intents: HashMap<u64, DoneEntry>,
    /// Entries taken over from intents since loading, recorded as done by
    /// [`State::start`].
    adopted: Vec<DoneEntry>,
    torn: (bool, bool),
    done_log: Log,
    intent_log: Log,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    /// Loads the state (or a new one), writing nothing. Refuses a datastore filled from
    /// another job or set.
    pub fn load(ds: &Datastore, job_id: &str, set_id: u64) -> Result<State, IngestError> {
        let want_set = format!("{set_id:016x}");
        let (header, header_new) = match ds.read_state_file(HEADER_FILE)? {
            Some(bytes) => {
                let h: Header = serde_json::from_slice(&bytes).map_err(|e| {
                    IngestError::State(format!(
                        "{}/.odt-ingest/{HEADER_FILE} is unreadable ({e}); it is not from this \
                         version of odt or was damaged: ingest into a new directory",
                        ds.path().display()
                    ))
                })?;
                if h.job_id != job_id || h.set_id != want_set {
                    return Err(IngestError::State(format!(
                        "{} already holds the ingest of job {} (device set {}), not of job \
                         {job_id} (device set {want_set}): ingest into another directory",
                        ds.path().display(),
                        h.job_id,
                        h.set_id
                    )));
                }
                (h, false)
            }
            None => (
                Header {
                    version: VERSION,
                    job_id: job_id.to_string(),
                    set_id: want_set,
                    started_unix: now_unix(),
                },
                true,
            ),
        };
        let (done_log, intent_log) = (Log::new(DONE_FILE), Log::new(INTENT_FILE));
        let (done, done_torn) = done_log.read(ds)?;
        let (intents, intent_torn) = intent_log.read(ds)?;
        let done: HashMap<u64, DoneEntry> = done.into_iter().map(|e| (e.id, e)).collect();
        let by_path = done.values().map(|e| (e.path.clone(), e.id)).collect();
        Ok(State {
            header,
            header_new,
            done,
            by_path,
            // Later lines win: the last placement recorded for a file.
            intents: intents.into_iter().map(|e| (e.id, e)).collect(),
            adopted: Vec::new(),
            torn: (done_torn, intent_torn),
            done_log,
            intent_log,
        })
    }

    /// Loads the state and starts it at once (tests).
    pub fn open(ds: &Datastore, job_id: &str, set_id: u64) -> Result<State, IngestError> {
        let mut s = Self::load(ds, job_id, set_id)?;
        s.start(ds)?;
        Ok(s)
    }

    /// The ingest goes ahead: writes the header of a new state, opens the logs and records
    /// the adopted files as done. `ds` must be prepared ([`Datastore::prepare`]).
    pub fn start(&mut self, ds: &Datastore) -> Result<(), IngestError> {
        if self.header_new {
            ds.write_state_file(
                HEADER_FILE,
                &serde_json::to_vec_pretty(&self.header).unwrap(),
            )?;
            self.header_new = false;
        }
        self.done_log.open(ds, self.torn.0)?;
        self.intent_log.open(ds, self.torn.1)?;
        self.torn = (false, false);
        let adopted = std::mem::take(&mut self.adopted);
        if adopted.is_empty() {
            return Ok(());
        }
        self.done_log
            .append(&adopted.iter().collect::<Vec<_>>(), true)
    }

    /// The entry of an earlier run for this file, if its fingerprint still matches.
    pub fn done_entry(&self, f: &PlannedFile) -> Option<&DoneEntry> {
        self.done
            .get(&f.id)
            .filter(|e| e.fingerprint == hex::encode(f.fingerprint) && e.size == f.size)
    }

    /// The id of the file an earlier run finished at datastore path `path`, if any.
    pub fn wrote(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// What an earlier run recorded before renaming file `id` into place at `path`, if it
    /// did and did not record the file as done there.
    pub fn intent(&self, id: u64, path: &str) -> Option<&DoneEntry> {
        self.intents
            .get(&id)
            .filter(|e| e.path == path && self.wrote(path) != Some(id))
    }

    /// Takes a file an earlier run placed (its intent matched by the file's BLAKE3) as
    /// done, as if that run had recorded it.
    pub fn adopt(&mut self, e: DoneEntry) {
        self.by_path.insert(e.path.clone(), e.id);
        self.done.insert(e.id, e.clone());
        self.adopted.push(e);
    }

    /// Number of files earlier runs finished.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// Records, durably, that these files are about to be renamed into place: called
    /// before the renames, so that a resumed run knows them for its own.
    pub fn intend(&self, entries: &[&DoneEntry]) -> Result<(), IngestError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.intent_log.append(entries, true)
    }

    /// Records a finished file (one append; durable with the next [`State::sync`]).
    pub fn record(&self, e: &DoneEntry) -> Result<(), IngestError> {
        self.done_log.append(&[e], false)
    }

    /// Makes every recorded line durable.
    pub fn sync(&self) -> Result<(), IngestError> {
        self.done_log.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: u64, fp: u8) -> PlannedFile {
        PlannedFile {
            id,
            rel: vec!["a".into()],
            device_path: "a".into(),
            size: 10,
            mode: 0o644,
            atime: Default::default(),
            mtime: Default::default(),
            data: vec![(0, 10)],
            recs: vec![super::super::plan::RecInfo {
                dev: 0,
                addr: 4096,
                len: 100,
                start: 0,
                plain_len: 10,
                digest: [0; 32],
            }],
            fingerprint: [fp; 32],
        }
    }

    fn entry(f: &PlannedFile) -> DoneEntry {
        DoneEntry {
            id: f.id,
            fingerprint: hex::encode(f.fingerprint),
            path: "a".into(),
            size: f.size,
            blake3: "00".into(),
        }
    }

    #[test]
    fn resumes_only_matching_files_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ds = Datastore::open(dir.path()).unwrap();
            let st = State::open(&ds, "job-1", 5).unwrap();
            st.record(&entry(&file(2, 1))).unwrap();
            st.record(&entry(&file(3, 1))).unwrap();
            st.sync().unwrap();
        }
        // A crash mid-append leaves half a line.
        let p = dir.path().join(".odt-ingest").join(DONE_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"id":4,"fingerpr"#).unwrap();
        drop(f);
        let ds = Datastore::open(dir.path()).unwrap();
        let st = State::open(&ds, "job-1", 5).unwrap();
        assert_eq!(st.done_count(), 2);
        assert!(st.done_entry(&file(2, 1)).is_some());
        assert!(
            st.done_entry(&file(2, 9)).is_none(),
            "changed file is redone"
        );
        assert!(st.done_entry(&file(4, 1)).is_none());
        // The torn line was closed: an entry recorded now survives the next load.
        st.record(&entry(&file(5, 1))).unwrap();
        drop(st);
        drop(ds);
        let ds = Datastore::open(dir.path()).unwrap();
        let st = State::open(&ds, "job-1", 5).unwrap();
        assert!(st.done_entry(&file(5, 1)).is_some());
        drop(st);
        drop(ds);
        let ds = Datastore::open(dir.path()).unwrap();
        let e = State::open(&ds, "job-2", 5).err().unwrap().to_string();
        assert!(e.contains("already holds the ingest of job job-1"), "{e}");
    }
}

//! What earlier runs finished, so that a resumed ingest does not redo verified files.
//!
//! `DATASTORE_DIR/.odt-ingest/state.json` names the job and device set the datastore is
//! being filled from; `done.jsonl` gets one line per file after that file is complete
//! under its final name (synced, renamed, directory synced). A line lost in a crash only
//! means the file is done again; a torn last line is ignored. A file counts as done only
//! if its line matches the file's current fingerprint and the datastore still holds a
//! regular file of the right size and modification time at its path.

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

/// One finished file.
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

/// The resume state of one datastore.
pub struct State {
    /// Which ingest the datastore holds.
    pub header: Header,
    done: HashMap<u64, DoneEntry>,
    /// Datastore path -> id of the file earlier runs finished there.
    by_path: HashMap<String, u64>,
    log: Mutex<File>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    /// Loads the state (or starts it). Refuses a datastore filled from another job or set.
    pub fn open(ds: &Datastore, job_id: &str, set_id: u64) -> Result<State, IngestError> {
        let want_set = format!("{set_id:016x}");
        let header = match ds.read_state_file(HEADER_FILE)? {
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
                h
            }
            None => {
                let h = Header {
                    version: VERSION,
                    job_id: job_id.to_string(),
                    set_id: want_set,
                    started_unix: now_unix(),
                };
                ds.write_state_file(HEADER_FILE, &serde_json::to_vec_pretty(&h).unwrap())?;
                h
            }
        };
        let mut done = HashMap::new();
        let mut torn = false;
        if let Some(bytes) = ds.read_state_file(DONE_FILE)? {
            for line in bytes.split(|&b| b == b'\n') {
                // A torn last line (crash mid-append) does not parse and is skipped.
                if let Ok(e) = serde_json::from_slice::<DoneEntry>(line) {
                    done.insert(e.id, e);
                }
            }
            torn = bytes.last().is_some_and(|&b| b != b'\n');
        }
        let mut log = ds.append_state_file(DONE_FILE)?;
        if torn {
            // End the torn line so that the next entry starts a line of its own.
            log.write_all(b"\n").map_err(|err| IngestError::Datastore {
                op: "append to",
                path: format!(".odt-ingest/{DONE_FILE}"),
                source: err,
            })?;
        }
        let by_path = done.values().map(|e| (e.path.clone(), e.id)).collect();
        Ok(State {
            header,
            done,
            by_path,
            log: Mutex::new(log),
        })
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

    /// Number of files earlier runs finished.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// Records a finished file (one append; durable with the next [`State::sync`]).
    pub fn record(&self, e: &DoneEntry) -> Result<(), IngestError> {
        let mut line = serde_json::to_vec(e).expect("entry serialises");
        line.push(b'\n');
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line).map_err(|err| IngestError::Datastore {
            op: "append to",
            path: format!(".odt-ingest/{DONE_FILE}"),
            source: err,
        })
    }

    /// Makes every recorded line durable.
    pub fn sync(&self) -> Result<(), IngestError> {
        let f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        f.sync_data().map_err(|err| IngestError::Datastore {
            op: "fsync",
            path: format!(".odt-ingest/{DONE_FILE}"),
            source: err,
        })
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

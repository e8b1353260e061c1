//! The per-file log of an ingest: one line per regular file of the device set, saying what
//! became of it. Written at the end of every run into the state directory as
//! `DATASTORE/.odt-ingest/files.csv` and `files.jsonl` (the same lines), replacing the
//! previous run's: a resumed run lists the files earlier runs wrote too.
//!
//! The BLAKE3 of a written file is that of its bytes in the datastore (what `b3sum` prints
//! for it), checked against the root journaled on the device.

use serde::Serialize;

use super::datastore::Datastore;
use super::error::IngestError;

/// Name of the CSV log in the state directory.
pub const CSV_FILE: &str = "files.csv";
/// Name of the JSON-lines log in the state directory.
pub const JSONL_FILE: &str = "files.jsonl";

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Written at its own path (by this run or an earlier one).
    Written,
    /// Not written (`--on-conflict skip`, or its name was refused).
    Skipped,
    /// Damaged on the device: not written.
    Quarantined,
    /// Written under another name because its own path was taken (`--on-conflict rename`).
    Renamed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Skipped => "skipped",
            Outcome::Quarantined => "quarantined",
            Outcome::Renamed => "renamed",
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Datastore path (where it was written, or would have been).
    pub path: String,
    /// Path on the device.
    pub device_path: String,
    /// What became of it.
    pub outcome: Outcome,
    /// Why (empty for a plain write).
    pub reason: String,
    /// Size in bytes (unknown for a refused name).
    pub size: Option<u64>,
    /// Hex BLAKE3 of the written file (written and renamed files only).
    pub blake3: Option<String>,
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text of `lines`, with a header line.
pub fn csv(lines: &[Line]) -> String {
    let mut s = String::from("path,device_path,outcome,reason,size,blake3\n");
    for l in lines {
        let fields = [
            csv_field(&l.path),
            csv_field(&l.device_path),
            l.outcome.as_str().to_string(),
            csv_field(&l.reason),
            l.size.map(|n| n.to_string()).unwrap_or_default(),
            l.blake3.clone().unwrap_or_default(),
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

/// The JSON-lines text of `lines`.
pub fn jsonl(lines: &[Line]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).expect("a log line serialises"));
        s.push('\n');
    }
    s
}

/// Writes both logs (each atomically).
pub fn write(ds: &Datastore, lines: &[Line]) -> Result<(), IngestError> {
    ds.write_state_file(CSV_FILE, csv(lines).as_bytes())?;
    ds.write_state_file(JSONL_FILE, jsonl(lines).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_jsonl_has_one_object_per_line() {
        let lines = vec![
            Line {
                path: "vm, one/disk \"a\".vmdk".into(),
                device_path: "vm, one/disk \"a\".vmdk".into(),
                outcome: Outcome::Written,
                reason: String::new(),
                size: Some(5),
                blake3: Some("ab".into()),
            },
            Line {
                path: "x".into(),
                device_path: "x".into(),
                outcome: Outcome::Skipped,
                reason: "refused: bad name".into(),
                size: None,
                blake3: None,
            },
        ];
        let c = csv(&lines);
        assert_eq!(
            c,
            "path,device_path,outcome,reason,size,blake3\n\
             \"vm, one/disk \"\"a\"\".vmdk\",\"vm, one/disk \"\"a\"\".vmdk\",written,,5,ab\n\
             x,x,skipped,refused: bad name,,\n"
        );
        let j = jsonl(&lines);
        let objs: Vec<serde_json::Value> = j
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["outcome"], "written");
        assert_eq!(objs[1]["size"], serde_json::Value::Null);
    }
}

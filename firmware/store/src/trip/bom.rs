//! The bill of materials: every entry the seal covers, with its path, kind, size, mode,
//! mtime and BLAKE3 (equal to `b3sum` of the file), and for the members of a sealed OVF
//! bundle the `.mf` digest the seal's bundle check compared them with. Built the same way
//! on the appliance (for the customer, before shipping) and by `odt bom --device` at the
//! dock or the provider, so both print the same list; [`parse`] reads a list back (CSV or
//! JSON as written here) and [`differences`] compares two.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Store;
use crate::error::{Result, TripError};
use crate::format::journal::Kind;
use crate::trip::bundle::{self, parse_mf, resolve};
use crate::trip::manifest;

/// Largest `.mf` manifest read to list its digests (as the bundle check).
const MAX_MF: u64 = 16 << 20;

/// The CSV header line, naming the columns in order.
pub const CSV_HEADER: &str = "path,kind,size,mode,mtime_unix,blake3,mf_digest";

/// One line of the bill of materials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BomEntry {
    /// Path from the export root, `/`-separated (lossy UTF-8 for other bytes).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Size in bytes as the namespace records it (a file's length).
    pub size: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Last modification, Unix seconds.
    pub mtime_unix: i64,
    /// Hex BLAKE3 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// For a member of a sealed OVF bundle: the digest its `.mf` declares, as
    /// `ALGORITHM:hex` (`SHA256:…`), which the seal's bundle check compared with the
    /// file (a mismatch is among the bundle's problems in the seal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mf_digest: Option<String>,
}

/// The bill of materials of a sealed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bom {
    /// The job the devices were provisioned for.
    pub job_id: String,
    /// The seal code the list belongs to.
    pub seal_code: Option<String>,
    /// Every entry, in path order.
    pub entries: Vec<BomEntry>,
}

/// Builds the list of a sealed store from what the seal journaled (reading no file data
/// but the sealed bundles' `.mf` manifests), and checks it is the manifest the seal signed.
pub fn entries(store: &Store) -> Result<Vec<BomEntry>> {
    let Some(m) = manifest::sealed(store)? else {
        return Err(TripError::Invalid(
            "the store is not sealed: the bill of materials is what the seal covers; seal \
             first (`odt seal`)"
                .into(),
        )
        .into());
    };
    let digests = mf_digests(store)?;
    Ok(m.files
        .into_iter()
        .map(|f| {
            let path = String::from_utf8_lossy(&f.path).into_owned();
            BomEntry {
                mf_digest: digests.get(&path).cloned(),
                path: format!("/{path}"),
                kind: match f.kind {
                    Kind::File => "file",
                    Kind::Dir => "dir",
                    Kind::Symlink => "symlink",
                }
                .into(),
                size: f.size,
                mode: format!("{:o}", f.mode & 0o7777),
                mtime_unix: f.mtime.secs,
                blake3: (f.kind == Kind::File).then(|| hex::encode(f.blake3)),
            }
        })
        .collect())
}

/// `ALGORITHM:hex` by member path (no leading `/`) for every OVF bundle the seal recorded
/// that has a `.mf` manifest. OVA members live inside the archive, not as files of the
/// list, so they carry none.
fn mf_digests(store: &Store) -> Result<BTreeMap<String, String>> {
    let view = store.view();
    let Some(seal) = view.seal() else {
        return Ok(BTreeMap::new());
    };
    let entries = bundle::entries(store);
    let mut out = BTreeMap::new();
    for b in seal.bundles {
        let path = String::from_utf8_lossy(&b.path);
        let Some(stem) = path
            .len()
            .checked_sub(4)
            .filter(|&n| path.is_char_boundary(n) && path[n..].eq_ignore_ascii_case(".ovf"))
            .map(|n| &path[..n])
        else {
            continue;
        };
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let Some(mf) = entries
            .get(&format!("{stem}.mf"))
            .filter(|e| e.kind == Kind::File && e.size <= MAX_MF)
        else {
            continue;
        };
        let (text, _) = store.read(mf.id, 0, mf.size as u32)?;
        // An unreadable manifest was a finding of the seal's bundle check; it lists nothing.
        let Ok(lines) = String::from_utf8(text)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_mf(&t))
        else {
            continue;
        };
        for l in lines {
            if let Some(target) = resolve(dir, &l.file) {
                out.insert(target, format!("{}:{}", l.algorithm, l.digest));
            }
        }
    }
    Ok(out)
}

/// CSV with the [`CSV_HEADER`] line (RFC 4180 quoting where a field needs it).
pub fn csv(entries: &[BomEntry]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = format!("{CSV_HEADER}\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            field(&e.path),
            field(&e.kind),
            e.size,
            field(&e.mode),
            e.mtime_unix,
            field(e.blake3.as_deref().unwrap_or("")),
            field(e.mf_digest.as_deref().unwrap_or(""))
        ));
    }
    out
}

/// Why a bill of materials could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line (of the CSV; 1 for JSON).
    pub line: usize,
    /// What is wrong there.
    pub why: String,
}

/// Reads a bill of materials as [`csv`] or the JSON [`Bom`] writes it (told apart by the
/// first non-blank byte: `{` for JSON).
pub fn parse(text: &str) -> std::result::Result<Vec<BomEntry>, ParseError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<Bom>(text)
            .map(|b| b.entries)
            .map_err(|e| ParseError {
                line: e.line(),
                why: format!("not a JSON bill of materials: {e}"),
            });
    }
    let records = csv_records(text)?;
    let mut it = records.into_iter();
    match it.next() {
        Some((_, h)) if h.join(",") == CSV_HEADER => {}
        _ => {
            return Err(ParseError {
                line: 1,
                why: format!("the header must be `{CSV_HEADER}`"),
            });
        }
    }
    it.map(|(line, r)| {
        let bad = |why: String| ParseError { line, why };
        let [path, kind, size, mode, mtime, blake3, mf]: [String; 7] = r
            .try_into()
            .map_err(|r: Vec<String>| bad(format!("{} fields, not 7", r.len())))?;
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Ok(BomEntry {
            path,
            kind,
            size: size
                .parse()
                .map_err(|_| bad(format!("size {size:?} is not a number")))?,
            mode,
            mtime_unix: mtime
                .parse()
                .map_err(|_| bad(format!("mtime {mtime:?} is not a number")))?,
            blake3: opt(blake3),
            mf_digest: opt(mf),
        })
    })
    .collect()
}

/// Splits RFC 4180 CSV into records (with the line each starts on); quoted fields may hold
/// commas, quotes (doubled) and line breaks.
fn csv_records(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, ParseError> {
    let mut out = Vec::new();
    let (mut line, mut start) = (1, 1);
    let (mut rec, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => rec.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut rec)));
                line += 1;
                start = line;
                any = false;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(ParseError {
            line: start,
            why: "a quoted field is not closed".into(),
        });
    }
    if any {
        rec.push(field);
        out.push((start, rec));
    }
    Ok(out)
}

/// The paths whose entries differ between `a` and `b` (present in one only, or with any
/// field different), in path order.
pub fn differences(a: &[BomEntry], b: &[BomEntry]) -> Vec<String> {
    let index = |l: &[BomEntry]| -> BTreeMap<String, BomEntry> {
        l.iter().map(|e| (e.path.clone(), e.clone())).collect()
    };
    let (a, b) = (index(a), index(b));
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str) -> BomEntry {
        BomEntry {
            path: path.into(),
            kind: "file".into(),
            size: 3,
            mode: "644".into(),
            mtime_unix: 5,
            blake3: Some("ab".into()),
            mf_digest: None,
        }
    }

    #[test]
    fn csv_quotes_what_needs_it_and_reads_back() {
        let mut list = vec![e("/a.vmdk"), e("/x,\"y\"\n.ovf"), e("/d")];
        list[0].mf_digest = Some("SHA256:cd".into());
        list[2].kind = "dir".into();
        list[2].blake3 = None;
        let t = csv(&list);
        assert_eq!(
            t,
            "path,kind,size,mode,mtime_unix,blake3,mf_digest\n\
             /a.vmdk,file,3,644,5,ab,SHA256:cd\n\
             \"/x,\"\"y\"\"\n.ovf\",file,3,644,5,ab,\n\
             /d,dir,3,644,5,,\n"
        );
        assert_eq!(parse(&t).unwrap(), list);
        assert_eq!(parse(&t.replace('\n', "\r\n")).unwrap().len(), 3);
        let json = serde_json::to_string(&Bom {
            job_id: "j".into(),
            seal_code: None,
            entries: list.clone(),
        })
        .unwrap();
        assert_eq!(parse(&json).unwrap(), list);
    }

    #[test]
    fn malformed_lists_are_refused_with_the_line() {
        assert_eq!(parse("path,kind\n").unwrap_err().line, 1);
        let t = format!("{CSV_HEADER}\n/a,file,3,644,5,ab,\n/b,file,x,644,5,ab,\n");
        assert_eq!(parse(&t).unwrap_err().line, 3);
        assert!(parse(&format!("{CSV_HEADER}\n\"/a,file")).is_err());
        assert!(parse(&format!("{CSV_HEADER}\n/a,file,3\n")).is_err());
        assert!(parse("{\"entries\": 3}").is_err());
    }

    #[test]
    fn differences_name_changed_missing_and_added_paths() {
        let a = vec![e("/a"), e("/b"), e("/c")];
        let mut b = vec![e("/a"), e("/b"), e("/d")];
        b[1].blake3 = Some("ff".into());
        assert_eq!(differences(&a, &b), ["/b", "/c", "/d"]);
        assert!(differences(&a, &a).is_empty());
    }
}

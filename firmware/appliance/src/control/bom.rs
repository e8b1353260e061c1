//! The bill of materials the appliance serves after the seal: every entry's path, kind,
//! size, mode, mtime and BLAKE3 (equal to `b3sum` of the file), from the same manifest the
//! seal signed (the store no longer changes once sealed), as CSV or JSON.

use odt_store::Store;
use odt_store::format::journal::Kind;
use serde::Serialize;

/// One line of the bill of materials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BomEntry {
    /// Path from the export root, `/`-separated (lossy UTF-8 for other bytes).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Size in bytes as the namespace records it (a file's length).
    pub size: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Last modification, Unix seconds.
    pub mtime_unix: i64,
    /// Hex BLAKE3 of the content (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// The bill of materials of a sealed store.
#[derive(Debug, Clone, Serialize)]
pub struct Bom {
    /// The job the devices were provisioned for.
    pub job_id: String,
    /// The seal code the list belongs to.
    pub seal_code: Option<String>,
    /// Every entry, in path order.
    pub entries: Vec<BomEntry>,
}

/// Builds the list from the store's manifest (blocks: may read back small files), and
/// checks it is the one the seal signed (its root is in the seal op).
pub fn entries(store: &Store) -> odt_store::Result<Vec<BomEntry>> {
    let m = odt_store::trip::manifest::build(store)?;
    let signed = store.view().seal().map(|s| s.manifest_root);
    if signed.is_some_and(|root| root != m.root()) {
        return Err(odt_store::error::TripError::Invalid(
            "the files on the devices no longer match the manifest the seal signed; check \
             the devices with `odt seal-check` and `odt verify` at the provider"
                .into(),
        )
        .into());
    }
    Ok(m.files
        .into_iter()
        .map(|f| BomEntry {
            path: format!("/{}", String::from_utf8_lossy(&f.path)),
            kind: match f.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
                Kind::Symlink => "symlink",
            },
            size: f.size,
            mode: format!("{:o}", f.mode & 0o7777),
            mtime_unix: f.mtime.secs,
            blake3: (f.kind == Kind::File).then(|| hex::encode(f.blake3)),
        })
        .collect())
}

/// CSV with a header line (RFC 4180 quoting where a field needs it).
pub fn csv(entries: &[BomEntry]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("path,kind,size,mode,mtime_unix,blake3\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            field(&e.path),
            e.kind,
            e.size,
            e.mode,
            e.mtime_unix,
            e.blake3.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let e = |path: &str| BomEntry {
            path: path.into(),
            kind: "file",
            size: 3,
            mode: "644".into(),
            mtime_unix: 5,
            blake3: Some("ab".into()),
        };
        let t = csv(&[e("/a.vmdk"), e("/x,\"y\".ovf")]);
        assert_eq!(
            t,
            "path,kind,size,mode,mtime_unix,blake3\n/a.vmdk,file,3,644,5,ab\n\
             \"/x,\"\"y\"\".ovf\",file,3,644,5,ab\n"
        );
    }
}

//! Sparse files and the size limit (issue 14 point 3), and the locked share's hint (point 8),
//! through the real appliance and the PyPI libnfs binding:
//! - while locked, the share lists one read-only file that says how to unlock;
//! - `truncate -s 1P` (ftruncate, a SETATTR) and a 4 KiB write at 1 PiB get "File too large"
//!   (NFS3ERR_FBIG) and the appliance stays up; the limit is the store's capacity, exactly;
//! - a file at the limit (all holes) seals, with the appliance's peak RSS bounded;
//! - a small sparse file (holes at chunk boundaries, data across them) has the BLAKE3 in
//!   `odt bom` that `b3sum` prints for the same bytes.

use std::process::Command;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::nfsclient::{nfstool_ok, require_clients};
use odt_e2e::run::run_ok;

const PIB: u64 = 1 << 50;
const MIB: u64 = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);
/// Peak resident memory allowed through the whole run (as tests/tests/e2e/nfs_memory.rs).
const RSS_LIMIT_KIB: u64 = 256 * 1024;

fn tool(args: &[&str]) -> String {
    nfstool_ok(args, LIMIT).trim().to_string()
}

#[test]
fn sparse_files_fbig_bom_and_the_locked_hint() {
    require_clients();
    let job = Job::provision("1G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    let root = app.url_root();

    // Locked: the hint alone, readable, saying how to unlock; nothing can be made.
    assert_eq!(tool(&["ls", &root, "/"]), "APPLIANCE-LOCKED.txt");
    let hint = tool(&["cat", &root, "/APPLIANCE-LOCKED.txt"]);
    assert!(hint.contains("odt unlock --appliance"), "{hint}");
    assert_eq!(tool(&["try-create", &root, "/x"]), "EACCES");
    assert_eq!(
        tool(&["try-truncate", &root, "/APPLIANCE-LOCKED.txt", "0"]),
        "EACCES"
    );

    app.unlock();
    assert_eq!(tool(&["ls", &root, "/"]), "", "unlocked: the hint is gone");
    let capacity = app.status()["store"]["capacity_bytes"]
        .as_u64()
        .expect("capacity in odt status --json");
    assert!(capacity > 512 * MIB && capacity < 1 << 30, "{capacity}");

    // 1 PiB by SETATTR and by a write: File too large, and the appliance stays up.
    let pib = PIB.to_string();
    assert_eq!(tool(&["try-truncate", &root, "/huge", &pib]), "EFBIG");
    assert_eq!(
        tool(&["try-pwrite", &root, "/huge2", &pib, "4096"]),
        "EFBIG"
    );
    // The limit is the capacity, to the byte.
    let over = (capacity + 1).to_string();
    assert_eq!(tool(&["try-truncate", &root, "/limit", &over]), "EFBIG");
    assert_eq!(
        tool(&[
            "try-pwrite",
            &root,
            "/limit",
            &(capacity - 4095).to_string(),
            "4096"
        ]),
        "EFBIG"
    );
    assert_eq!(
        tool(&["try-truncate", &root, "/limit", &capacity.to_string()]),
        "ok"
    );
    assert_eq!(
        tool(&[
            "try-pwrite",
            &root,
            "/limit",
            &(capacity - 4096).to_string(),
            "4096"
        ]),
        "ok"
    );

    // A small sparse file: holes at chunk boundaries, data across one and in the middle.
    let size = 5 * MIB + 100;
    let pieces = [
        format!("{}:30:1", MIB - 10),
        format!("{}:4096:2", 2 * MIB + MIB / 2),
        format!("{}:100:3", 5 * MIB),
    ];
    let mut args = vec!["sparse", root.as_str(), "/sparse.bin"];
    let size_s = size.to_string();
    args.push(&size_s);
    args.extend(pieces.iter().map(String::as_str));
    tool(&args);
    let local = job.path("sparse.bin");
    let local_s = local.to_string_lossy().into_owned();
    let mut args = vec!["sparse-local", local_s.as_str(), size_s.as_str()];
    args.extend(pieces.iter().map(String::as_str));
    tool(&args);
    let b3 = run_ok(Command::new("b3sum").arg("--no-names").arg(&local), LIMIT)
        .trim()
        .to_string();

    // The seal hashes the file at the limit (all holes but 4 KiB) with bounded memory.
    app.seal();
    let peak = app.peak_rss_kib();
    eprintln!(
        "nfs_sparse: peak RSS {} MiB after sealing a {capacity}-byte sparse file",
        peak / 1024
    );
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {} MiB", peak / 1024);

    let bom = run_ok(
        app.odt(&["bom", "--json", "--code-file"])
            .arg(app.code_file()),
        LIMIT,
    );
    let bom: serde_json::Value = serde_json::from_str(&bom).expect("odt bom --json");
    let entry = |name: &str| {
        bom["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["path"].as_str().unwrap().trim_start_matches('/') == name)
            .unwrap_or_else(|| panic!("{name} missing from the BOM: {bom}"))
            .clone()
    };
    let sparse = entry("sparse.bin");
    assert_eq!(sparse["blake3"], b3.as_str(), "BOM vs b3sum: {sparse}");
    assert_eq!(sparse["size"], size);
    // The file at the limit: the same bytes locally (a sparse file too), hashed by b3sum.
    let limit = entry("limit");
    assert_eq!(limit["size"], capacity);
    let local = job.path("limit");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&local).unwrap();
        f.set_len(capacity).unwrap();
        f.seek(SeekFrom::Start(capacity - 4096)).unwrap();
        f.write_all(&[0x5a; 4096]).unwrap();
    }
    let b3 = run_ok(Command::new("b3sum").arg("--no-names").arg(&local), LIMIT);
    assert_eq!(limit["blake3"], b3.trim(), "BOM vs b3sum: {limit}");
}

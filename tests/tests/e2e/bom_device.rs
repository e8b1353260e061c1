//! The bill of materials end to end with the real binaries and clients written by others:
//! a tree with a VM export and awkward names copied over NFS (PyPI libnfs), sealed with
//! `odt seal`; `odt bom --appliance` and `odt bom --device --job` (after the appliance
//! stopped) print the same list, whose BLAKE3 of every file equals the real `b3sum` of the
//! local copy and whose `.mf` digests equal `sha256sum`; `odt seal-check --bom` passes on
//! that list and fails (exit 3, naming the path) on an edited one, in CSV and JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient;
use odt_e2e::run::run;
use odt_e2e::vmtree;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);

use odt_e2e::run::text;

/// `odt ARGS... --device D... --job J`.
fn odt_dev(args: &[&str], job: &Job) -> Output {
    let mut c = Command::new(bins::odt());
    c.args(args).arg("--job").arg(&job.job_dir);
    for d in &job.devices {
        c.arg("--device").arg(d);
    }
    run(&mut c, None, LIMIT)
}

/// BLAKE3 of a file by the real `b3sum`.
fn b3sum(path: &Path) -> String {
    let o = run(
        Command::new("b3sum").arg("--no-names").arg(path),
        None,
        LIMIT,
    );
    assert!(
        o.status.success(),
        "b3sum failed (Debian package b3sum; scripts/install-test-deps): {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Every regular file under `root`, by its path from `root` with a leading `/`.
fn local_files(root: &Path) -> BTreeMap<String, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(format!("/{rel}"), p);
            }
        }
    }
    out
}

#[test]
fn bom_from_the_device_equals_b3sum_and_the_appliance_and_seal_check_compares_it() {
    nfsclient::require_clients();
    let job = Job::provision("2G", 2, &["--segment-size", "8M"]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let local = job.path("export");
    let vm = vmtree::write_vm_export(&local, "vm-bom", 24 << 20, 7);
    vmtree::write_awkward_tree(&local.join("misc"), 30, 8);
    std::fs::write(local.join("misc/comma, \"quoted\".txt"), b"a,b\n").unwrap();
    nfsclient::put_tree(&local, &app.url_root(), LIMIT);

    // Not sealed yet: no list, and --json says why in one object.
    let o = run(&mut app.odt(&["bom", "--json"]), None, LIMIT);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "not-sealed", "{v}");

    let sealed = app.seal();
    assert!(
        sealed.contains("odt bom --appliance") && sealed.contains("--code-file"),
        "the seal's output does not say how to keep the bill of materials:\n{sealed}"
    );
    let from_app = job.path("bom-appliance.csv");
    let o = run(
        app.odt(&["bom", "--format", "csv", "--code-file"])
            .arg(&job.code_file)
            .arg("--output")
            .arg(&from_app),
        None,
        LIMIT,
    );
    assert!(o.status.success(), "{}", text(&o));
    app.stop();

    // The same list from the devices, in CSV byte for byte and in JSON entry for entry.
    let from_dev = job.path("bom-device.csv");
    let o = odt_dev(
        &[
            "bom",
            "--format",
            "csv",
            "--output",
            from_dev.to_str().unwrap(),
        ],
        &job,
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(&from_dev).unwrap();
    assert_eq!(
        csv,
        std::fs::read_to_string(&from_app).unwrap(),
        "odt bom --device differs from odt bom --appliance"
    );
    let o = odt_dev(&["bom", "--json"], &job);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("bom --json");
    let entries = v["entries"].as_array().unwrap();
    // One CSV line per entry after the header (no name in the tree holds a line break).
    assert_eq!(entries.len(), csv.lines().count() - 1, "{v}");
    let files: BTreeMap<String, &Value> = entries
        .iter()
        .filter(|e| e["kind"] == "file")
        .map(|e| (e["path"].as_str().unwrap().to_string(), e))
        .collect();

    // Every local file is listed with its size and the BLAKE3 b3sum computes, and no more.
    let want = local_files(&local);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, p) in &want {
        let e = files[path];
        assert_eq!(e["size"], std::fs::metadata(p).unwrap().len(), "{path}");
        assert_eq!(e["blake3"], b3sum(p).as_str(), "{path}");
    }
    // The bundle's members carry the .mf digest the seal checked: sha256sum's.
    for f in &vm.files[..2] {
        let path = format!("/vm-bom/{f}");
        assert_eq!(
            files[&path]["mf_digest"],
            format!("SHA256:{}", nfsclient::sha256_file(&vm.dir.join(f))).as_str(),
            "{path}"
        );
    }
    assert!(files["/misc/empty-file"].get("mf_digest").is_none());

    // seal-check --bom: the real list matches, in CSV and JSON.
    let json_bom = job.path("bom.json");
    std::fs::write(&json_bom, &o.stdout).unwrap();
    for f in [&from_dev, &json_bom] {
        let o = odt_dev(&["seal-check", "--bom", f.to_str().unwrap()], &job);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("BILL OF MATERIALS MATCHES"),
            "{}",
            text(&o)
        );
    }
    // One hex digit of the disk's BLAKE3 changed: exit 3, and the path is named.
    let disk = format!("/vm-bom/{}", vm.files[1]);
    let hash = files[&disk]["blake3"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if hash.starts_with('0') { '1' } else { '0' },
        &hash[1..]
    );
    let edited = job.path("bom-edited.csv");
    std::fs::write(&edited, csv.replace(&hash, &flipped)).unwrap();
    let o = odt_dev(&["seal-check", "--bom", edited.to_str().unwrap()], &job);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("BILL OF MATERIALS DIFFERS") && text(&o).contains(&disk),
        "{}",
        text(&o)
    );
    let o = odt_dev(
        &["seal-check", "--json", "--bom", edited.to_str().unwrap()],
        &job,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("seal-check --json");
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["bom"]["matches"], false, "{v}");
    assert_eq!(
        v["bom"]["first_differing_paths"],
        serde_json::json!([disk]),
        "{v}"
    );
    // A line left out is a difference too.
    let dropped: String = csv
        .lines()
        .filter(|l| !l.starts_with("/misc/empty-file,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&edited, dropped).unwrap();
    let o = odt_dev(&["seal-check", "--bom", edited.to_str().unwrap()], &job);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("/misc/empty-file"), "{}", text(&o));
    // Not a list at all: a usage error, one JSON object.
    std::fs::write(&edited, "hello\n").unwrap();
    let o = odt_dev(
        &["seal-check", "--json", "--bom", edited.to_str().unwrap()],
        &job,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "usage", "{v}");
}

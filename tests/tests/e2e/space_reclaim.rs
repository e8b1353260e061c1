//! Space comes back (issue 17) over NFS on a small device: fill to 60 %, delete every other
//! file, refill to 90 % (more than the device holds went through it: only cleaning makes
//! room), overwrite a large file in place, restart the appliance, read everything back
//! byte for byte, then seal, `odt seal-check`, `odt verify --deep` and `odt ingest`.
//!
//! Needs libnfs-utils and PyPI libnfs (`scripts/install-test-deps`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient::{
    manifest, manifest_local, nfs_cp_ok, nfstool_ok, put_tree, require_clients,
};
use odt_e2e::run::run;

const LIMIT: Duration = Duration::from_secs(600);
const MIB: u64 = 1 << 20;
const FILE: u64 = 4 * MIB;
const BIG: u64 = 32 * MIB;

fn random_file(path: &Path, bytes: u64, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; bytes as usize];
    rng.fill_bytes(&mut v);
    std::fs::write(path, v).unwrap();
}

fn odt(args: &[&str]) -> (i32, String) {
    let o = run(Command::new(bins::odt()).args(args), None, LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// Writes `names` (with their seeds) into a fresh local folder `dir` and copies that folder's
/// files into the export root; records them in the mirror of what the export should hold.
fn put_files(app: &Appliance, dir: &Path, mirror: &Path, files: &[(String, u64, u64)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, size, seed) in files {
        random_file(&dir.join(name), *size, *seed);
        std::fs::copy(dir.join(name), mirror.join(name)).unwrap();
    }
    put_tree(dir, &app.url_root(), LIMIT);
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v["store"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no {k}: {v}"))
}

/// Every regular file under `dir`, by name.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A 256 MiB device with 8 MiB segments and a 16 MiB journal, its appliance unlocked.
fn small_unlocked_appliance() -> (Job, Appliance) {
    require_clients();
    let job = Job::provision(
        "256M",
        1,
        &["--segment-size", "8M", "--journal-size", "16M"],
    );
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    (job, app)
}

#[test]
fn fill_delete_refill_overwrite_restart_then_seal_verify_ingest() {
    let (job, mut app) = small_unlocked_appliance();
    let capacity = num(&app.status(), "capacity_bytes");
    // What the device holds of files written in 1 MiB pieces: records do not span
    // segments, so an 8 MiB segment takes seven 1 MiB records; one segment is kept for the
    // cleaner. The percentages below are of this.
    let holds = (capacity / (8 * MIB) - 1) * 7 * MIB;
    let mirror = job.path("mirror");
    std::fs::create_dir_all(&mirror).unwrap();

    // 60 %: the large file and small ones.
    let first = (holds * 6 / 10 - BIG) / FILE;
    let mut batch: Vec<(String, u64, u64)> = vec![("big.vmdk".into(), BIG, 1)];
    batch.extend((0..first).map(|i| (format!("a{i:03}.bin"), FILE, 100 + i)));
    put_files(&app, &job.path("fill"), &mirror, &batch);

    // Every other small file deleted.
    for i in (0..first).step_by(2) {
        let name = format!("a{i:03}.bin");
        nfstool_ok(&["rm", &app.url_root(), &format!("/{name}")], LIMIT);
        std::fs::remove_file(mirror.join(name)).unwrap();
    }

    // Refilled to 90 % of the capacity.
    let live = BIG + first.div_ceil(2) * FILE;
    let refill = (holds * 9 / 10 - live) / FILE;
    let batch: Vec<_> = (0..refill)
        .map(|i| (format!("b{i:03}.bin"), FILE, 1000 + i))
        .collect();
    put_files(&app, &job.path("refill"), &mirror, &batch);

    // The large file overwritten in place with other content.
    put_files(
        &app,
        &job.path("overwrite"),
        &mirror,
        &[("big.vmdk".into(), BIG, 2)],
    );
    let written = 2 * BIG + (first + refill) * FILE;
    assert!(
        written > capacity,
        "the scenario writes {written} bytes, more than the {capacity} the device holds"
    );
    let want = manifest_local(&mirror, LIMIT);
    assert_eq!(manifest(&app.url_root(), LIMIT), want);

    // Deleted space comes back within seconds, without any write asking for it: four
    // files written one after the other cover at least one whole segment.
    let before = app.status();
    for i in 0..4 {
        let name = format!("b{i:03}.bin");
        nfstool_ok(&["rm", &app.url_root(), &format!("/{name}")], LIMIT);
        std::fs::remove_file(mirror.join(name)).unwrap();
    }
    let want = manifest_local(&mirror, LIMIT);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = app.status();
        if num(&now, "free_bytes") >= num(&before, "free_bytes") + 8 * MIB {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "16 MiB deleted, no segment free again after 20 s: {before} -> {now}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // After a restart: the same bytes.
    app.restart();
    app.unlock();
    assert_eq!(manifest(&app.url_root(), LIMIT), want);

    let o = run(
        app.odt(&["seal", "--json", "--code-file"])
            .arg(app.code_file()),
        None,
        LIMIT,
    );
    let sealed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "odt seal --json: {e}: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let code = sealed["seal_code"]
        .as_str()
        .expect("a seal code")
        .to_string();
    app.stop();
    let dev = job.devices[0].to_str().unwrap().to_string();
    let jd = job.job_dir.to_str().unwrap().to_string();
    let (rc, out) = odt(&[
        "seal-check",
        "--device",
        &dev,
        "--job",
        &jd,
        "--expect",
        &code,
    ]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("SEAL INTACT"), "{out}");
    let (rc, out) = odt(&["verify", "--device", &dev, "--job", &jd, "--deep"]);
    assert_eq!(rc, 0, "{out}");
    let ds = job.path("datastore");
    std::fs::create_dir_all(&ds).unwrap();
    let (rc, out) = odt(&[
        "ingest",
        "--device",
        &dev,
        "--job",
        &jd,
        "--to",
        ds.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}");
    let mut got = Vec::new();
    files_under(&ds, &mut got);
    for e in std::fs::read_dir(&mirror).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        let ingested = got
            .iter()
            .find(|g| g.file_name() == Some(name))
            .unwrap_or_else(|| panic!("{} not ingested: {got:?}", p.display()));
        assert!(
            std::fs::read(ingested).unwrap() == std::fs::read(&p).unwrap(),
            "{} ingested with other bytes",
            p.display()
        );
    }
}

/// An 8 MiB file written while other clients wrote theirs (its records interleaved with
/// theirs in the same segments, none of which is even half dead once it is deleted) is free
/// again within seconds of its delete on an otherwise idle appliance, as `odt status`
/// reports; every other file reads back the same.
#[test]
fn an_8_mib_file_deleted_among_live_files_is_free_again_within_seconds() {
    let (job, mut app) = small_unlocked_appliance();
    let mirror = job.path("mirror");
    let local = job.path("local");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::create_dir_all(&local).unwrap();

    // Four 8 MiB files copied at once by four clients: their records interleave.
    let together: Vec<String> = (0..4).map(|k| format!("w{k}.bin")).collect();
    for (k, name) in together.iter().enumerate() {
        random_file(&local.join(name), 8 * MIB, 500 + k as u64);
        std::fs::copy(local.join(name), mirror.join(name)).unwrap();
    }
    let copies: Vec<_> = together
        .iter()
        .map(|name| {
            let src = local.join(name).to_string_lossy().into_owned();
            let dst = app.url_file(name);
            std::thread::spawn(move || nfs_cp_ok(&src, &dst, LIMIT))
        })
        .collect();
    for c in copies {
        c.join().unwrap();
    }
    // Then more files, so that the deleted records are not in the open segment (which the
    // cleaner never takes).
    let after: Vec<(String, u64, u64)> = (0..5)
        .map(|k| (format!("t{k}.bin"), FILE, 600 + k))
        .collect();
    put_files(&app, &job.path("after"), &mirror, &after);
    let want_all = manifest_local(&mirror, LIMIT);
    assert_eq!(manifest(&app.url_root(), LIMIT), want_all);

    let before = app.status();
    nfstool_ok(&["rm", &app.url_root(), "/w1.bin"], LIMIT);
    let deleted = std::time::Instant::now();
    std::fs::remove_file(mirror.join("w1.bin")).unwrap();
    let deadline = deleted + Duration::from_secs(20);
    loop {
        let now = app.status();
        if num(&now, "free_bytes") >= num(&before, "free_bytes") + 6 * MIB {
            eprintln!(
                "8 MiB among live files: free again {:.1} s after the delete ({} -> {} bytes free)",
                deleted.elapsed().as_secs_f64(),
                num(&before, "free_bytes"),
                num(&now, "free_bytes")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "8 MiB deleted among live files, not free again after 20 s: {before} -> {now}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        manifest(&app.url_root(), LIMIT),
        manifest_local(&mirror, LIMIT)
    );
    app.stop();
}

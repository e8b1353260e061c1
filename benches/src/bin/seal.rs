//! Seal benchmarks (issue 4): `odt seal-check` time on a device holding 100,000 files and on
//! one holding a single file, and the seal time (bundle check with `.mf` digests, manifest,
//! signed record) after copying a 10 GiB VM bundle. Prints a Markdown table.
//!
//! Usage: `cargo run --release -p odt-bench --bin seal -- [--dir DIR] [--files N] [--gib G]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use odt_store::trip::provision::{self, Options};
use odt_store::{Access, Locked, Store};
use odt_test_support::data::XorShift;
use sha2::Digest;

struct Args {
    dir: PathBuf,
    files: usize,
    gib: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        dir: PathBuf::from("target/bench/seal"),
        files: 100_000,
        gib: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--dir" => a.dir = v.into(),
            "--files" => a.files = v.parse()?,
            "--gib" => a.gib = v.parse()?,
            _ => anyhow::bail!("unknown option {k} (use --dir, --files, --gib)"),
        }
    }
    Ok(a)
}

/// A provisioned single-device set with its job directory.
fn setup(dir: &Path, name: &str, size: u64) -> anyhow::Result<(Vec<PathBuf>, PathBuf, Store)> {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    let id = age::x25519::Identity::generate();
    let paths = vec![d.join("data0.img")];
    let opts = Options {
        create_size: Some(size),
        ..Options::default()
    };
    let p = provision::provision(&paths, name, name, &id.to_public(), &opts)?;
    let job = d.join("job");
    odt_test_support::fixture::write_job(&job, name, &id, &p);
    let l = Locked::open(&paths, Access::ReadWrite)?;
    let s = l.secrets_from_code(&p.unlock_code)?;
    let store = l.unlock(s, Access::ReadWrite)?;
    odt_store::trip::bundle_digests::attach(&store);
    Ok((paths, job, store))
}

/// Deterministic VM-disk-like block: zeros, log text or random, by block number.
fn block(n: u64, buf: &mut [u8]) {
    match n % 4 {
        0 | 1 => buf.fill(0),
        2 => {
            let mut at = 0;
            let mut i = n * 1000;
            while at < buf.len() {
                let line = format!(
                    "2026-11-23T05:25:{:02} host{} service[{}]: request ok\n",
                    i % 60,
                    n % 7,
                    i
                );
                let k = line.len().min(buf.len() - at);
                buf[at..at + k].copy_from_slice(&line.as_bytes()[..k]);
                at += k;
                i += 1;
            }
        }
        _ => {
            XorShift::new(n).fill(buf);
        }
    }
}

fn time_check(paths: &[PathBuf], job: &Path, code: &str) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let r = odt_store::trip::seal::check(paths, job, Some(code))?;
        anyhow::ensure!(r.intact, "seal check failed: {:?}", r.problem);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    std::fs::create_dir_all(&a.dir)?;
    let mut rows = Vec::new();

    // Many small files.
    let (paths, job, store) = setup(&a.dir, "many", 8 << 30)?;
    let store = Arc::new(store);
    let t = Instant::now();
    let dirs: Vec<u64> = (0..100)
        .map(|i| {
            store
                .mkdir(store.root(), format!("vm{i:03}").as_bytes(), 0o755)
                .map(|x| x.id)
        })
        .collect::<Result<_, _>>()?;
    std::thread::scope(|sc| {
        for th in 0..8usize {
            let store = store.clone();
            let dirs = dirs.clone();
            let n = a.files;
            sc.spawn(move || {
                for i in (th..n).step_by(8) {
                    let f = store
                        .create(dirs[i % 100], format!("file-{i:06}.log").as_bytes(), 0o644)
                        .unwrap();
                    store
                        .write(f.id, 0, format!("file {i}\n").repeat(20).as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let fill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sealed = odt_store::trip::seal::check_and_seal(&store, true)?;
    let seal_many = t.elapsed().as_secs_f64();
    let code = sealed.sealed.context("not sealed")?.code;
    drop(store);
    let check_many = time_check(&paths, &job, &code)?;
    rows.push(format!(
        "| {} files (written in {fill:.1} s) | seal {seal_many:.2} s | seal-check {check_many:.3} s |",
        a.files
    ));

    // One file.
    let (paths, job, store) = setup(&a.dir, "one", 1 << 30)?;
    let f = store.create(store.root(), b"only.txt", 0o644)?;
    store.write(f.id, 0, b"one file\n")?;
    let t = Instant::now();
    let code = odt_store::trip::seal::check_and_seal(&store, true)?
        .sealed
        .context("not sealed")?
        .code;
    let seal_one = t.elapsed().as_secs_f64();
    drop(store);
    let check_one = time_check(&paths, &job, &code)?;
    rows.push(format!(
        "| 1 file | seal {seal_one:.2} s | seal-check {check_one:.3} s |"
    ));

    // A 10 GiB VM bundle with a .mf, copied as an NFS client would (1 MiB writes, 4 in flight).
    let size = a.gib << 30;
    let (paths, job, store) = setup(&a.dir, "bundle", size + (4 << 30))?;
    let store = Arc::new(store);
    let vm = store.mkdir(store.root(), b"vm1", 0o755)?;
    let ovf = format!(
        r#"<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="vm1-disk1.vmdk" ovf:id="file1" ovf:size="{size}"/></References></Envelope>"#
    );
    let o = store.create(vm.id, b"vm1.ovf", 0o644)?;
    store.write(o.id, 0, ovf.as_bytes())?;
    let disk = store.create(vm.id, b"vm1-disk1.vmdk", 0o644)?;
    let t = Instant::now();
    let blocks = size >> 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(8);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let sha = std::thread::scope(|sc| {
        for _ in 0..4 {
            let store = store.clone();
            let rx = rx.clone();
            sc.spawn(move || {
                loop {
                    let Ok((n, buf)) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    store.write(disk.id, n << 20, &buf).unwrap();
                }
            });
        }
        let mut h = sha2::Sha256::new();
        for n in 0..blocks {
            let mut buf = vec![0u8; 1 << 20];
            block(n, &mut buf);
            h.update(&buf);
            tx.send((n, buf)).unwrap();
        }
        drop(tx);
        h.finalize()
    });
    let copy = t.elapsed().as_secs_f64();
    let mf = format!(
        "SHA256(vm1.ovf)= {}\nSHA256(vm1-disk1.vmdk)= {}\n",
        hex::encode(sha2::Sha256::digest(ovf.as_bytes())),
        hex::encode(sha)
    );
    let m = store.create(vm.id, b"vm1.mf", 0o644)?;
    store.write(m.id, 0, mf.as_bytes())?;
    let t = Instant::now();
    let out = odt_store::trip::seal::check_and_seal(&store, false)?;
    let seal_big = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.refused.is_none(), "seal refused: {:?}", out.refused);
    let b = &out.bundles.bundles[0];
    anyhow::ensure!(b.digests_checked == 2, "digests not checked: {b:?}");
    let code = out.sealed.context("not sealed")?.code;
    drop(store);
    let check_big = time_check(&paths, &job, &code)?;
    rows.push(format!(
        "| {} GiB bundle with .mf (copied in {copy:.1} s, {:.0} MB/s) | seal {seal_big:.2} s | seal-check {check_big:.3} s |",
        a.gib,
        size as f64 / copy / 1e6
    ));

    println!("| device holds | seal (bundle check + manifest + record) | seal-check (best of 3) |");
    println!("|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(())
}

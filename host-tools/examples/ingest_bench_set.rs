//! Builds the data set of the ingest benchmark (docs/benchmarks.md, "Ingest (issue 5)"):
//! a plaintext tree of VM bundles and a sealed device image holding the same tree, both on
//! the same disk, so that `odt ingest` can be timed against `cp -r` of the tree.
//!
//! ```text
//! cargo run --release -p odt-tools --example ingest_bench_set -- DIR GIB
//! ```
//! writes `DIR/tree/` (about GIB GiB), `DIR/job/` and `DIR/dev0.img`, and prints the
//! commands to compare. With `--importable` the bundles are ones vCenter imports (a full
//! descriptor, streamOptimized disk headers), for benches/import-vs-two-step.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use odt_store::trip::provision::{self, Options};
use odt_store::{Access, Locked, Store};
use odt_test_support::data::XorShift;

const MIB: usize = 1 << 20;

/// One MiB of VM-disk-like content: a mix of log-like text, random bytes (already
/// compressed or encrypted data) and a few zero blocks, chosen per MiB.
fn vm_block(i: u64, rng: &mut XorShift, buf: &mut [u8]) {
    match i % 10 {
        0 => buf.fill(0),
        1..=5 => {
            let mut at = 0;
            let mut n = i * 1000;
            while at < buf.len() {
                let line = format!(
                    "2026-11-23T06:{:02}:{:02}.{:06}Z host{} sshd[{}]: session opened for user u{} from 10.{}.{}.{}\n",
                    n % 60,
                    (n / 60) % 60,
                    n % 999_983,
                    n % 17,
                    1000 + n % 30_000,
                    n % 97,
                    n % 256,
                    (n / 7) % 256,
                    (n / 13) % 256
                );
                let k = line.len().min(buf.len() - at);
                buf[at..at + k].copy_from_slice(&line.as_bytes()[..k]);
                at += k;
                n += 1;
            }
        }
        _ => rng.fill(buf),
    }
}

fn write_file(path: &Path, mib: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = fs::File::create(path)?;
    let mut rng = XorShift::new(seed);
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        vm_block(i + seed, &mut rng, &mut buf);
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    Ok(())
}

fn generate_tree(tree: &Path, gib: u64, importable: bool) -> anyhow::Result<()> {
    let total = gib * 1024;
    for (b, share) in [("web-01", 6u64), ("db-01", 4)] {
        let d = tree.join(b);
        fs::create_dir_all(&d)?;
        let disk = format!("{b}-disk1.vmdk");
        let mib = total * share / 10 - 2;
        let ovf = if importable {
            // A descriptor vCenter (and its simulator) imports, and a streamOptimized header.
            odt_e2e::vcsim::descriptor(b, &disk, (mib as usize) * MIB, None)
        } else {
            format!("<Envelope name=\"{b}\"/>\n").repeat(200)
        };
        fs::write(d.join(format!("{b}.ovf")), ovf)?;
        fs::write(
            d.join(format!("{b}.mf")),
            format!("SHA256({b}-disk1.vmdk)= 00\n"),
        )?;
        write_file(&d.join(&disk), mib, share)?;
        if importable {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new().write(true).open(d.join(&disk))?;
            f.write_all_at(&odt_e2e::vcsim::stream_vmdk(512, 0), 0)?;
        }
    }
    let logs = tree.join("db-01").join("logs");
    fs::create_dir_all(&logs)?;
    let mut rng = XorShift::new(99);
    for i in 0..200u64 {
        let mut buf = vec![0u8; 4096 + (i as usize * 7919) % 60_000];
        rng.fill(&mut buf);
        fs::write(logs.join(format!("trace-{i:03}.log")), &buf)?;
    }
    Ok(())
}

fn copy_into(store: &Store, dir: u64, from: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        if e.file_type()?.is_dir() {
            let d = store.mkdir(dir, name, 0o755)?;
            copy_into(store, d.id, &e.path())?;
        } else {
            let f = store.create(dir, name, 0o644)?;
            let mut src = fs::File::open(e.path())?;
            let mut buf = vec![0u8; MIB];
            let mut off = 0u64;
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                store.write(f.id, off, &buf[..n])?;
                off += n as u64;
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 && !(args.len() == 4 && args[3] == "--importable") {
        bail!("usage: ingest_bench_set DIR GIB [--importable]");
    }
    let importable = args.len() == 4;
    let out = PathBuf::from(&args[1]);
    let gib: u64 = args[2].parse().context("GIB must be a whole number")?;
    let tree = out.join("tree");
    if tree.exists() {
        bail!("{} exists; use an empty directory", tree.display());
    }
    eprintln!("writing the plaintext tree ({gib} GiB) ...");
    generate_tree(&tree, gib, importable)?;

    let job_dir = out.join("job");
    fs::create_dir_all(&job_dir)?;
    let identity = age::x25519::Identity::generate();
    let dev = out.join("dev0.img");
    let size = (gib + 2) * (1 << 30) * 12 / 10;
    let opts = Options {
        create_size: Some(size),
        ..Default::default()
    };
    let p = provision::provision(
        std::slice::from_ref(&dev),
        "odt-bench",
        "bench",
        &identity.to_public(),
        &opts,
    )?;
    odt_test_support::fixture::write_job(&job_dir, "odt-bench", &identity, &p);

    eprintln!("packing it into {} and sealing ...", dev.display());
    let locked = Locked::open(std::slice::from_ref(&dev), Access::ReadWrite)?;
    let secrets = locked.secrets_from_identity(&identity)?;
    let store = locked.unlock(secrets, Access::ReadWrite)?;
    copy_into(&store, store.root(), &tree)?;
    let sealed = odt_store::trip::seal::seal(&store, vec![])?;
    drop(store);
    println!("seal code {}", sealed.code);
    println!("tree:   {}", tree.display());
    println!("device: {}", dev.display());
    println!(
        "compare: cp -r {} {}/cp-copy  vs  odt ingest --job {} --device {} --to {}/datastore",
        tree.display(),
        out.display(),
        job_dir.display(),
        dev.display(),
        out.display()
    );
    Ok(())
}

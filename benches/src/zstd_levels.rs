//! `zstd-levels`: which zstd level records should use. Cuts a corpus file the way the store
//! cuts writes (1 MiB blocks, all-zero 64 KiB grains dropped as holes, the non-zero runs
//! compressed one by one), and for each level reports single-thread speed and the ratio,
//! overall and per kind of run (compressible or not).
//!
//! ```text
//! target/release/zstd-levels --corpus target/bench/corpus-v1-s2026-2147483648.bin
//! ```

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

/// Bytes compressed at a time: a record's plaintext, one chunk.
const CHUNK: usize = odt_store::format::tree_hash::CHUNK as usize;
const GRAIN: usize = 64 << 10;

#[derive(Parser, Debug)]
#[command(about = "Speed and ratio of zstd levels on the pieces the store would compress")]
struct Args {
    /// Corpus file (as written by `pack`).
    #[arg(long)]
    corpus: PathBuf,
    /// Levels to try.
    #[arg(
        long,
        default_value = "-5,-3,-1,1,2,3",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    levels: Vec<i32>,
    /// Bytes of the corpus to use (from its start).
    #[arg(long, default_value_t = 512 << 20)]
    limit: usize,
    /// Passes per level; the fastest is reported (the machine is shared).
    #[arg(long, default_value_t = 3)]
    passes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut data = Vec::new();
    File::open(&args.corpus)
        .with_context(|| format!("open {}", args.corpus.display()))?
        .take(args.limit as u64)
        .read_to_end(&mut data)?;
    // The non-zero runs a write of each 1 MiB block would turn into records.
    let mut pieces: Vec<&[u8]> = Vec::new();
    for block in data.chunks(CHUNK) {
        let mut s = 0;
        while s < block.len() {
            let zero = |a: usize| {
                block[a..(a + GRAIN).min(block.len())]
                    .iter()
                    .all(|&b| b == 0)
            };
            let z = zero(s);
            let mut e = (s + GRAIN).min(block.len());
            while e < block.len() && zero(e) == z {
                e = (e + GRAIN).min(block.len());
            }
            if !z {
                pieces.push(&block[s..e]);
            }
            s = e;
        }
    }
    let input: usize = pieces.iter().map(|p| p.len()).sum();
    println!(
        "{} MiB of corpus, {} MiB in {} non-zero pieces (what records compress)\n",
        data.len() >> 20,
        input >> 20,
        pieces.len()
    );
    println!(
        "| level | MB/s (1 thread, input) | stored / input | pieces kept compressed | stored of compressible pieces / their input |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK));
    for &level in &args.levels {
        let mut c = zstd::bulk::Compressor::new(level)?;
        let mut best = f64::MAX;
        let (mut stored, mut kept, mut kept_in, mut kept_out) = (0usize, 0usize, 0usize, 0usize);
        for _ in 0..args.passes {
            stored = 0;
            kept = 0;
            kept_in = 0;
            kept_out = 0;
            let t = Instant::now();
            for p in &pieces {
                out.clear();
                // The store's rule: keep the compressed form only if it saves 1/32.
                let limit = p.len() - p.len() / 32;
                match c.compress_to_buffer(p, &mut out) {
                    Ok(n) if n < limit => {
                        stored += n;
                        kept += 1;
                        kept_in += p.len();
                        kept_out += n;
                    }
                    _ => stored += p.len(),
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "| {level} | {:.0} | {:.3} | {kept} of {} | {:.3} |",
            input as f64 / best / 1e6,
            stored as f64 / input as f64,
            pieces.len(),
            kept_out as f64 / kept_in.max(1) as f64
        );
    }
    probe(&pieces, input)
}

/// What the store's incompressibility probe (`record::worth_compressing`) costs in ratio
/// and saves in time, at the store's level: every piece compressed as the store would
/// without the probe, then with it.
fn probe(pieces: &[&[u8]], input: usize) -> Result<()> {
    let mut c = zstd::bulk::Compressor::new(odt_store::format::record::ZSTD_LEVEL)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK));
    let mut run = |use_probe: bool| -> Result<(usize, usize, f64)> {
        let (mut stored, mut skipped) = (0usize, 0usize);
        let t = Instant::now();
        for p in pieces {
            if use_probe && !odt_store::format::record::worth_compressing(p) {
                skipped += 1;
                stored += p.len();
                continue;
            }
            out.clear();
            let limit = p.len() - p.len() / 32;
            stored += match c.compress_to_buffer(p, &mut out) {
                Ok(n) if n < limit => n,
                _ => p.len(),
            };
        }
        Ok((stored, skipped, t.elapsed().as_secs_f64()))
    };
    let (without, _, t0) = run(false)?;
    let (with, skipped, t1) = run(true)?;
    println!(
        "\nIncompressibility probe at level {}: stored / input {:.4} without, {:.4} with \
         ({:+.3} % bytes stored), {skipped} of {} pieces skipped, {:.2} s -> {:.2} s",
        odt_store::format::record::ZSTD_LEVEL,
        without as f64 / input as f64,
        with as f64 / input as f64,
        (with as f64 / without as f64 - 1.0) * 100.0,
        pieces.len(),
        t0,
        t1
    );
    Ok(())
}

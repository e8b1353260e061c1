//! `pack`: throughput of the store's write pipeline (extents + zstd + AEAD + BLAKE3 + durable
//! device writes) on a generated VM-disk-like corpus, side by side with `restic backup`,
//! `zstd -1 -T2 | age` and the raw sequential write speed of the same disk.
//!
//! The store is driven as the NFS layer drives it: N threads send 1 MiB writes at increasing
//! offsets into one file named like a VM disk (`disk-flat.vmdk`, so the store's on-the-way-in
//! SHA-256 of bundle members runs too), either each write durable before it returns
//! (FILE_SYNC) or queued (UNSTABLE) with one sync (COMMIT) at the end.
//!
//! The disk of the development machine is noisy, so every method runs once per round and the
//! rounds are interleaved (A B C A B C ..., the starting method rotating); the table reports
//! the median. Outputs are deleted after each run, so every run writes fresh files.
//!
//! ```text
//! cargo build --release -p odt-bench
//! target/release/pack --size 2G --rounds 5 --threads 2,4,8 --out bench.md
//! ```

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use odt_store::trip::provision::{Options, provision};
use odt_store::{Access, Locked};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// What an NFS client sends for a big file: aligned 1 MiB WRITEs.
const WRITE_SIZE: u64 = MIB;
/// Corpus extents are multiples of this (the grain of a sparse vmdk).
const GRAIN: u64 = 64 * KIB;
/// Bumped whenever the generator changes, so an old corpus file is not reused.
const CORPUS_VERSION: u32 = 1;
/// Block size of the raw-disk baselines.
const DISK_BLOCK: usize = 4 << 20;

#[derive(Parser, Debug)]
#[command(about = "Pack throughput of odt-store vs restic, zstd|age and the raw disk")]
struct Args {
    /// Corpus size (suffix K, M, G).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    size: u64,
    /// Work directory for the corpus and every output (must be on the disk under test).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Rounds; every method runs once per round, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Writer threads for the store (comma-separated list: one row per count).
    #[arg(long, default_value = "4", value_delimiter = ',')]
    threads: Vec<usize>,
    /// How the store's writers wait (comma-separated: one row each): `sync` = every write
    /// returns once durable (NFS FILE_SYNC, `Store::write`); `unstable` = writes return once
    /// queued and one sync at the end makes them durable (NFS UNSTABLE + COMMIT,
    /// `Store::write_unstable` + `Store::sync`).
    #[arg(long, default_value = "sync,unstable", value_delimiter = ',')]
    durability: Vec<String>,
    /// Methods to run (comma-separated): pack, restic, zstd-age, odirect, buffered.
    #[arg(
        long,
        default_value = "pack,restic,zstd-age,odirect,buffered",
        value_delimiter = ','
    )]
    methods: Vec<String>,
    /// Seed of the corpus generator.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Read the packed file back after each store run and compare it with the corpus
    /// (not timed).
    #[arg(long)]
    verify: bool,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], KIB),
        Some('M' | 'm') => (&s[..s.len() - 1], MIB),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("size {s:?}: {e}"))?;
    n.checked_mul(mul)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

// ----- corpus ---------------------------------------------------------------------------

/// SplitMix64: small, fast, deterministic; good enough to make bytes zstd cannot shrink.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zero,
    Text,
    Random,
}

/// The corpus layout: extents of 64 KiB–1 MiB (in 64 KiB steps), half of them zero, a quarter
/// log-like text, a quarter random (compressed or encrypted data inside the guest).
fn plan(size: u64, seed: u64) -> Vec<(Content, u64)> {
    let mut rng = Rng(seed ^ 0x706c_616e);
    let mut out = Vec::new();
    let mut left = size;
    while left > 0 {
        let len = ((1 + rng.below(16)) * GRAIN).min(left);
        let kind = match rng.below(4) {
            0 | 1 => Content::Zero,
            2 => Content::Text,
            _ => Content::Random,
        };
        out.push((kind, len));
        left -= len;
    }
    out
}

/// Writes syslog/journal/access-log-like lines: fixed templates with varying numbers, ids,
/// addresses and hashes, so zstd finds structure but not endless repeats.
struct LogGen {
    rng: Rng,
    ms: u64,
    line: String,
}

impl LogGen {
    fn new(seed: u64) -> Self {
        LogGen {
            rng: Rng(seed ^ 0x6c6f_6773),
            ms: 1_714_000_000_000,
            line: String::new(),
        }
    }

    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            write!(s, "{:016x}", self.rng.next()).unwrap();
        }
        s.truncate(n);
        s
    }

    fn b64(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n)
            .map(|_| A[self.rng.below(64) as usize] as char)
            .collect()
    }

    fn ip(&mut self) -> String {
        let r = self.rng.next();
        format!(
            "10.{}.{}.{}",
            (r >> 8) as u8 % 16,
            (r >> 16) as u8,
            (r >> 24) as u8
        )
    }

    fn next_line(&mut self) -> &str {
        self.ms += self.rng.below(40);
        let secs = self.ms / 1000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let day = 1 + (secs / 86400) % 28;
        let host = self.rng.pick(&[
            "esx-a01",
            "esx-a02",
            "vcsa",
            "db-prod-3",
            "web-17",
            "web-18",
        ]);
        let pid = 300 + self.rng.below(30000);
        let mut l = format!(
            "2024-05-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z {host} ",
            self.ms % 1000
        );
        match self.rng.below(7) {
            0 => {
                let user = self
                    .rng
                    .pick(&["root", "backup", "deploy", "alice", "svc-monitor"]);
                let ip = self.ip();
                let port = 1024 + self.rng.below(60000);
                let fp = self.b64(43);
                write!(l, "sshd[{pid}]: Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{fp}").unwrap();
            }
            1 => {
                let ip = self.ip();
                let verb = self.rng.pick(&["GET", "GET", "GET", "POST", "PUT"]);
                let path = self.rng.pick(&[
                    "/api/v1/items",
                    "/api/v1/orders",
                    "/static/app.js",
                    "/login",
                    "/healthz",
                ]);
                let id = self.rng.below(1_000_000);
                let st = self.rng.pick(&["200", "200", "200", "304", "404", "500"]);
                let bytes = self.rng.below(200_000);
                let ua = self.rng.pick(&[
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
                    "curl/8.5.0",
                    "kube-probe/1.29",
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
                ]);
                write!(l, "nginx[{pid}]: {ip} - - \"{verb} {path}/{id}?page={} HTTP/1.1\" {st} {bytes} \"-\" \"{ua}\"", id % 50).unwrap();
            }
            2 => {
                let ms = self.rng.below(5000);
                let us = self.rng.below(1000);
                let table = self
                    .rng
                    .pick(&["orders", "customers", "line_items", "sessions"]);
                let id = self.rng.below(10_000_000);
                write!(l, "postgres[{pid}]: LOG:  duration: {ms}.{us:03} ms  statement: SELECT * FROM {table} WHERE id = {id} AND tenant_id = {} LIMIT 100", id % 97).unwrap();
            }
            3 => {
                let n = self.rng.below(100_000);
                let user = self.rng.pick(&["root", "backup", "deploy", "alice"]);
                write!(
                    l,
                    "systemd[1]: Started session-{n}.scope - Session {n} of User {user}."
                )
                .unwrap();
            }
            4 => {
                let req = self.hex(16);
                let lat = self.rng.below(100_000) as f64 / 100.0;
                let st = self.rng.pick(&["200", "200", "201", "400", "503"]);
                let route =
                    self.rng
                        .pick(&["/v2/cart", "/v2/checkout", "/v2/search", "/v2/user/profile"]);
                write!(l, "app[{pid}]: {{\"level\":\"info\",\"ts\":{}.{:03},\"req_id\":\"{req}\",\"msg\":\"request completed\",\"route\":\"{route}\",\"status\":{st},\"latency_ms\":{lat}}}", secs, self.ms % 1000).unwrap();
            }
            5 => {
                let up = self.ms % 10_000_000;
                let profile = self.rng.pick(&[
                    "/usr/sbin/ntpd",
                    "snap.lxd.daemon",
                    "/usr/bin/man",
                    "docker-default",
                ]);
                let file = self.rng.pick(&[
                    "/etc/ssl/openssl.cnf",
                    "/proc/12/status",
                    "/var/lib/snapd/hostfs/",
                    "/sys/fs/cgroup/memory.max",
                ]);
                write!(l, "kernel: [{}.{:06}] audit: type=1400 audit({secs}.{}:{}): apparmor=\"DENIED\" operation=\"open\" profile=\"{profile}\" name=\"{file}\" pid={pid} comm=\"{}\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0", up / 1000, up % 1000 * 1000, self.ms % 1000, self.rng.below(100_000), profile.rsplit('/').next().unwrap()).unwrap();
            }
            _ => {
                let vm = self.rng.below(400);
                let lba = self.rng.next() % (1 << 34);
                let op = self.rng.pick(&["Write", "Read", "Unmap"]);
                write!(l, "vmkernel: cpu{}:{pid})ScsiDeviceIO: {op} to naa.6000c29{} vm-{vm} lba {lba} len {} completed in {} us", self.rng.below(32), self.hex(25), 8 * (1 + self.rng.below(256)), self.rng.below(20_000)).unwrap();
            }
        }
        l.push('\n');
        self.line = l;
        &self.line
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut at = 0;
        while at < buf.len() {
            let line = self.next_line().as_bytes();
            let n = line.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&line[..n]);
            at += n;
        }
    }
}

/// Bytes of each content kind in the corpus.
#[derive(Debug, Default, Clone, Copy)]
struct Mix {
    zero: u64,
    text: u64,
    random: u64,
    extents: usize,
}

fn mix(size: u64, seed: u64) -> Mix {
    let mut m = Mix::default();
    for (k, len) in plan(size, seed) {
        m.extents += 1;
        match k {
            Content::Zero => m.zero += len,
            Content::Text => m.text += len,
            Content::Random => m.random += len,
        }
    }
    m
}

/// Creates the corpus file unless an identical one exists (same size, seed, version).
fn ensure_corpus(dir: &Path, size: u64, seed: u64) -> Result<(PathBuf, bool)> {
    let path = dir.join(format!("corpus-v{CORPUS_VERSION}-s{seed}-{size}.bin"));
    if fs::metadata(&path)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok((path, true));
    }
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(8 << 20, File::create(&tmp)?);
    let mut rng = Rng(seed ^ 0x7261_6e64);
    let mut logs = LogGen::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    for (kind, len) in plan(size, seed) {
        let b = &mut buf[..len as usize];
        match kind {
            Content::Zero => b.fill(0),
            Content::Text => logs.fill(b),
            Content::Random => rng.fill(b),
        }
        w.write_all(b)?;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    Ok((path, false))
}

/// Reads the whole file so every method finds it in the page cache.
fn warm(path: &Path) -> Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

// ----- methods --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Writer threads, and whether each write waits until durable.
    Pack(usize, bool),
    Restic,
    ZstdAge,
    ODirect,
    Buffered,
}

impl Method {
    fn label(self) -> String {
        match self {
            Method::Pack(n, true) => format!("odt-store pack, {n} writers, each write durable"),
            Method::Pack(n, false) => format!("odt-store pack, {n} writers, unstable + final sync"),
            Method::Restic => "restic backup".into(),
            Method::ZstdAge => "zstd -1 -T2 \\| age, + fsync".into(),
            Method::ODirect => "disk: O_DIRECT write 4 MiB".into(),
            Method::Buffered => "disk: buffered write 4 MiB + fdatasync".into(),
        }
    }
    fn is_disk(self) -> bool {
        matches!(self, Method::ODirect | Method::Buffered)
    }
}

struct Sample {
    secs: f64,
    /// CPU seconds (user + system) of this process and its waited-for children during the run.
    cpu: f64,
    /// Bytes the method left on the disk (None for the raw-disk baselines).
    stored: Option<u64>,
    note: Option<String>,
}

struct Ctx {
    dir: PathBuf,
    corpus: PathBuf,
    size: u64,
    recipient: age::x25519::Recipient,
    verify: bool,
}

fn remove(p: &Path) -> Result<()> {
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)?,
        Ok(_) => fs::remove_file(p)?,
        Err(_) => {}
    }
    Ok(())
}

fn tree_size(p: &Path) -> Result<u64> {
    let m = fs::symlink_metadata(p)?;
    if !m.is_dir() {
        return Ok(m.len());
    }
    let mut n = 0;
    for e in fs::read_dir(p)? {
        n += tree_size(&e?.path())?;
    }
    Ok(n)
}

/// User + system CPU seconds of this process (all threads) plus those of its waited-for
/// children, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14..=17 of proc(5) (utime stime cutime cstime) are 11..=14 after the comm.
    f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>() / 100.0)
}

fn run(ctx: &Ctx, m: Method) -> Result<Sample> {
    match m {
        Method::Pack(n, durable) => run_pack(ctx, n, durable),
        Method::Restic => run_restic(ctx),
        Method::ZstdAge => run_zstd_age(ctx),
        Method::ODirect => run_disk(ctx, true),
        Method::Buffered => run_disk(ctx, false),
    }
}

/// Provisions a fresh image, unlocks it, creates one file and writes the corpus into it with
/// `threads` writers sending 1 MiB writes at increasing offsets, as an NFS client does;
/// with `durable`, each write returns only once durable (FILE_SYNC), otherwise once queued
/// (UNSTABLE). Then syncs (COMMIT). Only the writes and the sync are timed.
fn run_pack(ctx: &Ctx, threads: usize, durable: bool) -> Result<Sample> {
    let img = ctx.dir.join("pack.img");
    remove(&img)?;
    let setup = Instant::now();
    let opts = Options {
        create_size: Some(ctx.size + ctx.size / 4 + (1 << 30)),
        ..Options::default()
    };
    let p = provision(
        std::slice::from_ref(&img),
        "bench-job",
        "bench",
        &ctx.recipient,
        &opts,
    )?;
    let locked = Locked::open(std::slice::from_ref(&img), Access::ReadWrite)?;
    let secrets = locked.secrets_from_code(&p.unlock_code)?;
    let store = locked.unlock(secrets, Access::ReadWrite)?;
    let id = store.create(store.root(), b"disk-flat.vmdk", 0o644)?.id;
    let setup = setup.elapsed();
    let corpus = File::open(&ctx.corpus)?;
    let next = AtomicU64::new(0);
    let t = Instant::now();
    let cpu0 = cpu_secs();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = vec![0u8; WRITE_SIZE as usize];
                    loop {
                        let off = next.fetch_add(WRITE_SIZE, Ordering::Relaxed);
                        if off >= ctx.size {
                            return Ok(());
                        }
                        let n = WRITE_SIZE.min(ctx.size - off) as usize;
                        corpus.read_exact_at(&mut buf[..n], off)?;
                        if durable {
                            store.write(id, off, &buf[..n])?;
                        } else {
                            store.write_unstable(id, off, &buf[..n])?;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer panicked")?;
        }
        Ok(())
    })?;
    store.sync()?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let st = store.stats();
    ensure!(
        st.logical_bytes == ctx.size,
        "store holds {} bytes, corpus has {}",
        st.logical_bytes,
        ctx.size
    );
    if ctx.verify {
        verify_pack(&store, id, &corpus, ctx.size)?;
    }
    drop(store);
    remove(&img)?;
    Ok(Sample {
        secs,
        cpu,
        stored: Some(st.log_bytes + st.journal_used),
        note: Some(format!(
            "setup (provision + unlock, not timed) {:.2} s{}",
            setup.as_secs_f64(),
            if ctx.verify {
                "; read back and verified"
            } else {
                ""
            }
        )),
    })
}

fn verify_pack(store: &odt_store::Store, id: u64, corpus: &File, size: u64) -> Result<()> {
    let mut want = vec![0u8; WRITE_SIZE as usize];
    let mut off = 0;
    while off < size {
        let n = WRITE_SIZE.min(size - off) as usize;
        corpus.read_exact_at(&mut want[..n], off)?;
        let (got, _) = store.read(id, off, n as u32)?;
        ensure!(got == want[..n], "read-back differs at offset {off}");
        off += n as u64;
    }
    Ok(())
}

fn run_restic(ctx: &Ctx) -> Result<Sample> {
    let repo = ctx.dir.join("restic-repo");
    remove(&repo)?;
    let restic = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let st = Command::new("restic")
            .arg("-r")
            .arg(&repo)
            .args(["--no-cache", "-q"])
            .args(args)
            .env("RESTIC_PASSWORD", "odt-bench")
            .stdin(Stdio::null())
            .status()
            .context("running restic (Debian package `restic`)")?;
        ensure!(st.success(), "restic {args:?} failed: {st}");
        Ok(())
    };
    restic(&["init".as_ref()])?;
    let t = Instant::now();
    let cpu0 = cpu_secs();
    restic(&["backup".as_ref(), ctx.corpus.as_os_str()])?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let stored = tree_size(&repo)?;
    remove(&repo)?;
    Ok(Sample {
        secs,
        cpu,
        stored: Some(stored),
        note: None,
    })
}

fn run_zstd_age(ctx: &Ctx) -> Result<Sample> {
    let out = ctx.dir.join("zstd-age.out");
    remove(&out)?;
    let t = Instant::now();
    let cpu0 = cpu_secs();
    let st = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            r#"zstd -1 -T2 -q -c -- "$1" | age -r "$2" > "$3""#,
            "zstd-age",
        ])
        .arg(&ctx.corpus)
        .arg(ctx.recipient.to_string())
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .context("running zstd | age (Debian packages `zstd`, `age`)")?;
    ensure!(st.success(), "zstd | age failed: {st}");
    File::open(&out)?.sync_all()?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let stored = fs::metadata(&out)?.len();
    remove(&out)?;
    Ok(Sample {
        secs,
        cpu,
        stored: Some(stored),
        note: None,
    })
}

/// Sequential 4 MiB writes of `size` bytes (rounded up) of non-zero data into a fresh file,
/// either with O_DIRECT or buffered, then fdatasync; both timed.
fn run_disk(ctx: &Ctx, direct: bool) -> Result<Sample> {
    use rustix::fs::{Mode, OFlags};
    let path = ctx.dir.join("disk.out");
    remove(&path)?;
    let mut raw = vec![0u8; DISK_BLOCK + 4096];
    let at = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[at..at + DISK_BLOCK];
    Rng(0xd15c).fill(buf);
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
    if direct {
        flags |= OFlags::DIRECT;
    }
    let total = ctx.size.div_ceil(DISK_BLOCK as u64) * DISK_BLOCK as u64;
    let t = Instant::now();
    let cpu0 = cpu_secs();
    let fd = rustix::fs::open(&path, flags, Mode::from_raw_mode(0o644))
        .with_context(|| format!("open {}", path.display()))?;
    let mut pos = 0u64;
    while pos < total {
        let n = rustix::io::pwrite(&fd, buf, pos)?;
        if n != DISK_BLOCK {
            bail!("short write of {n} bytes at {pos}");
        }
        pos += n as u64;
    }
    rustix::fs::fdatasync(&fd)?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    drop(fd);
    remove(&path)?;
    Ok(Sample {
        secs,
        cpu,
        stored: None,
        note: Some(format!("{} MiB written", total / MIB)),
    })
}

// ----- report ---------------------------------------------------------------------------

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn fmt_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&o.stderr).lines())
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

fn machine(dir: &Path) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(String::new(), |kb| format!("{} GiB RAM", kb >> 20));
    let disk = Command::new("df")
        .args(["--output=source,fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}, work dir on {disk}")
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    fs::create_dir_all(&args.dir)?;
    let dir = fs::canonicalize(&args.dir)?;
    let mut methods = Vec::new();
    for m in &args.methods {
        match m.as_str() {
            "pack" => {
                for d in &args.durability {
                    let durable = match d.as_str() {
                        "sync" => true,
                        "unstable" => false,
                        other => bail!("unknown --durability {other:?} (sync, unstable)"),
                    };
                    for &n in &args.threads {
                        ensure!(n > 0, "--threads must be positive");
                        methods.push(Method::Pack(n, durable));
                    }
                }
            }
            "restic" => methods.push(Method::Restic),
            "zstd-age" => methods.push(Method::ZstdAge),
            "odirect" => methods.push(Method::ODirect),
            "buffered" => methods.push(Method::Buffered),
            other => bail!("unknown method {other:?}"),
        }
    }
    ensure!(!methods.is_empty(), "no method to run");

    let started = Instant::now();
    let (corpus, reused) = ensure_corpus(&dir, args.size, args.seed)?;
    let made = started.elapsed();
    eprintln!(
        "corpus {} ({}, {:.1} s)",
        corpus.display(),
        if reused { "reused" } else { "generated" },
        made.as_secs_f64()
    );
    warm(&corpus)?;
    let mx = mix(args.size, args.seed);
    let ctx = Ctx {
        dir: dir.clone(),
        corpus: corpus.clone(),
        size: args.size,
        recipient: age::x25519::Identity::generate().to_public(),
        verify: args.verify,
    };
    let load_before = loadavg();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);

    let mut samples: Vec<Vec<Sample>> = methods.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for k in 0..methods.len() {
            let i = (k + round) % methods.len();
            let m = methods[i];
            // Let earlier outputs' writeback and discards settle before the next run.
            rustix::fs::sync();
            std::thread::sleep(Duration::from_millis(500));
            let s = run(&ctx, m).with_context(|| format!("round {}: {}", round + 1, m.label()))?;
            eprintln!(
                "round {} {:<56} {:>7.1} MB/s  {:.2} s  cpu {:.2} s{}",
                round + 1,
                m.label().replace("\\|", "|"),
                args.size as f64 / s.secs / 1e6,
                s.secs,
                s.cpu,
                s.note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            );
            samples[i].push(s);
        }
    }
    let load_after = loadavg();

    let mb_s = |i: usize| -> Vec<f64> {
        samples[i]
            .iter()
            .map(|s| args.size as f64 / s.secs / 1e6)
            .collect()
    };
    let med = |m: Method| {
        methods
            .iter()
            .position(|&x| x == m)
            .map(|i| median(&mut mb_s(i)))
    };
    let zstd_age = med(Method::ZstdAge);
    let restic = med(Method::Restic);

    let mut r = String::new();
    writeln!(
        r,
        "Command: `pack {}`  ",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    )?;
    writeln!(r, "Date: {date}  ")?;
    writeln!(r, "Machine: {}  ", machine(&dir))?;
    writeln!(
        r,
        "Load average before / after: {load_before} / {load_after} (other work shares the machine)  "
    )?;
    writeln!(
        r,
        "Tools: {}; {}; age {}  ",
        first_line("restic", &["version"]),
        first_line("zstd", &["--version"])
            .trim_start_matches("*** ")
            .trim_end_matches(" ***"),
        first_line("age", &["--version"])
    )?;
    writeln!(
        r,
        "Corpus: {} in {} extents of 64 KiB–1 MiB: zero {:.1} %, log text {:.1} %, random {:.1} % (seed {}, {})  ",
        fmt_bytes(args.size),
        mx.extents,
        100.0 * mx.zero as f64 / args.size as f64,
        100.0 * mx.text as f64 / args.size as f64,
        100.0 * mx.random as f64 / args.size as f64,
        args.seed,
        if reused {
            "reused from an earlier run"
        } else {
            "generated by this run"
        }
    )?;
    writeln!(
        r,
        "Store: zstd level {}, AES-256-GCM, 64 MiB segments; {} rounds, interleaved, median shown",
        odt_store::format::record::ZSTD_LEVEL,
        args.rounds
    )?;
    writeln!(r)?;
    writeln!(
        r,
        "| method | MB/s (median) | min – max | CPU s (median) | × zstd\\|age | × restic | stored | stored / corpus |"
    )?;
    writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for (i, &m) in methods.iter().enumerate() {
        let mut v = mb_s(i);
        let md = median(&mut v);
        let ratio = |base: Option<f64>| match base {
            Some(b) if !m.is_disk() => format!("{:.2}", md / b),
            _ => "–".into(),
        };
        let stored: Vec<u64> = samples[i].iter().filter_map(|s| s.stored).collect();
        let (st, frac) = match stored.iter().max() {
            Some(&s) => (fmt_bytes(s), format!("{:.3}", s as f64 / args.size as f64)),
            None => ("–".into(), "–".into()),
        };
        let mut cpu: Vec<f64> = samples[i].iter().map(|s| s.cpu).collect();
        writeln!(
            r,
            "| {} | {:.0} | {:.0} – {:.0} | {:.1} | {} | {} | {} | {} |",
            m.label(),
            md,
            v[0],
            v[v.len() - 1],
            median(&mut cpu),
            ratio(zstd_age),
            ratio(restic),
            st,
            frac
        )?;
    }
    writeln!(r)?;
    writeln!(
        r,
        "Every run, MB/s of corpus bytes (10^6 bytes per second), by round (the order of methods rotates each round):"
    )?;
    writeln!(r)?;
    writeln!(
        r,
        "| method | {} |",
        (1..=args.rounds)
            .map(|i| format!("round {i}"))
            .collect::<Vec<_>>()
            .join(" | ")
    )?;
    writeln!(r, "|---|{}", "---:|".repeat(args.rounds))?;
    for (i, &m) in methods.iter().enumerate() {
        let cells: Vec<String> = mb_s(i).iter().map(|x| format!("{x:.0}")).collect();
        writeln!(r, "| {} | {} |", m.label(), cells.join(" | "))?;
    }
    let notes: Vec<String> = methods
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            samples[i]
                .iter()
                .find_map(|s| s.note.clone())
                .map(|n| format!("- {}: {n}", m.label()))
        })
        .collect();
    if !notes.is_empty() {
        writeln!(r)?;
        for n in notes {
            writeln!(r, "{n}")?;
        }
    }
    print!("{r}");
    if let Some(out) = &args.out {
        fs::write(out, &r).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

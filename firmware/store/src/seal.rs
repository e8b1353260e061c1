//! The seal: a record signed with the device key that pins everything on the devices — the
//! log's end and segment chain head on every device, the journal's end and hash (which covers
//! every name, attribute, extent and the per-file BLAKE3 roots), the manifest root — and the
//! short **seal code** derived from it, for the label and for the provider.
//!
//! The record is stored in clear (it holds no names and no data) in both seal slots of every
//! device, so the courier's check needs no key and reads no file data: [`check`].

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::frame;
use crate::job::Job;
use crate::journal::{Kind, Op, SealedBundle, Time};
use crate::log::read_footer;
use crate::manifest;
use crate::segment;
use crate::store::{Access, Locked, Store, is_zero};
use crate::superblock::{JOURNAL_START, SLOT, Superblock};

const MAGIC: &[u8; 8] = b"ODTSEAL1";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What the seal pins on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDevice {
    /// 1-based position in the set.
    pub index: u32,
    /// End of the log (0 = nothing written).
    pub tail: u64,
    /// Hash of the last segment footer.
    pub chain_head: [u8; 32],
}

/// The signed content of the seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRecord {
    pub version: u32,
    pub job_id: String,
    pub set_id: u64,
    pub devices: Vec<SealedDevice>,
    pub journal_end: u64,
    /// BLAKE3 of the journal bytes `[0, journal_end)`.
    pub journal_hash: [u8; 32],
    pub manifest_root: [u8; 32],
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub bundles: u32,
    pub sealed: Time,
    /// The custody log up to the seal (signed with the rest).
    pub custody: crate::custody::Log,
}

/// The record with its Ed25519 signature, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSeal {
    pub record: SealRecord,
    pub signature: Vec<u8>,
}

impl SignedSeal {
    fn encode(&self) -> Vec<u8> {
        frame::encode(MAGIC, &postcard::to_stdvec(self).expect("seal serialises"))
    }

    /// The seal code: 60 bits of a hash of the record and its signature, as three groups of
    /// four Crockford base32 characters (`7K2Q-DM9X-TA04`).
    pub fn code(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key("odt 2026 seal code");
        h.update(&postcard::to_stdvec(&self.record).unwrap());
        h.update(&self.signature);
        let d = h.finalize();
        let v = u64::from_le_bytes(d.as_bytes()[..8].try_into().unwrap());
        let mut s = String::with_capacity(14);
        for i in 0..12 {
            if i > 0 && i % 4 == 0 {
                s.push('-');
            }
            s.push(CROCKFORD[((v >> (i * 5)) & 31) as usize] as char);
        }
        s
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &[u8; 32]) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(key) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&self.signature) else {
            return false;
        };
        vk.verify(&postcard::to_stdvec(&self.record).unwrap(), &sig)
            .is_ok()
    }
}

/// Normalises a seal code typed by a person (case, separators, I/L→1, O→0).
pub fn normalise_code(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = match c.to_ascii_uppercase() {
            'I' | 'L' => '1',
            'O' => '0',
            c if c.is_ascii_alphanumeric() => c,
            _ => continue,
        };
        if !out.is_empty() && out.chars().filter(|c| *c != '-').count() % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A finished seal.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seal: SignedSeal,
    pub code: String,
}

/// Reads a device's seal record: `None` if it was never sealed. Both copies must agree.
pub fn read(dev: &Device, sb: &Superblock) -> Result<Option<SignedSeal>> {
    let mut found: Vec<Option<SignedSeal>> = Vec::new();
    for at in sb.seal_slots() {
        let b = dev.read_vec(at, SLOT as usize)?;
        if is_zero(&b) {
            found.push(None);
            continue;
        }
        let payload = frame::decode(MAGIC, &b).map_err(|e| {
            Error::corrupt(
                "seal record",
                dev.path(),
                at,
                format!("{e}: the seal record was altered or damaged"),
            )
        })?;
        let s: SignedSeal = postcard::from_bytes(payload).map_err(|e| {
            Error::corrupt(
                "seal record",
                dev.path(),
                at,
                format!("does not decode: {e}"),
            )
        })?;
        found.push(Some(s));
    }
    match (&found[0], &found[1]) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) if a == b => Ok(Some(a.clone())),
        _ => Err(Error::corrupt(
            "seal record",
            dev.path(),
            sb.seal_slots()[1],
            "the two copies of the seal record differ",
        )),
    }
}

/// Seals the store: no more changes, everything durable, the manifest and bundles journaled,
/// segments closed, the signed record written to every device.
pub fn seal(store: &Store, bundles: Vec<SealedBundle>) -> Result<Sealed> {
    store.begin_seal()?;
    store.sync()?;
    let m = manifest::build(store)?;
    let roots = m
        .files
        .iter()
        .filter(|f| f.kind == Kind::File)
        .map(|f| (f.id, f.blake3))
        .collect();
    store.submit(vec![Op::Seal {
        time: Time::now(),
        manifest_root: m.root(),
        roots,
        bundles,
    }])?;
    write_record(store)
}

/// What `odt seal` gets back: the bundle check and, unless it refused, the seal.
#[derive(Debug, Clone)]
pub struct SealOutcome {
    pub bundles: crate::bundle::BundleReport,
    pub sealed: Option<Sealed>,
    /// Why the seal was refused (bundle errors without `force`).
    pub refused: Option<String>,
}

/// The customer's seal: checks every VM bundle first and refuses if any has errors (unless
/// `force`), then seals.
pub fn check_and_seal(store: &Store, force: bool) -> Result<SealOutcome> {
    if store.is_sealed() {
        return Err(Error::ReadOnly);
    }
    let bundles = crate::bundle::check(store, Time::now())?;
    let bad = bundles.errors();
    if bad > 0 && !force {
        return Ok(SealOutcome {
            refused: Some(format!(
                "{bad} of {} bundle(s) have errors; fix the export or seal with --force to ship it as is",
                bundles.bundles.len()
            )),
            bundles,
            sealed: None,
        });
    }
    let list = bundles.bundles.iter().map(|b| b.sealed()).collect();
    let sealed = seal(store, list)?;
    Ok(SealOutcome {
        bundles,
        sealed: Some(sealed),
        refused: None,
    })
}

/// Writes the seal record for a store whose journal holds the seal op.
pub(crate) fn write_record(store: &Store) -> Result<Sealed> {
    let (time, manifest_root, nbundles) = store.with_namespace(|ns| match &ns.seal {
        Some(Op::Seal {
            time,
            manifest_root,
            bundles,
            ..
        }) => Ok((*time, *manifest_root, bundles.len() as u32)),
        _ => Err(Error::Invalid("the store has no seal op".into())),
    })?;
    let heads = store.close_segments()?;
    let journal_end = store.journal_end();
    let journal_hash = hash_journal(&store.devices()[0], journal_end)?;
    let st = store.stats();
    let sb = store.superblock();
    let record = SealRecord {
        version: 1,
        job_id: sb.job_id.clone(),
        set_id: sb.set_id,
        devices: heads
            .iter()
            .enumerate()
            .map(|(i, (tail, head))| SealedDevice {
                index: i as u32 + 1,
                tail: *tail,
                chain_head: *head,
            })
            .collect(),
        journal_end,
        journal_hash,
        manifest_root,
        files: st.files,
        dirs: st.dirs,
        bytes: st.logical_bytes,
        bundles: nbundles,
        sealed: time,
        custody: crate::custody::log(store),
    };
    let signature = store
        .secrets()
        .signing_key()
        .sign(&postcard::to_stdvec(&record).unwrap())
        .to_bytes()
        .to_vec();
    let seal = SignedSeal { record, signature };
    let img = seal.encode();
    assert!(img.len() as u64 <= SLOT);
    for (dev, sbd) in store.devices().iter().zip(store.superblocks()) {
        for at in sbd.seal_slots() {
            dev.write_at(&img, at)?;
        }
        dev.sync()?;
    }
    let code = seal.code();
    tracing::info!(code = %code, "sealed");
    Ok(Sealed { seal, code })
}

fn hash_journal(dev0: &Device, end: u64) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut at = 0;
    while at < end {
        let n = (end - at).min(8 << 20);
        h.update(&dev0.read_vec(JOURNAL_START + at, n as usize)?);
        at += n;
    }
    Ok(*h.finalize().as_bytes())
}

/// Outcome of the courier's check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub intact: bool,
    /// The first thing found wrong, as one plain sentence.
    pub problem: Option<String>,
    pub seal_code: Option<String>,
    pub job_id: Option<String>,
    pub sealed_unix: Option<i64>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub devices: Vec<PathBuf>,
    /// Bytes read to decide.
    pub bytes_read: u64,
    /// The custody log the seal signs (shown once the signature holds).
    pub custody: Option<crate::custody::Log>,
}

struct Fail(String);

/// The courier's and the dock's check: signature against the job's device key, seal code,
/// every device of the set present and of this job, nothing written after the seal. Needs
/// no data key and reads no file data.
pub fn check(paths: &[PathBuf], job_dir: &Path, expect: Option<&str>) -> Result<CheckReport> {
    let job = Job::load(job_dir)?;
    let mut report = CheckReport {
        intact: false,
        problem: None,
        seal_code: None,
        job_id: None,
        sealed_unix: None,
        files: None,
        bytes: None,
        devices: paths.to_vec(),
        bytes_read: 0,
        custody: None,
    };
    match check_inner(paths, &job, expect, &mut report) {
        Ok(()) => report.intact = true,
        Err(Fail(why)) => report.problem = Some(why),
    }
    Ok(report)
}

fn check_inner(
    paths: &[PathBuf],
    job: &Job,
    expect: Option<&str>,
    r: &mut CheckReport,
) -> std::result::Result<(), Fail> {
    let key = job
        .signing_public()
        .map_err(|e| Fail(format!("the job cannot check seals: {e}")))?;
    for p in paths {
        let dev = Device::open(p, false).map_err(|e| Fail(e.to_string()))?;
        let sb = Superblock::read(&dev).map_err(|e| Fail(e.to_string()))?;
        if sb.job_id != job.id {
            return Err(Fail(format!(
                "{} belongs to job {}, not to job {} ({})",
                p.display(),
                sb.job_id,
                job.id,
                job.name
            )));
        }
    }
    let locked = Locked::open(paths, Access::ReadOnly).map_err(|e| Fail(e.to_string()))?;
    let (devs, sbs) = (locked.devices(), locked.superblocks());
    if sbs[0].signing_public != key {
        return Err(Fail(
            "the devices were provisioned with another signing key than the job records (re-provisioned?)".into(),
        ));
    }
    let mut seals = Vec::new();
    for (dev, sb) in devs.iter().zip(sbs) {
        match read(dev, sb) {
            Ok(Some(s)) => seals.push(s),
            Ok(None) => {
                return Err(Fail(format!(
                    "{} is not sealed: the customer has not run `odt seal`",
                    dev.path().display()
                )));
            }
            Err(e) => return Err(Fail(e.to_string())),
        }
        r.bytes_read += 2 * SLOT;
    }
    let seal = &seals[0];
    if let Some((i, _)) = seals.iter().enumerate().find(|(_, s)| *s != seal) {
        return Err(Fail(format!(
            "device {} carries a different seal record than device 1 (devices from different seals mixed)",
            i + 1
        )));
    }
    if !seal.verify(&key) {
        return Err(Fail(
            "the seal record's signature does not verify with the job's device key: it was altered or forged".into(),
        ));
    }
    let rec = &seal.record;
    r.seal_code = Some(seal.code());
    r.job_id = Some(rec.job_id.clone());
    r.sealed_unix = Some(rec.sealed.secs);
    r.custody = Some(rec.custody.clone());
    r.files = Some(rec.files);
    r.bytes = Some(rec.bytes);
    if rec.job_id != job.id || rec.set_id != sbs[0].set_id || rec.devices.len() != devs.len() {
        return Err(Fail(
            "the seal record is for another job or device set".into(),
        ));
    }
    if let Some(want) = expect
        && normalise_code(want) != seal.code()
    {
        return Err(Fail(format!(
            "the seal code is {}, not the expected {}: this is not the seal the customer reported",
            seal.code(),
            normalise_code(want)
        )));
    }
    // Nothing after the seal: the log on every device ends exactly where the seal says.
    for ((dev, sb), sd) in devs.iter().zip(sbs).zip(&rec.devices) {
        r.bytes_read += check_log_end(dev, sb, sd)?;
    }
    let dev0 = &devs[0];
    let jh = hash_journal(dev0, rec.journal_end).map_err(|e| Fail(e.to_string()))?;
    r.bytes_read += rec.journal_end;
    if jh != rec.journal_hash {
        return Err(Fail(
            "the metadata journal changed after the seal (names, attributes or the manifest were altered)".into(),
        ));
    }
    let room = (sbs[0].journal_len - rec.journal_end).min(SLOT);
    let after = dev0
        .read_vec(JOURNAL_START + rec.journal_end, room as usize)
        .map_err(|e| Fail(e.to_string()))?;
    if !is_zero(&after) {
        return Err(Fail(
            "metadata was written to the journal after the seal".into(),
        ));
    }
    Ok(())
}

fn check_log_end(
    dev: &Device,
    sb: &Superblock,
    sd: &SealedDevice,
) -> std::result::Result<u64, Fail> {
    let name = || format!("device {} ({})", sd.index, dev.path().display());
    let after_seal = || Fail(format!("data was written to {} after the seal", name()));
    let read = |at: u64, n: u64| {
        dev.read_vec(at, n as usize)
            .map_err(|e| Fail(e.to_string()))
    };
    let mut bytes = 0;
    let next_seg = if sd.tail == 0 {
        0
    } else {
        let seg = sb.segment_of(sd.tail).expect("tail is not 0");
        let f = read_footer(dev, sb, seg).map_err(|_| {
            Fail(format!(
                "{}: the last segment's footer is missing or damaged (log truncated or altered)",
                name()
            ))
        })?;
        if f.hash() != sd.chain_head || sb.segment_start(seg) + f.used != sd.tail {
            return Err(Fail(format!(
                "{}: the log does not end where the seal says (truncated, replaced or appended)",
                name()
            )));
        }
        let slack_from = sd.tail;
        let slack_to = sb.segment_start(seg) + sb.segment_size - segment::BLOCK;
        let mut at = slack_from;
        while at < slack_to {
            let n = (slack_to - at).min(8 << 20);
            if !is_zero(&read(at, n)?) {
                return Err(after_seal());
            }
            bytes += n;
            at += n;
        }
        seg + 1
    };
    if next_seg < sb.segment_count() {
        bytes += segment::BLOCK;
        if !is_zero(&read(sb.segment_start(next_seg), segment::BLOCK)?) {
            return Err(after_seal());
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_normalisation() {
        assert_eq!(normalise_code("7k2q dm9x-ta04"), "7K2Q-DM9X-TA04");
        assert_eq!(normalise_code("lo2q-dm9x-ta04"), "102Q-DM9X-TA04");
    }
}

//! `odt import`: the VM bundles of a sealed device set into vCenter, streamed from the
//! device with every byte verified on the way.
//!
//! Steps: check the seal as `odt seal-check` does (a device that fails is refused before
//! vCenter is contacted), open the set with the job's ingest identity, find the bundles
//! ([`plan`]), connect to vCenter trusting its certificate only as told ([`vsphere::tls`]),
//! log in, then per bundle: skip it if a VM of this job and bundle is there already
//! ([`marker`]), CreateImportSpec, ImportVApp, and stream each file from the device to the
//! lease ([`stream`]); complete the lease only when every byte verified, else abort it and
//! remove the VM. A fault vCenter raises for one bundle's spec or VM (CreateImportSpec,
//! ImportVApp) refuses that bundle and the others go on; a fault anywhere else, or vCenter
//! out of reach, stops the run.
//!
//! What is sent before it is verified: nothing. The seal signs the hash of the metadata
//! journal, and the journal holds, for every record of every file, the BLAKE3 digest of its
//! plaintext; the seal check proves the journal is the sealed one before the store is
//! opened, and every read opens each record with its tag and compares its plaintext with
//! that digest. So the descriptor sent with CreateImportSpec is checked record by record
//! when [`plan`] reads it, also inside an OVA, whose whole-file BLAKE3 root can only be
//! compared once the upload has streamed all of it: a damaged record of an OVA's header or
//! descriptor quarantines the bundle before anything of it reaches vCenter. The whole-file
//! roots compared at the end of each upload are a second check of the same bytes; if one
//! fails, the lease is aborted and no VM stays registered.

pub mod marker;
pub mod plan;
pub mod report;
pub mod stream;
pub mod vsphere;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use odt_store::Store;
use zeroize::Zeroizing;

use crate::job_devices::SealState;
use marker::Marker;
use plan::Bundle;
use report::{BundleReport, DiskReport, Report, Status};
use vsphere::{Client, Endpoint, Moref, VsphereError};

/// Everything that stops an import. (A bad bundle does not: it is refused or quarantined
/// and reported.)
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the sealed devices failed.
    #[error(transparent)]
    Store(#[from] odt_store::Error),
    /// The devices are not sealed, or their seal does not check out.
    #[error("{0}")]
    Seal(String),
    /// vCenter refused a request or could not be reached.
    #[error(transparent)]
    Vsphere(#[from] VsphereError),
    /// The options do not make sense together or name nothing to import.
    #[error("{0}")]
    Usage(String),
    /// A datacenter, datastore, cluster, pool, folder or network named on the command line
    /// does not exist.
    #[error("{what} {name:?} was not found in vCenter at {path}: check the name (case matters)")]
    NotFound {
        /// Which kind of object (`datacenter`, `datastore`, ...).
        what: &'static str,
        /// The name looked for.
        name: String,
        /// Where in the inventory it was looked for.
        path: String,
    },
}

/// What to import, where, and how to reach vCenter.
pub struct Options {
    /// The sealed device set.
    pub devices: Vec<PathBuf>,
    /// The job folder (`job.toml`, `ingest.key`).
    pub job_dir: PathBuf,
    /// vCenter's SDK address.
    pub endpoint: Endpoint,
    /// The vCenter user.
    pub user: String,
    /// The vCenter password (zeroized on drop, never logged).
    pub password: Zeroizing<String>,
    /// The datacenter to import into.
    pub datacenter: String,
    /// The datastore that receives the disks.
    pub datastore: String,
    /// The cluster whose root resource pool receives the VMs (or `resource_pool`).
    pub cluster: Option<String>,
    /// The resource pool, by inventory path, that receives the VMs.
    pub resource_pool: Option<String>,
    /// The VM folder, by inventory path (the datacenter's VM folder if absent).
    pub folder: Option<String>,
    /// (OVF network name, port group name)
    pub networks: Vec<(String, String)>,
    /// Power the VMs on once imported.
    pub power_on: bool,
    /// Bundle paths or VM names to import (all if empty).
    pub bundles: Vec<String>,
}

/// A progress bar for `total` bytes.
pub type ProgressFactory<'a> = &'a dyn Fn(u64) -> Progress;

/// Where the VMs go, as vCenter objects.
struct Target {
    pool: Moref,
    datastore: Moref,
    folder: Moref,
    folder_path: String,
    pool_path: String,
    networks: Vec<(String, Moref)>,
}

fn join(a: &str, b: &str) -> String {
    format!("{}/{}", a.trim_end_matches('/'), b.trim_matches('/'))
}

fn find(c: &Client, what: &'static str, name: &str, path: &str) -> Result<Moref, ImportError> {
    c.find_by_path(path)?.ok_or_else(|| ImportError::NotFound {
        what,
        name: name.to_string(),
        path: path.to_string(),
    })
}

fn target(c: &Client, o: &Options) -> Result<Target, ImportError> {
    let dc = format!("/{}", o.datacenter.trim_matches('/'));
    find(c, "datacenter", &o.datacenter, &dc)?;
    let folder_path = match &o.folder {
        Some(f) => join(&join(&dc, "vm"), f),
        None => join(&dc, "vm"),
    };
    let folder = find(
        c,
        "VM folder",
        o.folder.as_deref().unwrap_or("vm"),
        &folder_path,
    )?;
    let datastore = find(
        c,
        "datastore",
        &o.datastore,
        &join(&join(&dc, "datastore"), &o.datastore),
    )?;
    let hosts = join(&dc, "host");
    let (pool, pool_path) = match (&o.cluster, &o.resource_pool) {
        (Some(_), Some(_)) => {
            return Err(ImportError::Usage(
                "give --cluster or --resource-pool, not both".into(),
            ));
        }
        (None, Some(rp)) => {
            let p = join(&hosts, rp);
            (find(c, "resource pool", rp, &p)?, p)
        }
        (Some(cl), None) => {
            let p = join(&hosts, cl);
            let cr = find(c, "cluster", cl, &p)?;
            let pool = c.property_morefs(&cr, "resourcePool")?;
            let pool = pool.into_iter().next().ok_or_else(|| {
                ImportError::Usage(format!("{p} has no resource pool: is it a cluster?"))
            })?;
            (pool, format!("{p}/Resources"))
        }
        (None, None) => {
            let hf = find(c, "host folder", "host", &hosts)?;
            let crs: Vec<Moref> = c
                .property_morefs(&hf, "childEntity")?
                .into_iter()
                .filter(|m| m.kind.ends_with("ComputeResource"))
                .collect();
            match crs.as_slice() {
                [one] => {
                    let name = c.property_text(one, "name")?.unwrap_or_default();
                    let pool = c.property_morefs(one, "resourcePool")?;
                    let pool = pool.into_iter().next().ok_or_else(|| {
                        ImportError::Usage(format!("{hosts}/{name} has no resource pool"))
                    })?;
                    (pool, format!("{hosts}/{name}/Resources"))
                }
                _ => {
                    let mut names = Vec::new();
                    for cr in &crs {
                        names.push(c.property_text(cr, "name")?.unwrap_or_default());
                    }
                    return Err(ImportError::Usage(format!(
                        "datacenter {} has {} clusters or hosts ({}): choose one with --cluster \
                         NAME or --resource-pool PATH",
                        o.datacenter,
                        crs.len(),
                        names.join(", ")
                    )));
                }
            }
        }
    };
    let mut networks = Vec::new();
    for (ovf, pg) in &o.networks {
        let m = find(c, "network", pg, &join(&join(&dc, "network"), pg))?;
        networks.push((ovf.clone(), m));
    }
    Ok(Target {
        pool,
        datastore,
        folder,
        folder_path,
        pool_path,
        networks,
    })
}

fn refused(b: &Bundle, why: String) -> BundleReport {
    BundleReport {
        path: b.path.clone(),
        vm_name: b.vm_name().map(str::to_string),
        status: Status::Refused,
        vm: None,
        disks: Vec::new(),
        seconds: 0.0,
        reason: Some(why),
        warnings: Vec::new(),
    }
}

/// Runs an import.
pub fn run(o: &Options, progress: ProgressFactory<'_>) -> Result<Report, ImportError> {
    let started = Instant::now();
    let (job, locked) = crate::job_devices::open(&o.devices, &o.job_dir)?;
    let set_id = format!("{:016x}", locked.superblock().set_id);
    let seal_code = match crate::job_devices::seal_state(&o.devices, &o.job_dir, &locked) {
        SealState::Intact { code, .. } => code,
        SealState::Unsealed => {
            return Err(ImportError::Seal(
                "the devices are not sealed: the customer has not run `odt seal`, so nothing \
                 proves the data is what they meant to send; nothing was sent to vCenter"
                    .into(),
            ));
        }
        SealState::Broken { why } => {
            return Err(ImportError::Seal(format!(
                "the seal is broken: {why}. The devices may have been altered after the customer \
                 sealed them: investigate with `odt seal-check` and `odt verify --deep`; nothing \
                 was sent to vCenter"
            )));
        }
    };
    let store = crate::job_devices::unlock(locked, &o.job_dir)?;
    let roots = crate::job_devices::sealed_roots(&store)
        .ok_or_else(|| ImportError::Seal("the journal holds no sealed manifest".into()))?;
    let bundles = plan::build(&store, &roots, &o.bundles)?;

    let client = Client::connect(&o.endpoint)?;
    client.login(&o.user, &o.password)?;
    let result = (|| {
        let t = target(&client, o)?;
        let total: u64 = bundles
            .iter()
            .flat_map(|b| b.items.iter().map(|i| i.stored_bytes()))
            .sum();
        let bar = progress(total);
        let mut reports = Vec::new();
        let mut uploaded = 0;
        for b in &bundles {
            let r = import_one(&client, &store, &t, o, &job.id, b, &bar, &mut uploaded)?;
            reports.push(r);
        }
        bar.finish();
        Ok::<_, ImportError>((t, reports, uploaded))
    })();
    let _ = client.logout();
    let (t, reports, uploaded) = result?;
    let complete = reports
        .iter()
        .all(|r| matches!(r.status, Status::Imported | Status::Skipped));
    Ok(Report {
        job_id: job.id.clone(),
        set_id,
        seal_code,
        vcenter: o.endpoint.url.clone(),
        datacenter: o.datacenter.clone(),
        datastore: o.datastore.clone(),
        folder: t.folder_path,
        resource_pool: t.pool_path,
        complete,
        bundles: reports,
        bytes_uploaded: uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Imports one bundle; `Err` only for what stops the whole import (vCenter unreachable).
#[allow(clippy::too_many_arguments)]
fn import_one(
    c: &Client,
    store: &Store,
    t: &Target,
    o: &Options,
    job_id: &str,
    b: &Bundle,
    bar: &Progress,
    uploaded: &mut u64,
) -> Result<BundleReport, ImportError> {
    let started = Instant::now();
    if let Some(d) = &b.damage {
        let mut r = refused(
            b,
            format!("{d}; nothing of this bundle was sent to vCenter"),
        );
        r.status = Status::Quarantined;
        return Ok(r);
    }
    if !b.problems.is_empty() {
        return Ok(refused(b, b.problems.join("; ")));
    }
    if let Some(why) = b.items.iter().find_map(|i| i.unsupported()) {
        return Ok(refused(b, why));
    }
    let name = b
        .vm_name()
        .expect("a bundle without problems has a VM name");
    let mine = Marker {
        job: job_id.to_string(),
        bundle: b.digest.clone(),
        complete: false,
    };
    if let Some(vm) = c.find_child(&t.folder, name)? {
        let note = c
            .property_text(&vm, "config.annotation")?
            .unwrap_or_default();
        match Marker::find(&note) {
            Some(m) if m.job == mine.job && m.bundle == mine.bundle && m.complete => {
                bar.inc(b.items.iter().map(|i| i.stored_bytes()).sum());
                let mut r = refused(b, "already imported by an earlier run of this job".into());
                r.status = Status::Skipped;
                r.vm = Some(vm.value);
                r.reason = None;
                return Ok(r);
            }
            Some(m) if m.job == mine.job && m.bundle == mine.bundle => {
                // Left behind by an interrupted run: it never completed, so it goes.
                tracing::info!(vm = %vm, "removing the half-imported VM of an interrupted run");
                c.destroy(&vm)?;
            }
            _ => {
                return Ok(refused(
                    b,
                    format!(
                        "a VM named {name:?} ({}) already exists in {} and is not this bundle's \
                         import: rename or move it, or import into another --folder",
                        vm.value, t.folder_path
                    ),
                ));
            }
        }
    }
    // A fault vCenter raises for this bundle's spec or VM refuses this bundle only.
    let refuse_fault = |e: VsphereError| match e {
        VsphereError::Fault { .. } => Ok(refused(
            b,
            format!("{e}; nothing of this bundle was registered"),
        )),
        e => Err(ImportError::from(e)),
    };
    let spec = match c.create_import_spec(&b.descriptor, &t.pool, &t.datastore, name, &t.networks) {
        Ok(s) => s,
        Err(e) => return refuse_fault(e),
    };
    let mut report = refused(b, String::new());
    report.warnings = spec.warnings.clone();
    if !spec.errors.is_empty() {
        report.reason = Some(format!(
            "vCenter cannot import its descriptor: {}",
            spec.errors.join("; ")
        ));
        return Ok(report);
    }
    // The files vCenter asks for, and where each comes from.
    let mut uploads = Vec::new();
    for fi in &spec.file_items {
        let Some(item) = b.item(&fi.path) else {
            report.reason = Some(format!(
                "vCenter asks for {:?}, which the descriptor does not reference",
                fi.path
            ));
            return Ok(report);
        };
        uploads.push((fi, item));
    }
    uploads.sort_by_key(|(_, i)| i.ranges.first().map(|r| (r.source, r.start)));
    let (spec_xml, annotation) = marker::annotate(&spec.spec_xml, &spec.ns_decls, &mine.line())
        .map_err(|why| VsphereError::Protocol {
            method: "CreateImportSpec".into(),
            why,
        })?;
    let lease = match c.import_vapp(&t.pool, &spec, &spec_xml, &t.folder) {
        Ok(l) => l,
        Err(e) => {
            return refuse_fault(e).map(|r| BundleReport {
                warnings: report.warnings,
                ..r
            });
        }
    };
    let outcome = (|| -> Result<(Moref, Vec<DiskReport>), String> {
        let (vm, urls) = c.lease_ready(&lease).map_err(|e| e.to_string())?;
        let mut targets = Vec::new();
        for (fi, item) in &uploads {
            let url = urls
                .iter()
                .find(|u| u.import_key == fi.device_id)
                .ok_or_else(|| format!("the lease has no upload URL for {}", fi.device_id))?;
            targets.push((url.clone(), *fi, *item));
        }
        let total: u64 = targets.iter().map(|(_, _, i)| i.stored_bytes()).sum();
        let sent = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let failure = Mutex::new(None);
        let ranges: Vec<_> = targets.iter().map(|(_, _, i)| i.ranges.clone()).collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(stream::QUEUE);
        let mut sent_each = vec![0u64; targets.len()];
        let result = std::thread::scope(|s| {
            s.spawn(|| stream::produce(store, b, &ranges, tx));
            // vCenter drops a lease that hears nothing for a few minutes.
            s.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= Duration::from_secs(10) {
                        let pct = sent.load(Ordering::Relaxed) * 100 / total.max(1);
                        let _ = c.lease_progress(&lease, pct as u32);
                        last = Instant::now();
                    }
                }
            });
            let r = (|| {
                for ((url, fi, item), n) in targets.iter().zip(sent_each.iter_mut()) {
                    let body = stream::Upload::new(&rx, &failure, &sent, bar);
                    let r = if item.gzip {
                        let plain = flate2::read::MultiGzDecoder::new(body);
                        c.upload(url, fi.create, None, stream::Counted::new(plain, n))
                    } else {
                        let len = Some(item.stored_bytes());
                        c.upload(url, fi.create, len, stream::Counted::new(body, n))
                    };
                    if let Err(e) = r {
                        let kept = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                        return Err(kept.unwrap_or_else(|| e.to_string()));
                    }
                }
                stream::outcome(&rx)
            })();
            done.store(true, Ordering::Relaxed);
            drop(rx);
            r
        });
        result?;
        *uploaded += sent_each.iter().sum::<u64>();
        let disks = targets
            .iter()
            .zip(&sent_each)
            .map(|((_, _, item), sent)| {
                let mut roots: Vec<String> = item
                    .ranges
                    .iter()
                    .map(|r| hex::encode(b.sources[r.source].root))
                    .collect();
                roots.dedup();
                DiskReport {
                    href: item.href.clone(),
                    bytes: item.stored_bytes(),
                    uploaded_bytes: *sent,
                    verified_roots: roots,
                }
            })
            .collect();
        Ok((vm, disks))
    })();
    match outcome {
        Ok((vm, disks)) => {
            c.lease_progress(&lease, 100)?;
            c.lease_complete(&lease)?;
            c.set_annotation(&vm, &marker::completed(&annotation, &mine))?;
            if o.power_on {
                c.power_on(&vm)?;
            }
            report.status = Status::Imported;
            report.vm = Some(vm.value);
            report.disks = disks;
            report.reason = None;
        }
        Err(why) => {
            let _ = c.lease_abort(&lease);
            // vCenter removes the VM of an aborted lease; make sure (a simulator does not).
            if let Some(vm) = c.find_child(&t.folder, name)? {
                let note = c
                    .property_text(&vm, "config.annotation")?
                    .unwrap_or_default();
                if Marker::find(&note).as_ref() == Some(&mine) {
                    c.destroy(&vm)?;
                }
            }
            report.status = Status::Quarantined;
            report.reason = Some(format!(
                "{why}; the upload was aborted and no VM was left registered"
            ));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

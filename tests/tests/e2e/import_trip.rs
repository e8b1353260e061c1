//! `odt import` end to end against govmomi's vCenter simulator. One trip (provision, serve,
//! copy four VM bundles over NFS with libnfs, seal, power off) feeds every check:
//! - vm-alpha: an OVF folder; vm-beta: an OVA (their disks a streamOptimized header over
//!   random bytes); vm-gamma: an OVF folder whose real streamOptimized VMDK (qemu-img) is
//!   gzip-compressed (`ovf:compression="gzip"`); vm-delta: an OVF folder whose real VMDK is
//!   in 1 MiB chunks (`ovf:chunkSize`, `disk.vmdk.000000000`...).
//! - trust: an unknown certificate and a wrong --thumbprint are refused before any Login;
//! - the import: every VM registered under its name in the folder, on the port group
//!   --network names, powered off, its disk as exported (the simulator's upload tap keeps
//!   what arrived: byte-compared, and `qemu-img check`/`compare` for the real VMDKs);
//! - a rerun skips all; a VM of the same name that odt did not make is refused by name and
//!   left as it was; --resource-pool, --power-on, the default network; --json on failures;
//! - a flipped bit in vm-alpha's disk quarantines it during the upload and one in the
//!   OVA's first record quarantines vm-beta before anything of it is sent, while the other
//!   two are imported;
//! - a kill mid-upload, then a rerun: each VM exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient;
use odt_e2e::run::run;
use odt_e2e::vcsim::{self, Packing, Vcsim};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;
const ALL: [&str; 4] = ["vm-alpha", "vm-beta", "vm-delta", "vm-gamma"];
/// Where the VMs go unless a check says otherwise.
const INTO_ODT: [&str; 6] = [
    "--cluster",
    "DC0_C0",
    "--folder",
    "odt",
    "--network",
    "VM Network=DC0_DVPG0",
];

fn import_cmd(sim: &Vcsim, devices: &[PathBuf], job_dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bins::odt());
    c.arg("import");
    for d in devices {
        c.arg("--device").arg(d);
    }
    c.arg("--job")
        .arg(job_dir)
        .args(["--vcenter", &sim.url_with_user()])
        .args(["--datacenter", "DC0"]);
    if !args.contains(&"--datastore") {
        c.args(["--datastore", "LocalDS_0"]);
    }
    c.args(args).env("ODT_VCENTER_PASSWORD", "secret");
    c
}

fn import(
    sim: &Vcsim,
    devices: &[PathBuf],
    job_dir: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let o = run(&mut import_cmd(sim, devices, job_dir, args), None, LIMIT);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `args` after the standard target, with the simulator's pin and --json.
fn pinned<'a>(sim: &'a Vcsim, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = INTO_ODT.to_vec();
    v.extend_from_slice(args);
    v.extend(["--thumbprint", sim.thumbprint.as_str(), "--json"]);
    v
}

fn colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn report(out: &str, err: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("no JSON report ({e}): {out}\n{err}"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    k.sort();
    k
}

/// A failure with --json: exit 1, one object `{"error": {"kind", "message"}}` whose
/// message holds every one of `says`.
fn assert_json_failure(rc: i32, out: &str, err: &str, says: &[&str]) {
    assert_eq!(rc, 1, "{out}{err}");
    let r = report(out, err);
    assert_eq!(keys(&r), ["error"], "{r}");
    assert_eq!(keys(&r["error"]), ["kind", "message"], "{r}");
    assert!(r["error"]["kind"].is_string(), "{r}");
    let why = r["error"]["message"].as_str().unwrap();
    for s in says {
        assert!(why.contains(s), "{s:?} not in {why:?}");
    }
}

/// The report's entry for VM `vm`, found by its name, or by its path on the device when
/// the damage left the name unread (the test's bundles are named after their VMs).
fn bundle<'a>(r: &'a Value, vm: &str) -> &'a Value {
    let paths = [format!("{vm}/{vm}.ovf"), format!("{vm}.ova")];
    r["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vm_name"] == vm || paths.iter().any(|p| b["path"] == p.as_str()))
        .unwrap_or_else(|| panic!("{vm} not in the report: {r}"))
}

/// Each VM exactly once in `folder`, marked complete; returns them. (Other folders may
/// hold VMs of the same names: the provider's own, or one put elsewhere on purpose.)
fn assert_once_each(sim: &Vcsim, names: &[&str], folder: &str) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            let all = sim.vms(n);
            let vms: Vec<_> = all.iter().filter(|v| v["folder"] == folder).collect();
            assert_eq!(vms.len(), 1, "{n} in {folder}: {all:?}");
            let note = vms[0]["annotation"].as_str().unwrap();
            assert!(note.contains("state=complete"), "{n}: {vms:?}");
            vms[0].clone()
        })
        .collect()
}

/// The uploads the tap kept that are `len` bytes long (the tap names them after the lease,
/// which says nothing of the VM: the test's disks are told apart by their lengths).
fn upload_of_len(sim: &Vcsim, len: usize) -> Vec<PathBuf> {
    sim.uploads()
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() == len as u64)
        .collect()
}

/// Copies the device images (sparse) so that one copy can be damaged.
fn copy_devices(devices: &[PathBuf], to: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(to).unwrap();
    devices
        .iter()
        .map(|d| {
            let dst = to.join(d.file_name().unwrap());
            let o = Command::new("cp")
                .arg("--sparse=always")
                .arg(d)
                .arg(&dst)
                .status()
                .unwrap();
            assert!(o.success());
            dst
        })
        .collect()
}

/// Flips one bit in the middle of record `nth` (in file order) of `path` on the devices.
fn flip_record(devices: &[PathBuf], job_dir: &Path, path: &str, nth: usize) {
    use odt_store::{Access, Locked};
    let locked = Locked::open(devices, Access::ReadOnly).unwrap();
    let id = odt_store::trip::job::Job::load_identity(job_dir).unwrap();
    let secrets = locked.secrets_from_identity(&id).unwrap();
    let store = locked.unlock(secrets, Access::ReadOnly).unwrap();
    let mut f = store.root();
    for c in path.split('/') {
        f = store.lookup(f, c.as_bytes()).unwrap();
    }
    let (dev, addr, len) = {
        let view = store.view();
        let e = view.get(f).unwrap().extents().nth(nth).unwrap().1.rec.loc;
        (e.dev, e.addr, e.len)
    };
    drop(store);
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&devices[dev as usize])
        .unwrap();
    let at = addr + len as u64 / 2;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    file.write_all_at(&b, at).unwrap();
}

#[test]
fn import_into_the_vcenter_simulator() {
    nfsclient::require_clients();
    vcsim::binary();
    let job = Job::provision("2G", 1, &["--segment-size", "8M"]);
    let local = job.path("export");
    std::fs::create_dir_all(&local).unwrap();
    let alpha = vcsim::write_ovf_folder(&local, "vm-alpha", 24 * MIB + 1234, 1);
    let beta = vcsim::write_ova(&local, "vm-beta", 12 * MIB + 77, 2);
    let gamma_raw = job.path("gamma.raw");
    let gamma = vcsim::real_vmdk(&gamma_raw, 8, 3);
    vcsim::write_ovf_bundle(&local, "vm-gamma", &gamma, Packing::Gzip);
    let gamma_gz = std::fs::metadata(local.join("vm-gamma/vm-gamma-disk1.vmdk"))
        .unwrap()
        .len();
    let delta_raw = job.path("delta.raw");
    let delta = vcsim::real_vmdk(&delta_raw, 8, 4);
    assert!(
        delta.len() > 2 * MIB,
        "{} bytes: fewer than 3 chunks",
        delta.len()
    );
    vcsim::write_ovf_bundle(&local, "vm-delta", &delta, Packing::Chunks(MIB));
    {
        let mut app = Appliance::start(&job, Options::default());
        app.unlock();
        nfsclient::put_tree(&local, &app.url_root(), LIMIT);
        app.seal();
        app.stop();
    }
    let dev = job.devices.clone();

    // Trust: an unknown self-signed certificate, then a wrong pin: both refused with the
    // certificate's thumbprint and subject, before any Login reached the simulator.
    let sim = Vcsim::start(
        &job.path("tap1"),
        &[
            "-folders",
            "odt,other,rp",
            "-pools",
            "odt-pool",
            "-foreign",
            "vm-alpha@other",
            "-datastores",
            "2",
        ],
    );
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &INTO_ODT);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("not trusted"), "{err}");
    assert!(err.contains(&colons(&sim.thumbprint)), "{err}");
    assert!(err.contains("subject"), "{err}");
    let wrong = "00".repeat(32);
    let mut args = INTO_ODT.to_vec();
    args.extend(["--thumbprint", &wrong, "--json"]);
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &args);
    assert_json_failure(
        rc,
        &out,
        &err,
        &["does not match the --thumbprint", &colons(&sim.thumbprint)],
    );
    assert_eq!(sim.inventory()["logins"], 0);

    // The import: all four VMs, on the mapped port group, powered off, their disks as
    // exported.
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &pinned(&sim, &[]));
    assert_eq!(rc, 0, "{out}{err}\n--- simulator\n{}", sim.log());
    let r = report(&out, &err);
    assert_eq!(
        keys(&r),
        [
            "bundles",
            "bytes_uploaded",
            "complete",
            "datacenter",
            "datastore",
            "folder",
            "job_id",
            "resource_pool",
            "seal_code",
            "seconds",
            "set_id",
            "vcenter"
        ],
        "{r}"
    );
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["folder"], "/DC0/vm/odt");
    assert_eq!(r["resource_pool"], "/DC0/host/DC0_C0/Resources");
    for vm in ALL {
        let b = bundle(&r, vm);
        assert_eq!(
            keys(b),
            [
                "disks", "path", "reason", "seconds", "status", "vm", "vm_name", "warnings"
            ],
            "{b}"
        );
        assert_eq!(b["status"], "imported", "{b}");
        assert!(b["vm"].as_str().unwrap().starts_with("vm-"), "{b}");
        assert_eq!(b["disks"].as_array().unwrap().len(), 1, "{b}");
        assert_eq!(
            keys(&b["disks"][0]),
            ["bytes", "href", "uploaded_bytes", "verified_roots"]
        );
    }
    let disk = |vm: &str| bundle(&r, vm)["disks"][0].clone();
    assert_eq!(disk("vm-alpha")["bytes"], alpha.len() as u64);
    assert_eq!(disk("vm-beta")["bytes"], beta.len() as u64);
    assert_eq!(disk("vm-beta")["uploaded_bytes"], beta.len() as u64);
    assert_eq!(bundle(&r, "vm-beta")["path"], "vm-beta.ova");
    // gzip: stored compressed, sent decompressed.
    assert_eq!(disk("vm-gamma")["bytes"], gamma_gz);
    assert_eq!(disk("vm-gamma")["uploaded_bytes"], gamma.len() as u64);
    // Chunks: one verified root per chunk file, sent as one disk.
    let chunks = delta.len().div_ceil(MIB);
    assert_eq!(disk("vm-delta")["bytes"], delta.len() as u64);
    assert_eq!(
        disk("vm-delta")["verified_roots"].as_array().unwrap().len(),
        chunks,
        "{r}"
    );
    assert_eq!(
        r["bytes_uploaded"],
        (alpha.len() + beta.len() + gamma.len() + delta.len()) as u64
    );
    for vm in assert_once_each(&sim, &ALL, "/DC0/vm/odt") {
        assert_eq!(vm["networks"], serde_json::json!(["DC0_DVPG0"]), "{vm}");
        assert_eq!(vm["datastores"], serde_json::json!(["LocalDS_0"]), "{vm}");
        assert_eq!(vm["power_state"], "poweredOff", "{vm}");
        assert_eq!(vm["pool"], "Resources", "{vm}");
    }
    assert_eq!(sim.uploads().len(), 4, "{:?}", sim.uploads());
    for (what, want) in [("vm-alpha", &alpha), ("vm-beta", &beta)] {
        let got = upload_of_len(&sim, want.len());
        assert_eq!(got.len(), 1, "{what}: {:?}", sim.uploads());
        assert!(
            std::fs::read(&got[0]).unwrap() == **want,
            "{what}'s disk arrived different"
        );
    }
    for (what, want, raw) in [
        ("vm-gamma", &gamma, &gamma_raw),
        ("vm-delta", &delta, &delta_raw),
    ] {
        let got = upload_of_len(&sim, want.len());
        assert_eq!(got.len(), 1, "{what}: {:?}", sim.uploads());
        assert!(
            std::fs::read(&got[0]).unwrap() == **want,
            "{what}'s disk arrived different"
        );
        vcsim::assert_vmdk_holds(&got[0], raw);
    }

    // A rerun, human report, the pin spelled with colons in lower case: all skipped.
    let mut args = INTO_ODT.to_vec();
    let pin = colons(&sim.thumbprint).to_lowercase();
    args.extend(["--thumbprint", &pin]);
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &args);
    assert_eq!(rc, 0, "{out}{err}");
    for vm in ALL {
        assert!(out.contains(&format!("{vm}  skipped")), "{out}");
    }
    assert_eq!(sim.uploads().len(), 4, "a rerun uploaded again");
    assert_once_each(&sim, &ALL, "/DC0/vm/odt");

    // A VM named vm-alpha that odt did not make, in folder `other`: refused by name, left
    // as it was, nothing sent for it.
    let before = sim.vms("vm-alpha");
    let spec_calls = sim.inventory()["calls"]["CreateImportSpec"].clone();
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &[
            "--cluster",
            "DC0_C0",
            "--folder",
            "other",
            "--bundle",
            "vm-alpha",
            "--thumbprint",
            &sim.thumbprint,
            "--json",
        ],
    );
    assert_eq!(rc, 3, "{out}{err}");
    let r = report(&out, &err);
    assert_eq!(r["complete"], false);
    assert_eq!(r["bundles"].as_array().unwrap().len(), 1, "{r}");
    let a = bundle(&r, "vm-alpha");
    assert_eq!(a["status"], "refused", "{a}");
    let foreign = before
        .iter()
        .find(|v| v["folder"] == "/DC0/vm/other")
        .unwrap();
    let why = a["reason"].as_str().unwrap();
    for s in [
        "\"vm-alpha\"",
        foreign["moref"].as_str().unwrap(),
        "already exists in /DC0/vm/other",
    ] {
        assert!(why.contains(s), "{s:?} not in {why}");
    }
    assert_eq!(sim.vms("vm-alpha"), before, "the other VM was touched");
    assert_eq!(
        foreign["annotation"],
        "a VM of the provider's own, not odt's"
    );
    assert_eq!(
        sim.inventory()["calls"]["CreateImportSpec"],
        spec_calls,
        "a conflicting bundle reached CreateImportSpec"
    );
    assert_eq!(sim.uploads().len(), 4);

    // --resource-pool and --power-on, no --network: vm-delta into folder rp, pool odt-pool,
    // powered on, on the network the OVF names (the simulator's "VM Network"). On
    // LocalDS_0, which holds the first vm-delta's files, the simulator refuses ImportVApp
    // (vCenter would pick another folder): that bundle is refused naming the fault, and
    // nothing is registered. On LocalDS_1 it is imported.
    let rp = |datastore| {
        let (rc, out, err) = import(
            &sim,
            &dev,
            &job.job_dir,
            &[
                "--resource-pool",
                "DC0_C0/Resources/odt-pool",
                "--folder",
                "rp",
                "--datastore",
                datastore,
                "--power-on",
                "--bundle",
                "vm-delta",
                "--thumbprint",
                &sim.thumbprint,
                "--json",
            ],
        );
        (rc, report(&out, &err))
    };
    let (rc, r) = rp("LocalDS_0");
    assert_eq!(rc, 3, "{r}");
    let d = bundle(&r, "vm-delta");
    assert_eq!(d["status"], "refused", "{d}");
    let why = d["reason"].as_str().unwrap();
    assert!(
        why.contains("refused ImportVApp: FileAlreadyExists: file ")
            && why.contains("nothing of this bundle was registered"),
        "{why}"
    );
    assert_eq!(sim.vms("vm-delta").len(), 1, "{:?}", sim.vms("vm-delta"));
    let (rc, r) = rp("LocalDS_1");
    assert_eq!(rc, 0, "{r}");
    assert_eq!(
        r["resource_pool"], "/DC0/host/DC0_C0/Resources/odt-pool",
        "{r}"
    );
    assert_eq!(r["datastore"], "LocalDS_1", "{r}");
    assert_eq!(bundle(&r, "vm-delta")["status"], "imported", "{r}");
    let vms = sim.vms("vm-delta");
    let in_rp: Vec<_> = vms.iter().filter(|v| v["folder"] == "/DC0/vm/rp").collect();
    assert_eq!(in_rp.len(), 1, "{vms:?}");
    assert_eq!(in_rp[0]["pool"], "odt-pool", "{vms:?}");
    assert_eq!(in_rp[0]["power_state"], "poweredOn", "{vms:?}");
    assert_eq!(in_rp[0]["networks"], serde_json::json!(["VM Network"]));
    assert_eq!(in_rp[0]["datastores"], serde_json::json!(["LocalDS_1"]));
    assert!(
        in_rp[0]["annotation"]
            .as_str()
            .unwrap()
            .contains("state=complete")
    );
    assert_eq!(sim.uploads().len(), 5);

    // --json on failures: a wrong option, a datastore vCenter does not have, a --bundle
    // the device does not hold. One object each, exit 1, nothing imported.
    let vms_before = sim.inventory()["vms"].as_array().unwrap().len();
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &pinned(&sim, &["--network", "VM Network"]),
    );
    assert_json_failure(
        rc,
        &out,
        &err,
        &["--network \"VM Network\"", "OVF_NAME=PORTGROUP"],
    );
    let mut args = pinned(&sim, &[]);
    args.extend(["--datastore", "NoSuchDS"]);
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &args);
    assert_json_failure(rc, &out, &err, &["datastore", "\"NoSuchDS\"", "not found"]);
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &pinned(&sim, &["--bundle", "vm-omega"]),
    );
    assert_json_failure(
        rc,
        &out,
        &err,
        &["--bundle \"vm-omega\"", "names no bundle"],
    );
    assert_eq!(sim.inventory()["vms"].as_array().unwrap().len(), vms_before);
    drop(sim);

    // Damage: a flipped bit in vm-alpha's disk (found during its upload) and one in the
    // OVA's first record, which holds its tar header and descriptor (found before anything
    // of vm-beta is sent). Both quarantined and not registered; the other two imported.
    let flipped = copy_devices(&dev, &job.path("flipped"));
    flip_record(&flipped, &job.job_dir, "vm-alpha/vm-alpha-disk1.vmdk", 2);
    flip_record(&flipped, &job.job_dir, "vm-beta.ova", 0);
    let sim = Vcsim::start(&job.path("tap2"), &["-folders", "odt"]);
    let (rc, out, err) = import(&sim, &flipped, &job.job_dir, &pinned(&sim, &[]));
    assert_eq!(rc, 3, "{out}{err}");
    let r = report(&out, &err);
    let a = bundle(&r, "vm-alpha");
    assert_eq!(a["status"], "quarantined", "{a}");
    assert!(a["reason"].as_str().unwrap().contains("damaged"), "{a}");
    let b = bundle(&r, "vm-beta");
    assert_eq!(b["status"], "quarantined", "{b}");
    let why = b["reason"].as_str().unwrap();
    assert!(
        why.contains("vm-beta.ova is damaged in bytes 0..") && why.contains("nothing"),
        "{b}"
    );
    for vm in ["vm-gamma", "vm-delta"] {
        assert_eq!(bundle(&r, vm)["status"], "imported", "{r}");
    }
    for vm in ["vm-alpha", "vm-beta"] {
        assert!(sim.vms(vm).is_empty(), "{:?}", sim.inventory());
    }
    assert_once_each(&sim, &["vm-gamma", "vm-delta"], "/DC0/vm/odt");
    // vm-alpha, vm-gamma and vm-delta reached CreateImportSpec; vm-beta never did.
    assert_eq!(sim.inventory()["calls"]["CreateImportSpec"], 3);
    drop(sim);

    // SIGKILL mid-upload (uploads slowed to ~6 MB/s), then a rerun: each VM exactly once.
    let sim = Vcsim::start(
        &job.path("tap3"),
        &["-folders", "odt", "-slow-upload-kib", "64"],
    );
    let mut args = INTO_ODT.to_vec();
    args.extend(["--thumbprint", &sim.thumbprint]);
    let mut child = import_cmd(&sim, &dev, &job.job_dir, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let part = std::fs::read_dir(&sim.tap)
            .unwrap()
            .flatten()
            .flat_map(|l| std::fs::read_dir(l.path()).unwrap().flatten())
            .any(|f| {
                f.path().extension().is_some_and(|e| e == "part")
                    && f.metadata().unwrap().len() > 2 * MIB as u64
            });
        if part {
            break;
        }
        assert!(started.elapsed() < LIMIT, "no upload started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let half: Vec<_> = ALL.iter().flat_map(|n| sim.vms(n)).collect();
    assert_eq!(half.len(), 1, "one VM half-imported: {half:?}");
    assert!(
        half[0]["annotation"]
            .as_str()
            .unwrap()
            .contains("state=importing"),
        "{half:?}"
    );
    sim.full_speed();
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &pinned(&sim, &[]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_once_each(&sim, &ALL, "/DC0/vm/odt");
}

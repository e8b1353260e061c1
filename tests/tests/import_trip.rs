//! `odt import` end to end against govmomi's vCenter simulator: the whole trip (provision,
//! serve, copy an OVF folder and an OVA over NFS with libnfs, seal, power off), then the
//! import: trust refused before login (unknown certificate, wrong --thumbprint), both VMs
//! registered under their names in the folder with their disks byte-identical to the
//! exported ones (the simulator's upload tap keeps what arrived), a rerun skipping both,
//! a flipped bit on the device leaving that VM unregistered and named while the other is
//! imported, and a kill mid-upload followed by a rerun ending with each VM exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient;
use odt_e2e::run::run;
use odt_e2e::vcsim::{self, Vcsim};

const LIMIT: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;

fn import_cmd(sim: &Vcsim, devices: &[PathBuf], job_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bins::odt());
    c.arg("import");
    for d in devices {
        c.arg("--device").arg(d);
    }
    c.arg("--job")
        .arg(job_dir)
        .args(["--vcenter", &sim.url_with_user()])
        .args(["--datacenter", "DC0", "--datastore", "LocalDS_0"])
        .args(["--cluster", "DC0_C0", "--folder", "odt"])
        .args(["--network", "VM Network=DC0_DVPG0"])
        .args(extra)
        .env("ODT_VCENTER_PASSWORD", "secret");
    c
}

fn import(
    sim: &Vcsim,
    devices: &[PathBuf],
    job_dir: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let o = run(&mut import_cmd(sim, devices, job_dir, extra), None, LIMIT);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn report(out: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("no JSON report ({e}): {out}\n{err}"))
}

fn bundle<'a>(r: &'a serde_json::Value, vm: &str) -> &'a serde_json::Value {
    r["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vm_name"] == vm)
        .unwrap_or_else(|| panic!("{vm} not in the report: {r}"))
}

/// Each VM exactly once, in /DC0/vm/odt, marked complete.
fn assert_once_each(sim: &Vcsim, names: &[&str]) {
    for n in names {
        let vms = sim.vms_named(n);
        assert_eq!(vms.len(), 1, "{n}: {vms:?}");
        assert_eq!(vms[0].0, "/DC0/vm/odt", "{n}: {vms:?}");
        assert!(vms[0].1.contains("state=complete"), "{n}: {vms:?}");
    }
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

/// Flips one bit in the middle of the third record of `path` on the devices.
fn flip_record(devices: &[PathBuf], job_dir: &Path, path: &str) {
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
        let e = view.get(f).unwrap().extents().nth(2).unwrap().1.rec.loc;
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
    let sim = Vcsim::start(&job.path("tap1"), &["odt"], None);
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &[]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("not trusted"), "{err}");
    assert!(err.contains(&colons(&sim.thumbprint)), "{err}");
    assert!(err.contains("subject"), "{err}");
    let wrong = "00".repeat(32);
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &["--thumbprint", &wrong, "--json"],
    );
    assert_eq!(rc, 1, "{out}{err}");
    let r = report(&out, &err);
    let why = r["error"].as_str().unwrap();
    assert!(why.contains("does not match the --thumbprint"), "{why}");
    assert!(why.contains(&colons(&sim.thumbprint)), "{why}");
    assert_eq!(sim.inventory()["logins"], 0);

    // The import: both VMs, their disks as exported.
    let pin = sim.thumbprint.clone();
    let (rc, out, err) = import(&sim, &dev, &job.job_dir, &["--thumbprint", &pin, "--json"]);
    assert_eq!(rc, 0, "{out}{err}\n--- simulator\n{}", sim.log());
    let r = report(&out, &err);
    assert_eq!(r["complete"], true, "{r}");
    for vm in ["vm-alpha", "vm-beta"] {
        let b = bundle(&r, vm);
        assert_eq!(b["status"], "imported", "{b}");
        assert!(b["vm"].as_str().unwrap().starts_with("vm-"), "{b}");
        assert_eq!(b["disks"].as_array().unwrap().len(), 1, "{b}");
    }
    assert_eq!(
        bundle(&r, "vm-alpha")["disks"][0]["bytes"],
        alpha.len() as u64
    );
    assert_eq!(
        bundle(&r, "vm-beta")["disks"][0]["bytes"],
        beta.len() as u64
    );
    assert_eq!(bundle(&r, "vm-beta")["path"], "vm-beta.ova");
    assert_once_each(&sim, &["vm-alpha", "vm-beta"]);
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    let mut got: Vec<Vec<u8>> = uploads.iter().map(|p| std::fs::read(p).unwrap()).collect();
    got.sort_by_key(|d| d.len());
    assert!(got[0] == beta, "the OVA's disk arrived different");
    assert!(got[1] == alpha, "the OVF folder's disk arrived different");
    // Human report with a pin spelled with colons in lower case.
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &["--thumbprint", &colons(&pin).to_lowercase()],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("vm-alpha  skipped") && out.contains("vm-beta  skipped"),
        "{out}"
    );
    assert_eq!(sim.uploads().len(), 2, "a rerun uploaded again");
    assert_once_each(&sim, &["vm-alpha", "vm-beta"]);
    // A VM of the same name that is not ours is a conflict, never overwritten.
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &[
            "--thumbprint",
            &pin,
            "--folder",
            "",
            "--bundle",
            "vm-alpha",
            "--json",
        ],
    );
    drop(sim);
    let _ = (rc, out, err);

    // A flipped bit in vm-alpha's disk: that VM is quarantined and not registered, the
    // other one imported.
    let flipped = copy_devices(&dev, &job.path("flipped"));
    flip_record(&flipped, &job.job_dir, "vm-alpha/vm-alpha-disk1.vmdk");
    let sim = Vcsim::start(&job.path("tap2"), &["odt"], None);
    let (rc, out, err) = import(
        &sim,
        &flipped,
        &job.job_dir,
        &["--thumbprint", &sim.thumbprint.clone(), "--json"],
    );
    assert_eq!(rc, 2, "{out}{err}");
    let r = report(&out, &err);
    let a = bundle(&r, "vm-alpha");
    assert_eq!(a["status"], "quarantined", "{a}");
    assert!(a["reason"].as_str().unwrap().contains("damaged"), "{a}");
    assert_eq!(bundle(&r, "vm-beta")["status"], "imported", "{r}");
    assert!(
        sim.vms_named("vm-alpha").is_empty(),
        "{:?}",
        sim.inventory()
    );
    assert_once_each(&sim, &["vm-beta"]);
    drop(sim);

    // SIGKILL mid-upload (uploads slowed to ~6 MB/s), then a rerun: each VM exactly once.
    let sim = Vcsim::start(&job.path("tap3"), &["odt"], Some(64));
    let mut child = import_cmd(
        &sim,
        &dev,
        &job.job_dir,
        &["--thumbprint", &sim.thumbprint.clone()],
    )
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
    let half: Vec<_> = ["vm-alpha", "vm-beta"]
        .iter()
        .flat_map(|n| sim.vms_named(n))
        .collect();
    assert_eq!(half.len(), 1, "one VM half-imported: {half:?}");
    assert!(half[0].1.contains("state=importing"), "{half:?}");
    let (rc, out, err) = import(
        &sim,
        &dev,
        &job.job_dir,
        &["--thumbprint", &sim.thumbprint.clone(), "--json"],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert_once_each(&sim, &["vm-alpha", "vm-beta"]);
}

//! The whole trip through the bootable appliance image, with the real binaries and real
//! NFS clients:
//!
//! 1. build the release binaries and the image (`images/build`);
//! 2. provider: `odt job new`, `odt provision` of a data disk image;
//! 3. boot the image in qemu with that disk (`images/boot-test --hold`: TCG, virtio disk,
//!    NFS and control ports forwarded to the host's loopback);
//! 4. customer: `odt unlock`, copy a VM export tree with libnfs (`nfs-cp` for files, the
//!    PyPI `libnfs` binding for directories), read it back over NFS, `odt seal`;
//! 5. shut the appliance down with the power button;
//! 6. courier and provider, on the host, with the disk image now "shipped":
//!    `odt seal-check` (and `--expect` the code `odt seal` printed), `odt ingest`, and the
//!    datastore compared with the original tree byte for byte.
//!
//! Needs qemu-system-x86, a Debian kernel, busybox-static, syslinux, mtools, dosfstools,
//! fdisk, libnfs-utils and PyPI libnfs: `scripts/install-test-deps`. Nothing is skipped: a
//! missing tool or command fails the test with a message naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use odt_e2e::bins::repo;
use odt_e2e::image::{BootOptions, ImageAppliance, need_tool, run_timed as run_ok};
use odt_e2e::run::run;
use odt_e2e::vmtree::read_tree;

use rand::{Rng, SeedableRng};

fn log(msg: impl AsRef<str>) {
    eprintln!("image_trip: {}", msg.as_ref());
}

/// A small VM export tree: two OVF packages (one with a `.mf` of SHA-256 digests), disks
/// with random and all-zero stretches and sizes that are not multiples of anything.
fn make_export(root: &Path) -> Vec<PathBuf> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0d7_1a9e);
    let mut files = Vec::new();
    // Disk layouts as (bytes, random?) stretches.
    type Layout = &'static [(usize, bool)];
    let bundles: [(&str, Layout, bool); 2] = [
        // (directory, disk layout, with .mf)
        (
            "vm1",
            &[(3 << 20, true), (2 << 20, false), (1_234_567, true)],
            true,
        ),
        (
            "exports/web-01",
            &[(1_500_001, true), (300_000, false)],
            false,
        ),
    ];
    for (dir, layout, with_mf) in bundles {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let name = dir.rsplit('/').next().unwrap();
        let disk_name = format!("{name}-disk1.vmdk");
        let mut disk = Vec::new();
        for &(len, random) in layout {
            let start = disk.len();
            disk.resize(start + len, 0);
            if random {
                rng.fill(&mut disk[start..]);
            }
        }
        std::fs::write(d.join(&disk_name), &disk).unwrap();
        let ovf = odt_e2e::vmtree::ovf_descriptor(name, &disk_name, disk.len() as u64);
        let ovf_name = format!("{name}.ovf");
        std::fs::write(d.join(&ovf_name), ovf).unwrap();
        files.push(PathBuf::from(dir).join(&ovf_name));
        files.push(PathBuf::from(dir).join(&disk_name));
        if with_mf {
            let mut mf = String::new();
            for f in [&ovf_name, &disk_name] {
                let digest = odt_e2e::nfsclient::sha256_file(&d.join(f));
                mf.push_str(&format!("SHA256({f})= {digest}\n"));
            }
            let mf_name = format!("{name}.mf");
            std::fs::write(d.join(&mf_name), mf).unwrap();
            files.push(PathBuf::from(dir).join(&mf_name));
        }
    }
    files
}

#[test]
fn image_trip() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    let t0 = Instant::now();
    for (tool, why) in [
        ("qemu-system-x86_64", "boots the appliance image"),
        ("nfs-cp", "the customer's NFS client (libnfs-utils)"),
        ("python3", "PyPI libnfs creates the directories"),
    ] {
        need_tool(tool, why);
    }
    let probe = run(
        Command::new("python3").args(["-c", "import libnfs"]),
        None,
        Duration::from_secs(30),
    );
    assert!(
        probe.status.success(),
        "python3 cannot import libnfs (PyPI binding): run scripts/install-test-deps\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // 1. Release binaries (a no-op when scripts/test already built them) and the image.
    let odt = odt_e2e::bins::odt();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = odt_e2e::image::build(&d.join("image"));

    // 2. Provider: a job and a provisioned data disk.
    let set = odt_test_support::fixture::provision_with_cli(&odt, d, 1, "1G", &[]);
    let (job, disk, code) = (set.job_dir, set.devices[0].clone(), set.code_file);

    let src = d.join("export");
    let files = make_export(&src);

    // 3. Boot the appliance with the disk.
    let fingerprint = odt_e2e::appliance::fingerprint_of(&job);
    let app = ImageAppliance::boot(
        &image,
        std::slice::from_ref(&disk),
        &odt,
        &fingerprint,
        d,
        &BootOptions::default(),
    );

    // 4. Customer: unlock, copy, read back, seal.
    run_ok(
        Command::new(&odt)
            .args(["unlock", "--appliance", &app.control, "--code-file"])
            .arg(&code),
        Duration::from_secs(120),
    );
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .flat_map(|f| {
            f.ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mkdirs = dirs
        .iter()
        .map(|p| format!("n.mkdir('/{}')\n", p.display()))
        .collect::<String>();
    let script = format!(
        "import sys\nfrom libnfs import NFS\n\
         n = NFS('nfs://127.0.0.1/?nfsport={p}&mountport={p}&version=3')\n\
         {mkdirs}print(sorted(n.listdir('/')))\n",
        p = app.nfs_port
    );
    run_ok(
        Command::new("python3").args(["-c", &script]),
        Duration::from_secs(120),
    );
    let copy_started = Instant::now();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(src.join(f)).unwrap().len())
        .sum();
    for f in &files {
        run_ok(
            Command::new("nfs-cp").arg(src.join(f)).arg(app.url_file(f)),
            Duration::from_secs(300),
        );
    }
    log(format!(
        "copied {} files, {bytes} bytes in {:.1}s",
        files.len(),
        copy_started.elapsed().as_secs_f64()
    ));
    // Read everything back through the appliance before sealing.
    let back = d.join("readback");
    for f in &files {
        let local = back.join(f);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        run_ok(
            Command::new("nfs-cp").arg(app.url_file(f)).arg(&local),
            Duration::from_secs(300),
        );
        assert!(
            std::fs::read(&local).unwrap() == std::fs::read(src.join(f)).unwrap(),
            "{} read back over NFS differs from what was copied",
            f.display()
        );
    }
    log("read back over NFS: identical");
    let status = run_ok(
        Command::new(&odt)
            .args([
                "status",
                "--json",
                "--appliance",
                &app.control,
                "--code-file",
            ])
            .arg(&code),
        Duration::from_secs(60),
    );
    log(format!("status: {}", status.trim()));

    // The contract spells the seal `odt seal --appliance ADDR`; like `odt unlock` and
    // `odt status`, it may read the unlock code (which authenticates the request) from
    // stdin: give it there.
    let code_text = std::fs::read(&code).unwrap();
    let seal = run(
        Command::new(&odt).args(["seal", "--appliance", &app.control]),
        Some(&code_text),
        Duration::from_secs(300),
    );
    let seal_out = String::from_utf8_lossy(&seal.stdout).into_owned();
    assert!(
        seal.status.success(),
        "`odt seal --appliance {}` failed ({}): the trip cannot go on without the seal \
         (DESIGN step 6)\n--- stdout ---\n{seal_out}\n--- stderr ---\n{}",
        app.control,
        seal.status,
        String::from_utf8_lossy(&seal.stderr)
    );
    log(format!("sealed: {}", seal_out.trim()));

    // 5. The power button.
    app.power_off();

    // 6. Courier and provider, on the host.
    let check = run_ok(
        Command::new(&odt)
            .args(["seal-check", "--json", "--device"])
            .arg(&disk)
            .arg("--job")
            .arg(&job),
        Duration::from_secs(120),
    );
    let v: serde_json::Value = serde_json::from_str(&check)
        .unwrap_or_else(|e| panic!("seal-check --json is not JSON ({e}): {check}"));
    assert_eq!(v["intact"], true, "seal-check: {check}");
    let seal_code = v["seal_code"]
        .as_str()
        .unwrap_or_else(|| panic!("seal-check --json has no seal_code: {check}"))
        .to_string();
    assert!(
        seal_out.contains(&seal_code),
        "the seal code on the devices ({seal_code}) is not the one `odt seal` printed:\n{seal_out}"
    );
    run_ok(
        Command::new(&odt)
            .args(["seal-check", "--device"])
            .arg(&disk)
            .arg("--job")
            .arg(&job)
            .args(["--expect", &seal_code]),
        Duration::from_secs(120),
    );
    let datastore = d.join("datastore");
    let ingest = run_ok(
        Command::new(&odt)
            .args(["ingest", "--device"])
            .arg(&disk)
            .arg("--job")
            .arg(&job)
            .arg("--to")
            .arg(&datastore),
        Duration::from_secs(600),
    );
    // The custody log journaled in the image and signed with the seal, in the report.
    assert!(
        ingest.contains("custody log:")
            && ingest.contains("unlock code accepted from")
            && ingest.contains("seal requested from"),
        "the ingest report shows no custody log:\n{ingest}"
    );
    let want = read_tree(&src, "");
    let got = read_tree(&datastore, ".odt-ingest");
    let names = |t: &BTreeMap<PathBuf, Option<Vec<u8>>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&want),
        "the datastore does not hold exactly the exported tree"
    );
    for (p, w) in &want {
        assert!(
            got[p] == *w,
            "{} differs between the export and the datastore",
            p.display()
        );
    }
    log(format!(
        "datastore identical to the export ({} entries); whole trip {:.1}s",
        want.len(),
        t0.elapsed().as_secs_f64()
    ));
}

/// The image's configuration reader (`images/config.awk`, used by the appliance's `/init`,
/// `images/build` and `images/boot-test`): the shipped example parses; values come out
/// single-quoted so that `eval` can never run anything from the file; mistakes are refused.
/// Checked with the host's awk and sh and with busybox's (which the appliance runs).
#[test]
fn image_config() {
    need_tool("awk", "reads the image configuration on the host");
    need_tool(
        "busybox",
        "the appliance's awk and sh (Debian busybox-static)",
    );
    for (awk, sh) in [
        (&["awk"][..], &["sh"][..]),
        (&["busybox", "awk"], &["busybox", "sh"]),
    ] {
        check_config_reader(awk, sh);
    }
}

fn check_config_reader(awk: &[&str], sh: &[&str]) {
    let images = repo().join("images");
    let known = std::fs::read_to_string(images.join("initramfs/config-keys")).unwrap();
    let known = known.split_whitespace().collect::<Vec<_>>().join(" ");
    let parse = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("appliance.toml");
        std::fs::write(&f, text).unwrap();
        run(
            Command::new(awk[0])
                .args(&awk[1..])
                .arg("-v")
                .arg(format!("known={known}"))
                .arg("-f")
                .arg(images.join("config.awk"))
                .arg(&f),
            None,
            Duration::from_secs(30),
        )
    };
    // Evaluates the reader's output in sh and prints the named variables, one per line.
    let eval = |assignments: &[u8], script: &str| {
        let mut input = assignments.to_vec();
        input.extend_from_slice(script.as_bytes());
        let o = run(
            Command::new(sh[0]).args(&sh[1..]),
            Some(&input),
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "{sh:?} failed: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };

    let example = std::fs::read_to_string(images.join("appliance.toml.example")).unwrap();
    let o = parse(&example);
    assert!(o.status.success(), "the example does not parse: {o:?}");
    let got = eval(
        &o.stdout,
        "printf '%s\\n' \"$cfg_network_mode\" \"$cfg_appliance_listen\" \"$cfg_appliance_control\" \"$cfg_appliance_devices\" \"$cfg_appliance_device_wait\"\n",
    );
    assert_eq!(got, "dhcp\n0.0.0.0:2049\n0.0.0.0:7049\nauto\n60\n");

    // Arrays and hostile strings: each element is one word, nothing is executed.
    let o = parse(
        "[appliance]\n\
         devices = [\"/dev/sdb\", \"it's $(touch /tmp/odt-config-pwned) `x`\", 'q\"x y'] # c\n\
         args = [ \"--allow\" , \"10.0.0.0/8\" ]\n\
         device_wait = +5\n\
         [network]\n\
         mode = \"static\" # comment\n",
    );
    assert!(o.status.success(), "{o:?}");
    let got = eval(
        &o.stdout,
        "eval \"set -- $cfg_appliance_devices\"; printf '<%s>\\n' \"$@\"; \
         eval \"set -- $cfg_appliance_args\"; printf '<%s>\\n' \"$@\"; \
         echo \"$cfg_appliance_device_wait $cfg_network_mode $cfg_appliance_devices_is_array\"\n",
    );
    assert_eq!(
        got,
        "</dev/sdb>\n<it's $(touch /tmp/odt-config-pwned) `x`>\n<q\"x y>\n<--allow>\n<10.0.0.0/8>\n5 static 1\n"
    );
    assert!(!Path::new("/tmp/odt-config-pwned").exists());

    // Mistakes are errors with the line number, never ignored.
    for (text, why) in [
        (
            "[network]\nadress = \"10.0.0.1/24\"\n",
            "unknown setting 'network.adress'",
        ),
        (
            "[network]\nmode = \"dhcp\"\nmode = \"static\"\n",
            "set twice",
        ),
        ("[network]\nmode = \"dhcp\" static\n", "unexpected text"),
        ("[network]\nmode = \"dhcp\n", "unterminated string"),
        (
            "[appliance]\ndevices = [\"/dev/sdb\" \"/dev/sdc\"]\n",
            "expected ','",
        ),
        ("[appliance]\ndevice_wait = 1.5\n", "unexpected text"),
        ("[network]\nmode = dhcp\n", "unsupported value"),
        ("[network\nmode = \"dhcp\"\n", "bad section header"),
    ] {
        let o = parse(text);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(why),
            "{awk:?}: {text:?} should fail with {why:?}: {o:?}"
        );
        assert!(
            err.contains(":2:") || err.contains(":3:") || err.contains(":1:"),
            "{err}"
        );
    }
}

//! The chain of custody with the real binaries: an OVF export copied over NFS (PyPI libnfs),
//! `odt bundles` and `odt seal` refusing a broken bundle by name, `odt seal --force`, a
//! read-only export, then the courier's `odt seal-check` with the right and a wrong code.

use std::process::Command;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient;
use odt_e2e::run::run;
use odt_e2e::vmtree;

const LIMIT: Duration = Duration::from_secs(300);

fn odt(args: &[&str], code_file: Option<&std::path::Path>) -> (i32, String) {
    let mut c = Command::new(bins::odt());
    c.args(args);
    if let Some(f) = code_file {
        c.arg("--code-file").arg(f);
    }
    let o = run(&mut c, None, LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn bundles_seal_and_seal_check_through_the_cli() {
    nfsclient::require_clients();
    let job = Job::provision("2G", 2, &["--segment-size", "8M"]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let local = job.path("export");
    vmtree::write_vm_export(&local, "vm-good", 64 << 20, 1);
    let broken = vmtree::write_vm_export(&local, "vm-broken", 16 << 20, 2);
    std::fs::remove_file(broken.dir.join("vm-broken-disk1.vmdk")).unwrap();
    nfsclient::put_tree(&local, &app.url_root(), LIMIT);
    let ctl = app.control.to_string();
    let code = Some(job.code_file.as_path());

    let (rc, out) = odt(&["bundles", "--appliance", &ctl], code);
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("vm-good/vm-good.ovf: ok"), "{out}");
    assert!(
        out.contains("missing file vm-broken/vm-broken-disk1.vmdk"),
        "{out}"
    );

    let (rc, out) = odt(&["seal", "--appliance", &ctl], code);
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("NOT SEALED"), "{out}");
    // Still writable after a refused seal.
    let extra = job.path("extra.txt");
    std::fs::write(&extra, b"still on site").unwrap();
    nfsclient::nfs_cp_ok(&extra.to_string_lossy(), &app.url_file("extra.txt"), LIMIT);

    let (rc, out) = odt(&["seal", "--appliance", &ctl, "--force", "--json"], code);
    assert_eq!(rc, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("seal --json");
    let seal_code = v["seal_code"].as_str().unwrap().to_string();
    assert_eq!(seal_code.len(), 14);
    // Read-only now, reads still work.
    let again = nfsclient::nfs_cp(&extra.to_string_lossy(), &app.url_file("late.txt"), LIMIT);
    assert!(
        !again.status.success(),
        "a write after the seal was accepted"
    );
    let back = job.path("back.txt");
    nfsclient::nfs_cat_to(&app.url_file("extra.txt"), &back, LIMIT);
    assert_eq!(std::fs::read(&back).unwrap(), b"still on site");
    let st = app.status();
    assert_eq!(st["state"], "sealed", "{st}");
    app.stop();

    let mut args = vec!["seal-check", "--job", job.job_dir.to_str().unwrap()];
    for d in &job.devices {
        args.extend(["--device", d.to_str().unwrap()]);
    }
    let mut good = args.clone();
    good.extend(["--expect", &seal_code]);
    let (rc, out) = odt(&good, None);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("SEAL INTACT") && out.contains(&seal_code),
        "{out}"
    );
    let mut wrong = args.clone();
    wrong.extend(["--expect", "AAAA-BBBB-CCCC"]);
    let (rc, out) = odt(&wrong, None);
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("not the expected"), "{out}");
}

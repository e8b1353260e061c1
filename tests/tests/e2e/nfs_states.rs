//! What the export refuses, with real clients and the real binaries: everything before
//! unlock (NFS3ERR_ACCES), changes after `odt seal` (NFS3ERR_ROFS, reads still work, also
//! after a restart), writes beyond the device's capacity (NFS3ERR_NOSPC, nothing
//! acknowledged lost), and clients outside the allow-list (reset at connect; the allow-list
//! from a TOML config file, and a flag that overrides it).

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient::{
    manifest, nfs_cat_to, nfs_cp, nfs_cp_ok, nfs_ls, nfstool_ok, require_clients, sha256_file,
};
use odt_e2e::run::run;

const MIN: Duration = Duration::from_secs(60);

fn random_file(path: &std::path::Path, bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; bytes];
    rng.fill_bytes(&mut v);
    std::fs::write(path, v).unwrap();
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn locked_appliance_refuses_access_and_wrong_codes() {
    require_clients();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let src = job.path("a.bin");
    random_file(&src, 100_000, 1);

    let o = nfs_cp(&src.to_string_lossy(), &app.url_file("a.bin"), MIN);
    assert!(!o.status.success(), "a locked appliance accepted a file");
    assert!(
        text(&o).contains("ACCES"),
        "expected NFS3ERR_ACCES: {}",
        text(&o)
    );
    // The root lists only the hint that says how to unlock (issue 14 point 8).
    let o = nfs_ls(&app.url_root());
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("APPLIANCE-LOCKED.txt") && listed.lines().count() == 1,
        "{listed}"
    );
    assert_eq!(
        nfstool_ok(&["try-mkdir", &app.url_root(), "/d"], MIN).trim(),
        "EACCES"
    );
    assert!(app.log_text().contains("the appliance is locked"));

    // A wrong code is refused with a message; the state stays locked.
    let wrong = job.path("wrong-code");
    std::fs::write(&wrong, "AAAAA-BBBBB-CCCCC-DDDDD\n").unwrap();
    let o = app.try_unlock(&wrong);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not open"), "{}", text(&o));
    let st = run(
        Command::new(bins::odt()).args([
            "status",
            "--json",
            "--appliance",
            &app.control.to_string(),
            "--fingerprint",
            &app.fingerprint,
        ]),
        None,
        MIN,
    );
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "locked");
    assert!(
        v.get("store").is_none(),
        "a locked appliance tells nothing more: {v}"
    );

    // Unlocked: the same client works. Status needs no code after `odt unlock` (its
    // session); without a session it shows the public fields only.
    app.unlock();
    nfs_cp_ok(&src.to_string_lossy(), &app.url_file("a.bin"), MIN);
    let st = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert!(st.status.success(), "status after unlock: {}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["store"]["files"], 1, "{v}");
    let st = run(
        Command::new(bins::odt()).args([
            "status",
            "--json",
            "--appliance",
            &app.control.to_string(),
            "--fingerprint",
            &app.fingerprint,
        ]),
        None,
        MIN,
    );
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "unlocked", "{v}");
    assert!(v.get("store").is_none(), "no session, no contents: {v}");
    assert_eq!(app.status()["store"]["files"], 1);
}

#[test]
fn sealed_appliance_is_read_only_and_readable() {
    require_clients();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let src = job.path("a.bin");
    random_file(&src, 3_000_000, 2);
    nfs_cp_ok(&src.to_string_lossy(), &app.url_file("a.bin"), MIN);
    assert_eq!(
        nfstool_ok(&["try-mkdir", &app.url_root(), "/d"], MIN).trim(),
        "ok"
    );

    app.seal();

    for round in ["after the seal", "after a restart"] {
        assert_eq!(app.status()["state"], "sealed", "{round}");
        let o = nfs_cp(&src.to_string_lossy(), &app.url_file("b.bin"), MIN);
        assert!(
            !o.status.success(),
            "{round}: a sealed appliance accepted a new file"
        );
        assert!(
            text(&o).contains("ROFS"),
            "{round}: expected NFS3ERR_ROFS: {}",
            text(&o)
        );
        assert_eq!(
            nfstool_ok(&["try-mkdir", &app.url_root(), "/e"], MIN).trim(),
            "EROFS",
            "{round}"
        );
        assert_eq!(
            nfstool_ok(&["try-create", &app.url_root(), "/a.bin"], MIN).trim(),
            "EROFS",
            "{round}: overwriting a sealed file"
        );
        let back = job.path("back.bin");
        nfs_cat_to(&app.url_file("a.bin"), &back, MIN);
        assert_eq!(
            sha256_file(&back),
            sha256_file(&src),
            "{round}: reads still work"
        );
        app.restart();
        app.unlock();
    }
}

#[test]
fn a_full_device_answers_nospc_and_keeps_what_it_acknowledged() {
    require_clients();
    // 192 MiB device, 8 MiB segments: the journal takes its share; about 150 MiB for data.
    let job = Job::provision(
        "192M",
        1,
        &["--segment-size", "8M", "--journal-size", "16M"],
    );
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();
    let small = job.path("small.bin");
    random_file(&small, 20 << 20, 3);
    nfs_cp_ok(&small.to_string_lossy(), &app.url_file("small.bin"), MIN);
    let big = job.path("big.bin");
    random_file(&big, 300 << 20, 4);
    let o = nfs_cp(&big.to_string_lossy(), &app.url_file("big.bin"), 5 * MIN);
    assert!(!o.status.success(), "300 MiB fit on a 192 MiB device?");
    assert!(
        app.log_text().contains("NFS3ERR_NOSPC"),
        "the appliance did not answer NOSPC:\n{}\n{}",
        text(&o),
        app.log_text()
    );
    let st = app.status();
    assert!(
        st["store"]["free_bytes"].as_u64().unwrap() < 2 << 20,
        "{st}"
    );

    // What was acknowledged is intact, now and after a restart; the cut file reads back.
    for round in ["full", "after a restart"] {
        let m = manifest(&app.url_root(), 5 * MIN);
        let want = format!("{} {} small.bin", sha256_file(&small), 20 << 20);
        assert!(m.lines().any(|l| l == want), "{round}: {m}");
        assert!(m.lines().any(|l| l.ends_with(" big.bin")), "{round}: {m}");
        app.restart();
        app.unlock();
    }
    app.stop();
}

#[test]
fn clients_outside_the_allow_list_are_refused_at_connect() {
    require_clients();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let config = job.path("appliance.toml");
    std::fs::write(&config, "allow = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n").unwrap();
    let opts = Options {
        extra: vec!["--config".into(), config.to_string_lossy().into_owned()],
        ..Options::default()
    };
    let mut app = Appliance::start(&job, opts);
    app.unlock();

    let o = nfs_ls(&app.url_root());
    assert!(
        !o.status.success(),
        "nfs-ls from 127.0.0.1 got through: {}",
        text(&o)
    );
    // A raw connection is closed (reset) at once, before any request.
    let mut s = TcpStream::connect(("127.0.0.1", app.nfs_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    match s.read(&mut b) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("a refused connection received {n} bytes"),
    }
    assert!(
        app.log_text()
            .contains("refused NFS connection from 127.0.0.1"),
        "{}",
        app.log_text()
    );

    // The flag wins over the file.
    app.stop();
    let opts = Options {
        allow: vec!["127.0.0.1/32".into()],
        extra: vec!["--config".into(), config.to_string_lossy().into_owned()],
        ..Options::default()
    };
    let app = Appliance::start(&job, opts);
    app.unlock();
    let o = nfs_ls(&app.url_root());
    assert!(
        o.status.success(),
        "nfs-ls from an allowed address failed: {}",
        text(&o)
    );
}

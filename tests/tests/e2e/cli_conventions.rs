//! The command-line conventions through the real `odt` binary: with `--json` every failure
//! is one `{"error": {"kind", "message"}}` object on stdout with the exit code of the one
//! table (wrong code, unreachable appliance, truncated device, missing job folder, a
//! refused erase, an unsealed set, wrong usage); the table in every `--help`; shell
//! completions and manual pages; and `scripts/run-appliance` with `--fresh` and an erased demo device.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::run::run;
use serde_json::Value;

const MIN: Duration = Duration::from_secs(60);

use odt_e2e::run::text;

fn odt(args: &[&str]) -> Output {
    run(Command::new(bins::odt()).args(args), None, MIN)
}

/// Asserts `o` failed with `code` and printed exactly one error object of `kind` on stdout
/// (and the message on stderr); returns the message.
fn json_failure(o: &Output, code: i32, kind: &str) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", text(o)));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{v}");
    assert_eq!(v["error"]["kind"], kind, "{v}");
    let msg = v["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string();
    assert!(!msg.is_empty());
    // A usage error's stderr is clap's own rendering (several lines), not the one-liner.
    assert!(
        kind == "usage" || String::from_utf8_lossy(&o.stderr).contains(&msg),
        "the message goes to stderr too: {}",
        text(o)
    );
    msg
}

#[test]
fn json_failures_carry_a_stable_kind_and_the_exit_code_of_the_table() {
    let job = Job::provision("256M", 1, &["--segment-size", "8M"]);
    let dev = job.devices[0].to_str().unwrap().to_string();
    let jd = job.job_dir.to_str().unwrap().to_string();

    // Wrong unlock code (4) and an unreachable appliance (5).
    let app = Appliance::start(&job, Options::default());
    let wrong = job.path("wrong-code");
    std::fs::write(&wrong, "AAAAA-BBBBB-CCCCC-DDDDD\n").unwrap();
    let o = run(
        app.odt(&[
            "unlock",
            "--json",
            "--fingerprint",
            &job.fingerprint,
            "--code-file",
        ])
        .arg(&wrong),
        None,
        MIN,
    );
    json_failure(&o, 4, "wrong-code");
    drop(app);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let o = odt(&[
        "status",
        "--appliance",
        &addr,
        "--fingerprint",
        &job.fingerprint,
        "--json",
    ]);
    json_failure(&o, 5, "unreachable");

    // The set is not sealed (7) and was never ingested: erase refuses (8), nothing changed.
    let before = std::fs::read(&job.devices[0]).unwrap();
    let o = odt(&["bom", "--device", &dev, "--job", &jd, "--json"]);
    json_failure(&o, 7, "not-sealed");
    let o = odt(&["erase", "--device", &dev, "--json"]);
    let msg = json_failure(&o, 8, "conflict");
    assert!(msg.contains("refusing to erase"), "{msg}");
    assert!(
        std::fs::read(&job.devices[0]).unwrap() == before,
        "erase changed the device"
    );

    // A missing job folder, for several commands.
    let nowhere = job.path("no-such-job");
    let nowhere = nowhere.to_str().unwrap();
    let ds = job.path("ds");
    let ds = ds.to_str().unwrap().to_string();
    for args in [
        vec!["verify", "--device", &dev, "--job", nowhere, "--json"],
        vec![
            "ingest", "--device", &dev, "--job", nowhere, "--to", &ds, "--json",
        ],
        vec!["provision", "--device", &dev, "--job", nowhere, "--json"],
        vec!["job", "show", "--job", nowhere, "--json"],
    ] {
        let o = odt(&args);
        let msg = json_failure(&o, 1, "no-job");
        assert!(msg.contains(nowhere), "{args:?}: {msg}");
    }

    // A truncated device.
    let short = job.path("short.img");
    std::fs::copy(&job.devices[0], &short).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let short = short.to_str().unwrap();
    for args in [
        vec!["verify", "--device", short, "--job", &jd, "--json"],
        vec!["bom", "--device", short, "--job", &jd, "--json"],
    ] {
        let o = odt(&args);
        json_failure(&o, 1, "truncated");
    }

    // Wrong usage: exit 2, and the object too when --json is on the command line.
    let o = odt(&["verify", "--json"]);
    let msg = json_failure(&o, 2, "usage");
    assert!(msg.contains("--device"), "{msg}");
    let o = odt(&["verify"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    let o = odt(&["bom", "--appliance", "x", "--device", &dev, "--json"]);
    json_failure(&o, 2, "usage");
}

#[test]
fn every_help_shows_the_exit_codes_and_completions_and_man_pages_are_generated() {
    for args in [
        vec!["--help"],
        vec!["verify", "--help"],
        vec!["bom", "--help"],
        vec!["job", "new", "--help"],
        vec!["seal-check", "--help"],
    ] {
        let o = odt(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains("Exit codes:") && help.contains("  8  refused"),
            "{args:?}: {help}"
        );
    }

    let o = odt(&["completions", "bash"]);
    assert!(o.status.success(), "{}", text(&o));
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(script.contains("seal-check"), "{script}");
    // bash loads it and registers a completion for odt.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odt.bash");
    std::fs::write(&file, &script).unwrap();
    let o = run(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p odt", file.display())),
        None,
        MIN,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("odt"),
        "{}",
        text(&o)
    );
    for shell in ["zsh", "fish"] {
        let o = odt(&["completions", shell]);
        assert!(
            o.status.success() && !o.stdout.is_empty(),
            "{shell}: {}",
            text(&o)
        );
    }
    let o = odt(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let man = dir.path().join("man");
    let o = odt(&["man", "--out", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for page in ["odt.1", "odt-seal-check.1", "odt-bom.1", "odt-job-new.1"] {
        let p = man.join(page);
        let roff = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            roff.starts_with(".ie") || roff.contains(".TH"),
            "{page}: {roff}"
        );
        assert!(roff.contains("Exit codes"), "{page}");
    }
    // groff renders a page (man's formatter), if it is installed.
    if Command::new("groff").arg("--version").output().is_ok() {
        let o = run(
            Command::new("groff")
                .args(["-man", "-Tutf8"])
                .arg(man.join("odt-bom.1")),
            None,
            MIN,
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("--device"),
            "{}",
            text(&o)
        );
    }
}

/// Runs `scripts/run-appliance ARGS` on the binaries under test (`ODT_BIN_DIR`: its own
/// build is the release build, which the suite does not make), its demo in `demo`; returns
/// once it printed `until` (then stops the appliance it started) or ended; returns its exit
/// status (None while it still ran) and everything it printed.
fn run_appliance(demo: &Path, args: &[&str], until: &str) -> (Option<i32>, String) {
    let port = |_| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let mut child = bins::as_from_a_shell(&mut Command::new(
        bins::repo().join("scripts/run-appliance"),
    ))
    .args(args)
    .env("ODT_BIN_DIR", bins::odt().parent().unwrap())
    .env("ODT_DEMO_DIR", demo)
    .env("ODT_DEMO_SIZE", "256M")
    .env("ODT_NFS_PORT", port(0))
    .env("ODT_CONTROL_PORT", port(1))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("scripts/run-appliance starts");
    let err = child.stderr.take().unwrap();
    let err_text = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut printed = String::new();
    let mut reached = false;
    while started.elapsed() < Duration::from_secs(120) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                printed.push_str(&l);
                printed.push('\n');
                if l.contains(until) {
                    reached = true;
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = if reached {
        // The script exec'd the appliance: this is its pid. A clean stop.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
        None
    } else {
        let _ = child.kill();
        child.wait().unwrap().code()
    };
    (status, printed + &err_text.join().unwrap())
}

#[test]
fn run_appliance_serves_the_demo_and_starts_a_fresh_trip_after_an_erase() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (status, out) = run_appliance(&demo, &[], "unlock with");
    assert_eq!(
        status, None,
        "run-appliance did not reach the unlock line:\n{out}"
    );
    assert!(out.contains("Customer unlock code"), "{out}");
    assert!(
        out.contains(&format!("unlock with  : {}", bins::odt().display())),
        "the printed commands use the binaries it runs:\n{out}"
    );
    let code_file = demo.join("unlock-code");
    assert!(code_file.exists());

    // Erased: the script says so and what to do, and exits non-zero.
    let dev = demo.join("data0.img");
    let o = odt(&["erase", "--force", "--device", dev.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let (status, out) = run_appliance(&demo, &[], "unlock with");
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("ERASED") && out.contains("--fresh"), "{out}");

    // --fresh: a new job and device, serving again.
    let old_job = std::fs::read_to_string(demo.join("job/job.toml")).unwrap();
    let (status, out) = run_appliance(&demo, &["--fresh"], "unlock with");
    assert_eq!(status, None, "{out}");
    assert!(out.contains("--fresh: deleting the demo trip"), "{out}");
    assert_ne!(
        std::fs::read_to_string(demo.join("job/job.toml")).unwrap(),
        old_job,
        "--fresh made a new job"
    );
}

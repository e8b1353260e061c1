//! The firmware binary's own command line: its help, and the errors it stops with before
//! serving anything (no device, a missing one, a blank one). These need no provisioned
//! device; the serving appliance is tested end to end in `tests/`.
//!
//! Being an integration test of this package also makes `cargo test --workspace` build
//! `target/debug/odt-appliance`, the binary the end-to-end tests run.

use std::path::Path;
use std::process::{Command, Output};

fn appliance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odt-appliance"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("odt-appliance runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The one `odt-appliance: error:` line of a failed run.
fn error_line(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("odt-appliance: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(o));
    lines[0].to_string()
}

fn serve_on(device: &Path) -> Output {
    appliance(&[
        "serve",
        "--device",
        device.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
    ])
}

#[test]
fn help_explains_serve_and_each_of_its_settings() {
    let o = appliance(&["--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("serve"), "{help}");

    let o = appliance(&["serve", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--device",
        "--listen",
        "--control",
        "--config",
        "--allow",
        "--max-inflight",
        "--ready-file",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }

    let o = appliance(&["--version"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&o)
    );
}

#[test]
fn no_device_a_missing_one_and_a_blank_one_are_refused_saying_what_to_do() {
    let o = appliance(&["serve", "--listen", "127.0.0.1:0"]);
    let line = error_line(&o);
    assert!(
        line.contains("no data device given") && line.contains("--device PATH"),
        "{line}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("dev0.img");
    let line = error_line(&serve_on(&missing));
    let path = missing.to_str().unwrap();
    assert!(line.contains("No such file"), "{line}");
    // Named once: the store's error names the device, the appliance's does not repeat it.
    assert_eq!(line.matches(path).count(), 1, "{line}");

    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let line = error_line(&serve_on(&blank));
    assert!(
        line.contains("blank") && line.contains("odt provision"),
        "{line}"
    );
    assert_eq!(line.matches(blank.to_str().unwrap()).count(), 1, "{line}");
}

//! The binaries under test: `odt` and `odt-appliance` as `cargo test --workspace` builds them
//! (for host-tools' and the firmware's own integration tests), brought up to date once per
//! test process: a no-op under `scripts/test`, which made that build before running tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::run::run_ok;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { repo().join(p) })
        .unwrap_or_else(|| repo().join("target"))
}

/// The build of the binaries under test: the workspace's test build, the one `scripts/test`
/// makes. Its `target/debug/odt` and `odt-appliance` share every dependency with the test
/// binaries; any other build (`cargo build -p ...`, `--release`) unifies dependency features
/// differently and would compile the dependency tree a second time.
pub const TEST_BUILD: &[&str] = &["test", "--workspace", "--locked", "--no-run"];

/// Clears from `cmd`'s environment what `cargo test` sets for the test process (the tested
/// package's `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and the like). A cargo started from a test
/// would otherwise see them: build scripts that read them (ring's does) count as changed,
/// and the build a shell made would be compiled again from ring up.
pub fn as_from_a_shell(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_MANIFEST_")
            || n.starts_with("CARGO_BIN_")
            || matches!(
                n.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The executables of the test build, by binary name, as cargo reports them (the ones it
/// builds for integration tests, not their test harnesses).
fn built() -> &'static HashMap<String, PathBuf> {
    static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(repo())
            .args(TEST_BUILD)
            .arg("--message-format=json");
        let out = run_ok(as_from_a_shell(&mut build), Duration::from_secs(1800));
        executables(&out)
    })
}

/// The non-test executables in cargo's JSON messages.
fn executables(messages: &str) -> HashMap<String, PathBuf> {
    let mut bins = HashMap::new();
    for m in messages.lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(m) else {
            continue;
        };
        let is_bin = m["reason"] == "compiler-artifact"
            && m["profile"]["test"] == false
            && m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            m["target"]["name"].as_str(),
            m["executable"].as_str(),
        ) {
            bins.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    bins
}

fn executable(name: &str) -> PathBuf {
    built().get(name).cloned().unwrap_or_else(|| {
        panic!(
            "`cargo {}` built no `{name}` binary (it is built for its package's integration \
             tests: does that package still have some?)",
            TEST_BUILD.join(" ")
        )
    })
}

/// The `odt` host tool.
pub fn odt() -> PathBuf {
    executable("odt")
}

/// The `odt-appliance` firmware binary.
pub fn appliance() -> PathBuf {
    executable("odt-appliance")
}

//! The binaries under test: `odt` and `odt-appliance`, release builds, built once per test
//! process (a no-op when `scripts/test` built them already).

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

/// The release build of the binaries under test: the same arguments as `scripts/test` and
/// `scripts/run-appliance`, since building other packages along (`--workspace`) unifies
/// dependency features differently and cargo would compile odt-store and both binaries a
/// second time.
pub const RELEASE_BUILD: &[&str] = &[
    "build",
    "--release",
    "--locked",
    "-p",
    "odt-tools",
    "-p",
    "odt-appliance",
];

/// Clears from `cmd`'s environment what `cargo test` sets for the test process (the tested
/// package's `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and the like). A cargo started from a test
/// would otherwise see them: build scripts that read them (ring's does) count as changed,
/// and the release build a shell made would be compiled again from ring up.
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

fn built() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(repo()).args(RELEASE_BUILD);
        run_ok(as_from_a_shell(&mut build), Duration::from_secs(1800));
        target_dir().join("release")
    })
}

/// The `odt` host tool.
pub fn odt() -> PathBuf {
    built().join("odt")
}

/// The `odt-appliance` firmware binary.
pub fn appliance() -> PathBuf {
    built().join("odt-appliance")
}

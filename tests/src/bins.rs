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

fn built() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Exactly scripts/test's release build: building only these two packages unifies
        // dependency features differently and would compile odt-store and both binaries a
        // second time.
        run_ok(
            Command::new(cargo).current_dir(repo()).args([
                "build",
                "--release",
                "--locked",
                "--workspace",
                "--bins",
            ]),
            Duration::from_secs(1800),
        );
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

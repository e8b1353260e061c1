//! Tests that cannot share the machine with each other. Every end-to-end test runs in one
//! test process (`tests/tests/e2e`), `--test-threads` at a time, whatever file it comes
//! from; what two of them must not do at once waits here.

use std::sync::{Mutex, MutexGuard};

/// Held while a test runs qemu (the appliance image of `image_trip` and `power_cut`, the
/// kernel-client guest of `nfs_kernel` and `nfs_space`). Each guest is emulated (TCG) and
/// keeps a core busy: two at once on a 2-core machine leave nothing for the appliances
/// and clients under test, while the boots wait against fixed timeouts (boot-test's
/// READY, the guest's mount). One guest beside a test without one is fine.
pub fn qemu() -> MutexGuard<'static, ()> {
    static QEMU: Mutex<()> = Mutex::new(());
    // A test that failed while holding it poisons it; the next one may still run.
    QEMU.lock().unwrap_or_else(|e| e.into_inner())
}

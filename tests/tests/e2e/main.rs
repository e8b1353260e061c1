//! The end-to-end tests (crate odt-e2e), one module per subject, all in one test binary:
//! the suite links one binary instead of one per file, and `--test-threads` runs tests of
//! different files side by side. Run one file's tests with its module name as the filter:
//! `cargo test -p odt-e2e --test e2e power_cut::`.
//!
//! Every test here shares the process with the others, so none changes what another would
//! notice (environment variables, the current directory, fixed ports or paths; only
//! nfs_hostile raises the open-file limit, which no other test lowers or relies on), and
//! tests that cannot share the machine wait for each other through `odt_e2e::serial`. A
//! new file is a new module below.

mod bom_device;
mod cli_conventions;
mod compacted_trip;
mod control_api;
mod image_trip;
mod import_trip;
mod nfs_crash;
mod nfs_hostile;
mod nfs_kernel;
mod nfs_libnfs;
mod nfs_memory;
mod nfs_space;
mod nfs_sparse;
mod nfs_states;
mod power_cut;
mod safe_ingest;
mod safe_provision;
mod seal_trip;
mod space_reclaim;
mod store_crash;
mod web_page;

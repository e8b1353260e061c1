//! The provider-side end-to-end tests of `odt`, one module per subject, in one test binary:
//! the suite links it once and `--test-threads` runs the ingest tests and the crash trials
//! side by side instead of one file after the other. One module's tests:
//! `cargo test -p odt-tools --test provider_tests provider_crash::`.

mod common;
mod provider;
mod provider_crash;

//! The store's integration tests on real image files, one module per subject, in one test
//! binary: the suite links it once and `--test-threads` runs tests of different modules
//! side by side instead of one file after the other. One module's tests:
//! `cargo test -p odt-store --test store_tests journal_compaction::`.

mod basic;
mod bulk_read;
mod bundle;
mod cleaning;
mod corruption;
mod journal_compaction;
mod layers;
mod model;
mod scale;
mod seal;

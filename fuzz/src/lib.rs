//! Bodies of the fuzz targets, one module per decoder family: `odt-store`'s (device
//! contents, seal slots, customer bundles) and `odt import`'s reading of vCenter's answers.
//!
//! Each `run(data)` is a plain function of the fuzzer's bytes: the files in `fuzz_targets/`
//! only hand their input to it. A run must never panic except through one of its own
//! `assert!`s, each of which states a contract of the decoder (see `README.md`).
//!
//! Most targets pick a *mode* from the first input byte:
//! - raw: the bytes go to the decoder as they are (what a device or a customer hands us);
//! - framed / authentic: the target wraps the bytes in a valid CRC frame or seals them with
//!   the fixed test key, so the fuzzer reaches the code behind the checksum and the tag;
//! - mutated: the target builds a valid structure with the store's own encoder, damages it
//!   with fuzzer-chosen edits (optionally fixing the keyless CRC, as an attacker would) and
//!   checks that the decoder refuses it unless the edits changed nothing.

pub mod bom;
pub mod bundle;
pub mod control;
pub mod frame;
pub mod journal;
pub mod nfs_call;
pub mod record;
pub mod seal;
pub mod segment;
pub mod superblock;
pub mod util;
pub mod vim25;

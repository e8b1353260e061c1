//! Cryptography: the AEAD session keys that seal records and journal batches
//! ([`cipher`]), and the job's secrets with their wrapping to the ingest identity and to the
//! customer's unlock code ([`keys`]). Nothing here touches a device.

pub mod cipher;
pub mod keys;
pub mod tls;

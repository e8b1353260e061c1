//! The appliance's NFS server: NFSv3 and MOUNT v3 on one TCP port, every procedure
//! answered in process.
//!
//! # Layers
//! Each layer uses only the ones below it:
//! ```text
//! server     accept, allow-list, connection registry        (server.rs, allow.rs)
//!   conn     record marking, budgets, slots, timeouts        (conn.rs, framing.rs)
//!     dispatch   call header checks, program/procedure table,
//!                duplicate request cache                     (dispatch.rs, rpc.rs, drc.rs)
//!       procedures   one file per family: decode, run, reply (procedures/, xdr.rs)
//!         export     state checks, handles, attributes,
//!                    UNSTABLE write tracking                 (export.rs, handles.rs, status.rs)
//!           odt_store::Store
//! ```
//!
//! # The path of one WRITE
//! 1. [`conn`] reads the 4-byte record mark; a length over the limit closes the connection.
//!    The length is taken from the server's receive budget, then the record is read
//!    (within the record timeout) into a buffer that becomes resident only as bytes arrive.
//! 2. The complete record takes a connection slot and a server slot and gets its own task.
//! 3. [`dispatch`] checks the RPC header ([`rpc::parse_call`]: version, credential ≤ 400
//!    bytes, AUTH_SYS machine name ≤ 255 and ≤ 16 groups) and routes NFS 3 procedure 7 to
//!    [`procedures::write`], handing it the record itself.
//! 4. The procedure decodes the arguments with the bounded reader ([`xdr`]: handle ≤ 64
//!    bytes, payload ≤ 1 MiB and exactly as long as announced), checks the handle and the
//!    appliance's state ([`export`]), and for an UNSTABLE write answers at once while the
//!    store write runs in the background ([`crate::pending`] keeps reads and COMMIT consistent
//!    with it). The payload is a slice of the received record: never copied before the
//!    store compresses and encrypts it.
//! 5. The reply goes back through the connection's writer; the record's budget and slots
//!    are released once the store write has returned.
//!
//! # What `nfsserve` is used for
//! Its XDR type vocabulary (`fattr3`, `wcc_data`, `nfsstat3`, ...) and its encoding of those
//! types into replies: both are sound. Nothing a client sends reaches `nfsserve`: its
//! decoders allocate whatever length a field announces before checking that the bytes are
//! there (one 44-byte call announcing a 1 GiB credential cost 1 GiB of memory), its server
//! answers FILE_SYNC to every WRITE, has no COMMIT and no limits, and its file handles go
//! stale at every restart. Requests are decoded here by [`xdr`] and [`rpc`].

pub mod allow;
pub mod conn;
pub mod dispatch;
pub mod drc;
pub mod export;
pub mod framing;
pub mod handles;
pub mod locked_hint;
pub mod procedures;
pub mod program;
pub mod rpc;
pub mod server;
pub mod status;
pub mod xdr;

pub use dispatch::Dispatcher;
pub use export::Export;
pub use server::{Limits, Server};

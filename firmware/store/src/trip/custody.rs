//! The custody log of a store: journaling events (durable, refused once sealed) and reading
//! the log the journal replayed. The events are journal ops ([`crate::format::journal`]).

use crate::engine::Store;
use crate::error::Result;
use crate::format::journal::Op;
pub use crate::format::journal::{
    CUSTODY_MAX_EVENTS as MAX_EVENTS, CustodyEvent as Event, CustodyLog as Log, CustodyWhat as What,
};

/// Journals `events` (durable when this returns). Refused once sealed.
pub fn record(store: &Store, events: Vec<Event>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    store.submit_change(
        events
            .into_iter()
            .map(|event| Op::Custody { event })
            .collect(),
    )
}

/// The log so far.
pub fn log(store: &Store) -> Log {
    store.view().custody().clone()
}

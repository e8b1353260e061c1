//! The custody log's events, as journal ops carry them and the seal record lists them
//! (journaling and reading the log: [`crate::trip::custody`]).
//!
//! The custody log: who unlocked the appliance, from where, how many wrong codes, when it
//! started, stopped and was sealed. Append-only: each event is a journal op (encrypted and
//! durable like every change), and the seal record carries the whole list, so the seal's
//! signature covers it and `odt seal-check` shows it without the data key.
//!
//! Events of a locked appliance (a wrong code before the first unlock, the start itself)
//! cannot be journaled yet: the appliance keeps them in memory and journals them with the
//! unlock. After the seal nothing more can be journaled (the seal signs the journal's end).
//! The log holds at most [`MAX_EVENTS`] events, so that the seal record fits its slot;
//! later events are counted in [`Log::omitted`] instead.

use serde::{Deserialize, Serialize};

use crate::format::journal::Time;

/// Events kept at most.
pub const MAX_EVENTS: usize = 500;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// An appliance run began (the time is the start, journaled at its first unlock).
    Started,
    /// The unlock code was accepted (unlock or sign-in).
    CodeAccepted,
    /// A wrong unlock code was tried.
    WrongCode,
    /// A seal was asked for.
    SealRequested,
    /// The appliance stopped cleanly (its keys left memory: locked).
    Stopped,
}

impl What {
    /// Words for people.
    pub fn describe(self) -> &'static str {
        match self {
            What::Started => "appliance started",
            What::CodeAccepted => "unlock code accepted",
            What::WrongCode => "WRONG unlock code",
            What::SealRequested => "seal requested",
            What::Stopped => "appliance stopped (locked)",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub time: Time,
    /// What happened.
    pub what: What,
    /// Source address of the request (empty for the appliance's own events).
    pub from: String,
}

/// The log as replayed from the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// The events, oldest first, at most [`MAX_EVENTS`].
    pub events: Vec<Event>,
    /// Events that came after [`MAX_EVENTS`] and are not listed.
    pub omitted: u64,
}

impl Log {
    /// Adds a journaled event (replay and live alike).
    pub fn apply(&mut self, e: &Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(e.clone());
        } else {
            self.omitted += 1;
        }
    }

    /// Wrong codes listed.
    pub fn wrong_codes(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.what == What::WrongCode)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded() {
        let mut l = Log::default();
        let e = Event {
            time: Time { secs: 1, nanos: 0 },
            what: What::WrongCode,
            from: "192.0.2.1".into(),
        };
        for _ in 0..MAX_EVENTS + 3 {
            l.apply(&e);
        }
        assert_eq!(l.events.len(), MAX_EVENTS);
        assert_eq!(l.omitted, 3);
        assert_eq!(l.wrong_codes(), MAX_EVENTS);
        // The whole log fits a seal slot with room to spare.
        let worst = Event {
            from: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".into(),
            ..e
        };
        let mut l = Log::default();
        for _ in 0..MAX_EVENTS {
            l.apply(&worst);
        }
        assert!(postcard::to_stdvec(&l).unwrap().len() < 40 * 1024);
    }
}

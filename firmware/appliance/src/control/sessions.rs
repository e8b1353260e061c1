//! Sessions and sign-in challenges of the control API, in memory only: a restart (the
//! appliance starts locked) ends every session.
//!
//! A session is a random 256-bit bearer token; the table keeps its BLAKE3 hash, never the
//! token. Each use extends it by [`IDLE`], up to [`MAX_AGE`] after sign-in. The seal ends
//! every session but the one that sealed (kept [`AFTER_SEAL`] for the bill of materials).
//! Both tables are bounded: the oldest entry goes first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use odt_store::trip::control_api::{CHALLENGE_LEN, SecretText, SessionReply};

/// A session ends this long after its last use.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// ... and at the latest this long after sign-in.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// What is left of the sealing session after the seal.
pub const AFTER_SEAL: Duration = Duration::from_secs(15 * 60);
/// A challenge is valid this long, once.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Sessions kept at most (the oldest is ended first).
const MAX_SESSIONS: usize = 64;
/// Challenges outstanding at most.
const MAX_CHALLENGES: usize = 256;

/// What the server knows of a live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Form token of the web page (bound to this session).
    pub csrf: String,
    /// Where it signed in from.
    pub peer: IpAddr,
    created: Instant,
    expires: Instant,
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<[u8; 32], Session>,
    challenges: HashMap<[u8; CHALLENGE_LEN], Instant>,
}

/// The session and challenge tables.
#[derive(Default)]
pub struct Sessions {
    t: Mutex<Tables>,
}

fn key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    odt_store::crypto::keys::random_bytes(&mut b);
    hex::encode(b)
}

fn unix_in(d: Duration) -> i64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_secs() as i64)
        .unwrap_or(0)
}

impl Sessions {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.t.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `peer`.
    pub fn create(&self, peer: IpAddr) -> SessionReply {
        let token = SecretText::new(random_hex::<32>());
        let now = Instant::now();
        let mut t = self.tables();
        t.sessions.retain(|_, s| s.expires > now);
        if t.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = t
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
        {
            t.sessions.remove(&oldest);
        }
        t.sessions.insert(
            key(token.expose()),
            Session {
                csrf: random_hex::<16>(),
                peer,
                created: now,
                expires: now + IDLE,
            },
        );
        SessionReply {
            token,
            expires_unix: unix_in(IDLE),
        }
    }

    /// The live session of `token`, extended by this use; `None` if unknown or expired.
    pub fn check(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut t = self.tables();
        let k = key(token);
        let s = t.sessions.get_mut(&k)?;
        if s.expires <= now {
            t.sessions.remove(&k);
            return None;
        }
        s.expires = s.expires.max((now + IDLE).min(s.created + MAX_AGE));
        Some(s.clone())
    }

    /// Ends the session of `token` (sign-out).
    pub fn end(&self, token: &str) {
        self.tables().sessions.remove(&key(token));
    }

    /// Ends every session but `keep`'s, which gets at most `keep_for` more.
    pub fn end_all_except(&self, keep: Option<&str>, keep_for: Duration) {
        let keep = keep.map(key);
        let limit = Instant::now() + keep_for;
        self.tables().sessions.retain(|k, s| {
            if Some(*k) == keep {
                s.expires = s.expires.min(limit);
                true
            } else {
                false
            }
        });
    }

    /// Live sessions.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.tables()
            .sessions
            .values()
            .filter(|s| s.expires > now)
            .count()
    }

    /// A fresh single-use challenge.
    pub fn challenge(&self) -> [u8; CHALLENGE_LEN] {
        let c = odt_store::trip::control_api::new_challenge();
        let now = Instant::now();
        let mut t = self.tables();
        t.challenges
            .retain(|_, at| now.duration_since(*at) < CHALLENGE_TTL);
        if t.challenges.len() >= MAX_CHALLENGES
            && let Some(oldest) = t
                .challenges
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(c, _)| *c)
        {
            t.challenges.remove(&oldest);
        }
        t.challenges.insert(c, now);
        c
    }

    /// Uses up `c`: true if it was issued, unused and not expired.
    pub fn take_challenge(&self, c: &[u8; CHALLENGE_LEN]) -> bool {
        self.tables()
            .challenges
            .remove(c)
            .is_some_and(|at| at.elapsed() < CHALLENGE_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn sessions_live_until_ended_and_only_the_sealer_survives_the_seal() {
        let s = Sessions::default();
        let a = s.create(PEER);
        let b = s.create(PEER);
        assert_eq!(a.token.expose().len(), 64);
        assert_ne!(a.token.expose(), b.token.expose());
        let sa = s.check(a.token.expose()).unwrap();
        assert_eq!(sa.csrf.len(), 32);
        assert!(s.check("nope").is_none());
        s.end_all_except(Some(a.token.expose()), AFTER_SEAL);
        assert!(
            s.check(b.token.expose()).is_none(),
            "the seal ends the others"
        );
        assert!(s.check(a.token.expose()).is_some());
        s.end(a.token.expose());
        assert!(s.check(a.token.expose()).is_none());
        assert_eq!(s.count(), 0);
        s.create(PEER);
        s.end_all_except(None, AFTER_SEAL);
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn tables_are_bounded() {
        let s = Sessions::default();
        let first = s.create(PEER);
        for _ in 0..MAX_SESSIONS {
            s.create(PEER);
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert!(s.check(first.token.expose()).is_none(), "the oldest went");
        let c = s.challenge();
        for _ in 0..MAX_CHALLENGES + 10 {
            s.challenge();
        }
        assert!(!s.take_challenge(&c), "the oldest challenge went");
        let c = s.challenge();
        assert!(s.take_challenge(&c));
        assert!(!s.take_challenge(&c), "single use");
    }
}

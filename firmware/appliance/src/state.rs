//! The appliance's life cycle: Locked → Unlocked → Sealed.
//!
//! - **Locked** (after boot): the superblocks are read, the keys are still wrapped. The NFS
//!   export answers every operation with `NFS3ERR_ACCES` ("Permission denied" on the
//!   client, with a log line on the appliance saying why). ACCES rather than JUKEBOX:
//!   JUKEBOX makes Linux clients retry silently forever, so a mount or copy would hang with
//!   no hint; ACCES fails at once and visibly, and the same mount works after unlock.
//! - **Unlocked**: the store is open; the export is read-write.
//! - **Sealed**: writes answer `NFS3ERR_ROFS`, reads keep working.
//!
//! Unlock takes the customer's code, unwraps the keys, replays the journal and keeps the
//! [`ControlKey`] derived from the code to authenticate later control requests. Wrong
//! codes are answered after a pause and attempts are serialised, which caps guessing far
//! below what the code's 100 bits would need.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use odt_store::crypto::keys::UnlockCode;
use odt_store::crypto::tls::TlsIdentity;
use odt_store::error::{ErrorKind, StoreError, one_line};
use odt_store::trip::control_api::{
    CHALLENGE_LEN, ControlKey, SealInfo, State, StatusReport, StoreReport, UnlockReport,
};
use odt_store::{Access, Locked, Store};

use crate::meter::Meter;
use crate::pending::Pending;

/// Pause after a wrong unlock code.
const WRONG_CODE_PAUSE: Duration = Duration::from_secs(1);

/// Opening the devices or unlocking failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The devices could not be opened as one set.
    #[error("cannot open {devices}")]
    Open {
        /// "the data device" when there is one (its error names it), else "the data devices"
        /// and their paths.
        devices: String,
        /// Why.
        #[source]
        source: odt_store::Error,
    },
    /// The unlock code does not open this device set's keys.
    #[error(
        "the unlock code does not open this appliance's keys; check it against the one \
         printed at provisioning for job {job_id}"
    )]
    WrongCode {
        /// The job the devices were provisioned for.
        job_id: String,
    },
    /// The code is not shaped like an unlock code.
    #[error("{0}")]
    Malformed(odt_store::Error),
    /// The keys opened but the store could not be opened.
    #[error("unlock failed while opening the store on {devices}")]
    Unlock {
        /// The device paths.
        devices: String,
        /// Why.
        #[source]
        source: odt_store::Error,
    },
    /// The seal or the bundle check failed on the store.
    #[error("{what} failed on {devices}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The device paths.
        devices: String,
        /// Why.
        #[source]
        source: odt_store::Error,
    },
    /// A request needs the store and the appliance is locked.
    #[error("the appliance is locked: unlock it first with `odt unlock`")]
    Locked,
    /// Test hooks were not enabled at start.
    #[error("test hooks are disabled (start the appliance with --test-hooks)")]
    NoTestHooks,
}

/// Identity of the device set, readable without keys.
#[derive(Debug, Clone)]
pub struct SetInfo {
    /// Device set id.
    pub set_id: u64,
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Number of devices.
    pub devices: u32,
    /// The largest file size the store accepts: its capacity (see
    /// [`Store::max_file_size`]); NFS refuses larger sizes with FBIG.
    pub max_file_size: u64,
}

/// The appliance: devices, state, counters.
pub struct Appliance {
    devices: Vec<PathBuf>,
    info: SetInfo,
    locked: Mutex<Option<Locked>>,
    store: OnceLock<Arc<Store>>,
    key: OnceLock<ControlKey>,
    unlocking: Mutex<()>,
    started: Instant,
    test_hooks: bool,
    /// Start the store's background cleaner at unlock.
    background_cleaning: bool,
    meter: Meter,
    pending: Arc<Pending>,
    tls: TlsIdentity,
    seal: Mutex<Option<SealInfo>>,
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Appliance {
    /// Whether the store cleans segments in the background once unlocked (the default;
    /// without it, only a write that needs the room cleans).
    pub fn set_background_cleaning(&mut self, on: bool) {
        self.background_cleaning = on;
    }

    /// Opens the devices (superblocks only; blocks on disk I/O). The appliance starts locked.
    pub fn open(devices: &[PathBuf], test_hooks: bool) -> Result<Appliance, StateError> {
        let locked =
            Locked::open(devices, Access::ReadWrite).map_err(|source| StateError::Open {
                devices: match devices {
                    [_] => "the data device".to_string(),
                    _ => format!("the data devices {}", show(devices)),
                },
                source,
            })?;
        let sb = locked.superblock();
        let info = SetInfo {
            set_id: sb.set_id,
            job_id: sb.job_id.clone(),
            job_name: sb.job_name.clone(),
            devices: sb.device_count,
            max_file_size: locked.max_file_size(),
        };
        let tls = sb.tls.clone();
        let seal = read_seal(&locked);
        Ok(Appliance {
            devices: devices.to_vec(),
            info,
            locked: Mutex::new(Some(locked)),
            store: OnceLock::new(),
            key: OnceLock::new(),
            unlocking: Mutex::new(()),
            started: Instant::now(),
            test_hooks,
            background_cleaning: true,
            meter: Meter::default(),
            pending: Arc::new(Pending::default()),
            tls,
            seal: Mutex::new(seal),
        })
    }

    /// The control API's certificate and key (from the superblock).
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// The seal, once sealed (read from the devices at start, so known while locked).
    pub fn seal_info(&self) -> Option<SealInfo> {
        lock(&self.seal).clone()
    }

    /// The device set's identity.
    pub fn info(&self) -> &SetInfo {
        &self.info
    }

    /// The data devices as given.
    pub fn devices(&self) -> &[PathBuf] {
        &self.devices
    }

    /// The activity counters.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Writes acknowledged to NFS clients and still running (see [`crate::pending`]).
    pub fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.store.get() {
            None => State::Locked,
            Some(s) if s.is_sealed() => State::Sealed,
            Some(_) => State::Unlocked,
        }
    }

    /// The open store, if unlocked.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    /// Unlocks with the customer's code (blocks: scrypt, journal replay). Unlocking an
    /// unlocked appliance checks the code and reports `already_unlocked`.
    pub fn unlock(&self, code: &UnlockCode) -> Result<UnlockReport, StateError> {
        let _one_at_a_time = lock(&self.unlocking);
        let key = ControlKey::from_code(code);
        if let Some(have) = self.key.get() {
            if have.same_as(&key) {
                return Ok(self.unlock_report(true));
            }
            std::thread::sleep(WRONG_CODE_PAUSE);
            return Err(self.wrong_code());
        }
        let mut slot = lock(&self.locked);
        let locked = slot.take().ok_or(StateError::Locked)?;
        let secrets = match locked.secrets_from_code(code) {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), ErrorKind::Key(k) if k.is_wrong_key()) => {
                *slot = Some(locked);
                std::thread::sleep(WRONG_CODE_PAUSE);
                return Err(self.wrong_code());
            }
            Err(source) => {
                *slot = Some(locked);
                return Err(StateError::Unlock {
                    devices: show(&self.devices),
                    source,
                });
            }
        };
        match locked.unlock(secrets, Access::ReadWrite) {
            Ok(store) => {
                odt_store::trip::bundle_digests::attach(&store);
                let store = Arc::new(store);
                if self.background_cleaning
                    && !store.is_sealed()
                    && let Err(e) = store.start_cleaner()
                {
                    // Writes still clean before they would find the devices full.
                    tracing::error!(error = %e, "cannot start the background cleaner");
                }
                let _ = self.store.set(store);
                let _ = self.key.set(key);
                Ok(self.unlock_report(false))
            }
            Err(source) => {
                // `unlock` consumed the device handles: open them again so that a later
                // attempt (after the operator fixed the cause) can succeed.
                match Locked::open(&self.devices, Access::ReadWrite) {
                    Ok(l) => *slot = Some(l),
                    Err(e) => tracing::error!(
                        devices = %show(&self.devices),
                        error = %one_line(&e),
                        "cannot reopen the devices after a failed unlock; restart the appliance"
                    ),
                }
                Err(StateError::Unlock {
                    devices: show(&self.devices),
                    source,
                })
            }
        }
    }

    fn wrong_code(&self) -> StateError {
        StateError::WrongCode {
            job_id: self.info.job_id.clone(),
        }
    }

    fn unlock_report(&self, already: bool) -> UnlockReport {
        UnlockReport {
            state: self.state(),
            already_unlocked: already,
            job_id: self.info.job_id.clone(),
            job_name: self.info.job_name.clone(),
            set_id: format!("{:016x}", self.info.set_id),
        }
    }

    /// True if `mac` is the sign-in MAC of `challenge` under the unlock code's key (false
    /// while locked: no key yet). A wrong MAC pauses like a wrong code: it is a guess.
    pub fn verify_sign_in(&self, challenge: &[u8; CHALLENGE_LEN], mac: &str) -> bool {
        let _one_at_a_time = lock(&self.unlocking);
        let ok = self.key.get().is_some_and(|k| k.verify(challenge, mac));
        if !ok {
            std::thread::sleep(WRONG_CODE_PAUSE);
        }
        ok
    }

    /// True if `code` is the code the appliance was unlocked with (false while locked). A
    /// wrong code pauses.
    pub fn check_code(&self, code: &UnlockCode) -> bool {
        let _one_at_a_time = lock(&self.unlocking);
        let ok = self
            .key
            .get()
            .is_some_and(|k| k.same_as(&ControlKey::from_code(code)));
        if !ok {
            std::thread::sleep(WRONG_CODE_PAUSE);
        }
        ok
    }

    /// The status report: the public fields alone unless `signed_in`, then everything once
    /// unlocked (blocks briefly).
    pub fn status(&self, signed_in: bool) -> StatusReport {
        let uptime_secs = self.started.elapsed().as_secs();
        let state = self.state();
        let store = self.store.get().filter(|_| signed_in).map(|s| {
            let st = s.stats();
            let totals = self.meter.totals();
            StoreReport {
                job_id: self.info.job_id.clone(),
                job_name: self.info.job_name.clone(),
                set_id: format!("{:016x}", self.info.set_id),
                devices: self.info.devices,
                capacity_bytes: st.capacity_bytes,
                free_bytes: st.free_bytes,
                dead_bytes: st.dead_bytes,
                stored_bytes: st.log_bytes,
                logical_bytes: st.logical_bytes,
                files: st.files,
                dirs: st.dirs,
                symlinks: st.symlinks,
                journal_used_bytes: st.journal_used,
                journal_bytes: st.journal_len,
                segments_cleaned: st.segments_cleaned,
                journal_compactions: st.journal_compactions,
                written_bytes: totals.written,
                write_rate_bytes_per_sec: self.meter.write_rate(),
            }
        });
        StatusReport {
            state,
            uptime_secs,
            fingerprint: self.tls.fingerprint(),
            seal: self.seal_info(),
            signed_in,
            store,
        }
    }

    /// The customer's seal: bundle check, then (unless refused) the signed seal record and a
    /// read-only export (blocks: flushes, reads back what was not hashed on the way in).
    pub fn seal(&self, force: bool) -> Result<odt_store::trip::seal::SealOutcome, StateError> {
        let store = self.store.get().ok_or(StateError::Locked)?;
        let out = odt_store::trip::seal::check_and_seal(store, force).map_err(|source| {
            StateError::Store {
                what: if matches!(source.kind(), ErrorKind::Store(StoreError::ReadOnly)) {
                    "the seal (the appliance is already sealed)"
                } else {
                    "the seal"
                },
                devices: show(&self.devices),
                source,
            }
        })?;
        if let Some(s) = &out.sealed {
            *lock(&self.seal) = Some(seal_info(&s.seal, s.code.clone()));
        }
        Ok(out)
    }

    /// The bundle check alone.
    pub fn bundles(&self) -> Result<odt_store::trip::bundle::BundleReport, StateError> {
        let store = self.store.get().ok_or(StateError::Locked)?;
        odt_store::trip::bundle::check(store, odt_store::format::journal::Time::now()).map_err(
            |source| StateError::Store {
                what: "the bundle check",
                devices: show(&self.devices),
                source,
            },
        )
    }

    /// Test hook: turns the export read-only as a seal will (no seal record is written).
    pub fn test_seal(&self) -> Result<(), StateError> {
        if !self.test_hooks {
            return Err(StateError::NoTestHooks);
        }
        let store = self.store.get().ok_or(StateError::Locked)?;
        store.set_sealed();
        Ok(())
    }

    /// Makes everything acknowledged durable (a no-op while locked).
    pub fn sync(&self) -> Result<(), odt_store::Error> {
        match self.store.get() {
            Some(s) => s.sync(),
            None => Ok(()),
        }
    }
}

fn seal_info(s: &odt_store::format::seal_record::SignedSeal, code: String) -> SealInfo {
    SealInfo {
        seal_code: code,
        sealed_unix: s.record.sealed.secs,
        files: s.record.files,
        bytes: s.record.bytes,
    }
}

/// The seal on device 1, if it is there and its signature holds (keyless: the status of a
/// sealed appliance shows its seal code while locked).
fn read_seal(locked: &Locked) -> Option<SealInfo> {
    let (dev, sb) = (&locked.devices()[0], locked.superblock());
    match odt_store::format::seal_record::read(dev, sb) {
        Ok(Some(s)) if s.verify(&sb.signing_public) => Some(seal_info(&s, s.code())),
        Ok(Some(_)) => {
            tracing::warn!(
                "the seal record on {} does not verify against the device key: not shown",
                dev.path().display()
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("cannot read the seal record: {e}");
            None
        }
    }
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance")
            .field("devices", &self.devices)
            .field("info", &self.info)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;
    use odt_store::trip::control_api::new_challenge;

    #[test]
    fn locked_then_unlocked_then_sealed() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        assert_eq!(app.state(), State::Locked);
        let st = app.status(true);
        assert_eq!(st.state, State::Locked);
        assert_eq!(st.fingerprint, app.tls().fingerprint());
        assert!(st.seal.is_none());
        assert!(
            st.store.is_none(),
            "a locked appliance reports nothing but its state"
        );
        assert!(app.store().is_none());
        assert!(matches!(app.test_seal(), Err(StateError::Locked)));

        let wrong = UnlockCode::generate();
        let e = app.unlock(&wrong).unwrap_err();
        assert!(matches!(e, StateError::WrongCode { .. }), "{e}");
        assert!(e.to_string().contains("job-unit"), "{e}");
        assert_eq!(app.state(), State::Locked, "a wrong code changes nothing");

        let r = app.unlock(&fx.code).unwrap();
        assert!(!r.already_unlocked);
        assert_eq!(r.state, State::Unlocked);
        assert_eq!(r.job_id, "job-unit");
        assert_eq!(app.state(), State::Unlocked);
        assert!(
            app.status(false).store.is_none(),
            "public status shows no contents"
        );
        let st = app
            .status(true)
            .store
            .expect("unlocked status has the store");
        assert_eq!(st.dirs, 1);
        assert!(st.capacity_bytes > 0 && st.free_bytes <= st.capacity_bytes);

        // The code again: checked, not re-applied; a wrong one is refused.
        assert!(app.unlock(&fx.code).unwrap().already_unlocked);
        assert!(matches!(
            app.unlock(&wrong),
            Err(StateError::WrongCode { .. })
        ));

        let ch = new_challenge();
        let key = ControlKey::from_code(&fx.code);
        let mac = hex::encode(key.sign_in_mac(&ch));
        assert!(app.verify_sign_in(&ch, &mac));
        assert!(!app.verify_sign_in(&new_challenge(), &mac));
        assert!(app.check_code(&fx.code));
        assert!(!app.check_code(&wrong));

        app.test_seal().unwrap();
        assert_eq!(app.state(), State::Sealed);
    }

    #[test]
    fn test_hooks_are_off_unless_asked_for() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(false);
        app.unlock(&fx.code).unwrap();
        assert!(matches!(app.test_seal(), Err(StateError::NoTestHooks)));
        assert_eq!(app.state(), State::Unlocked);
    }

    #[test]
    fn locked_status_needs_no_key_and_mac_checks_fail_without_one() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let ch = new_challenge();
        let mac = hex::encode(ControlKey::from_code(&fx.code).sign_in_mac(&ch));
        assert!(!app.verify_sign_in(&ch, &mac), "no key before unlock");
        assert!(!app.check_code(&fx.code), "no key before unlock");
    }
}

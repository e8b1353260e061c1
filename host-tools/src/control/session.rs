//! Sessions kept between commands: after `odt unlock` (or a sign-in with the code),
//! `status`, `bundles` and `seal` use the session's token instead of asking for the code,
//! and the certificate pinned for that address (which stays after the session ends, as
//! SSH's known hosts do: `odt status` after the seal needs no `--fingerprint`).
//!
//! One file per appliance certificate, `<dir>/<fingerprint hex>.json`, mode 0600 in a 0700
//! directory: `$XDG_RUNTIME_DIR/odt` (a tmpfs that ends with the login), else
//! `$XDG_CONFIG_HOME/odt/sessions` or `~/.config/odt/sessions`. The token is bound to that
//! appliance twice: the appliance knows it only in memory (a restart ends it), and the file
//! is found by the pinned fingerprint. A token past its expiry, or ended by the seal, is
//! dropped from the file when seen.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use odt_store::crypto::tls::Fingerprint;
use odt_store::trip::control_api::{SecretText, SessionReply};
use serde::{Deserialize, Serialize};

/// A saved session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// The control address it was made on (`host:port`).
    pub appliance: String,
    /// The pinned certificate.
    pub fingerprint: Fingerprint,
    /// The session's token; gone once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretText>,
    /// When the token ends unless used, in Unix seconds.
    #[serde(default)]
    pub expires_unix: i64,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The directory session files live in.
pub fn dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(r) = env("XDG_RUNTIME_DIR").filter(|p| p.is_dir()) {
        return Some(r.join("odt"));
    }
    env("XDG_CONFIG_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .map(|c| c.join("odt").join("sessions"))
}

fn path_of(fp: &Fingerprint) -> Option<PathBuf> {
    dir().map(|d| d.join(format!("{}.json", fp.hex())))
}

fn read(fp: &Fingerprint) -> Option<Saved> {
    let p = path_of(fp)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&p).ok()?);
    let s: Saved = serde_json::from_str(&text).ok()?;
    (s.fingerprint == *fp).then_some(s)
}

/// The token of the live saved session for `fp`, if any (an expired one is dropped).
pub fn load(fp: &Fingerprint) -> Option<SecretText> {
    let s = read(fp)?;
    if s.token.is_some() && s.expires_unix <= now_unix() {
        end(fp);
        return None;
    }
    s.token
}

/// The certificate pinned for control address `appliance`, if exactly one was.
pub fn pinned_for(appliance: &str) -> Option<Fingerprint> {
    let d = dir()?;
    let mut found = Vec::new();
    for e in std::fs::read_dir(d).ok()?.flatten() {
        let Some(fp) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|h| h.parse::<Fingerprint>().ok())
        else {
            continue;
        };
        if let Some(s) = read(&fp)
            && s.appliance == appliance
        {
            found.push(s.fingerprint);
        }
    }
    (found.len() == 1).then(|| found[0])
}

/// Saves a session (0600 file, 0700 directory). Failing to save is not fatal for the
/// command that made the session: it is reported and the next command asks for the code.
pub fn save(appliance: &str, fp: Fingerprint, reply: &SessionReply) -> Result<PathBuf, String> {
    write(&Saved {
        appliance: appliance.to_string(),
        fingerprint: fp,
        token: Some(reply.token.clone()),
        expires_unix: reply.expires_unix,
    })
}

fn write(saved: &Saved) -> Result<PathBuf, String> {
    let fp = saved.fingerprint;
    let d = dir().ok_or("neither XDG_RUNTIME_DIR, XDG_CONFIG_HOME nor HOME is set")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let text = zeroize::Zeroizing::new(serde_json::to_vec(saved).expect("sessions serialise"));
    let p = d.join(format!("{}.json", fp.hex()));
    let tmp = d.join(format!(".{}.tmp", fp.hex()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        // Whatever the umask did, the file is the owner's alone.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &p)
    };
    write().map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    Ok(p)
}

/// Drops the token of `fp`'s saved session (it ended, or the seal ended it); the pin stays.
pub fn end(fp: &Fingerprint) {
    if let Some(mut s) = read(fp)
        && s.token.is_some()
    {
        s.token = None;
        s.expires_unix = 0;
        if write(&s).is_err()
            && let Some(p) = path_of(fp)
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // set_var is unsafe since edition 2024 (other threads may read the environment); this
    // test is the only code of this test binary that touches XDG_RUNTIME_DIR.
    #[allow(unsafe_code)]
    #[test]
    fn saved_sessions_are_private_and_expire() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: this test alone in this process touches XDG_RUNTIME_DIR.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", d.path()) };
        let fp = Fingerprint([7; 32]);
        let reply = SessionReply {
            token: SecretText::new("t0k".into()),
            expires_unix: now_unix() + 60,
        };
        let p = save("127.0.0.1:7049", fp, &reply).unwrap();
        assert_eq!(p.parent().unwrap(), d.path().join("odt"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(load(&fp).unwrap().expose(), "t0k");
        assert_eq!(pinned_for("127.0.0.1:7049"), Some(fp));
        assert!(pinned_for("127.0.0.1:7050").is_none());
        assert!(load(&Fingerprint([8; 32])).is_none());
        let old = SessionReply {
            token: SecretText::new("old".into()),
            expires_unix: now_unix() - 1,
        };
        save("127.0.0.1:7049", fp, &old).unwrap();
        assert!(load(&fp).is_none(), "expired");
        assert!(
            !std::fs::read_to_string(&p).unwrap().contains("old"),
            "dropped"
        );
        assert_eq!(pinned_for("127.0.0.1:7049"), Some(fp), "the pin stays");
        save("127.0.0.1:7049", fp, &reply).unwrap();
        end(&fp);
        assert!(load(&fp).is_none());
        assert!(!std::fs::read_to_string(&p).unwrap().contains("t0k"));
    }
}

//! What a name or a symlink target from the device may become in the datastore.
//!
//! The device is untrusted input: its journal is authenticated, but whoever held the keys
//! (or a bug) could have put anything in a name. Every name reaches the file system as one
//! path component passed to an `*at` call on a directory descriptor, so the rules here are
//! about single components:
//! - refused: empty, `.`, `..`, containing `/` or NUL, longer than 255 bytes — these could
//!   name something other than a new entry in the directory at hand;
//! - neutralised: names that are not UTF-8 or hold control or bidirectional-override
//!   characters are kept, with each offending byte written as `%XX` (and `%` itself as
//!   `%25`, so the escaped form can be read back unambiguously);
//! - kept: everything else, including leading dots (`..foo`) and any other Unicode.
//!
//! A symlink is created only if its target stays inside the datastore whatever the other
//! links are ([`check_symlink_target`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Longest component Linux file systems accept.
pub const MAX_COMPONENT: usize = 255;

/// What becomes of one name from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Safe as it is.
    Keep(OsString),
    /// Safe once rewritten; `why` says what was rewritten.
    Neutralised {
        /// The rewritten name.
        name: OsString,
        /// What was rewritten.
        why: &'static str,
    },
    /// Never written; `why` says what is wrong with it.
    Refused(&'static str),
}

impl Verdict {
    /// The name to write, if any.
    pub fn name(&self) -> Option<&OsStr> {
        match self {
            Verdict::Keep(n) | Verdict::Neutralised { name: n, .. } => Some(n),
            Verdict::Refused(_) => None,
        }
    }
}

/// Checks the parts of a name that no rewriting can make safe.
fn refusal(raw: &[u8]) -> Option<&'static str> {
    if raw.is_empty() {
        return Some("the name is empty");
    }
    if raw == b"." || raw == b".." {
        return Some("the name is `.` or `..` (it would name an existing directory)");
    }
    if raw.contains(&b'/') {
        return Some("the name contains `/` (it would name a path, not an entry)");
    }
    if raw.contains(&0) {
        return Some("the name contains a NUL byte");
    }
    if raw.len() > MAX_COMPONENT {
        return Some("the name is longer than 255 bytes");
    }
    None
}

/// Characters that are valid UTF-8 but must not reach a file name a person will read:
/// C0 and C1 controls, DEL, and the bidirectional overrides used to disguise extensions.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Decides what to do with one name from the device.
pub fn check_component(raw: &[u8]) -> Verdict {
    if let Some(why) = refusal(raw) {
        return Verdict::Refused(why);
    }
    let why = match std::str::from_utf8(raw) {
        Ok(s) if !s.chars().any(is_unsafe_char) => {
            return Verdict::Keep(OsStr::from_bytes(raw).to_os_string());
        }
        Ok(_) => "control or bidirectional-override characters escaped as %XX",
        Err(_) => "bytes that are not UTF-8 escaped as %XX",
    };
    let mut out = String::with_capacity(raw.len() * 2);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' || is_unsafe_char(c) {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_COMPONENT {
        return Verdict::Refused(
            "the name is longer than 255 bytes once its unsafe bytes are escaped",
        );
    }
    Verdict::Neutralised {
        name: OsString::from(out),
        why,
    }
}

/// Checks that a symlink whose directory is `depth` levels below the datastore root points
/// inside the datastore, whatever the other links in it point at.
///
/// Rule: not absolute; `..` components only at the start, at most `depth` of them; then
/// only names going down. A purely lexical check would not do: with `a/s -> ..`, the
/// target `s/..` looks like it stays in `a` but resolves to the root's parent. With this
/// rule every link resolves to a directory inside the datastore before descending, and
/// descending through names (or other such links) cannot leave it.
pub fn check_symlink_target(depth: usize, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("the symlink target is empty");
    }
    if target.contains(&0) {
        return Err("the symlink target contains a NUL byte");
    }
    if target.starts_with(b"/") {
        return Err(
            "the symlink target is an absolute path (it would point outside the datastore)",
        );
    }
    let mut ups = 0usize;
    let mut descended = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if descended => {
                return Err(
                    "the symlink target climbs with `..` after a name (it could leave the datastore through another link)",
                );
            }
            b".." => {
                ups += 1;
                if ups > depth {
                    return Err("the symlink target climbs above the datastore root");
                }
            }
            _ => descended = true,
        }
    }
    Ok(())
}

/// A name or path from the device, printable on one line: valid UTF-8 kept, everything
/// else (controls, invalid bytes) escaped.
pub fn display(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_unsafe_char(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &[u8]) -> bool {
        matches!(check_component(raw), Verdict::Refused(_))
    }

    #[test]
    fn path_like_names_are_refused() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"/etc",
            b"a/b",
            b"../x",
            b"..\0",
            b"a\0b",
            &[b'x'; 256],
        ] {
            assert!(
                refused(bad),
                "{:?} was not refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ordinary_and_dotted_and_unicode_names_are_kept() {
        for good in [
            "vm.ovf",
            "..foo",
            "...",
            ".hidden",
            "-rf",
            "ディスク 1.vmdk",
            "émoji 🚀",
            "50%.txt",
        ] {
            assert_eq!(
                check_component(good.as_bytes()),
                Verdict::Keep(OsString::from(good)),
                "{good}"
            );
        }
        assert_eq!(check_component(&[b'x'; 255]).name().unwrap().len(), 255);
    }

    #[test]
    fn non_utf8_and_controls_are_escaped() {
        let v = check_component(b"disk\xff\xfe.vmdk");
        assert_eq!(v.name().unwrap(), "disk%FF%FE.vmdk");
        assert!(matches!(v, Verdict::Neutralised { .. }));
        assert_eq!(check_component(b"a\nb").name().unwrap(), "a%0Ab");
        assert_eq!(check_component(b"x\x1b[31m").name().unwrap(), "x%1B[31m");
        // `%` is escaped too once a name is rewritten, so the form reads back unambiguously.
        assert_eq!(check_component(b"5%\xff").name().unwrap(), "5%25%FF");
        // Right-to-left override disguising an extension.
        assert_eq!(
            check_component("evil\u{202E}fdp.exe".as_bytes())
                .name()
                .unwrap(),
            "evil%E2%80%AEfdp.exe"
        );
        // Escaping can make a name too long: then it is refused, never truncated.
        assert!(refused(&[0xffu8; 200]));
    }

    #[test]
    fn escaped_names_never_contain_separators() {
        for b in 0u8..=255 {
            let raw = [b'a', b, b'z'];
            if let Some(n) = check_component(&raw).name() {
                let n = n.as_bytes();
                assert!(!n.contains(&b'/') && !n.contains(&0), "byte {b}");
                assert!(n != b"." && n != b"..");
            }
        }
    }

    #[test]
    fn symlink_targets() {
        // Inside.
        assert!(check_symlink_target(0, b"disk.vmdk").is_ok());
        assert!(check_symlink_target(0, b"./a/b").is_ok());
        assert!(check_symlink_target(2, b"../../x").is_ok());
        assert!(check_symlink_target(1, b"..").is_ok());
        assert!(check_symlink_target(1, b"../other/disk.vmdk").is_ok());
        // Outside or ambiguous.
        assert!(check_symlink_target(0, b"/etc/passwd").is_err());
        assert!(check_symlink_target(0, b"..").is_err());
        assert!(check_symlink_target(1, b"../..").is_err());
        assert!(check_symlink_target(2, b"../../../etc").is_err());
        assert!(check_symlink_target(5, b"a/../../x").is_err());
        assert!(check_symlink_target(5, b"s/..").is_err());
        assert!(check_symlink_target(0, b"").is_err());
        assert!(check_symlink_target(0, b"a\0b").is_err());
    }

    #[test]
    fn display_is_one_printable_line() {
        assert_eq!(display(b"a\nb\xff"), "a\\nb\\xff");
        assert_eq!(display("ok é".as_bytes()), "ok é");
    }
}

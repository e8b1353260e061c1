//! Client of the appliance's control API (protocol and authentication in
//! [`odt_store::trip::control_api`]): connect, read the hello, send one request, read one response.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use odt_store::crypto::keys::UnlockCode;
use odt_store::trip::control_api::{self, ControlKey, Hello, Op, PROTOCOL, Request, Response};
use zeroize::Zeroizing;

/// Time to connect to the appliance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to wait for an answer (unlock runs a KDF and replays the journal).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Which appliance to talk to and the unlock code that authenticates the requests: the
/// options every customer-side command shares.
#[derive(Debug, Args)]
pub struct Connect {
    /// Control address of the appliance (host[:port], default port 7049).
    #[arg(long)]
    pub appliance: String,
    /// Read the customer's unlock code from this file instead of stdin.
    #[arg(long)]
    pub code_file: Option<PathBuf>,
}

/// Adds the default control port to an address that names none (`host` or `[v6]`).
pub fn with_default_port(addr: &str) -> String {
    let a = addr.trim();
    if a.parse::<std::net::SocketAddr>().is_ok() {
        return a.to_string();
    }
    if a.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{a}]:{}", control_api::DEFAULT_PORT);
    }
    if a.starts_with('[') && a.ends_with(']') {
        return format!("{a}:{}", control_api::DEFAULT_PORT);
    }
    if a.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        return a.to_string();
    }
    format!("{a}:{}", control_api::DEFAULT_PORT)
}

/// Sends `op` to the appliance at `addr`, authenticated with `key` when given.
pub fn call(addr: &str, op: Op, key: Option<&ControlKey>) -> anyhow::Result<Response> {
    let target = with_default_port(addr);
    let sockaddr = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the appliance address {target}"))?
        .next()
        .with_context(|| format!("the appliance address {target} resolves to nothing"))?;
    let sock = TcpStream::connect_timeout(&sockaddr, CONNECT_TIMEOUT).with_context(|| {
        format!(
            "cannot reach the appliance's control API at {target}; is `odt-appliance serve` \
             running there with --control {target}?"
        )
    })?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    sock.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let mut reader = BufReader::new(sock.try_clone()?).take(control_api::MAX_LINE as u64 * 4);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("reading the greeting of {target}"))?;
    let hello: Hello = serde_json::from_str(&line)
        .with_context(|| format!("{target} is not an ODT appliance control API (bad greeting)"))?;
    if hello.protocol != PROTOCOL {
        bail!(
            "the appliance at {target} speaks control protocol {} and this odt speaks {PROTOCOL}: \
             use matching versions",
            hello.protocol
        );
    }
    let challenge = control_api::parse_challenge(&hello.challenge)
        .with_context(|| format!("{target} sent a malformed challenge"))?;
    let mac = key.map(|k| hex::encode(k.mac(&challenge, &op)));
    let req = Request { op, mac };
    let mut text = Zeroizing::new(serde_json::to_vec(&req)?);
    text.push(b'\n');
    (&sock)
        .write_all(&text)
        .with_context(|| format!("sending the request to {target}"))?;
    line.clear();
    reader
        .read_line(&mut line)
        .with_context(|| format!("waiting for the answer of {target}"))?;
    if line.trim().is_empty() {
        bail!("{target} closed the connection without answering");
    }
    serde_json::from_str(&line)
        .with_context(|| format!("{target} sent an answer this odt cannot read"))
}

/// Reads the unlock code from `code_file`, else from stdin (prompting on a terminal).
/// `None` if stdin is empty and no file was given.
pub fn read_unlock_code(code_file: Option<&Path>) -> anyhow::Result<Option<UnlockCode>> {
    let text = match code_file {
        Some(p) => Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the code file {}", p.display()))?,
        ),
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("Unlock code: ");
                std::io::stderr().flush().ok();
            }
            let mut s = Zeroizing::new(String::new());
            stdin
                .lock()
                .read_line(&mut s)
                .context("reading the unlock code from stdin")?;
            s
        }
    };
    let code = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match code {
        None => Ok(None),
        Some(c) => Ok(Some(UnlockCode::from_str(c).map_err(|e| {
            anyhow::anyhow!(
                "{e}{}",
                code_file
                    .map(|p| format!(" (in {})", p.display()))
                    .unwrap_or_default()
            )
        })?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port_is_added_only_when_missing() {
        assert_eq!(with_default_port("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(with_default_port("127.0.0.1"), "127.0.0.1:7049");
        assert_eq!(with_default_port("appliance.local"), "appliance.local:7049");
        assert_eq!(with_default_port("appliance.local:8"), "appliance.local:8");
        assert_eq!(with_default_port("::1"), "[::1]:7049");
        assert_eq!(with_default_port("[::1]"), "[::1]:7049");
        assert_eq!(with_default_port("[::1]:5"), "[::1]:5");
    }

    #[test]
    fn code_file_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("code");
        let code = UnlockCode::generate();
        std::fs::write(&p, format!("# unlock code\n\n  {}  \n", code.expose())).unwrap();
        assert!(read_unlock_code(Some(&p)).unwrap().unwrap() == code);
        std::fs::write(&p, "not a code\n").unwrap();
        let e = read_unlock_code(Some(&p)).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_unlock_code(Some(&p)).unwrap().is_none());
    }
}

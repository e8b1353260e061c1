//! Settings of `odt-appliance serve`: a TOML file may carry every setting, command-line
//! flags win over it.
//!
//! ```toml
//! devices = ["/dev/disk/by-id/ata-A", "/dev/disk/by-id/ata-B"]
//! listen = "0.0.0.0:2049"          # NFS (and MOUNT) service
//! control = "127.0.0.1:7049"       # HTTPS control API and page (default: loopback)
//! allow = ["10.20.0.0/16"]         # NFS clients allowed to connect (default: everyone)
//! max_inflight = 32                # NFS requests answered at a time (memory bound)
//! max_connections = 4096           # NFS connections kept (beyond: the longest idle is closed)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::nfs::Limits;
use crate::nfs::allow::{AllowList, CidrError};

/// Default NFS port when an address names none.
pub const NFS_PORT: u16 = 2049;

/// The settings could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("config file {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: toml::de::Error,
    },
    /// A required setting is missing.
    #[error("no {what} given: pass {flag} or set `{key}` in the config file")]
    Missing {
        /// The setting, in words.
        what: &'static str,
        /// The command-line flag that gives it.
        flag: &'static str,
        /// The config-file key that gives it.
        key: &'static str,
    },
    /// An address does not parse.
    #[error(
        "{what} address {value:?} is not IP:PORT (e.g. 0.0.0.0:2049, [::]:2049, 127.0.0.1:7049)"
    )]
    Address {
        /// Which address (NFS, control).
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// An allow-list entry does not parse.
    #[error(transparent)]
    Allow(#[from] CidrError),
    /// A limit is out of range.
    #[error("{key} must be between {min} and {max}, not {value}")]
    Limit {
        /// The config-file key.
        key: &'static str,
        /// What was given.
        value: usize,
        /// Smallest value allowed.
        min: usize,
        /// Largest value allowed.
        max: usize,
    },
}

/// The config file: every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data devices (block devices or image files).
    pub devices: Option<Vec<PathBuf>>,
    /// NFS service address.
    pub listen: Option<String>,
    /// Control API address.
    pub control: Option<String>,
    /// CIDR blocks of allowed NFS clients.
    pub allow: Option<Vec<String>>,
    /// NFS requests processed at a time.
    pub max_inflight: Option<usize>,
    /// NFS client connections at a time.
    pub max_connections: Option<usize>,
}

impl FileConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What the command line gave (flags win over the file).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--device`.
    pub devices: Vec<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--control`.
    pub control: Option<String>,
    /// `--allow`.
    pub allow: Vec<String>,
    /// `--max-inflight`.
    pub max_inflight: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--test-hooks`.
    pub test_hooks: bool,
    /// `--ready-file`.
    pub ready_file: Option<PathBuf>,
    /// Not `--no-background-cleaning`.
    pub background_cleaning: bool,
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Data devices.
    pub devices: Vec<PathBuf>,
    /// NFS service address.
    pub listen: SocketAddr,
    /// Control API address.
    pub control: SocketAddr,
    /// NFS clients allowed to connect.
    pub allow: AllowList,
    /// Bounds of the NFS server (connections, requests in flight, memory, timeouts).
    pub limits: Limits,
    /// Accept test-only control requests.
    pub test_hooks: bool,
    /// Where to write the bound addresses once serving (JSON), for supervisors and tests.
    pub ready_file: Option<PathBuf>,
    /// Clean segments in the background (else only when a write needs the room).
    pub background_cleaning: bool,
}

/// Parses `IP:PORT`, or a bare IP with `default_port`.
pub fn parse_addr(
    what: &'static str,
    s: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| ConfigError::Address {
            what,
            value: s.to_string(),
        })
}

fn limit(key: &'static str, value: usize, min: usize, max: usize) -> Result<usize, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Limit {
            key,
            value,
            min,
            max,
        })
    }
}

impl Settings {
    /// Merges the config file (if any) and the flags; flags win.
    pub fn resolve(file: FileConfig, flags: Flags) -> Result<Settings, ConfigError> {
        let devices = if flags.devices.is_empty() {
            file.devices.unwrap_or_default()
        } else {
            flags.devices
        };
        if devices.is_empty() {
            return Err(ConfigError::Missing {
                what: "data device",
                flag: "--device PATH",
                key: "devices",
            });
        }
        let listen = flags.listen.or(file.listen).ok_or(ConfigError::Missing {
            what: "NFS listen address",
            flag: "--listen ADDR",
            key: "listen",
        })?;
        let listen = parse_addr("NFS listen", &listen, NFS_PORT)?;
        let control = match flags.control.or(file.control) {
            Some(c) => parse_addr("control", &c, odt_store::trip::control_api::DEFAULT_PORT)?,
            None => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                odt_store::trip::control_api::DEFAULT_PORT,
            ),
        };
        let allow = if flags.allow.is_empty() {
            AllowList::parse(&file.allow.unwrap_or_default())?
        } else {
            AllowList::parse(&flags.allow)?
        };
        let mut limits = Limits::default();
        if let Some(n) = flags.max_inflight.or(file.max_inflight) {
            limits.max_inflight = limit("max_inflight", n, 1, 1024)?;
            limits.max_inflight_per_conn = limits.max_inflight_per_conn.min(n);
        }
        if let Some(n) = flags.max_connections.or(file.max_connections) {
            limits.max_connections = limit("max_connections", n, 1, 65536)?;
        }
        Ok(Settings {
            devices,
            listen,
            control,
            allow,
            limits,
            test_hooks: flags.test_hooks,
            ready_file: flags.ready_file,
            background_cleaning: flags.background_cleaning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = file(
            r#"
            devices = ["/dev/a", "/dev/b"]
            listen = "0.0.0.0:2049"
            control = "127.0.0.1:7100"
            allow = ["10.0.0.0/8"]
            max_inflight = 8
            "#,
        );
        let from_file = Settings::resolve(f.clone(), Flags::default()).unwrap();
        assert_eq!(
            from_file.devices,
            vec![PathBuf::from("/dev/a"), PathBuf::from("/dev/b")]
        );
        assert_eq!(from_file.listen, "0.0.0.0:2049".parse().unwrap());
        assert_eq!(from_file.control, "127.0.0.1:7100".parse().unwrap());
        assert!(!from_file.allow.permits("127.0.0.1".parse().unwrap()));
        assert_eq!(from_file.limits.max_inflight, 8);
        assert_eq!(from_file.limits.max_inflight_per_conn, 8);

        let flags = Flags {
            devices: vec!["/img/x".into()],
            listen: Some("127.0.0.1:3049".into()),
            allow: vec!["127.0.0.0/8".into()],
            max_inflight: Some(64),
            ..Flags::default()
        };
        let s = Settings::resolve(f, flags).unwrap();
        assert_eq!(s.devices, vec![PathBuf::from("/img/x")]);
        assert_eq!(s.listen, "127.0.0.1:3049".parse().unwrap());
        assert_eq!(
            s.control,
            "127.0.0.1:7100".parse().unwrap(),
            "unset flag keeps the file's"
        );
        assert!(s.allow.permits("127.0.0.1".parse().unwrap()));
        assert_eq!(s.limits.max_inflight, 64);
    }

    #[test]
    fn defaults_and_errors() {
        let flags = Flags {
            devices: vec!["/img/x".into()],
            listen: Some("0.0.0.0".into()),
            ..Flags::default()
        };
        let s = Settings::resolve(FileConfig::default(), flags.clone()).unwrap();
        assert_eq!(s.listen.port(), NFS_PORT);
        assert_eq!(
            s.control,
            "127.0.0.1:7049".parse().unwrap(),
            "control is loopback by default"
        );
        assert!(s.allow.allows_everyone());

        let e = Settings::resolve(FileConfig::default(), Flags::default()).unwrap_err();
        assert!(e.to_string().contains("--device"), "{e}");
        let e = Settings::resolve(
            FileConfig::default(),
            Flags {
                listen: None,
                ..flags.clone()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
        let e = Settings::resolve(
            FileConfig::default(),
            Flags {
                listen: Some("nfs.example:2049".into()),
                ..flags.clone()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("nfs.example"), "{e}");
        let e = Settings::resolve(
            FileConfig::default(),
            Flags {
                max_inflight: Some(0),
                ..flags
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_inflight"), "{e}");
        assert!(
            toml::from_str::<FileConfig>("listne = \"x\"").is_err(),
            "typos are refused"
        );
        assert_eq!(
            parse_addr("x", "[::1]", 9).unwrap(),
            "[::1]:9".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odt.toml");
        std::fs::write(&p, "listen = 5").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("odt.toml"), "{e}");
        let e = FileConfig::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}

//! The NFS client allow-list: CIDR blocks whose addresses may connect to the export.
//!
//! An empty list allows every client (the appliance then warns at start). IPv4 clients that
//! reach an IPv6 socket as `::ffff:a.b.c.d` are matched as IPv4.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A CIDR block was written wrongly.
#[derive(Debug, thiserror::Error)]
#[error("invalid allow-list entry {entry:?}: {why} (examples: 10.0.0.0/8, 192.168.1.20, fd00::/8)")]
pub struct CidrError {
    entry: String,
    why: String,
}

/// One block of addresses, e.g. `10.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all & !((1u128 << (width - prefix)) - 1)
    }
}

impl Cidr {
    /// True if `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.net.is_ipv4() {
            return false;
        }
        let (a, width) = bits(ip);
        let (n, _) = bits(self.net);
        let m = mask(self.prefix, width);
        a & m == n & m
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| CidrError {
            entry: s.to_string(),
            why,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| err(format!("{addr:?} is not an IP address")))?;
        let net = canonical(net);
        let width = bits(net).1;
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| err(format!("the prefix length must be 0..={width}")))?,
        };
        let (n, _) = bits(net);
        if n & !mask(prefix, width) & mask(width, width) != 0 {
            return Err(err(format!(
                "host bits are set below the /{prefix} prefix; did you mean the network address?"
            )));
        }
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The configured allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    blocks: Vec<Cidr>,
}

impl AllowList {
    /// A list of blocks; empty allows everyone.
    pub fn new(blocks: Vec<Cidr>) -> Self {
        AllowList { blocks }
    }

    /// Parses entries such as `10.0.0.0/8` or `192.168.1.20`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, CidrError> {
        Ok(AllowList {
            blocks: entries
                .iter()
                .map(|e| e.as_ref().parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// True if every client is allowed (no list configured).
    pub fn allows_everyone(&self) -> bool {
        self.blocks.is_empty()
    }

    /// True if `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.blocks.is_empty() || self.blocks.iter().any(|b| b.contains(ip))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blocks.is_empty() {
            return f.write_str("everyone");
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_their_addresses_only() {
        let l = AllowList::parse(&["10.0.0.0/8", "192.168.1.20", "fd00::/8"]).unwrap();
        assert!(l.permits(ip("10.200.3.4")));
        assert!(!l.permits(ip("11.0.0.1")));
        assert!(l.permits(ip("192.168.1.20")));
        assert!(!l.permits(ip("192.168.1.21")));
        assert!(l.permits(ip("fd12::1")));
        assert!(!l.permits(ip("fe80::1")));
        assert!(!l.permits(ip("127.0.0.1")));
        // An IPv4 client seen through an IPv6 socket.
        assert!(l.permits(ip("::ffff:10.1.2.3")));
        assert!(!l.permits(ip("::ffff:127.0.0.1")));
        assert_eq!(l.to_string(), "10.0.0.0/8, 192.168.1.20/32, fd00::/8");
    }

    #[test]
    fn zero_prefix_and_empty_list_allow_everyone() {
        let any4 = AllowList::parse(&["0.0.0.0/0"]).unwrap();
        assert!(any4.permits(ip("8.8.8.8")));
        assert!(!any4.permits(ip("2001:db8::1")));
        let empty = AllowList::default();
        assert!(empty.allows_everyone());
        assert!(empty.permits(ip("2001:db8::1")));
        let one = AllowList::parse(&["127.0.0.1/32"]).unwrap();
        assert!(!one.allows_everyone());
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for bad in ["10.0.0.0/33", "10.0.0.1/8", "ten/8", "::/129", "1.2.3.4/x"] {
            let e = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!("2001:db8::/32".parse::<Cidr>().is_ok());
    }
}

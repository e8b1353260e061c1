//! Printing results for people and for machines (`--json`).

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use odt_store::units::{bytes, utc as unix_time};

/// The custody log for people: one line per event, indented, and a count of wrong codes.
pub fn custody(log: &odt_store::trip::custody::Log) -> String {
    let mut s = format!(
        "  custody log: {} event(s), {} wrong unlock code(s){}\n",
        log.events.len(),
        log.wrong_codes(),
        if log.omitted > 0 {
            format!(", {} more not listed", log.omitted)
        } else {
            String::new()
        }
    );
    for e in &log.events {
        s.push_str(&format!(
            "    {}  {}{}\n",
            unix_time(e.time.secs),
            e.what.describe(),
            if e.from.is_empty() {
                String::new()
            } else {
                format!(" from {}", e.from)
            }
        ));
    }
    s
}

/// Parses sizes like `10G`, `512M`, `4096`, `1.5T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let m = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 64G, 512M)"))?;
    if v < 0.0 {
        return Err(format!("{s:?}: a size cannot be negative"));
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
    }
}

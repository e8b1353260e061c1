//! Customer bytes: `bundle::parse_descriptor` (OVF XML), `bundle::parse_mf` (`.mf` lines)
//! and `ovf::tar_members` (an OVA's tar headers, PAX records, GNU long names).
//!
//! The input, decoded lossily, goes to the text parsers, and as it is to the tar walker.
//! Contracts:
//! - no panic (also on the text of a `.mf` or `.ovf` that is not UTF-8, decoded lossily);
//! - `parse_mf`: at most one entry per non-blank line; algorithm upper-case and trimmed,
//!   digest lower-case and trimmed; written back as `ALGO(file)= digest` lines the entries
//!   parse to themselves;
//! - `parse_descriptor`: the references, written back as a minimal OVF envelope (attribute
//!   values escaped), parse to themselves;
//! - `tar_members`: no panic; every member lies inside the input.

use odt_store::trip::bundle::{MfEntry, parse_descriptor, parse_mf};
use odt_store::trip::ovf::tar_members;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    mf(&text);
    descriptor(&text);
    if let Ok(members) = tar_members(std::io::Cursor::new(data)) {
        for m in members {
            assert!(
                m.offset.saturating_add(m.size) <= data.len() as u64,
                "member past the end"
            );
        }
    }
}

fn mf(text: &str) {
    let Ok(entries) = parse_mf(text) else {
        return;
    };
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(entries.len() <= lines, "more entries than lines");
    let mut again = String::new();
    for e in &entries {
        assert_eq!(e.algorithm, e.algorithm.trim());
        assert_eq!(e.algorithm, e.algorithm.to_ascii_uppercase());
        assert_eq!(e.digest, e.digest.trim());
        assert_eq!(e.digest, e.digest.to_ascii_lowercase());
        again.push_str(&format!("{}({})= {}\n", e.algorithm, e.file, e.digest));
    }
    let back: Vec<MfEntry> = parse_mf(&again).expect("written-back .mf parses");
    assert_eq!(back, entries, ".mf round trip");
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Attribute-value normalisation would turn these into spaces.
            '\t' | '\n' | '\r' => out.push_str(&format!("&#x{:x};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn descriptor(text: &str) {
    let Ok(refs) = parse_descriptor(text) else {
        return;
    };
    let mut again = String::from(
        "<?xml version=\"1.0\"?>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"><References>",
    );
    for r in &refs {
        again.push_str(&format!("<File ovf:href=\"{}\"", escape(&r.href)));
        if let Some(n) = r.size {
            again.push_str(&format!(" ovf:size=\"{n}\""));
        }
        again.push_str("/>");
    }
    again.push_str("</References></Envelope>");
    let back = parse_descriptor(&again).expect("written-back descriptor parses");
    let key = |v: &[odt_store::trip::bundle::Reference]| -> Vec<(String, Option<u64>)> {
        v.iter().map(|r| (r.href.clone(), r.size)).collect()
    };
    assert_eq!(key(&back), key(&refs), "descriptor round trip");
}

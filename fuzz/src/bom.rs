//! The bill of materials a customer or a dock hands to `odt seal-check --bom`:
//! `odt_store::trip::bom::parse` (CSV or JSON).

use odt_store::trip::bom;

/// No panic; what parses is written back as CSV and parses to the same entries, and a
/// list compared with itself has no difference.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = bom::parse(text) else {
        return;
    };
    let again = bom::parse(&bom::csv(&entries)).expect("what parsed, written as CSV, parses");
    assert_eq!(again, entries, "CSV round trip");
    assert!(bom::differences(&entries, &entries).is_empty());
}

//! How an imported VM is recognised: a line in its annotation (the notes vSphere shows)
//! naming the job, the bundle's digest and whether the import finished:
//! `odt-import job=<id> bundle=<digest> state=importing|complete`. It is written into the
//! import spec, so the VM carries it from the moment it is registered, and set to
//! `complete` once the lease completed.

use roxmltree::Document;

use super::vsphere::soap::escape;

const TAG: &str = "odt-import";

/// What a VM's annotation says about its import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The job id the VM was imported for.
    pub job: String,
    /// The digest of the bundle it was imported from ([`super::plan::Bundle::digest`]).
    pub bundle: String,
    /// Whether the import finished (the lease completed).
    pub complete: bool,
}

impl Marker {
    /// The annotation line that records this marker.
    pub fn line(&self) -> String {
        format!(
            "{TAG} job={} bundle={} state={}",
            self.job,
            self.bundle,
            if self.complete {
                "complete"
            } else {
                "importing"
            }
        )
    }

    /// The marker in an annotation, if any (the last one wins).
    pub fn find(annotation: &str) -> Option<Marker> {
        annotation.lines().rev().find_map(|l| {
            let rest = l.trim().strip_prefix(TAG)?.trim();
            let mut job = None;
            let mut bundle = None;
            let mut state = None;
            for kv in rest.split_whitespace() {
                match kv.split_once('=') {
                    Some(("job", v)) => job = Some(v.to_string()),
                    Some(("bundle", v)) => bundle = Some(v.to_string()),
                    Some(("state", v)) => state = Some(v.to_string()),
                    _ => {}
                }
            }
            Some(Marker {
                job: job?,
                bundle: bundle?,
                complete: state? == "complete",
            })
        })
    }
}

/// Elements of a VirtualMachineConfigSpec that come before `annotation` (the schema
/// fixes the order, and vCenter checks it).
const BEFORE_ANNOTATION: &[&str] = &[
    "changeVersion",
    "name",
    "version",
    "createDate",
    "uuid",
    "instanceUuid",
    "npivNodeWorldWideName",
    "npivPortWorldWideName",
    "npivWorldWideNameType",
    "npivDesiredNodeWwns",
    "npivDesiredPortWwns",
    "npivTemporaryDisabled",
    "npivOnNonRdmDisks",
    "npivWorldWideNameOp",
    "locationId",
    "guestId",
    "alternateGuestName",
];

/// Adds `line` to the annotation of the import spec's `configSpec` (keeping the OVF's own
/// notes); returns the new spec and the whole annotation.
/// `ns_decls` declares the prefixes the spec uses (` xmlns:p="uri"`...).
pub fn annotate(spec_xml: &str, ns_decls: &str, line: &str) -> Result<(String, String), String> {
    let decls = if ns_decls.contains(" xmlns:xsi=") {
        ns_decls.to_string()
    } else {
        format!("{ns_decls} xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"")
    };
    let wrapped = format!("<w{decls}>{spec_xml}</w>");
    let off = wrapped.find('>').expect("wrapper") + 1;
    let doc = Document::parse(&wrapped).map_err(|e| format!("the import spec is not XML: {e}"))?;
    let cs = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("configSpec"))
        .ok_or("the import spec has no configSpec (is it a vApp?)")?;
    let existing = cs
        .children()
        .find(|n| n.is_element() && n.has_tag_name("annotation"));
    let old: String = existing
        .map(|n| {
            n.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect()
        })
        .unwrap_or_default();
    let old = old.trim_end();
    let annotation = if old.is_empty() {
        line.to_string()
    } else {
        format!("{old}\n{line}")
    };
    let element = format!("<annotation>{}</annotation>", escape(&annotation));
    let after =
        |n: &roxmltree::Node| n.is_element() && !BEFORE_ANNOTATION.contains(&n.tag_name().name());
    let (start, end, element) = match (existing, cs.children().find(after), cs.last_child()) {
        (Some(n), _, _) => (n.range().start, n.range().end, element),
        (None, Some(n), _) => (n.range().start, n.range().start, element),
        (None, None, Some(last)) => (last.range().end, last.range().end, element),
        (None, None, None) => {
            // No content: `<configSpec/>` or `<configSpec></configSpec>`, the name maybe
            // prefixed.
            let r = cs.range();
            let whole = &wrapped[r.clone()];
            if whole.ends_with("/>") {
                let name_len = whole[1..]
                    .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
                    .unwrap_or(0);
                let name = &whole[1..1 + name_len];
                (r.end - 2, r.end, format!(">{element}</{name}>"))
            } else {
                let at = r.start + whole.rfind("</").unwrap_or(whole.len());
                (at, at, element)
            }
        }
    };
    let spec = format!(
        "{}{element}{}",
        &wrapped[off..start],
        &wrapped[end..wrapped.len() - "</w>".len()]
    );
    Ok((spec, annotation))
}

/// The annotation with the marker set to complete.
pub fn completed(annotation: &str, m: &Marker) -> String {
    let done = Marker {
        complete: true,
        ..m.clone()
    };
    annotation.replace(&m.line(), &done.line())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let m = Marker {
            job: "j-1".into(),
            bundle: "abc".into(),
            complete: false,
        };
        let note = format!("Web server\n{}", m.line());
        assert_eq!(Marker::find(&note), Some(m.clone()));
        let done = completed(&note, &m);
        assert!(Marker::find(&done).unwrap().complete);
        assert!(done.starts_with("Web server\n"));
        assert_eq!(Marker::find("just notes"), None);
        assert_eq!(Marker::find("odt-import job=x"), None);
    }

    #[test]
    fn annotation_goes_where_the_schema_wants_it() {
        let spec = r#"<configSpec><name>vm1</name><guestId>otherGuest</guestId><files><vmPathName>[ds]</vmPathName></files><deviceChange><device xsi:type="VirtualDisk"/></deviceChange></configSpec><resPoolEntity type="ResourcePool">rp-1</resPoolEntity>"#;
        let (out, note) = annotate(spec, "", "odt-import job=j bundle=b state=importing").unwrap();
        assert_eq!(note, "odt-import job=j bundle=b state=importing");
        assert!(
            out.contains("<guestId>otherGuest</guestId><annotation>odt-import job=j bundle=b state=importing</annotation><files>"),
            "{out}"
        );
        assert!(out.ends_with("<resPoolEntity type=\"ResourcePool\">rp-1</resPoolEntity>"));
        // An OVF annotation is kept, the marker added below it (escaped).
        let spec = r#"<configSpec><name>vm1</name><annotation>A &amp; B</annotation><files/></configSpec>"#;
        let (out, note) = annotate(spec, "", "m").unwrap();
        assert_eq!(note, "A & B\nm");
        assert!(
            out.contains("<annotation>A &amp; B&#10;m</annotation><files/>"),
            "{out}"
        );
        // Nothing after the annotation's place: appended at the end, whatever the spelling
        // of the element.
        for (spec, want) in [
            (
                "<configSpec><name>x</name></configSpec>",
                "<configSpec><name>x</name><annotation>m</annotation></configSpec>",
            ),
            (
                "<configSpec><name>x</name>\n</configSpec >",
                "<configSpec><name>x</name>\n<annotation>m</annotation></configSpec >",
            ),
            (
                "<configSpec a=\"/>\"/>",
                "<configSpec a=\"/>\"><annotation>m</annotation></configSpec>",
            ),
            (
                "<v:configSpec xmlns:v=\"urn:vim25\"></v:configSpec>",
                "<v:configSpec xmlns:v=\"urn:vim25\"><annotation>m</annotation></v:configSpec>",
            ),
        ] {
            assert_eq!(annotate(spec, "", "m").unwrap().0, want);
        }
        assert!(annotate("<other/>", "", "m").is_err());
    }
}

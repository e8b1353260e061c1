//! vCenter's answers, bytes from a server `odt import` talks to: `soap::Response::parse`,
//! the decoders of `vsphere::answers`, and `marker::annotate` on the import spec they give.
//!
//! Modes, from the first byte:
//! - raw: the rest, decoded lossily, is the whole HTTP body of an answer;
//! - enveloped: the rest is the content of a `returnval` inside a valid SOAP envelope, so
//!   the fuzzer reaches the decoders without having to invent the envelope;
//! - built: a CreateImportSpec answer written from fuzzer-chosen values (file items,
//!   messages, a configSpec with a name and maybe notes, namespace prefixes, padding);
//! - annotate: the rest is an import spec's content handed to `marker::annotate`.
//!
//! Contracts:
//! - nothing panics;
//! - a fault has a message; a parsed answer keeps its text;
//! - every reference decoded (`returnval`, service content, property values, a lease's
//!   VM) written back with `Moref::xml` parses to itself;
//! - an import spec decoded from an answer, sent back as ImportVApp's argument (annotated
//!   or not), is well-formed XML inside a request envelope;
//! - `annotate` either refuses or returns a spec whose `configSpec` has its annotation
//!   (old notes, a line feed, the marker) as its first `annotation` child, in which
//!   `Marker::find` finds the marker;
//! - built: what the decoder reads is what was written (values compared trimmed, as the
//!   decoder trims the padding pretty-printed XML adds).

use libfuzzer_sys::arbitrary::Unstructured;
use odt_tools::import::marker::{Marker, annotate};
use odt_tools::import::vsphere::answers::{
    FileItem, ImportSpec, import_spec, lease_info, localized_message, morefs_of, prop_sets,
    service_content,
};
use odt_tools::import::vsphere::soap::{Moref, Response, envelope, escape};
use roxmltree::{Document, Node};

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
    <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
    xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
    xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>";
const TAIL: &str = "</soapenv:Body></soapenv:Envelope>";

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            answer(String::from_utf8_lossy(rest).into_owned());
        }
        1 => {
            answer(format!(
                "{HEAD}<RetrievePropertiesResponse xmlns=\"urn:vim25\"><returnval>{}</returnval>\
             </RetrievePropertiesResponse>{TAIL}",
                String::from_utf8_lossy(rest)
            ));
        }
        2 => built(&mut Unstructured::new(rest)),
        _ => {
            annotated(&String::from_utf8_lossy(rest), "");
        }
    }
}

fn marker() -> Marker {
    Marker {
        job: "job-1".into(),
        bundle: "0123abcd".into(),
        complete: false,
    }
}

/// `m` written back as XML reads as `m`.
fn round_trips(m: &Moref) {
    let x = m.xml("obj");
    let doc = Document::parse(&x).unwrap_or_else(|e| panic!("{x:?} is not XML: {e}"));
    assert_eq!(
        Moref::from_node(doc.root_element()).as_ref(),
        Some(m),
        "reference round trip"
    );
}

fn answer(body: String) -> Option<ImportSpec> {
    let r = match Response::parse(body.clone()) {
        Ok(r) => r,
        Err(f) => {
            assert!(!f.message.is_empty(), "a fault without a message");
            assert!(!f.to_string().is_empty());
            return None;
        }
    };
    assert_eq!(r.raw(), body);
    if let Some(m) = r.moref() {
        round_trips(&m);
    }
    if let Some(sc) = service_content(&r) {
        for m in [
            &sc.root_folder,
            &sc.property_collector,
            &sc.search_index,
            &sc.session_manager,
            &sc.ovf_manager,
        ] {
            round_trips(m);
        }
    }
    r.with_returns(|rv| {
        for (_, val) in prop_sets(rv) {
            morefs_of(val).iter().for_each(round_trips);
            let _ = localized_message(val);
            if let Some((vm, _urls)) = lease_info(val) {
                round_trips(&vm);
            }
        }
    });
    let spec = import_spec(&r).ok()?;
    sent_back(&spec);
    Some(spec)
}

/// The spec as ImportVApp's argument, plain and annotated, inside a request.
fn sent_back(spec: &ImportSpec) {
    let this = Moref::new("ResourcePool", "resgroup-1");
    for content in [
        Some(spec.spec_xml.clone()),
        annotated(&spec.spec_xml, &spec.ns_decls),
    ]
    .into_iter()
    .flatten()
    {
        let req = envelope("ImportVApp", &this, &spec.argument(&content));
        if let Err(e) = Document::parse(&req) {
            panic!("ImportVApp request is not XML ({e}): {req}");
        }
    }
}

/// Checks `annotate` on `spec_xml`; returns the annotated spec.
fn annotated(spec_xml: &str, ns_decls: &str) -> Option<String> {
    let m = marker();
    let (out, note) = annotate(spec_xml, ns_decls, &m.line()).ok()?;
    assert!(note.ends_with(&m.line()), "{note:?}");
    assert_eq!(Marker::find(&note), Some(m), "{note:?}");
    let decls = if ns_decls.contains(" xmlns:xsi=") {
        ns_decls.to_string()
    } else {
        format!("{ns_decls} xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"")
    };
    let wrapped = format!("<w{decls}>{out}</w>");
    let doc = Document::parse(&wrapped)
        .unwrap_or_else(|e| panic!("annotated spec is not XML ({e}): {wrapped}"));
    let cs = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("configSpec"))
        .expect("annotated spec has its configSpec");
    let a = cs
        .children()
        .find(|n| n.is_element() && n.has_tag_name("annotation"))
        .unwrap_or_else(|| panic!("no annotation in {wrapped}"));
    assert_eq!(text_of(a), note, "{wrapped}");
    Some(out)
}

fn text_of(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

/// A short string from the fuzzer; may hold anything, markup included.
fn string(u: &mut Unstructured) -> String {
    let len = u.int_in_range(0..=24usize).unwrap_or(0);
    let mut s = String::new();
    for _ in 0..len {
        let c = match u.int_in_range(0..=9u8).unwrap_or(0) {
            0 => ' ',
            1 => '<',
            2 => '&',
            3 => '"',
            4 => ['\t', '\n', '\r'][u.choose_index(3).unwrap_or(0)],
            5 => 'é',
            _ => u.arbitrary::<char>().unwrap_or('x'),
        };
        // Characters XML 1.0 cannot carry at all, even as references.
        if matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
        {
            continue;
        }
        s.push(c);
    }
    s
}

/// Whitespace a pretty printer might add.
fn pad(u: &mut Unstructured) -> &'static str {
    ["", " ", "\n  ", "\t"][u.choose_index(4).unwrap_or(0)]
}

/// An element holding `value` between padding; also the text a parser reads from it.
fn element(u: &mut Unstructured, p: &str, name: &str, value: &str) -> (String, String) {
    let (pre, post) = (pad(u), pad(u));
    (
        format!("<{p}{name}>{pre}{}{post}</{p}{name}>", escape(value)),
        format!("{pre}{value}{post}"),
    )
}

fn built(u: &mut Unstructured) {
    // Elements of the answer maybe prefixed, as a server is free to write them.
    let p = if u.arbitrary::<bool>().unwrap_or(false) {
        "vim:"
    } else {
        ""
    };
    let mut items = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
        items.push(FileItem {
            device_id: string(u),
            path: string(u),
            size: u.arbitrary().unwrap_or(None),
            create: u.arbitrary().unwrap_or(false),
        });
    }
    let warnings: Vec<String> = (0..u.int_in_range(0..=2u8).unwrap_or(0))
        .map(|_| string(u))
        .collect();
    let errors: Vec<String> = (0..u.int_in_range(0..=2u8).unwrap_or(0))
        .map(|_| string(u))
        .collect();
    let name = string(u);
    let notes = u.arbitrary::<bool>().unwrap_or(false).then(|| string(u));
    let extra_ns = u.arbitrary::<bool>().unwrap_or(false);

    let (name_xml, name_text) = element(u, p, "name", &name);
    let mut spec = format!("<{p}configSpec>{name_xml}");
    let mut old_note = String::new();
    if let Some(n) = &notes {
        let (xml, text) = element(u, p, "annotation", n);
        spec.push_str(&xml);
        old_note = text;
    }
    spec.push_str(&format!(
        "<{p}files><{p}vmPathName>[ds]</{p}vmPathName></{p}files><{p}deviceChange>\
         <{p}device xsi:type=\"VirtualDisk\"/></{p}deviceChange></{p}configSpec>"
    ));
    if extra_ns {
        spec.push_str("<q:extra xmlns:q=\"urn:odt-fuzz\" q:at=\"1\"/>");
    }
    let mut rv = format!(
        "<{p}importSpec xsi:type=\"VirtualMachineImportSpec\">{}{spec}{}</{p}importSpec>",
        pad(u),
        pad(u)
    );
    for i in &items {
        rv.push_str(&format!("<{p}fileItem>"));
        rv.push_str(&element(u, p, "deviceId", &i.device_id).0);
        rv.push_str(&element(u, p, "path", &i.path).0);
        if let Some(s) = i.size {
            rv.push_str(&element(u, p, "size", &s.to_string()).0);
        }
        rv.push_str(&element(u, p, "create", if i.create { "true" } else { "false" }).0);
        rv.push_str(&format!("</{p}fileItem>"));
    }
    for (kind, list) in [("warning", &warnings), ("error", &errors)] {
        for m in list {
            rv.push_str(&format!(
                "<{p}{kind}><{p}fault xsi:type=\"OvfInvalidValue\"/>{}</{p}{kind}>",
                element(u, p, "localizedMessage", m).0
            ));
        }
    }
    let body = format!(
        "{HEAD}<{p}CreateImportSpecResponse xmlns=\"urn:vim25\" xmlns:vim=\"urn:vim25\">\
         <{p}returnval>{rv}</{p}returnval></{p}CreateImportSpecResponse>{TAIL}"
    );
    let got = answer(body.clone()).unwrap_or_else(|| panic!("built answer refused: {body}"));

    let trimmed = |s: &str| s.trim().to_string();
    let want: Vec<FileItem> = items
        .iter()
        .map(|i| FileItem {
            device_id: trimmed(&i.device_id),
            path: trimmed(&i.path),
            ..i.clone()
        })
        .collect();
    assert_eq!(got.file_items, want, "{body}");
    let message = |m: &String| {
        let m = m.trim();
        if m.is_empty() {
            "OvfInvalidValue".to_string()
        } else {
            m.to_string()
        }
    };
    assert_eq!(
        got.warnings,
        warnings.iter().map(message).collect::<Vec<_>>()
    );
    assert_eq!(got.errors, errors.iter().map(message).collect::<Vec<_>>());
    assert_eq!(got.spec_type, "VirtualMachineImportSpec");

    // The spec sent back holds the same configSpec: its name, and the notes followed by
    // the marker.
    let out = annotated(&got.spec_xml, &got.ns_decls).expect("a built spec can be annotated");
    let wrapped = format!("<w{}>{out}</w>", got.ns_decls);
    let doc = Document::parse(&wrapped).expect("checked by annotated()");
    let cs = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("configSpec"))
        .expect("checked by annotated()");
    let child = |name| {
        cs.children()
            .find(|n| n.is_element() && n.has_tag_name(name))
            .map(text_of)
    };
    assert_eq!(child("name"), Some(name_text), "{wrapped}");
    let old = old_note.trim_end();
    let want_note = if old.is_empty() {
        marker().line()
    } else {
        format!("{old}\n{}", marker().line())
    };
    assert_eq!(child("annotation"), Some(want_note), "{wrapped}");
}

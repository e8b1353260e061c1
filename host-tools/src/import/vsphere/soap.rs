//! SOAP envelopes for the vim25 API: requests written from typed arguments (every text
//! escaped), responses and faults read with a real XML parser. No network here.

use roxmltree::{Document, Node};

/// A managed object reference (`<_this type="Folder">group-v3</_this>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Moref {
    /// The object's type (`Folder`, `VirtualMachine`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id (`group-v3`, `vm-42`, ...).
    pub value: String,
}

impl Moref {
    /// The reference to object `value` of type `kind`.
    pub fn new(kind: &str, value: &str) -> Moref {
        Moref {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// The reference as an element `name`.
    pub fn xml(&self, name: &str) -> String {
        format!(
            "<{name} type=\"{}\">{}</{name}>",
            escape(&self.kind),
            escape(&self.value)
        )
    }

    /// Reads a reference from an element with a `type` attribute.
    pub fn from_node(n: Node) -> Option<Moref> {
        // `type`, not `xsi:type` (which a `val` also carries).
        let kind = n
            .attributes()
            .find(|a| a.name() == "type" && a.namespace().is_none())?
            .value();
        Some(Moref::new(kind, n.text().unwrap_or("").trim()))
    }
}

impl std::fmt::Display for Moref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Escapes text for an element or a double-quoted attribute. Tabs and line ends become
/// character references: a parser would turn a raw CR into LF, and all three into spaces in
/// an attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// A text element.
pub fn text(name: &str, value: &str) -> String {
    format!("<{name}>{}</{name}>", escape(value))
}

/// A whole request: `body` is the method element's content (arguments after `_this`).
pub fn envelope(method: &str, this: &Moref, args: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <soapenv:Body><{method} xmlns=\"urn:vim25\">{}{args}</{method}></soapenv:Body>\
         </soapenv:Envelope>",
        this.xml("_this")
    )
}

/// What went wrong in a call, as the server said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The fault's type (`InvalidLogin`, `DuplicateName`, ...), if the detail names it.
    pub kind: Option<String>,
    /// The fault string.
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Some(k) if !self.message.contains(k.as_str()) => write!(f, "{k}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// A parsed response: the XML and where its `returnval`s are.
pub struct Response {
    doc: String,
}

impl Response {
    /// Reads a response body; `Err` carries the fault, or says the body is not SOAP.
    pub fn parse(body: String) -> Result<Response, Fault> {
        let doc = Document::parse(&body).map_err(|e| Fault {
            kind: None,
            message: format!("the answer is not XML ({e})"),
        })?;
        let Some(b) = doc
            .root_element()
            .children()
            .find(|n| n.tag_name().name() == "Body")
        else {
            return Err(Fault {
                kind: None,
                message: "the answer is not a SOAP envelope".into(),
            });
        };
        if let Some(f) = b.children().find(|n| n.tag_name().name() == "Fault") {
            let message = child_text(f, "faultstring").unwrap_or_default();
            let detail = f
                .children()
                .find(|n| n.tag_name().name() == "detail")
                .and_then(|d| d.children().find(|n| n.is_element()));
            let kind = detail.map(|n| {
                xsi_type(n)
                    .map(str::to_string)
                    .unwrap_or_else(|| n.tag_name().name().trim_end_matches("Fault").to_string())
            });
            // A FileFault (FileAlreadyExists, FileLocked, ...) may come with no message but
            // the file it is about.
            let file = detail
                .and_then(|d| child_text(d, "file"))
                .filter(|f| !f.is_empty());
            return Err(Fault {
                kind,
                message: match (message.is_empty(), file) {
                    (false, _) => message,
                    (true, Some(file)) => format!("file {file}"),
                    (true, None) => "the server reported a fault without a message".into(),
                },
            });
        }
        drop(doc);
        Ok(Response { doc: body })
    }

    /// Runs `f` on the `returnval` elements of the response.
    pub fn with_returns<R>(&self, f: impl FnOnce(&[Node]) -> R) -> R {
        let doc = Document::parse(&self.doc).expect("parsed before");
        let returns: Vec<Node> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "returnval")
            .filter(|n| {
                n.parent()
                    .and_then(|p| p.parent())
                    .is_some_and(|b| b.tag_name().name() == "Body")
            })
            .collect();
        f(&returns)
    }

    /// The first `returnval` as a reference.
    pub fn moref(&self) -> Option<Moref> {
        self.with_returns(|r| r.first().and_then(|n| Moref::from_node(*n)))
    }

    /// The raw text of the response.
    pub fn raw(&self) -> &str {
        &self.doc
    }
}

/// An element's `xsi:type`.
pub fn xsi_type<'a>(n: Node<'a, '_>) -> Option<&'a str> {
    n.attributes()
        .find(|a| a.name() == "type" && a.namespace().is_some())
        .map(|a| a.value())
}

/// The trimmed text of the first child element called `name`.
pub fn child_text(n: Node, name: &str) -> Option<String> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .map(|c| c.text().unwrap_or("").trim().to_string())
}

/// Child elements called `name`.
pub fn children<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The source text of an element's content (its children as they were written): from the
/// start of its first child to the end of its last, so that neither a `>` inside an
/// attribute value nor the spelling of the end tag can shift it.
pub fn inner_xml<'i>(n: Node<'_, 'i>, source: &'i str) -> &'i str {
    match (n.first_child(), n.last_child()) {
        (Some(first), Some(last)) => source
            .get(first.range().start..last.range().end)
            .unwrap_or(""),
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_escape_what_they_carry() {
        let m = Moref::new("Folder", "group-<v3>");
        let e = envelope("FindChild", &m, &text("name", "a&b \"c\""));
        assert!(e.contains("<_this type=\"Folder\">group-&lt;v3&gt;</_this>"));
        assert!(e.contains("<name>a&amp;b &quot;c&quot;</name>"));
        assert!(Document::parse(&e).is_ok());
        // Tabs and line ends survive a parser, in text and in attributes.
        let odd = "a\tb\r\nc\rd";
        let m = Moref::new(odd, odd);
        let x = m.xml("obj");
        let doc = Document::parse(&x).unwrap();
        assert_eq!(Moref::from_node(doc.root_element()), Some(m));
    }

    #[test]
    fn returns_and_faults() {
        let ok = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><FindChildResponse xmlns="urn:vim25"><returnval type="VirtualMachine">vm-42</returnval></FindChildResponse></soapenv:Body></soapenv:Envelope>"#;
        let r = Response::parse(ok.to_string()).unwrap();
        assert_eq!(r.moref(), Some(Moref::new("VirtualMachine", "vm-42")));
        let none = ok.replace(r#"<returnval type="VirtualMachine">vm-42</returnval>"#, "");
        assert_eq!(Response::parse(none).unwrap().moref(), None);
        let fault = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password.</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let f = Response::parse(fault.to_string()).err().unwrap();
        assert_eq!(f.kind.as_deref(), Some("InvalidLogin"));
        assert!(
            f.to_string()
                .starts_with("InvalidLogin: Cannot complete login")
        );
        let file = fault
            .replace("<faultstring>Cannot complete login due to an incorrect user name or password.</faultstring>", "")
            .replace(
                r#"<InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault>"#,
                r#"<FileAlreadyExistsFault xmlns="urn:vim25" xsi:type="FileAlreadyExists"><file>[ds] vm/vm.vmx</file></FileAlreadyExistsFault>"#,
            );
        let f = Response::parse(file).err().unwrap();
        assert_eq!(f.to_string(), "FileAlreadyExists: file [ds] vm/vm.vmx");
        assert!(Response::parse("<html>".into()).is_err());
        assert!(
            Response::parse("<html/>".into())
                .err()
                .unwrap()
                .message
                .contains("not a SOAP")
        );
    }

    #[test]
    fn inner_xml_keeps_the_children_as_written() {
        let src = r#"<a><spec xsi:type="X"><b>1</b><c/></spec><e/></a>"#;
        let doc = Document::parse(src);
        // The xsi prefix is undeclared here; declare it to parse.
        assert!(doc.is_err());
        let src = r#"<a xmlns:xsi="u"><spec xsi:type="X" q="a>b"> <b>1 &amp; 2</b><!--c--><c/>t&lt;</spec ><e/><f></f></a>"#;
        let doc = Document::parse(src).unwrap();
        let spec = doc.descendants().find(|n| n.has_tag_name("spec")).unwrap();
        assert_eq!(inner_xml(spec, src), " <b>1 &amp; 2</b><!--c--><c/>t&lt;");
        for empty in ["e", "f"] {
            let e = doc.descendants().find(|n| n.has_tag_name(empty)).unwrap();
            assert_eq!(inner_xml(e, src), "");
        }
    }
}

//! vCenter's answers read into typed values: the service content, property sets, the OVF
//! import spec, a lease's info. The bytes come from the server and are untrusted: nothing
//! here panics or indexes on faith, and the fuzz target `vim25` (`fuzz/`) feeds it hostile
//! and damaged answers. No network here.

use roxmltree::Node;

use super::soap::{Moref, Response, child_text, children, escape, inner_xml, xsi_type};

/// The objects the service content names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The inventory's root folder.
    pub root_folder: Moref,
    /// The PropertyCollector, which reads objects' properties.
    pub property_collector: Moref,
    /// The SearchIndex, which finds objects by inventory path.
    pub search_index: Moref,
    /// The SessionManager (log in, log out).
    pub session_manager: Moref,
    /// The OvfManager, which turns a descriptor into an import spec.
    pub ovf_manager: Moref,
    /// The server's full name and version (`about.fullName`).
    pub about: String,
}

/// A lease's upload target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUrl {
    /// The key that ties the URL to a file item of the import spec.
    pub import_key: String,
    /// Where to send the file (`*` stands for the host that was asked).
    pub url: String,
    /// SHA-1 of the ESXi host's certificate, when the URL is on a host.
    pub ssl_thumbprint: Option<String>,
    /// Whether the target is a virtual disk.
    pub disk: bool,
}

/// What the import spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpec {
    /// The `importSpec` element's content, to hand back to ImportVApp.
    pub spec_xml: String,
    /// Its `xsi:type`.
    pub spec_type: String,
    /// The namespace prefixes in scope there (` xmlns:p="uri"`...), which its content may
    /// use and which must be declared again wherever it is sent.
    pub ns_decls: String,
    /// (deviceId, OVF href, size, create) of each file to upload.
    pub file_items: Vec<FileItem>,
    /// What vCenter found wrong with the descriptor (the import cannot go on).
    pub errors: Vec<String>,
    /// What vCenter warned about (reported, not fatal).
    pub warnings: Vec<String>,
}

impl ImportSpec {
    /// The `spec` argument of ImportVApp: `spec_xml` (this spec's content, maybe annotated)
    /// with this spec's type and the namespaces it may use.
    pub fn argument(&self, spec_xml: &str) -> String {
        format!(
            "<spec{} xsi:type=\"{}\">{spec_xml}</spec>",
            self.ns_decls,
            escape(&self.spec_type)
        )
    }
}

/// One file the import spec wants uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileItem {
    /// The device it becomes (matches a lease's [`DeviceUrl::import_key`]).
    pub device_id: String,
    /// The file's href in the descriptor.
    pub path: String,
    /// Its size, when the descriptor gives one.
    pub size: Option<u64>,
    /// Whether the upload creates the file (a new disk) rather than overwriting one.
    pub create: bool,
}

/// The service content of `RetrieveServiceContent`; `None` if it lacks one of the objects
/// an import needs.
pub fn service_content(r: &Response) -> Option<ServiceContent> {
    r.with_returns(|rv| {
        let rv = rv.first()?;
        let m = |name: &str| {
            rv.children()
                .find(|n| n.is_element() && n.tag_name().name() == name)
                .and_then(Moref::from_node)
        };
        let about = children(*rv, "about")
            .next()
            .and_then(|a| child_text(a, "fullName"))
            .unwrap_or_default();
        Some(ServiceContent {
            root_folder: m("rootFolder")?,
            property_collector: m("propertyCollector")?,
            search_index: m("searchIndex")?,
            session_manager: m("sessionManager")?,
            ovf_manager: m("ovfManager")?,
            about,
        })
    })
}

/// The `(name, val)` pairs of the `propSet`s of `RetrieveProperties`' returned objects.
pub fn prop_sets<'a, 'i>(returns: &[Node<'a, 'i>]) -> Vec<(String, Node<'a, 'i>)> {
    returns
        .iter()
        .flat_map(|o| children(*o, "propSet"))
        .filter_map(|p| {
            let name = child_text(p, "name")?;
            let val = children(p, "val").next()?;
            Some((name, val))
        })
        .collect()
}

/// A property value that is a reference, or a list of them (`ArrayOfManagedObjectReference`).
pub fn morefs_of(val: Node) -> Vec<Moref> {
    let own = Moref::from_node(val);
    let inner = val
        .children()
        .filter(|c| c.is_element())
        .filter_map(Moref::from_node);
    own.into_iter().chain(inner).collect()
}

/// The `localizedMessage` of a `LocalizedMethodFault` value (a lease's or a task's error).
pub fn localized_message(val: Node) -> Option<String> {
    child_text(val, "localizedMessage").filter(|m| !m.is_empty())
}

/// A lease's `info`: the VM it creates and the upload URLs.
pub fn lease_info(val: Node) -> Option<(Moref, Vec<DeviceUrl>)> {
    let entity = children(val, "entity").next().and_then(Moref::from_node)?;
    let urls = children(val, "deviceUrl")
        .map(|d| DeviceUrl {
            import_key: child_text(d, "importKey").unwrap_or_default(),
            url: child_text(d, "url").unwrap_or_default(),
            ssl_thumbprint: child_text(d, "sslThumbprint").filter(|t| !t.is_empty()),
            disk: child_text(d, "disk").as_deref() == Some("true"),
        })
        .collect();
    Some((entity, urls))
}

/// The answer to `OvfManager.CreateImportSpec`.
pub fn import_spec(r: &Response) -> Result<ImportSpec, String> {
    let raw = r.raw();
    r.with_returns(|rv| {
        let rv = rv.first().ok_or("no returnval")?;
        let messages = |name: &'static str| -> Vec<String> {
            children(*rv, name)
                .map(|f| {
                    localized_message(f)
                        .or_else(|| {
                            children(f, "fault")
                                .next()
                                .map(|x| xsi_type(x).unwrap_or("a fault").to_string())
                        })
                        .unwrap_or_else(|| "(no message)".into())
                })
                .collect()
        };
        let file_items = children(*rv, "fileItem")
            .map(|f| FileItem {
                device_id: child_text(f, "deviceId").unwrap_or_default(),
                path: child_text(f, "path").unwrap_or_default(),
                size: child_text(f, "size").and_then(|s| s.parse().ok()),
                create: child_text(f, "create").as_deref() == Some("true"),
            })
            .collect();
        let (spec_xml, spec_type, ns_decls) = match children(*rv, "importSpec").next() {
            Some(s) => (
                inner_xml(s, raw).to_string(),
                xsi_type(s)
                    .unwrap_or("VirtualMachineImportSpec")
                    .to_string(),
                s.namespaces()
                    .filter_map(|n| Some(format!(" xmlns:{}=\"{}\"", n.name()?, escape(n.uri()))))
                    .filter(|d| !d.starts_with(" xmlns:xml="))
                    .collect(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        Ok(ImportSpec {
            spec_xml,
            spec_type,
            ns_decls,
            file_items,
            errors: messages("error"),
            warnings: messages("warning"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#;
    const TAIL: &str = "</soapenv:Body></soapenv:Envelope>";

    fn answer(body: &str) -> Response {
        Response::parse(format!("{HEAD}{body}{TAIL}")).unwrap()
    }

    #[test]
    fn service_content_needs_every_object() {
        let body = r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><about><fullName>VMware vCenter Server 7.0.0</fullName></about><searchIndex type="SearchIndex">SearchIndex</searchIndex><sessionManager type="SessionManager">SessionManager</sessionManager><ovfManager type="OvfManager">OvfManager</ovfManager></returnval></RetrieveServiceContentResponse>"#;
        let sc = service_content(&answer(body)).unwrap();
        assert_eq!(sc.root_folder, Moref::new("Folder", "group-d1"));
        assert_eq!(sc.about, "VMware vCenter Server 7.0.0");
        let without = body.replace(
            r#"<ovfManager type="OvfManager">OvfManager</ovfManager>"#,
            "",
        );
        assert_eq!(service_content(&answer(&without)), None);
    }

    #[test]
    fn import_spec_keeps_the_spec_as_written() {
        let body = r#"<CreateImportSpecResponse xmlns="urn:vim25"><returnval><importSpec xsi:type="VirtualMachineImportSpec" xmlns:p="urn:x"><configSpec><name>a &amp; b</name><p:x/></configSpec></importSpec><fileItem><deviceId>/vm/key=2000</deviceId><path>disk.vmdk</path><size>1234</size><create>false</create></fileItem><warning><localizedMessage>odd</localizedMessage></warning><error><fault xsi:type="OvfMissingElement"/></error></returnval></CreateImportSpecResponse>"#;
        let s = import_spec(&answer(body)).unwrap();
        assert_eq!(
            s.spec_xml,
            "<configSpec><name>a &amp; b</name><p:x/></configSpec>"
        );
        assert_eq!(s.spec_type, "VirtualMachineImportSpec");
        assert!(s.ns_decls.contains(r#" xmlns:p="urn:x""#), "{}", s.ns_decls);
        assert_eq!(
            s.file_items,
            vec![FileItem {
                device_id: "/vm/key=2000".into(),
                path: "disk.vmdk".into(),
                size: Some(1234),
                create: false
            }]
        );
        assert_eq!(s.warnings, vec!["odd".to_string()]);
        assert_eq!(s.errors, vec!["OvfMissingElement".to_string()]);
        assert!(import_spec(&answer("<R/>")).is_err());
    }

    #[test]
    fn lease_info_and_property_sets() {
        let body = r#"<RetrievePropertiesResponse xmlns="urn:vim25"><returnval><obj type="HttpNfcLease">lease-1</obj><propSet><name>info</name><val xsi:type="HttpNfcLeaseInfo"><entity type="VirtualMachine">vm-9</entity><deviceUrl><key>k</key><importKey>/vm/key=2000</importKey><url>https://*/nfc/lease-1/disk-0.vmdk</url><sslThumbprint></sslThumbprint><disk>true</disk></deviceUrl></val></propSet><propSet><name>childEntity</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="ClusterComputeResource">domain-c7</ManagedObjectReference></val></propSet></returnval></RetrievePropertiesResponse>"#;
        let r = answer(body);
        r.with_returns(|rv| {
            let sets = prop_sets(rv);
            assert_eq!(sets.len(), 2);
            let (vm, urls) = lease_info(sets[0].1).unwrap();
            assert_eq!(vm, Moref::new("VirtualMachine", "vm-9"));
            assert_eq!(urls[0].url, "https://*/nfc/lease-1/disk-0.vmdk");
            assert_eq!(urls[0].ssl_thumbprint, None);
            assert!(urls[0].disk);
            assert_eq!(
                morefs_of(sets[1].1),
                vec![Moref::new("ClusterComputeResource", "domain-c7")]
            );
        });
    }
}

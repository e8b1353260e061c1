//! A small typed client for the vSphere SOAP API (vim25), for what an OVF import needs:
//! service content, login, inventory look-ups, properties, the OVF import spec, ImportVApp
//! and its HttpNfcLease, uploads to the lease's URLs, and a few VM tasks. It speaks what
//! every vCenter and govmomi's simulator speak, over ureq and rustls ([`tls`]).
//!
//! Requests carrying the password are never logged, and the password is zeroized after use.

pub mod answers;
pub mod soap;
pub mod tls;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

pub use answers::{DeviceUrl, FileItem, ImportSpec, ServiceContent};
pub use soap::{Fault, Moref};
use soap::{Response, envelope, escape, text};
use tls::{Pin, Verifier};

/// What went wrong talking to vCenter.
#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    /// The server's certificate is neither pinned nor trusted by the system.
    #[error(
        "{host} is not trusted: {why}. Its certificate has SHA-256 thumbprint {thumbprint}, \
         subject {subject}, issuer {issuer}. Check it with the vCenter administrator, then pass \
         --thumbprint {thumbprint} to pin it (nothing was sent)"
    )]
    Untrusted {
        /// The host that showed it.
        host: String,
        /// Why it is not trusted.
        why: String,
        /// Its SHA-256 thumbprint, to pin with `--thumbprint`.
        thumbprint: String,
        /// Its subject.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// No connection could be made.
    #[error("cannot reach {url}: {why}")]
    Connect {
        /// Where to.
        url: String,
        /// Why not.
        why: String,
    },
    /// An HTTP status other than success.
    #[error("{method} on {url} answered HTTP {status}: {why}")]
    Http {
        /// The SOAP method or HTTP verb.
        method: String,
        /// Where it was sent.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body's gist.
        why: String,
    },
    /// A SOAP fault.
    #[error("vCenter refused {method}: {fault}")]
    Fault {
        /// The SOAP method refused.
        method: String,
        /// What vCenter said.
        fault: Fault,
    },
    /// An answer that does not parse as the API describes.
    #[error("vCenter's answer to {method} is not what the API describes: {why}")]
    Protocol {
        /// The SOAP method answered.
        method: String,
        /// What is wrong with the answer.
        why: String,
    },
    /// A wrong address or option, found before anything was sent.
    #[error("{0}")]
    Config(String),
}

/// Where vCenter is and how to trust it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://HOST[:PORT]/sdk` (or `http://` for a simulator).
    pub url: String,
    /// How its certificate is trusted.
    pub pin: Pin,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// A session with vCenter.
pub struct Client {
    agent: ureq::Agent,
    verifier: Arc<Verifier>,
    url: String,
    host: String,
    cookie: Mutex<Option<String>>,
    /// The objects of the service content, read at log-in.
    pub content: ServiceContent,
}

const SERVICE_INSTANCE: &str = "ServiceInstance";

fn agent(verifier: &Arc<Verifier>, timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(verifier.client_config())
        .timeout_connect(timeout)
        .timeout_read(timeout)
        .timeout_write(timeout)
        .build()
}

/// `host[:port]` of a URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

impl Client {
    /// Connects and reads the service content (no credentials are sent). A certificate
    /// that is not trusted stops here with its thumbprint and subject.
    pub fn connect(ep: &Endpoint) -> Result<Client, VsphereError> {
        let verifier = Verifier::new(ep.pin.clone()).map_err(VsphereError::Config)?;
        let host = host_of(&ep.url)
            .ok_or_else(|| VsphereError::Config(format!("{} is not a URL", ep.url)))?
            .to_string();
        let mut c = Client {
            agent: agent(&verifier, ep.timeout),
            verifier,
            url: ep.url.clone(),
            host,
            cookie: Mutex::new(None),
            content: ServiceContent {
                root_folder: Moref::new("Folder", ""),
                property_collector: Moref::new("PropertyCollector", ""),
                search_index: Moref::new("SearchIndex", ""),
                session_manager: Moref::new("SessionManager", ""),
                ovf_manager: Moref::new("OvfManager", ""),
                about: String::new(),
            },
        };
        let si = Moref::new(SERVICE_INSTANCE, SERVICE_INSTANCE);
        let r = c.call("RetrieveServiceContent", &si, "")?;
        let content = answers::service_content(&r);
        c.content = content.ok_or_else(|| VsphereError::Protocol {
            method: "RetrieveServiceContent".into(),
            why: "the service content lacks the root folder, property collector, search \
                  index, session manager or OVF manager (is this a vCenter or ESXi SDK URL?)"
                .into(),
        })?;
        Ok(c)
    }

    /// Logs in; the password is used for this one request.
    pub fn login(&self, user: &str, password: &Zeroizing<String>) -> Result<(), VsphereError> {
        let args = Zeroizing::new(format!(
            "{}<password>{}</password>",
            text("userName", user),
            Zeroizing::new(escape(password)).as_str()
        ));
        let sm = self.content.session_manager.clone();
        self.call("Login", &sm, &args)?;
        Ok(())
    }

    /// Ends the session.
    pub fn logout(&self) -> Result<(), VsphereError> {
        let sm = self.content.session_manager.clone();
        self.call("Logout", &sm, "").map(|_| ())
    }

    fn soap_action(&self) -> &'static str {
        "urn:vim25/6.7"
    }

    /// One SOAP call; faults become [`VsphereError::Fault`].
    pub fn call(&self, method: &str, this: &Moref, args: &str) -> Result<Response, VsphereError> {
        let body = Zeroizing::new(envelope(method, this, args));
        if method != "Login" {
            tracing::trace!(method, request = body.as_str(), "vim25 call");
        }
        let mut req = self
            .agent
            .post(&self.url)
            .set("Content-Type", "text/xml; charset=utf-8")
            .set("SOAPAction", self.soap_action());
        if let Some(c) = &*self.cookie.lock().unwrap_or_else(|p| p.into_inner()) {
            req = req.set("Cookie", c);
        }
        let resp = match req.send_string(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                return Err(match Response::parse(text.clone()) {
                    Err(fault) if !fault.message.starts_with("the answer is not") => {
                        VsphereError::Fault {
                            method: method.into(),
                            fault,
                        }
                    }
                    _ => VsphereError::Http {
                        method: method.into(),
                        url: self.url.clone(),
                        status,
                        why: text.chars().take(200).collect(),
                    },
                });
            }
            Err(ureq::Error::Transport(t)) => return Err(self.transport(method, t)),
        };
        if let Some(set) = resp.header("set-cookie")
            && let Some(pair) = set.split(';').next()
        {
            *self.cookie.lock().unwrap_or_else(|p| p.into_inner()) = Some(pair.trim().to_string());
        }
        let text = resp.into_string().map_err(|e| VsphereError::Connect {
            url: self.url.clone(),
            why: format!("the answer to {method} broke off: {e}"),
        })?;
        Response::parse(text).map_err(|fault| VsphereError::Fault {
            method: method.into(),
            fault,
        })
    }

    /// A transport error, told apart as an untrusted certificate when it is one.
    fn transport(&self, method: &str, t: ureq::Transport) -> VsphereError {
        let why = t.to_string();
        let tls = std::error::Error::source(&t)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let looks_tls = why.contains("certificate")
            || why.contains("thumbprint")
            || tls.contains("certificate")
            || tls.contains("thumbprint");
        match self.verifier.seen() {
            Some(seen) if looks_tls => VsphereError::Untrusted {
                host: self.host.clone(),
                why: if tls.is_empty() { why } else { tls },
                thumbprint: tls::format_thumbprint(&seen.sha256),
                subject: seen.subject,
                issuer: seen.issuer,
            },
            _ => VsphereError::Connect {
                url: self.url.clone(),
                why: format!("{method}: {why}"),
            },
        }
    }

    /// `SearchIndex.FindByInventoryPath` (`/DC/vm/folder`).
    pub fn find_by_path(&self, path: &str) -> Result<Option<Moref>, VsphereError> {
        let si = self.content.search_index.clone();
        Ok(self
            .call("FindByInventoryPath", &si, &text("inventoryPath", path))?
            .moref())
    }

    /// `SearchIndex.FindChild`.
    pub fn find_child(&self, parent: &Moref, name: &str) -> Result<Option<Moref>, VsphereError> {
        let si = self.content.search_index.clone();
        let args = format!("{}{}", parent.xml("entity"), text("name", name));
        Ok(self.call("FindChild", &si, &args)?.moref())
    }

    /// Properties of one object; `f` reads the `propSet`'s `(name, val)` nodes.
    pub fn properties<R>(
        &self,
        obj: &Moref,
        paths: &[&str],
        f: impl FnOnce(&[(String, roxmltree::Node)]) -> R,
    ) -> Result<R, VsphereError> {
        let props: String = paths.iter().map(|p| text("pathSet", p)).collect();
        let args = format!(
            "<specSet><propSet><type>{}</type>{props}</propSet><objectSet>{}<skip>false</skip>\
             </objectSet></specSet>",
            escape(&obj.kind),
            obj.xml("obj")
        );
        let pc = self.content.property_collector.clone();
        let r = self.call("RetrieveProperties", &pc, &args)?;
        Ok(r.with_returns(|rv| f(&answers::prop_sets(rv))))
    }

    /// One property's text (None if unset).
    pub fn property_text(&self, obj: &Moref, path: &str) -> Result<Option<String>, VsphereError> {
        self.properties(obj, &[path], |p| {
            p.first().map(|(_, v)| v.text().unwrap_or("").to_string())
        })
    }

    /// One property that is a reference, or a list of them.
    pub fn property_morefs(&self, obj: &Moref, path: &str) -> Result<Vec<Moref>, VsphereError> {
        self.properties(obj, &[path], |p| {
            p.iter().flat_map(|(_, v)| answers::morefs_of(*v)).collect()
        })
    }

    /// `OvfManager.CreateImportSpec`.
    pub fn create_import_spec(
        &self,
        descriptor: &str,
        pool: &Moref,
        datastore: &Moref,
        name: &str,
        networks: &[(String, Moref)],
    ) -> Result<ImportSpec, VsphereError> {
        let maps: String = networks
            .iter()
            .map(|(ovf, net)| {
                format!(
                    "<networkMapping>{}{}</networkMapping>",
                    text("name", ovf),
                    net.xml("network")
                )
            })
            .collect();
        // The parameters in the order of OvfCreateImportSpecParams.
        let args = format!(
            "{}{}{}<cisp>{}{}{}{maps}</cisp>",
            text("ovfDescriptor", descriptor),
            pool.xml("resourcePool"),
            datastore.xml("datastore"),
            text("locale", ""),
            text("deploymentOption", ""),
            text("entityName", name),
        );
        let method = "CreateImportSpec";
        let r = self.call(method, &self.content.ovf_manager.clone(), &args)?;
        answers::import_spec(&r).map_err(|why| VsphereError::Protocol {
            method: method.into(),
            why,
        })
    }

    /// `ResourcePool.ImportVApp`: registers the VM and returns its lease.
    pub fn import_vapp(
        &self,
        pool: &Moref,
        spec: &ImportSpec,
        spec_xml: &str,
        folder: &Moref,
    ) -> Result<Moref, VsphereError> {
        let args = format!("{}{}", spec.argument(spec_xml), folder.xml("folder"));
        self.call("ImportVApp", pool, &args)?
            .moref()
            .ok_or_else(|| VsphereError::Protocol {
                method: "ImportVApp".into(),
                why: "no lease returned".into(),
            })
    }

    /// Waits for a lease to be ready; returns the VM and the upload URLs.
    pub fn lease_ready(&self, lease: &Moref) -> Result<(Moref, Vec<DeviceUrl>), VsphereError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            let state = self.property_text(lease, "state")?.unwrap_or_default();
            match state.as_str() {
                "ready" => break,
                "error" => {
                    let why = self
                        .properties(lease, &["error"], |p| {
                            p.first().and_then(|(_, v)| answers::localized_message(*v))
                        })?
                        .unwrap_or_else(|| "no reason given".into());
                    return Err(VsphereError::Fault {
                        method: "ImportVApp".into(),
                        fault: Fault {
                            kind: None,
                            message: why,
                        },
                    });
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(VsphereError::Protocol {
                        method: "HttpNfcLease".into(),
                        why: format!("the lease is still {state:?} after 10 minutes"),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let info = self.properties(lease, &["info"], |p| {
            p.first().and_then(|(_, v)| answers::lease_info(*v))
        })?;
        info.ok_or_else(|| VsphereError::Protocol {
            method: "HttpNfcLease".into(),
            why: "the ready lease has no info.entity".into(),
        })
    }

    /// `HttpNfcLeaseProgress` (0..=100).
    pub fn lease_progress(&self, lease: &Moref, percent: u32) -> Result<(), VsphereError> {
        self.call(
            "HttpNfcLeaseProgress",
            lease,
            &text("percent", &percent.min(100).to_string()),
        )
        .map(|_| ())
    }

    /// Ends a lease's uploads: vCenter registers the VM.
    pub fn lease_complete(&self, lease: &Moref) -> Result<(), VsphereError> {
        self.call("HttpNfcLeaseComplete", lease, "").map(|_| ())
    }

    /// Abandons a lease: vCenter removes what it created for it.
    pub fn lease_abort(&self, lease: &Moref) -> Result<(), VsphereError> {
        self.call("HttpNfcLeaseAbort", lease, "").map(|_| ())
    }

    /// Runs a task method and waits for it to end.
    pub fn task(&self, method: &str, this: &Moref, args: &str) -> Result<(), VsphereError> {
        let task =
            self.call(method, this, args)?
                .moref()
                .ok_or_else(|| VsphereError::Protocol {
                    method: method.into(),
                    why: "no task returned".into(),
                })?;
        loop {
            let state = self.property_text(&task, "info.state")?.unwrap_or_default();
            match state.as_str() {
                "success" => return Ok(()),
                "error" => {
                    let why = self
                        .properties(&task, &["info.error"], |p| {
                            p.first().and_then(|(_, v)| answers::localized_message(*v))
                        })?
                        .unwrap_or_else(|| "no reason given".into());
                    return Err(VsphereError::Fault {
                        method: method.into(),
                        fault: Fault {
                            kind: None,
                            message: why,
                        },
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sets a VM's annotation (notes).
    pub fn set_annotation(&self, vm: &Moref, annotation: &str) -> Result<(), VsphereError> {
        let args = format!("<spec>{}</spec>", text("annotation", annotation));
        self.task("ReconfigVM_Task", vm, &args)
    }

    /// Removes a VM from the inventory and deletes its files.
    /// Destroys a VM and its files (waits for the task).
    pub fn destroy(&self, vm: &Moref) -> Result<(), VsphereError> {
        self.task("Destroy_Task", vm, "")
    }

    /// Powers a VM on (waits for the task).
    pub fn power_on(&self, vm: &Moref) -> Result<(), VsphereError> {
        self.task("PowerOnVM_Task", vm, "")
    }

    /// Uploads `body` to a lease URL: `POST` for a disk (streamOptimized VMDK), `PUT` for a
    /// file the lease creates. `len` sets Content-Length; without it the body is chunked.
    pub fn upload(
        &self,
        device: &DeviceUrl,
        create: bool,
        len: Option<u64>,
        body: impl Read,
    ) -> Result<(), VsphereError> {
        // "*" stands for the host the client talks to.
        let url = device.url.replacen("://*", &format!("://{}", self.host), 1);
        let on_vcenter = host_of(&url) == Some(self.host.as_str());
        let agent = if on_vcenter || url.starts_with("http://") {
            self.agent.clone()
        } else {
            let sha1 = device
                .ssl_thumbprint
                .as_deref()
                .and_then(|t| hex::decode(t.replace(':', "")).ok())
                .and_then(|b| <[u8; 20]>::try_from(b.as_slice()).ok());
            let pin = sha1.map(Pin::Sha1).unwrap_or(Pin::System);
            agent(
                &Verifier::new(pin).map_err(VsphereError::Config)?,
                Duration::from_secs(300),
            )
        };
        let method = if create { "PUT" } else { "POST" };
        let mut req = agent
            .request(method, &url)
            .set(
                "Content-Type",
                if device.disk {
                    "application/x-vnd.vmware-streamVmdk"
                } else {
                    "application/octet-stream"
                },
            )
            .set("Overwrite", "t");
        if let Some(n) = len {
            req = req.set("Content-Length", &n.to_string());
        }
        if let Some(c) = &*self.cookie.lock().unwrap_or_else(|p| p.into_inner()) {
            req = req.set("Cookie", c);
        }
        match req.send(body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(status, r)) => Err(VsphereError::Http {
                method: format!("the upload ({method})"),
                url,
                status,
                why: r
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            }),
            Err(ureq::Error::Transport(t)) => Err(VsphereError::Connect {
                url,
                why: format!("the upload broke off: {t}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("https://vc.example:8443/sdk"),
            Some("vc.example:8443")
        );
        assert_eq!(host_of("https://*/nfc/52a/disk-0.vmdk"), Some("*"));
        assert_eq!(host_of("vc.example"), None);
    }
}

//! One HTTPS exchange with the appliance: TCP, TLS with the certificate pinned by its
//! SHA-256 fingerprint (no certificate authority, no name check: the appliance's address on
//! the customer's network is not known when it is provisioned), one HTTP/1.1 request with
//! hyper on a single-threaded tokio runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use odt_store::crypto::tls::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::error::{CtlError, Kind};

/// Time to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time to wait for an answer (unlock runs a KDF and replays the journal; a seal reads
/// back what was not hashed on the way in).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest answer accepted (a bill of materials of a million files fits).
const MAX_ANSWER: usize = 1 << 30;

/// Accepts exactly the certificate whose SHA-256 is the pinned fingerprint, and remembers
/// what the server presented (for the mismatch message).
#[derive(Debug)]
struct Pin {
    expected: Fingerprint,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of_cert(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        if fp == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An answer: HTTP status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

/// A client for one appliance address and pinned fingerprint.
pub struct Https {
    addr: String,
    expected: Fingerprint,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    config: Arc<rustls::ClientConfig>,
    rt: tokio::runtime::Runtime,
}

impl Https {
    /// A client for `addr` (`host:port`) that accepts only the certificate `fp`.
    pub fn new(addr: &str, fp: Fingerprint) -> Result<Https, CtlError> {
        let provider = odt_store::crypto::tls::crypto_provider();
        let seen = Arc::new(Mutex::new(None));
        let pin = Pin {
            expected: fp,
            seen: seen.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CtlError::new(Kind::Failed, format!("TLS set-up failed: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pin))
            .with_no_client_auth();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CtlError::new(Kind::Failed, format!("cannot start a runtime: {e}")))?;
        Ok(Https {
            addr: addr.to_string(),
            expected: fp,
            seen,
            config: Arc::new(config),
            rt,
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The certificate the appliance presented in the last handshake, if any got that far.
    pub fn presented(&self) -> Option<Fingerprint> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one request; `token` goes in `Authorization: Bearer`.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<Answer, CtlError> {
        self.rt.block_on(self.exchange(method, path, body, token))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<Answer, CtlError> {
        let addr = &self.addr;
        let sock = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(CtlError::new(
                    Kind::Unreachable,
                    format!(
                        "cannot reach the appliance's control API at {addr} ({e}); is \
                         `odt-appliance serve` running there with --control {addr}, and is the \
                         port open?"
                    ),
                ));
            }
            Err(_) => {
                return Err(CtlError::new(
                    Kind::Unreachable,
                    format!("no answer from {addr} within {CONNECT_TIMEOUT:?} (connecting)"),
                ));
            }
        };
        let _ = sock.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name =
            ServerName::try_from(odt_store::crypto::tls::CERT_NAME).expect("a valid DNS name");
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, sock)).await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(self.handshake_failed(e)),
            Err(_) => {
                return Err(CtlError::new(
                    Kind::Busy,
                    format!(
                        "{addr} accepted the connection but did not complete the TLS handshake \
                         within {HANDSHAKE_TIMEOUT:?}: it is overloaded or is not an ODT appliance"
                    ),
                ));
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| CtlError::new(Kind::Protocol, format!("HTTP with {addr} failed: {e}")))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.as_str())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CtlError::new(Kind::Failed, format!("cannot build the request: {e}")))?;
        let resp = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(CtlError::new(
                    Kind::Protocol,
                    format!("{addr} closed the connection without answering ({e})"),
                ));
            }
            Err(_) => {
                return Err(CtlError::new(
                    Kind::Unreachable,
                    format!("no answer from {addr} within {ANSWER_TIMEOUT:?}"),
                ));
            }
        };
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                CtlError::new(
                    Kind::Protocol,
                    format!("reading the answer of {addr} failed: {e}"),
                )
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }

    fn handshake_failed(&self, e: std::io::Error) -> CtlError {
        let addr = &self.addr;
        let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen {
            Some(fp) if fp != self.expected => CtlError::new(
                Kind::FingerprintMismatch,
                format!(
                    "{addr} presented the certificate {fp}, not the pinned {}: this is not the \
                     appliance of the unlock sheet (or someone is in between); nothing was sent. \
                     Check the address and the fingerprint on the sheet",
                    self.expected
                ),
            ),
            _ if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
            {
                CtlError::new(
                    Kind::Busy,
                    format!(
                        "{addr} closed the connection during the TLS handshake ({e}): the \
                         appliance may have too many connections open; try again in a few \
                         seconds"
                    ),
                )
            }
            _ => CtlError::new(
                Kind::Protocol,
                format!(
                    "the TLS handshake with {addr} failed ({e}): is it an ODT appliance's control port?"
                ),
            ),
        }
    }
}

//! The node's link to the gateway: one mTLS channel, and person tokens minted with the organization's
//! signing key for each call.
//!
//! Tokens are reused within their lifetime (the gateway caches verified tokens, so reuse saves both
//! sides an ECDSA operation) and replaced a minute before they expire.
//!
//! Every failed call to the gateway goes through [`GatewayLink::relay`] (what the node answers its
//! people) or [`GatewayLink::describe`] (what it logs), which tell a gateway that could not be reached
//! from one that answered, and name the gateway's address and the cause.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_trust::clock::SharedClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::pki::{self, CertsDir};
use haven_trust::token::{MAX_LIFETIME_SECS, OrgSigner};
use haven_trust::untrusted::shown;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::failure;

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("gateway address `{0}` is not a valid https URL (for example https://gateway.example.org:7443)")]
    BadUrl(String),
    /// The gateway address is not https: person tokens and survivor data would cross in clear text.
    #[error(
        "gateway address `{0}` must use https://: the node sends person tokens and survivor data to the gateway, so it never connects without TLS"
    )]
    NotHttps(String),
    /// An identity file does not fit its place (the key is not its certificate's, the certificate names
    /// another party or is of the wrong kind).
    #[error(transparent)]
    Identity(#[from] haven_trust::pki::PkiError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("signing key: {0}")]
    Signer(String),
}

/// Where the organization's files are.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// For example `https://gateway.example.org:7443`.
    pub gateway_url: String,
    /// The name the gateway's certificate must carry.
    pub gateway_name: String,
    pub org: OrgId,
    /// The network CA certificate.
    pub ca_cert: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
    /// The gateway's signing certificate, which signs audit checkpoints (the node witnesses them).
    pub gateway_signing_cert: PathBuf,
}

impl LinkConfig {
    /// The files of `org` in a certificate directory laid out like `haven-certs init` writes it.
    pub fn from_certs_dir(gateway_url: String, dir: &CertsDir, org: OrgId) -> Self {
        LinkConfig {
            gateway_url,
            gateway_name: "localhost".into(),
            ca_cert: dir.ca_cert(),
            tls_cert: dir.org_tls_cert(&org),
            tls_key: dir.org_tls_key(&org),
            signing_cert: dir.org_signing_cert(&org),
            signing_key: dir.org_signing_key(&org),
            gateway_signing_cert: dir.gateway_signing_cert(),
            org,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::Read { path: path.to_owned(), source })
}

fn first_der(path: &Path) -> Result<Vec<u8>, LinkError> {
    let certs = haven_trust::pki::load_certs(path).map_err(|e| LinkError::Tls(e.to_string()))?;
    Ok(certs.into_iter().next().map(|c| c.as_ref().to_vec()).unwrap_or_default())
}

/// Minted tokens by (person, role), with their expiry.
type TokenCache = HashMap<(String, Role), (String, i64)>;

/// What the node dials and trusts, to say what a failed call means. Its `url` is named in every
/// failure to reach the gateway.
#[derive(Debug)]
struct Dialing {
    url: String,
    name: String,
    ca_path: PathBuf,
    /// The network CA's subject, which names the network (`CN=Haven network CA 3f9a0c21, O=Haven`).
    ca_subject: String,
}

impl Dialing {
    /// What a handshake failure means, for the operator of this node, when this node refused the
    /// gateway's certificate (a refusal of this node's certificate by the gateway is said by
    /// [`failure::gateway_transport`]); `None` for any other failure.
    fn explain(&self, cause: &(dyn std::error::Error + 'static)) -> Option<String> {
        use rustls::CertificateError as C;
        let tls = failure::tls_error(cause)?;
        let (url, ca) = (&self.url, self.ca_path.display());
        let what = match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
                "the gateway at {url} presented a certificate that the network CA in {ca} ({}) did not issue: either {url} is another network's gateway, or {ca} is another network's CA; check --gateway, and the ca.pem the operator sent (`haven-certs install` checks it against this organization's certificates)",
                self.ca_subject
            ),
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
                "the gateway at {url} presented a certificate that does not carry the name `{}` (--gateway-name): give the name the gateway's certificate was issued for, or have the operator add it (`haven-certs renew --out CA_DIR --gateway --gateway-name {}`)",
                self.name, self.name
            ),
            rustls::Error::InvalidCertificate(
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            ) => format!(
                "the gateway at {url} presented a certificate outside its validity period: the operator must renew it (`haven-certs renew --gateway`), or this machine's clock is wrong"
            ),
            rustls::Error::InvalidCertificate(C::Revoked) => {
                format!(
                    "the gateway at {url} presented a revoked certificate: the operator must install its renewed one"
                )
            }
            _ => return None,
        };
        Some(format!("{what} (TLS: {tls})"))
    }
}

/// The node's authenticated link to the gateway. Cheap to clone.
#[derive(Clone)]
pub struct GatewayLink {
    channel: Channel,
    signer: OrgSigner,
    clock: SharedClock,
    tokens: Arc<Mutex<TokenCache>>,
    dialing: Arc<Dialing>,
}

impl GatewayLink {
    /// Prepares the channel; it connects lazily and reconnects on its own.
    pub fn new(config: &LinkConfig, clock: SharedClock) -> Result<Self, LinkError> {
        haven_trust::pki::install_crypto_provider();
        let url: http::Uri = config.gateway_url.parse().map_err(|_| LinkError::BadUrl(shown(&config.gateway_url)))?;
        match url.scheme_str() {
            Some("https") if url.host().is_some() => {}
            Some("https") | None => return Err(LinkError::BadUrl(shown(&config.gateway_url))),
            Some(_) => return Err(LinkError::NotHttps(shown(&config.gateway_url))),
        }
        let uri = config.org.uri();
        pki::check_identity(&config.tls_cert, &config.tls_key, &uri, pki::CertPurpose::TlsClient)?;
        pki::check_identity(&config.signing_cert, &config.signing_key, &uri, pki::CertPurpose::Signing)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&config.ca_cert)?))
            .identity(Identity::from_pem(read(&config.tls_cert)?, read(&config.tls_key)?))
            .domain_name(config.gateway_name.clone());
        let endpoint = Endpoint::from_shared(config.gateway_url.clone())
            .map_err(|_| LinkError::BadUrl(shown(&config.gateway_url)))?
            .tls_config(tls)
            .map_err(|e| LinkError::Tls(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let ca_subject = pki::CertInfo::parse(&first_der(&config.ca_cert)?)
            .map(|info| info.subject)
            .map_err(|e| LinkError::Tls(format!("{}: {e}", config.ca_cert.display())))?;
        let dialing = Arc::new(Dialing {
            url: config.gateway_url.clone(),
            name: config.gateway_name.clone(),
            ca_path: config.ca_cert.clone(),
            ca_subject,
        });
        let signer = OrgSigner::new(
            config.org.clone(),
            &read(&config.signing_key)?,
            &first_der(&config.signing_cert)?,
            &first_der(&config.tls_cert)?,
        )
        .map_err(|e| LinkError::Signer(e.to_string()))?;
        Ok(GatewayLink { channel, signer, clock, tokens: Arc::new(Mutex::new(HashMap::new())), dialing })
    }

    /// The gateway's address, as configured.
    pub fn url(&self) -> &str {
        &self.dialing.url
    }

    /// What a failed call means when the TLS handshake with the gateway is what failed (the gateway's
    /// certificate is from another CA, lacks the name dialed, has expired, or the gateway refused this
    /// node's certificate), in words the operator can act on; `None` for any other failure.
    pub fn tls_failure(&self, status: &tonic::Status) -> Option<String> {
        let cause = failure::transport_failure(status)?;
        self.dialing
            .explain(cause)
            .or_else(|| failure::received_alert(cause).map(|_| failure::gateway_transport(cause)))
    }

    /// A failed gateway call as the node passes it on to the person who asked: a call that never got
    /// an answer becomes UNAVAILABLE naming the gateway's address and the cause (a refused TLS
    /// handshake in words), an UNAVAILABLE the gateway sent says that the gateway answered it, with
    /// the gateway's reason, and any other answer passes through unchanged.
    pub fn relay(&self, s: tonic::Status) -> tonic::Status {
        if failure::transport_failure(&s).is_some() || s.code() == tonic::Code::Unavailable {
            tonic::Status::unavailable(self.describe(&s))
        } else {
            s
        }
    }

    /// A failed gateway call on one line, for the log, a pending send and the witness: `cannot reach
    /// the gateway at URL: <cause>`, or `the gateway at URL answered <CODE>: <its reason>`. A gateway
    /// certificate this node refused is said as [`GatewayLink::tls_failure`] says it (`the gateway at
    /// URL presented a certificate that ...`).
    pub fn describe(&self, s: &tonic::Status) -> String {
        let url = &self.dialing.url;
        match failure::transport_failure(s) {
            Some(cause) => match self.dialing.explain(cause) {
                Some(words) => words,
                None => format!("cannot reach the gateway at {url}: {}", failure::gateway_transport(cause)),
            },
            None => format!("the gateway at {url} answered {}: {}", failure::code_name(s.code()), s.message()),
        }
    }

    /// The clock tokens are minted by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A channel to the gateway.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The organization's signer (for consent receipts).
    pub fn signer(&self) -> &OrgSigner {
        &self.signer
    }

    /// A bearer token for `person` acting as `role`, reused while it has more than a minute left.
    pub fn token(&self, person: &PersonId, role: Role) -> Result<String, LinkError> {
        let now = self.clock.now_secs();
        let key = (person.to_string(), role);
        if let Ok(tokens) = self.tokens.lock()
            && let Some((tok, exp)) = tokens.get(&key)
            && *exp - 60 > now
        {
            return Ok(tok.clone());
        }
        let tok =
            self.signer.mint(person, role, now, MAX_LIFETIME_SECS).map_err(|e| LinkError::Signer(e.to_string()))?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, (tok.clone(), now + MAX_LIFETIME_SECS));
        }
        Ok(tok)
    }

    /// Wraps a message in a request carrying the person's token.
    pub fn request<T>(&self, person: &PersonId, role: Role, msg: T) -> Result<tonic::Request<T>, tonic::Status> {
        let token = self.token(person, role).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut req = tonic::Request::new(msg);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("token is not a valid header value"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

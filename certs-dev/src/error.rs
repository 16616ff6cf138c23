//! Owns [`CertsError`], every way a PKI operation can fail. Each message names the file concerned and
//! says what the operator can do about it.

use std::path::PathBuf;

/// Why a development PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file or directory could not be read, written, created or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create directory`, ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The organization registry could not be read.
    #[error("cannot read the organization registry {}:\n{problems}\nfix the file and run again", path.display())]
    Registry {
        /// The `orgs.toml` that was read.
        path: PathBuf,
        /// Every problem found, one per line, each as `file:line:col: message`.
        problems: String,
    },

    /// There is no network CA in the output directory.
    #[error("no network CA at {}: run `haven-certs init --out {}` first", path.display(), dir.display())]
    NoCa {
        /// The missing `ca.pem`.
        path: PathBuf,
        /// The output directory.
        dir: PathBuf,
    },

    /// Only one half of the network CA (certificate or key) is present.
    #[error(
        "{} exists but {} does not: restore the missing file, or run `haven-certs init --force` to make a \
         new CA (every certificate is then reissued and must be redistributed)",
        present.display(),
        missing.display()
    )]
    CaIncomplete {
        /// The half that exists.
        present: PathBuf,
        /// The half that is missing.
        missing: PathBuf,
    },

    /// The CA key does not belong to the CA certificate.
    #[error(
        "the key {} does not match the certificate {}: restore the right key, or run `haven-certs init --force`",
        key.display(),
        cert.display()
    )]
    CaKeyMismatch {
        /// The CA key file.
        key: PathBuf,
        /// The CA certificate file.
        cert: PathBuf,
    },

    /// A file that should hold a PEM certificate, key, CSR or CRL does not.
    #[error("{} does not hold a usable {what}: {detail}; replace the file (or reissue it)", path.display())]
    BadPem {
        /// The file read.
        path: PathBuf,
        /// What it should hold (`certificate`, `private key`, ...).
        what: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// A certificate, key or request uses a key type other than ECDSA P-256.
    #[error("{} uses {found}, but the network accepts only ECDSA P-256 keys: make a new key with `haven-certs csr`", path.display())]
    NotP256 {
        /// The file read.
        path: PathBuf,
        /// The key type found.
        found: String,
    },

    /// A certificate was not issued by this network CA.
    #[error("{} was not issued by the network CA in {}: only this CA's certificates can be revoked or renewed here", path.display(), ca.display())]
    NotIssuedByCa {
        /// The certificate file.
        path: PathBuf,
        /// The CA certificate it was checked against.
        ca: PathBuf,
    },

    /// A certificate signing request is malformed or its signature does not verify.
    #[error("the certificate request {} is not valid: {detail}; make a new one with `haven-certs csr`", path.display())]
    BadCsr {
        /// The CSR file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },

    /// A certificate request asks for something the network's profile for `--org` and `--kind` does
    /// not give: another party's name, other names, CA powers or other usages.
    #[error("refusing to sign {}: {detail}", path.display())]
    CsrRefused {
        /// The CSR file.
        path: PathBuf,
        /// What the request asked for, and what to do.
        detail: String,
    },

    /// A file given to `install` does not fit its place (a key that is not its certificate's, a
    /// certificate of another party, of the wrong kind or from another CA); nothing was installed.
    #[error("{what}: {detail}; nothing was installed")]
    InstallRefused {
        /// The options the file came from.
        what: &'static str,
        /// What was wrong, naming the file.
        detail: String,
    },

    /// A file exists where a new one would be written, and it must not be overwritten.
    #[error("refusing to overwrite {}: {hint}", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
        /// What to do instead.
        hint: &'static str,
    },

    /// The certificate to revoke or renew does not exist.
    #[error("no certificate at {}: {hint}", path.display())]
    NoCertificate {
        /// Where the certificate was expected.
        path: PathBuf,
        /// What to do instead.
        hint: &'static str,
    },

    /// The certificate was revoked already.
    #[error("the certificate {} (serial {serial}) is already revoked: run `haven-certs renew` to issue its replacement", path.display())]
    AlreadyRevoked {
        /// The certificate file.
        path: PathBuf,
        /// Its serial number in hex.
        serial: String,
    },

    /// A TOML file (`pins.toml`, `revoked.toml`) could not be read or written.
    #[error("{}: {detail}; fix or delete the file and run `haven-certs init` again", path.display())]
    Toml {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },

    /// A DNS name given for the gateway's TLS certificate cannot go in it.
    #[error("`{name}` cannot go in the certificate: {detail}")]
    BadGatewayName {
        /// The name given.
        name: String,
        /// Why not.
        detail: String,
    },

    /// `init` was given DNS names for a gateway TLS certificate that exists without them.
    #[error("the gateway's TLS certificate {} does not name {missing}; init never reissues it: run `haven-certs renew --out DIR --gateway --gateway-name NAME` for each missing name (names it already carries are kept)", path.display())]
    GatewayNamesMissing {
        /// The existing certificate.
        path: PathBuf,
        /// The names it lacks, comma-separated.
        missing: String,
    },

    /// The name given for a new network CA cannot be its common name.
    #[error("`{name}` cannot name the network CA: {detail}")]
    BadCaName {
        /// The name given (at most 64 characters of it).
        name: String,
        /// Why not.
        detail: String,
    },

    /// `init --ca-name` was given for a directory whose CA has another name.
    #[error("the network CA in {} is named `{existing}`, not `{asked}`; init never remakes the CA: leave out --ca-name, or run `haven-certs init --force` to start over with a new CA (every certificate is then reissued)", path.display())]
    CaNameDiffers {
        /// The existing `ca.pem`.
        path: PathBuf,
        /// Its common name.
        existing: String,
        /// The name given.
        asked: String,
    },

    /// rcgen refused to build a key, certificate, request or CRL.
    #[error("cannot build the {what}: {source}")]
    Build {
        /// What was being built.
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
}

impl CertsError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CertsError::Io { action, path, source }
    }

    pub(crate) fn build(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Self {
        let what = what.into();
        move |source| CertsError::Build { what, source }
    }
}

//! Owns how PKI material reaches the disk: secrets are created with mode 0600 from the first byte, every
//! file is written to a temporary name and renamed into place (a crash never leaves half a key), and an
//! existing file is replaced only when the caller says so.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};

use crate::error::CertsError;

/// What to do when the destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Fail with [`CertsError::AlreadyExists`] and this hint.
    Refuse(&'static str),
    /// Replace it.
    Replace,
}

/// Whether a file is secret (private keys, the pseudonym secret) or public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// Mode 0600.
    Secret,
    /// Mode 0644.
    Public,
}

/// The hint given when `init` would overwrite a file.
pub(crate) const HINT_USE_RENEW: &str =
    "it was issued before; use `haven-certs renew` to replace a certificate, or `init --force` to start over";

/// Writes `contents` to `path`, creating parent directories.
pub(crate) fn write(path: &Path, contents: &[u8], secrecy: Secrecy, existing: Existing) -> Result<(), CertsError> {
    if let Existing::Refuse(hint) = existing
        && path.exists()
    {
        return Err(CertsError::AlreadyExists { path: path.to_owned(), hint });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(CertsError::io("create directory", parent))?;
    }
    let tmp = temporary_name(path);
    let mode = match secrecy {
        Secrecy::Secret => 0o600,
        Secrecy::Public => 0o644,
    };
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(CertsError::Io { action: "write", path: path.to_owned(), source });
    }
    Ok(())
}

fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nonce: u64 = rand::random();
    path.with_file_name(format!(".{name}.{nonce:016x}.tmp"))
}

/// Reads a whole file as bytes.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CertsError> {
    fs::read(path).map_err(CertsError::io("read", path))
}

/// Reads a whole file as UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(CertsError::io("read", path))
}

/// Reads the first certificate of a PEM file.
pub(crate) fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CertsError> {
    let bytes = read(path)?;
    CertificateDer::from_pem_slice(&bytes).map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "PEM certificate",
        detail: e.to_string(),
    })
}

/// Reads a PKCS#8 PEM private key.
pub(crate) fn read_pkcs8_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, CertsError> {
    let bytes = read(path)?;
    PrivatePkcs8KeyDer::from_pem_slice(&bytes).map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "PKCS#8 PEM private key",
        detail: e.to_string(),
    })
}

/// Reads a PEM certificate signing request.
pub(crate) fn read_csr(path: &Path) -> Result<CertificateSigningRequestDer<'static>, CertsError> {
    let bytes = read(path)?;
    CertificateSigningRequestDer::from_pem_slice(&bytes).map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "PEM certificate request",
        detail: e.to_string(),
    })
}

/// Removes a file if it exists.
pub(crate) fn remove_file(path: &Path) -> Result<(), CertsError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CertsError::Io { action: "remove", path: path.to_owned(), source: e })
        }
        _ => Ok(()),
    }
}

/// Removes a directory tree if it exists.
pub(crate) fn remove_dir(path: &Path) -> Result<(), CertsError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CertsError::Io { action: "remove", path: path.to_owned(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secrets_are_0600_even_when_replacing_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        write(&path, b"one", Secrecy::Secret, Existing::Refuse("x")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let err = write(&path, b"two", Secrecy::Secret, Existing::Refuse("use renew")).unwrap_err();
        assert!(err.to_string().contains("use renew"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"two", Secrecy::Secret, Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}

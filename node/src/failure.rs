//! Saying why a call failed: whether the other end was reached at all (a status tonic made on this side
//! from a transport failure carries that failure as its source; a status the other end sent never
//! does), the failure's causes on one line, and a refused TLS handshake in words an operator can act on.

use std::error::Error;

use tonic::{Code, Status};

/// The canonical gRPC name of a status code, as `grpcurl` and the gRPC docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and every cause under it, on one line (a cause its parent already quotes is left out, and
/// so is tonic's `transport error`, which only says that a cause follows).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let e = match e.downcast_ref::<tonic::transport::Error>().and_then(|t| t.source()) {
        Some(cause) => cause,
        None => e,
    };
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

/// The transport failure behind a status, when tonic made the status on this side because the call
/// never got an answer (connection refused, a TLS handshake refused, a timeout, a connection lost);
/// `None` for a status the other end sent.
pub fn transport_failure(s: &Status) -> Option<&(dyn Error + 'static)> {
    s.source()
}

/// The TLS error among an error's causes. rustls's errors reach us inside `std::io::Error`s, whose
/// `source()` skips the error they wrap, so each I/O error is opened too.
pub fn tls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cur = c.source();
    }
    None
}

/// The alerts a TLS server sends when it refuses the client's certificate.
const CERTIFICATE_REFUSED: [rustls::AlertDescription; 8] = [
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::CertificateRequired,
    rustls::AlertDescription::AccessDenied,
];

/// How rustls words an alert it received (`rustls::Error::AlertReceived`).
const ALERT_RECEIVED: &str = "received fatal alert: ";

/// The name of the TLS alert the other end sent, if one ended the connection. A connection lost inside
/// HTTP/2 keeps only the text of the I/O error that carried rustls's error, so the text is read too.
pub fn received_alert(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(rustls::Error::AlertReceived(alert)) = tls_error(e) {
        return Some(format!("{alert:?}"));
    }
    let text = chain(e);
    let after = &text[text.find(ALERT_RECEIVED)? + ALERT_RECEIVED.len()..];
    let name: String = after.chars().take_while(char::is_ascii_alphanumeric).collect();
    (!name.is_empty()).then_some(name)
}

/// A node's failure to reach the gateway, in words: a refused TLS handshake says which side refused
/// which certificate and what to check; anything else is the chain of causes (`tcp connect error:
/// Connection refused (os error 111)`).
pub fn gateway_transport(e: &(dyn Error + 'static)) -> String {
    if let Some(alert) = received_alert(e) {
        if CERTIFICATE_REFUSED.iter().any(|a| format!("{a:?}") == alert) {
            return format!(
                "the gateway refused this node's certificate during the TLS handshake (TLS alert {alert}: the \
                 certificate is revoked, expired, not issued by the network CA, or not a TLS client \
                 certificate): check the gateway's log and this organization's certificate"
            );
        }
        return format!("the gateway ended the TLS handshake with alert {alert}: check the gateway's log");
    }
    match tls_error(e) {
        Some(tls @ rustls::Error::InvalidCertificate(_)) => format!(
            "this node refused the gateway's certificate during the TLS handshake ({tls}): check that the \
             node's ca.pem is the network CA's certificate and that --gateway-name is a name the gateway's \
             certificate carries"
        ),
        Some(tls) => format!("TLS handshake with the gateway failed: {tls}"),
        None => chain(e),
    }
}

/// Whether a failed call to the gateway is worth trying again (the gateway could not be reached, did
/// not answer, or was short of a resource such as its database disk), as opposed to an answer about
/// what was asked.
pub fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_inside_the_io_error_that_carries_it() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
        );
        let words = gateway_transport(&io);
        assert!(words.contains("the gateway refused this node's certificate during the TLS handshake"), "{words}");
        assert!(words.contains("CertificateRevoked"), "{words}");
    }

    #[test]
    fn a_refused_certificate_is_found_in_the_text_http2_kept_of_it() {
        // HTTP/2 keeps only the kind and the text of the I/O error that carried rustls's error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: CertificateExpired");
        let words = gateway_transport(&io);
        assert!(words.contains("the gateway refused this node's certificate during the TLS handshake"), "{words}");
        assert!(words.contains("TLS alert CertificateExpired"), "{words}");
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: ProtocolVersion");
        assert!(
            gateway_transport(&other).starts_with("the gateway ended the TLS handshake with alert ProtocolVersion")
        );
    }

    #[test]
    fn a_plain_failure_keeps_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Connect(#[source] std::io::Error);
        let e = Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(gateway_transport(&e), "tcp connect error: connection refused");
    }
}

//! How long a certificate is valid, and its serial.

use rcgen::SerialNumber;
use time::{Duration, OffsetDateTime};

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl Validity {
    /// A minute of slack for clocks that run slightly behind.
    const BACKDATE: Duration = Duration::minutes(1);

    /// Ten years from a minute ago.
    pub(crate) fn ca_from_now() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Self::BACKDATE, not_after: now + Duration::days(3652) }
    }

    /// One year from a minute ago.
    pub(crate) fn leaf_from_now() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Self::BACKDATE, not_after: now + Duration::days(365) }
    }

    /// A window that closed yesterday.
    pub(crate) fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// A fresh random serial: 16 bytes, positive, never starting with a zero byte, so its hex is canonical.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

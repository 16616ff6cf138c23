//! The gateway's configuration, parsed once from flags, `HAVEN_*` environment variables and an
//! optional TOML file (in that order of precedence), then handed to [`crate::app::Gateway::open`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Settings for `haven-gateway serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen for nodes (mTLS).
    pub listen: SocketAddr,
    /// The certificate directory: CA, CRL, the gateway's own keys, pins.
    pub certs: PathBuf,
    /// The policy bundle directory.
    pub policies: PathBuf,
    /// A SQLite file path or a `postgres://` URL.
    pub database: String,
    /// The largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// How long a unary call may take.
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval and timeout.
    pub keepalive: Duration,
    /// On SQLite, how long no write may begin before the write-ahead log is truncated, taking the
    /// payloads deleted since with it (see `store::Store::open_with`).
    pub wal_idle: Duration,
    /// How often each delivery stream sends a heartbeat and renews its lease. The lease lives twice
    /// as long, so one late renewal does not lose it, and a replica that dies frees its streams'
    /// organizations for other replicas that long after its last renewal.
    pub heartbeat: Duration,
}

impl Config {
    /// A configuration with defaults for everything but the paths.
    pub fn new(certs: PathBuf, policies: PathBuf, database: String) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            certs,
            policies,
            database,
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(20),
            wal_idle: crate::store::WAL_IDLE,
            heartbeat: Duration::from_secs(15),
        }
    }
}

/// The TOML form of the configuration; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub certs: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub database: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub keepalive_secs: Option<u64>,
    pub heartbeat_secs: Option<u64>,
}

impl FileConfig {
    /// Reads a config file, naming the file and the place of any problem.
    pub fn load(path: &Path) -> Result<Self, haven_trust::source::Located> {
        haven_trust::source::SourceFile::read(path)?.parse()
    }
}

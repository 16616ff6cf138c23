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

/// A setting outside what the gateway can run with; every problem found, one per line, each naming the
/// setting and how to set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// A numeric setting, the range the gateway can run with, and how an operator sets it.
struct Bounded {
    /// The `--config` key.
    key: &'static str,
    /// The flag and the variable, where the setting has them.
    flag: Option<(&'static str, &'static str)>,
    value: u64,
    min: u64,
    max: u64,
    default: u64,
    unit: &'static str,
}

impl Bounded {
    fn problem(&self) -> Option<String> {
        if (self.min..=self.max).contains(&self.value) {
            return None;
        }
        let how = match self.flag {
            Some((flag, var)) => format!("{flag}, {var} or `{}` in --config", self.key),
            None => format!("`{}` in --config", self.key),
        };
        Some(format!(
            "{} = {} is out of range: it must be from {} to {} {} (default {}); set it with {how}",
            self.key, self.value, self.min, self.max, self.unit, self.default
        ))
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

impl Config {
    /// Checks every setting before anything is opened: each number against the range the gateway can
    /// run with (a zero `max_message_bytes` would refuse every message, a zero timeout every call), and
    /// that the certificate and policy folders exist. Every problem is listed. A new numeric setting
    /// gets one more entry in the list below.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let defaults = Config::new(PathBuf::new(), PathBuf::new(), String::new());
        let numbers = [
            // Below 64 KiB a referral with its free-text fields, or a page of an audit query, no longer
            // fits; above 256 MiB one message could hold the gateway's memory hostage.
            Bounded {
                key: "max_message_bytes",
                flag: Some(("--max-message-bytes", "HAVEN_MAX_MESSAGE_BYTES")),
                value: u64::try_from(self.max_message_bytes).unwrap_or(u64::MAX),
                min: 64 * 1024,
                max: 256 * 1024 * 1024,
                default: defaults.max_message_bytes as u64,
                unit: "bytes",
            },
            Bounded {
                key: "request_timeout_secs",
                flag: None,
                value: secs(self.request_timeout),
                min: 1,
                max: 3600,
                default: secs(defaults.request_timeout),
                unit: "seconds",
            },
            // Under 5 s a ping answered a little late on a slow link drops a healthy connection.
            Bounded {
                key: "keepalive_secs",
                flag: None,
                value: secs(self.keepalive),
                min: 5,
                max: 3600,
                default: secs(defaults.keepalive),
                unit: "seconds",
            },
            // A zero heartbeat renews no lease; past an hour a dead replica holds its streams' orgs
            // for two hours.
            Bounded {
                key: "heartbeat_secs",
                flag: None,
                value: secs(self.heartbeat),
                min: 1,
                max: 3600,
                default: secs(defaults.heartbeat),
                unit: "seconds",
            },
        ];
        let mut problems: Vec<String> = numbers.iter().filter_map(Bounded::problem).collect();
        for (flag, var, key, dir, holds) in [
            ("--certs", "HAVEN_CERTS", "certs", &self.certs, "ca.pem and gateway/"),
            (
                "--policies",
                "HAVEN_POLICIES",
                "policies",
                &self.policies,
                "the policy bundle (`haven-gateway policy init DIR` writes one)",
            ),
        ] {
            if !dir.is_dir() {
                let what = if dir.exists() { "is not a folder" } else { "does not exist" };
                problems.push(format!(
                    "{flag} {}: the folder {what}; give the folder that holds {holds} (with {flag}, {var} or `{key}` in --config)",
                    dir.display()
                ));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_setting_is_checked_against_its_range_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().to_owned(), dir.path().to_owned(), String::new());
        assert_eq!(config.validate(), Ok(()));
        config.max_message_bytes = usize::MAX;
        config.request_timeout = Duration::from_secs(86_400);
        config.keepalive = Duration::ZERO;
        config.heartbeat = Duration::ZERO;
        let problems = config.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[3]
                .starts_with("heartbeat_secs = 0 is out of range: it must be from 1 to 3600 seconds (default 15)")
        );
        assert!(
            problems[0].starts_with(&format!("max_message_bytes = {} is out of range", u64::MAX)),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[1],
            "request_timeout_secs = 86400 is out of range: it must be from 1 to 3600 seconds (default 30); set it with `request_timeout_secs` in --config"
        );
        assert!(
            problems[2]
                .starts_with("keepalive_secs = 0 is out of range: it must be from 5 to 3600 seconds (default 20)")
        );
        config = Config::new(dir.path().join("certs"), dir.path().join("policies"), String::new());
        let problems = config.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("--certs ") && problems[0].contains("certs: the folder does not exist"));
        assert!(problems[1].contains("HAVEN_POLICIES or `policies` in --config"), "{}", problems[1]);
    }
}

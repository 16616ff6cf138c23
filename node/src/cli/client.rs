//! Reaching your node as yourself: the connection to its API (plain http on loopback, TLS elsewhere)
//! and the `authorization: Bearer <node token>` every call carries.

use std::path::PathBuf;
use std::time::Duration;

use haven_proto::v1::node_client::NodeClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::error::CliError;
use crate::failure::chain;

/// How to reach your node, and how to print what it says. Every people-facing command takes these.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node's API address: http:// on loopback, https:// (with --ca) anywhere else.
    #[arg(long, env = "HAVEN_NODE", default_value = "http://127.0.0.1:7600", value_name = "URL", value_parser = node_url)]
    pub node: http::Uri,
    /// Your node token, from `haven-node users add`. Prefer the HAVEN_TOKEN variable: an argument is
    /// visible to other users of this machine in the process list.
    /// (Required; an `Option` only so that a command whose subcommand takes these arguments itself,
    /// `audit witness ack`, does not need them twice.)
    #[arg(long, env = "HAVEN_TOKEN", hide_env_values = true, required = true)]
    pub token: Option<String>,
    /// For an https:// node: the PEM certificate its API certificate chains to.
    #[arg(long, env = "HAVEN_NODE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print one JSON object per line instead of a table, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Whether `host` is this machine: `localhost`, or a loopback address (bracketed for IPv6).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn node_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") if uri.host().is_some() => Ok(uri),
        // A person's token crosses this connection: in clear text only on this machine.
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(uri),
        Some("http") => Err(format!(
            "`{s}` is plain http to another machine, which would send your token in clear text: use https:// with --ca (a node serves TLS beyond loopback)"
        )),
        _ => Err(format!("`{s}` must look like http://127.0.0.1:7600 or https://node.example.org:7600")),
    }
}

/// A signed-in connection to the node.
pub struct Session {
    channel: Channel,
    node: NodeClient<Channel>,
    bearer: MetadataValue<Ascii>,
}

impl Session {
    /// Connects to the node named by `args` (failing fast when nothing listens there).
    pub async fn open(args: &ClientArgs) -> Result<Session, CliError> {
        let token = args
            .token
            .as_deref()
            .ok_or_else(|| CliError::Usage("give your node token: --token or HAVEN_TOKEN".into()))?;
        let bearer = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| CliError::Usage("the token has characters a header cannot carry; copy it again".into()))?;
        let mut endpoint = Endpoint::from(args.node.clone()).connect_timeout(Duration::from_secs(10));
        if args.node.scheme_str() == Some("https") {
            let ca = args.ca.as_ref().ok_or_else(|| {
                CliError::Usage(format!("{} is https: give --ca with the certificate its API chains to", args.node))
            })?;
            let pem =
                std::fs::read(ca).map_err(|e| CliError::Usage(format!("cannot read --ca {}: {e}", ca.display())))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| CliError::Usage(format!("--ca {}: {}", ca.display(), chain(&e))))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::Unreachable { node: args.node.to_string(), detail: chain(&e) })?;
        Ok(Session { node: NodeClient::new(channel.clone()), channel, bearer })
    }

    /// A client of the node's API (cheap: clones share the connection).
    pub fn client(&self) -> NodeClient<Channel> {
        self.node.clone()
    }

    /// The connection to the node, for a client of its other services (Audit).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `msg` as a request signed in as the token's person.
    pub fn signed<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("authorization", self.bearer.clone());
        req
    }
}

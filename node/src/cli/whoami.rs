//! `haven-node whoami`: who you are signed in as, as the gateway sees it, which proves the whole path
//! (your token at the node, the node's certificate and signing key at the gateway).

use haven_proto::v1::WhoAmIRequest;
use serde::Serialize;

use super::client::{ClientArgs, Session};
use super::error::CliError;
use super::output::{self, Out};

/// The signed-in person.
#[derive(Debug, Serialize)]
pub struct WhoAmIRow {
    pub org_id: String,
    pub org_type: String,
    pub person: String,
    pub role: String,
    /// The policy bundle the gateway runs.
    pub bundle_version: String,
}

/// Runs `whoami`.
pub async fn run(client: &ClientArgs, out: Out<'_>) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let resp = s.client().who_am_i(s.signed(WhoAmIRequest {})).await?.into_inner();
    let c = resp.caller.unwrap_or_default();
    let row = WhoAmIRow {
        org_id: c.org_id,
        org_type: c.org_type,
        person: c.person,
        role: c.role,
        bundle_version: resp.bundle_version,
    };
    if client.json {
        return Ok(output::json_line(out, &row)?);
    }
    writeln!(
        out,
        "organization: {} ({})\nperson:       {}\nrole:         {}",
        row.org_id, row.org_type, row.person, row.role
    )?;
    Ok(())
}

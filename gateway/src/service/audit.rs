//! The `Audit` service: queries, exports, checkpoints, proofs and subject access reports.
//!
//! Who may call what is decided here, once per method (see [`crate::audit::query`] for the scopes).
//! Every query, export and report writes its own audit entry (`audit_queried`, `audit_exported`,
//! `subject_report`) and commits it before any entry is returned: auditors are audited too.
//! Checkpoints and consistency proofs are open to every authenticated organization, which is what
//! lets every node witness the log.

use haven_proto::v1::audit_server::Audit;
use haven_proto::v1::*;
use haven_trust::audit::{Action, AuditEntry, ENCODING_VERSION};
use haven_trust::export::{FORMAT, Header, Kind};
use haven_trust::ids::OrgId;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{caller, settle};
use crate::audit::query::{self, DEFAULT_PAGE, Filter, MAX_PAGE, Scope};
use crate::audit::{self, AuditLog};
use crate::error::Error;
use crate::state::Gateway;

/// Serves `haven.v1.Audit`.
pub struct AuditService {
    gateway: Gateway,
}

impl AuditService {
    pub fn new(gateway: Gateway) -> Self {
        AuditService { gateway }
    }

    fn log(&self) -> &AuditLog {
        &self.gateway.0.audit_log
    }

    fn now(&self) -> i64 {
        self.gateway.0.clock.now_micros()
    }

    /// Commits the entry that records a read, before the read is answered.
    async fn audited(&self, entry: AuditEntry) -> Result<(), Error> {
        self.log().record(vec![(entry, String::new())]).await?;
        Ok(())
    }

    /// The size a proof is about when the caller gave 0: the newest checkpoint's (signing one if
    /// there is none yet). It only sizes the proof, whose own read is settled before it is answered.
    async fn newest_size(&self) -> Result<u64, Status> {
        let store = self.gateway.store();
        let newest = settle(store, self.log().latest_checkpoint().await.map_err(Error::from)?).await?;
        Ok(match newest {
            Some(cp) => cp.tree_size,
            None => settle(store, self.log().covering_checkpoint().await.map_err(Error::from)?).await?.tree_size,
        })
    }
}

type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(&self, req: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        let caller = caller(&req)?;
        let scope = Scope::of(&caller)?;
        let r = req.into_inner();
        let filter = Filter::parse(r.filter.as_ref())?;
        let page = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Error::InvalidArgument(format!(
                    "page_size {n} is over the maximum of {MAX_PAGE}; page through with next_cursor"
                ))
                .into());
            }
            n => n,
        };
        let pool = self.gateway.0.store.pool();
        let size = audit::size(pool).await.map_err(Error::from)?;
        if r.cursor > size {
            return Err(Error::OutOfRange(format!(
                "cursor {} is beyond the end of the log ({size} entries); use 0 or a next_cursor the service returned",
                r.cursor
            ))
            .into());
        }
        let mut rows = query::select(pool, &scope, &filter, r.cursor, None, page + 1).await.map_err(Error::from)?;
        let more = rows.len() > page as usize;
        rows.truncate(page as usize);
        let next_cursor = if more { rows.last().map_or(0, |s| s.entry.seq + 1) } else { 0 };
        self.audited(filter.audit_entry(&caller, Action::AuditQueried, self.now())).await?;
        Ok(Response::new(AuditQueryResponse { entries: rows.iter().map(|s| s.to_proto()).collect(), next_cursor }))
    }

    type ExportStream = ExportStream;

    async fn export(&self, req: Request<AuditExportRequest>) -> Result<Response<ExportStream>, Status> {
        let caller = caller(&req)?;
        let scope = Scope::of(&caller)?;
        let filter = Filter::parse(req.get_ref().filter.as_ref())?;
        let covering = self.log().covering_checkpoint().await.map_err(Error::from)?;
        // The export streams entries up to this checkpoint: none of them may be a commit a power
        // failure could still undo.
        let covering = settle(self.gateway.store(), covering).await?;
        let mut filter_pairs: std::collections::BTreeMap<String, String> =
            filter.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Scope::Org(org) = &scope {
            filter_pairs.insert("scope_org".into(), org.to_string());
        }
        let header = Header {
            format: FORMAT.into(),
            encoding_version: ENCODING_VERSION,
            kind: if scope == Scope::All && filter.is_empty() { Kind::Full } else { Kind::Filtered },
            tree_size: covering.tree_size,
            exported_at_micros: self.now(),
            exported_by_org: caller.org.to_string(),
            exported_by_person: caller.person.to_string(),
            exported_by_role: caller.role.to_string(),
            filter: filter_pairs,
        };
        self.audited(filter.audit_entry(&caller, Action::AuditExported, self.now())).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(audit::export::run(self.log().clone(), scope, filter, header, covering, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_checkpoint(&self, req: Request<GetCheckpointRequest>) -> Result<Response<SignedCheckpoint>, Status> {
        caller(&req)?;
        let store = self.gateway.store();
        let latest = settle(store, self.log().latest_checkpoint().await.map_err(Error::from)?).await?;
        let cp = match (req.get_ref().refresh, latest) {
            (false, Some(cp)) => cp,
            _ => settle(store, self.log().covering_checkpoint().await.map_err(Error::from)?).await?,
        };
        Ok(Response::new(haven_proto::v1::SignedCheckpoint::from(&cp)))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let caller = caller(&req)?;
        let scope = Scope::of(&caller)?;
        let r = req.into_inner();
        if let Scope::Org(org) = &scope {
            let visible = query::select(
                self.gateway.0.store.pool(),
                &scope,
                &Filter::default(),
                r.seq,
                Some(r.seq.saturating_add(1)),
                1,
            )
            .await
            .map_err(Error::from)?;
            if visible.is_empty() {
                return Err(Error::NotFound(format!(
                    "no entry with seq {} in which organization `{org}` is the actor or the counterparty",
                    r.seq
                ))
                .into());
            }
        }
        let tree_size = if r.tree_size == 0 { self.newest_size().await? } else { r.tree_size };
        let read = self.log().inclusion_proof(r.seq, tree_size).await.map_err(Error::from)?;
        let (proof, leaf) = settle(self.gateway.store(), read).await?;
        Ok(Response::new(InclusionProof {
            seq: r.seq,
            tree_size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            leaf_hash: leaf.to_vec(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        caller(&req)?;
        let r = req.into_inner();
        let second = if r.second_size == 0 { self.newest_size().await? } else { r.second_size };
        let read = self.log().consistency_proof(r.first_size, second).await.map_err(Error::from)?;
        let proof = settle(self.gateway.store(), read).await?;
        Ok(Response::new(ConsistencyProof {
            first_size: r.first_size,
            second_size: second,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn subject_access_report(
        &self,
        req: Request<SubjectAccessRequest>,
    ) -> Result<Response<SubjectAccessResponse>, Status> {
        let caller = caller(&req)?;
        let scope = Scope::of(&caller)?;
        let r = req.into_inner();
        let subject = r.subject_pseudonym;
        let filter = Filter::parse(Some(&AuditFilter { subject: subject.clone(), ..Default::default() }))?;
        if filter.subject.is_none() {
            return Err(Error::InvalidArgument("subject_pseudonym is required".into()).into());
        }
        // A pseudonym names a subject only together with its controller. An officer's is their own
        // organization, and naming another gets the same answer whether or not it uses the pseudonym.
        let controller = match (&scope, r.controller.as_str()) {
            (Scope::Org(org), "") => org.clone(),
            (Scope::Org(org), named) if named == org.as_str() => org.clone(),
            (Scope::Org(org), _) => {
                return Err(Error::PermissionDenied(format!(
                    "a privacy officer reports only on their own organization's subjects: leave controller empty or give `{org}`"
                ))
                .into());
            }
            (Scope::All, "") => {
                return Err(Error::InvalidArgument(
                    "controller is required: a pseudonym names a subject only together with the organization that minted it (the consent's controller)".into(),
                )
                .into());
            }
            (Scope::All, named) => OrgId::parse(named).map_err(|_| {
                Error::InvalidArgument(format!(
                    "controller `{}` is not an organization id (lowercase letters, digits, `-`, `_` and `.`)",
                    named.chars().take(64).collect::<String>()
                ))
            })?,
        };
        let pool = self.gateway.0.store.pool();
        if let Scope::Org(org) = &scope
            && !query::controls_subject(pool, org, &subject).await.map_err(Error::from)?
        {
            return Err(Error::PermissionDenied(format!(
                "organization `{org}` controls no consent for this subject: a privacy officer reports only on the subjects of their organization's consents"
            ))
            .into());
        }
        let names = match &scope {
            Scope::All => query::NamesShown::All,
            Scope::Org(org) => query::NamesShown::Org(org.as_str()),
        };
        let disclosures = query::disclosures(pool, controller.as_str(), &subject, names).await.map_err(Error::from)?;
        // The controller is the counterparty of the report, and knows the subject by this pseudonym: its
        // privacy officer sees who reported on its subject.
        let mut entry = filter.audit_entry(&caller, Action::SubjectReport, self.now());
        entry.counterparty = controller.to_string();
        self.log().record(vec![(entry, subject.clone())]).await.map_err(Error::from)?;
        Ok(Response::new(SubjectAccessResponse {
            subject_pseudonym: subject,
            disclosures,
            controller: controller.to_string(),
        }))
    }
}

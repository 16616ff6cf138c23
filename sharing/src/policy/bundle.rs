//! The policy bundle: everything in `policies/` (registry, network parameters, purposes, schema and
//! rules), validated as a whole, numbered, indexed and identified by the SHA-256 of its content.
//!
//! A bundle is immutable. Reloading builds a new one and swaps it in whole, so each decision uses
//! exactly one version.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use haven_trust::ids::{OrgId, Role};
use haven_trust::registry::Registry;
use haven_trust::source::{Located, SourceFile};
use sha2::{Digest, Sha256};

use super::directory::Directory;
use super::files;
use super::index::RuleIndex;
use super::network::{NetworkParams, Purposes};
use super::rules::{self, Compiled, Context, Part, Rule, RuleSpans, role_bit};
use super::schema::{LABELS, Schema, label_bit};
use super::words;

/// Which bundle decided: the SHA-256 of its canonical content, plus the human label from
/// `network.toml`. Displays as `sha256:<hex>` followed by ` (label)` when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleVersion {
    digest: [u8; 32],
    label: Option<String>,
}

impl BundleVersion {
    /// `sha256:<hex>`: what decisions and audit entries record.
    pub fn id(&self) -> String {
        format!("sha256:{}", hex::encode(self.digest))
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The human label, if `network.toml` gives one.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
}

impl fmt::Display for BundleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.digest))?;
        if let Some(label) = &self.label {
            write!(f, " ({label})")?;
        }
        Ok(())
    }
}

/// The parts of a bundle built in memory (tests, tools and the benchmark).
#[derive(Debug, Clone)]
pub struct BundleParts {
    pub registry: Registry,
    pub network: NetworkParams,
    pub purposes: Purposes,
    pub schema: Schema,
    /// In bundle order.
    pub rules: Vec<Rule>,
}

/// A validated, indexed policy bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    registry: Registry,
    network: NetworkParams,
    purposes: Purposes,
    schema: Schema,
    rules: Vec<Rule>,
    pub(crate) compiled: Vec<Compiled>,
    pub(crate) dir: Directory,
    pub(crate) index: RuleIndex,
    version: BundleVersion,
    /// `version.id()`, computed once because every decision carries it.
    version_id: String,
    /// What the bundle allows but a reviewer should see: an organization the gateway can never reach
    /// (no pins), a rule naming a type no organization has yet. `policy check` prints them and the
    /// gateway logs them; they never stop a bundle.
    warnings: Vec<Located>,
    /// The files the version hashes, by path inside the bundle, as read (empty for a bundle built in
    /// memory). The gateway serves them to nodes, which decide on the same bundle before sealing.
    files: Vec<(String, String)>,
}

/// The files of a bundle, in the order the version hashes them.
const TOP_FILES: [&str; 4] = ["network.toml", "orgs.toml", "purposes.toml", "schema.toml"];

impl Bundle {
    /// Loads and validates `dir` (`orgs.toml`, `network.toml`, `purposes.toml`, `schema.toml` and
    /// `rules/*.toml`, read in file-name order), merging certificate pins from `pins`. Every problem is
    /// listed, each at its place in its file. `tests/` is not part of the bundle.
    pub fn load(dir: &Path, pins: Option<&Path>) -> Result<Bundle, Vec<Located>> {
        if !dir.is_dir() {
            let what = if dir.exists() { "is not a folder" } else { "does not exist" };
            let message = format!(
                "the policy folder {what}; give the folder that holds orgs.toml, network.toml, purposes.toml, schema.toml and rules/ (`haven-gateway policy init DIR` writes a starter bundle)"
            );
            return Err(vec![Located { file: dir.to_owned(), line: 0, col: 0, message }]);
        }
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let orgs_src = read(dir, "orgs.toml", &mut problems);
        let registry = orgs_src.as_ref().and_then(|src| keep(Some(Registry::load(&src.path, pins)), &mut problems));
        if let (Some(before), Some(_)) = (&orgs_src, &registry)
            && SourceFile::read(&before.path).map(|now| now.text != before.text).unwrap_or(true)
        {
            problems.push(before.whole("changed while the bundle was being read; load it again"));
        }
        let network_src = read(dir, "network.toml", &mut problems);
        let purposes_src = read(dir, "purposes.toml", &mut problems);
        let schema_src = read(dir, "schema.toml", &mut problems);
        let network = keep(network_src.as_ref().map(NetworkParams::parse), &mut problems);
        let purposes = keep(purposes_src.as_ref().map(Purposes::parse), &mut problems);
        let schema = keep(schema_src.as_ref().map(Schema::parse), &mut problems);

        let rule_sources = read_rule_files(dir, &mut problems);
        let mut rules = Vec::new();
        let mut spans = Vec::new();
        for (n, src) in rule_sources.iter().enumerate() {
            for (rule, rule_spans) in rules::parse_file(src, registry.as_ref(), &mut problems, &mut warnings) {
                rules.push(rule);
                spans.push(Some((n, rule_spans)));
            }
        }
        let (Some(registry), Some(mut purposes), Some(mut schema)) = (registry, purposes, schema) else {
            return Err(files::in_order(problems));
        };
        let languages = network.as_ref().map_or_else(|| NetworkParams::default().languages, |n| n.languages.clone());
        problems.extend(words::settle(
            &languages,
            &mut purposes,
            &mut schema,
            &dir.join("purposes.toml"),
            &dir.join("schema.toml"),
        ));
        if let Some(src) = &orgs_src {
            warnings.extend(unpinned(&registry).map(|message| src.whole(message)));
        }
        let mut content: Vec<(String, &str)> = Vec::new();
        for (name, src) in TOP_FILES.iter().zip([&network_src, &orgs_src, &purposes_src, &schema_src]) {
            content.extend(src.as_ref().map(|s| ((*name).to_owned(), s.text.as_str())));
        }
        for src in &rule_sources {
            let name = src.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            content.push((format!("rules/{name}"), src.text.as_str()));
        }
        let files: Vec<(String, String)> = content.iter().map(|(n, t)| (n.clone(), (*t).to_owned())).collect();
        let digest = digest_files(content);
        // The rules that did parse are checked even when something else is wrong (with default network
        // parameters if network.toml is broken), so one run lists every problem.
        let parts = BundleParts { registry, network: network.unwrap_or_default(), purposes, schema, rules };
        match assemble(parts, &spans, &rule_sources, digest) {
            Ok(mut bundle) if problems.is_empty() => {
                bundle.warnings = files::in_order(warnings);
                bundle.files = files;
                Ok(bundle)
            }
            Ok(_) => Err(files::in_order(problems)),
            Err(more) => {
                problems.extend(more);
                Err(files::in_order(problems))
            }
        }
    }

    /// Builds a bundle from parts made in memory. The rules are checked exactly as loaded rules are;
    /// problems are reported against `<in-memory bundle>`. The version hashes a rendering of the parts,
    /// so it identifies the bundle within a process but is not comparable with a loaded bundle's.
    pub fn from_parts(mut parts: BundleParts) -> Result<Bundle, Vec<Located>> {
        let memory = Path::new("<in-memory bundle>");
        let gaps = words::settle(&parts.network.languages, &mut parts.purposes, &mut parts.schema, memory, memory);
        if !gaps.is_empty() {
            return Err(gaps);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"haven in-memory bundle\0");
        hasher.update(format!("{parts:?}").as_bytes());
        let no_spans = vec![None; parts.rules.len()];
        assemble(parts, &no_spans, &[], hasher.finalize().into())
    }

    /// The version that every decision of this bundle carries.
    pub fn version(&self) -> &BundleVersion {
        &self.version
    }

    /// `sha256:<hex>`.
    pub fn version_id(&self) -> &str {
        &self.version_id
    }

    /// What a reviewer should see but does not stop the bundle, in reading order (see the field).
    pub fn warnings(&self) -> &[Located] {
        &self.warnings
    }

    /// The files the version hashes, by path inside the bundle (`network.toml`, `rules/<name>.toml`,
    /// ...). Empty for a bundle built in memory.
    pub fn files(&self) -> &[(String, String)] {
        &self.files
    }

    /// Writes the bundle's files under `dir` (which must exist), so that [`Bundle::load`] reads the
    /// same bundle there: how a node keeps the bundles it decided under.
    pub fn write_files(files: &[(String, String)], dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("rules"))?;
        for (name, text) in files {
            let ok = TOP_FILES.contains(&name.as_str())
                || name.strip_prefix("rules/").is_some_and(|f| {
                    !f.is_empty() && !f.contains(['/', '\\']) && !f.starts_with('.') && f.ends_with(".toml")
                });
            if !ok {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("`{}` is not a file of a policy bundle", haven_trust::untrusted::shown(name)),
                ));
            }
            std::fs::write(dir.join(name), text)?;
        }
        Ok(())
    }

    /// The organization registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The network parameters.
    pub fn network(&self) -> &NetworkParams {
        &self.network
    }

    /// The message schemas.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The names of the purposes the network recognizes, sorted.
    pub fn purposes(&self) -> impl Iterator<Item = &str> {
        self.purposes.names()
    }

    /// The purposes with their descriptions.
    pub fn purpose_defs(&self) -> &Purposes {
        &self.purposes
    }

    /// Whether the network recognizes this purpose.
    pub fn is_purpose(&self, purpose: &str) -> bool {
        self.purposes.contains(purpose)
    }

    /// The sensitivity labels (fixed by the network).
    pub fn labels() -> &'static [&'static str] {
        &LABELS
    }

    /// Whether this is a sensitivity label.
    pub fn is_label(label: &str) -> bool {
        label_bit(label).is_some()
    }

    /// The rules, in bundle order (file name, then position in the file).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule with this id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The organizations some allow rule could let this sender, through a person in this role, send
    /// this kind of message to for this purpose: the "every permitted recipient" of an alert's fan-out.
    /// Rule windows, consent and deny rules are not considered here, so each recipient must still be
    /// decided on its own with [`super::decide`]. The sender itself is never included.
    pub fn candidate_recipients(&self, sender: &OrgId, role: Role, kind: &str, purpose: &str) -> Vec<OrgId> {
        let (Some(s), Some(k)) = (self.dir.org(sender.as_str()), self.schema.kind_index(kind)) else {
            return Vec::new();
        };
        let Some(p) = self.purposes.index_of(purpose).map(|p| p as u32) else { return Vec::new() };
        let (s_type, role) = (self.dir.type_of(s), role_bit(role));
        let mut found = vec![false; self.registry.len()];
        for rule in &self.compiled {
            let fits = rule.allow
                && rule.kind == Some(k)
                && rule.roles & role != 0
                && rule.purposes.as_ref().is_some_and(|ps| ps.binary_search(&p).is_ok())
                && rule.from.matches(s, s_type);
            if !fits {
                continue;
            }
            for &o in rule.to.orgs.iter() {
                found[o as usize] = true;
            }
            for &t in rule.to.types.iter() {
                for &o in self.dir.members(t) {
                    found[o as usize] = true;
                }
            }
        }
        found[s as usize] = false;
        found.iter().enumerate().filter(|(_, f)| **f).map(|(o, _)| self.dir.org_id(o as u32).clone()).collect()
    }
}

/// One warning per organization whose node can never connect: without a TLS pin its handshake is
/// refused, without a signing pin every token it signs is. The gateway queues nothing for it.
fn unpinned(registry: &Registry) -> impl Iterator<Item = String> + '_ {
    registry.iter().filter_map(|org| {
        let missing = match (org.tls_pins.is_empty(), org.signing_pins.is_empty()) {
            (false, false) => return None,
            (true, true) => "no TLS pin (`tls_pins`) and no signing pin (`signing_pins`)",
            (true, false) => "no TLS pin (`tls_pins`)",
            (false, true) => "no signing pin (`signing_pins`)",
        };
        Some(format!(
            "organization `{}` has {missing}, so its node can never connect and the gateway queues nothing for it; add the SHA-256 of its certificates (`haven-certs sign-csr` prints them)",
            org.id
        ))
    })
}

fn read(dir: &Path, name: &str, problems: &mut Vec<Located>) -> Option<SourceFile> {
    SourceFile::read(&dir.join(name)).map_err(|e| problems.push(e)).ok()
}

fn keep<T>(result: Option<Result<T, Vec<Located>>>, problems: &mut Vec<Located>) -> Option<T> {
    result?.map_err(|e| problems.extend(e)).ok()
}

/// `rules/*.toml`, sorted by file name. Other files are ignored.
fn read_rule_files(dir: &Path, problems: &mut Vec<Located>) -> Vec<SourceFile> {
    let rules_dir = dir.join("rules");
    let whole = |message: String| Located { file: rules_dir.clone(), line: 0, col: 0, message };
    let entries = match std::fs::read_dir(&rules_dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(whole(format!("cannot list the rules directory: {e}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => problems.push(whole(format!("cannot list the rules directory: {e}"))),
        }
    }
    paths.sort();
    paths
        .iter()
        .filter_map(|p| match SourceFile::read(p) {
            Ok(src) => Some(src),
            Err(e) => {
                problems.push(e);
                None
            }
        })
        .collect()
}

/// SHA-256 over each file's relative path and bytes, sorted by path, each framed by its length so
/// no two bundles hash alike.
fn digest_files(mut files: Vec<(String, &str)>) -> [u8; 32] {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (path, text) in files {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

/// Checks every rule against the rest of the bundle and builds the index.
fn assemble(
    parts: BundleParts,
    spans: &[Option<(usize, RuleSpans)>],
    sources: &[SourceFile],
    digest: [u8; 32],
) -> Result<Bundle, Vec<Located>> {
    let dir = Directory::new(&parts.registry);
    let cx = Context { dir: &dir, schema: &parts.schema, purposes: &parts.purposes };
    let mut problems = Vec::new();
    let locate = |i: usize, part: Part, message: String| -> Located {
        let message = format!("rule `{}`: {message}", parts.rules[i].id);
        match spans.get(i).and_then(Option::as_ref) {
            Some((file, s)) => sources[*file].at(s.offset(part), message),
            None => Located { file: PathBuf::from("<in-memory bundle>"), line: 0, col: 0, message },
        }
    };
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    let mut compiled = Vec::with_capacity(parts.rules.len());
    for (i, rule) in parts.rules.iter().enumerate() {
        if let Some(&first) = first_use.get(rule.id.as_str()) {
            let msg = format!("this id is already used by the rule at {}", parts.rules[first].location());
            problems.push(locate(i, Part::Id, msg));
        } else {
            first_use.insert(&rule.id, i);
        }
        match rules::compile(rule, &cx) {
            Ok(c) => compiled.push(c),
            Err(found) => problems.extend(found.into_iter().map(|(part, msg)| locate(i, part, msg))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let index = RuleIndex::build(&compiled);
    let version = BundleVersion { digest, label: parts.network.label.clone() };
    Ok(Bundle {
        version_id: version.id(),
        version,
        warnings: Vec::new(),
        files: Vec::new(),
        registry: parts.registry,
        network: parts.network,
        purposes: parts.purposes,
        schema: parts.schema,
        rules: parts.rules,
        compiled,
        dir,
        index,
    })
}

#[cfg(test)]
mod tests;

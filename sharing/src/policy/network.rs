//! The network's parameters (`network.toml`) and the purposes it recognizes (`purposes.toml`).

use haven_trust::source::{Located, SourceFile};
use serde::Deserialize;
use toml::Spanned;

use super::files;
use super::words::{Label, RawWords, Words, is_language_tag};

/// Network-wide limits, agreed by the members like the rest of the policy bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    /// The longest window a consent may have. Victim-service law asks for time-limited consent, and
    /// the network decides how long "limited" is.
    pub max_consent_days: u32,
    /// How long an undelivered message waits for its recipient before it expires and its payload is
    /// deleted.
    pub delivery_ttl_days: u32,
    /// The most undelivered messages queued from one sender to one recipient, so one noisy sender
    /// cannot fill a small recipient's queue.
    pub queue_quota: u32,
    /// A signed audit checkpoint is written after this many entries...
    pub checkpoint_every_entries: u64,
    /// ...or after this many seconds, whichever comes first.
    pub checkpoint_every_secs: u64,
    /// The most recipients one message may name (alerts fan out to every permitted recipient, up to
    /// this many).
    pub max_recipients: u32,
    /// The most deliveries in flight on one node's stream before the gateway waits for
    /// acknowledgements.
    pub max_unacked_per_stream: u32,
    /// A human label shown beside the bundle version, e.g. "2025-06 sample network".
    pub label: Option<String>,
    /// The languages every label and description is written in, the first being the language of a
    /// plain string (see [`super::words`]).
    pub languages: Vec<String>,
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams {
            max_consent_days: 365,
            delivery_ttl_days: 30,
            queue_quota: 10_000,
            checkpoint_every_entries: 1_000,
            checkpoint_every_secs: 60,
            max_recipients: 50,
            max_unacked_per_stream: 64,
            label: None,
            languages: vec!["en".to_owned()],
        }
    }
}

/// The longest consent window any network may choose (ten years), and the longest delivery TTL.
const MAX_CONSENT_DAYS_LIMIT: u32 = 3_660;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    max_consent_days: Option<Spanned<u32>>,
    delivery_ttl_days: Option<Spanned<u32>>,
    queue_quota: Option<Spanned<u32>>,
    checkpoint_every_entries: Option<Spanned<u64>>,
    checkpoint_every_secs: Option<Spanned<u64>>,
    max_recipients: Option<Spanned<u32>>,
    max_unacked_per_stream: Option<Spanned<u32>>,
    label: Option<Spanned<String>>,
    languages: Option<Spanned<Vec<Spanned<String>>>>,
}

impl NetworkParams {
    /// Reads `network.toml`. Every key is optional and defaults to [`NetworkParams::default`].
    pub fn parse(src: &SourceFile) -> Result<NetworkParams, Vec<Located>> {
        let raw: RawNetwork = files::parse_whole(src).map_err(|e| vec![e])?;
        let d = NetworkParams::default();
        let mut problems = Vec::new();
        // Every limit has a ceiling as well as a floor: a value past it is a typo, and the gateway does
        // arithmetic with these (a TTL in microseconds, a window of items in memory).
        let mut within = |v: Option<Spanned<u64>>, name: &str, default: u64, max: u64| match v {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > max => {
                problems.push(src.at(v.span().start, format!("`{name}` must be between 1 and {max}")));
                default
            }
            Some(v) => v.into_inner(),
            None => default,
        };
        let widen = |v: Option<Spanned<u32>>| v.map(|v| Spanned::new(v.span(), u64::from(*v.get_ref())));
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let params = NetworkParams {
            max_consent_days: narrow(within(
                widen(raw.max_consent_days.clone()),
                "max_consent_days",
                d.max_consent_days.into(),
                MAX_CONSENT_DAYS_LIMIT.into(),
            )),
            delivery_ttl_days: narrow(within(
                widen(raw.delivery_ttl_days),
                "delivery_ttl_days",
                d.delivery_ttl_days.into(),
                MAX_CONSENT_DAYS_LIMIT.into(),
            )),
            queue_quota: narrow(within(widen(raw.queue_quota), "queue_quota", d.queue_quota.into(), 1_000_000)),
            checkpoint_every_entries: within(
                raw.checkpoint_every_entries,
                "checkpoint_every_entries",
                d.checkpoint_every_entries,
                1_000_000,
            ),
            checkpoint_every_secs: within(
                raw.checkpoint_every_secs,
                "checkpoint_every_secs",
                d.checkpoint_every_secs,
                86_400,
            ),
            max_recipients: narrow(within(
                widen(raw.max_recipients),
                "max_recipients",
                d.max_recipients.into(),
                10_000,
            )),
            max_unacked_per_stream: narrow(within(
                widen(raw.max_unacked_per_stream),
                "max_unacked_per_stream",
                d.max_unacked_per_stream.into(),
                10_000,
            )),
            label: raw.label.as_ref().map(|l| l.get_ref().clone()),
            languages: languages(src, raw.languages, &mut problems),
        };
        if let Some(label) = &raw.label {
            let l = label.get_ref();
            if l.trim().is_empty() || l.chars().count() > 100 || l.contains(['\n', '\r']) {
                problems.push(src.at(label.span().start, "`label` must be one line of 1 to 100 characters"));
            }
        }
        problems.sort_by_key(|p| (p.line, p.col));
        if problems.is_empty() { Ok(params) } else { Err(problems) }
    }
}

/// Reads `languages`: at least one, each a language tag, none twice.
fn languages(src: &SourceFile, raw: Option<Spanned<Vec<Spanned<String>>>>, problems: &mut Vec<Located>) -> Vec<String> {
    let Some(raw) = raw else { return NetworkParams::default().languages };
    if raw.get_ref().is_empty() {
        problems.push(src.at(raw.span().start, "`languages` is empty; list at least one, e.g. [\"en\"]"));
    }
    let mut list: Vec<String> = Vec::new();
    for tag in raw.into_inner() {
        let t = tag.get_ref();
        if !is_language_tag(t) {
            problems.push(src.at(
                tag.span().start,
                format!("`{t}` is not a language tag (a BCP 47 tag such as `en`, `es` or `es-MX`)"),
            ));
        } else if list.contains(t) {
            problems.push(src.at(tag.span().start, format!("language `{t}` is listed twice")));
        } else {
            list.push(tag.into_inner());
        }
    }
    list
}

/// A purpose the network recognizes. Consents and rules name purposes; an unknown one is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeDef {
    pub name: String,
    /// A short name for the purpose ("Housing"), when the bundle gives one.
    pub label: Option<Words>,
    /// What sharing for this purpose means, as the survivor is told when consenting.
    pub description: Words,
}

impl PurposeDef {
    /// The purpose's short name in `language`: its label, else its identifier.
    pub fn label_in(&self, language: &str) -> &str {
        self.label.as_ref().map_or(self.name.as_str(), |l| l.text(language))
    }
}

/// Every purpose of the network, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purposes {
    list: Vec<PurposeDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    description: Spanned<RawWords>,
    label: Option<Spanned<RawWords>>,
}

impl Purposes {
    /// Reads `purposes.toml`: one `[purpose.<name>]` table with a `description` per purpose.
    pub fn parse(src: &SourceFile) -> Result<Purposes, Vec<Located>> {
        let doc = files::parse_document(src).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        files::check_keys(src, doc.get_ref(), &["purpose"], "purposes.toml", &mut problems);
        let mut list = Vec::new();
        match files::get(doc.get_ref(), "purpose") {
            Some(node) => {
                for (name, node) in files::entries(src, "purpose", node, &mut problems) {
                    let n: &str = name.get_ref();
                    if !files::is_identifier(n) {
                        problems.push(src.at(
                            name.span().start,
                            format!("purpose `{n}` must start with a lowercase letter and use only a-z, 0-9 and `_`"),
                        ));
                        continue;
                    }
                    match files::deserialize::<RawPurpose>(src, node) {
                        Ok(raw) => {
                            let what = format!("purpose `{n}`'s description");
                            let description = Words::read(
                                src,
                                raw.description,
                                Label { what: &what, one_line: false },
                                &mut problems,
                            );
                            let what = format!("purpose `{n}`'s label");
                            let label = raw
                                .label
                                .map(|l| Words::read(src, l, Label { what: &what, one_line: true }, &mut problems));
                            list.push(PurposeDef { name: n.to_owned(), label, description })
                        }
                        Err(e) => problems.push(e),
                    }
                }
            }
            None => problems.push(src.whole("no purposes defined; add `[purpose.<name>]` tables with a description")),
        }
        if !problems.is_empty() {
            return Err(files::in_order(problems));
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Purposes { list })
    }

    /// Builds the list from purposes made in memory (tests and the benchmark).
    pub fn from_list(mut list: Vec<PurposeDef>) -> Purposes {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
        Purposes { list }
    }

    /// Every purpose, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &PurposeDef> {
        self.list.iter()
    }

    /// Visits every text of every purpose, with what it names.
    pub(crate) fn each_words(&mut self, visit: &mut dyn FnMut(&str, &mut Words)) {
        for p in &mut self.list {
            visit(&format!("purpose `{}`'s description", p.name), &mut p.description);
            if let Some(l) = &mut p.label {
                visit(&format!("purpose `{}`'s label", p.name), l);
            }
        }
    }

    /// Every purpose name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|p| p.name.as_str())
    }

    /// Whether the network recognizes this purpose.
    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.list.binary_search_by(|p| p.name.as_str().cmp(name)).ok()
    }

    /// How many purposes there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> SourceFile {
        SourceFile { path: name.into(), text: text.to_owned() }
    }

    #[test]
    fn network_defaults_apply_and_zero_is_refused() {
        let p = NetworkParams::parse(&src("network.toml", "label = \"test\"\n")).unwrap();
        assert_eq!(p, NetworkParams { label: Some("test".into()), ..NetworkParams::default() });
        let errs =
            NetworkParams::parse(&src("network.toml", "queue_quota = 0\nmax_consent_days = 9999\n")).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "network.toml:1:15: `queue_quota` must be between 1 and 1000000",
                "network.toml:2:20: `max_consent_days` must be between 1 and 3660"
            ]
        );
        // Past a ceiling: arithmetic on these cannot overflow.
        let errs = NetworkParams::parse(&src(
            "network.toml",
            "delivery_ttl_days = 4294967295\nmax_unacked_per_stream = 100000\n",
        ))
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "network.toml:1:21: `delivery_ttl_days` must be between 1 and 3660",
                "network.toml:2:26: `max_unacked_per_stream` must be between 1 and 10000"
            ]
        );
        let errs = NetworkParams::parse(&src("network.toml", "max_recipient = 3\n")).unwrap_err();
        assert!(
            errs[0].to_string().contains("unknown key `max_recipient` (did you mean `max_recipients`?)"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn purposes_need_descriptions() {
        let errs = Purposes::parse(&src(
            "purposes.toml",
            "[purpose.housing]\ndescription = \" \"\n[purpose.Medical]\ndescription = \"m\"\n",
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].to_string().starts_with("purposes.toml:2:15: purpose `housing`'s description must be 1 to 2000"),
            "{}",
            errs[0]
        );
        assert!(errs[1].to_string().starts_with("purposes.toml:3:10: purpose `Medical` must start"), "{}", errs[1]);
    }
}

//! The history's home in the cluster: ConfigMaps in the Environment's
//! namespace, one per chunk of at most [`CHUNK_ENTRIES`] entries and
//! [`CHUNK_BYTES`] bytes (`ferry-history-<environment>-00001`, `-00002`,
//! ...; [`history_key`] for names too long for a label), so the whole log
//! survives controller restarts and failover and never outgrows an
//! object. The chain ([`crate::audit::chain`]) runs across chunks, so a
//! removed chunk shows as missing entries.
//!
//! Guarantees: an append writes the newest chunk back with the
//! resourceVersion it was read or last written at (a concurrent append
//! is a conflict and is retried on the chunk read fresh), so entries are
//! never lost or duplicated by two writers. What is read is untrusted: a chunk that does not parse is
//! an error naming it, never a panic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use sha2::Digest;

use crate::audit::chain::{self, Entry};

/// Entries per ConfigMap at most; [`CHUNK_BYTES`] bounds a chunk whatever
/// its entries hold.
pub const CHUNK_ENTRIES: usize = 200;
/// Bytes of entries per ConfigMap at most, whatever the entries hold: a
/// chunk rolls over before an append would take it past this, well under
/// the 1 MiB an object may hold.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Label naming the Environment a chunk belongs to.
pub const HISTORY_LABEL: &str = "ferry.dev/history-of";
/// The data key holding a chunk's entries (a JSON array).
const KEY: &str = "entries.json";
const ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to {verb} the history of Environment {environment}")]
    Request {
        verb: &'static str,
        environment: String,
        #[source]
        source: kube::Error,
    },
    #[error("the history chunk {chunk} does not hold a list of entries: {message}")]
    Corrupt { chunk: String, message: String },
    #[error(
        "failed to append to the history of Environment {environment}: another writer kept appending first; is a second controller running without --leader-election?"
    )]
    Contended { environment: String },
}

/// What stands for Environment `name` in its chunks' label and names:
/// the name itself when it is a valid label value (63 characters at
/// most), else its first 46 characters and 16 hex digits of its sha256.
/// Any Environment name gives a valid label and chunk name; existing
/// histories (names of 63 characters or fewer) keep theirs.
pub fn history_key(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let prefix: String = name.chars().take(46).collect();
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{}", &digest[..16])
}

/// The ConfigMap name of chunk `index` (from 1) of Environment `name`.
pub fn chunk_name(name: &str, index: u64) -> String {
    format!("ferry-history-{}-{index:05}", history_key(name))
}

fn chunk_index(configmap: &ConfigMap, name: &str) -> Option<u64> {
    index_of(configmap.metadata.name.as_deref()?, name)
}

/// The index in a chunk's name ([`chunk_name`]), for Environment `name`.
fn index_of(chunk: &str, name: &str) -> Option<u64> {
    chunk
        .strip_prefix(&format!("ferry-history-{}-", history_key(name)))?
        .parse()
        .ok()
}

/// The entries of one chunk.
pub fn parse_chunk(configmap: &ConfigMap) -> Result<Vec<Entry>, JournalError> {
    let chunk = configmap.metadata.name.clone().unwrap_or_default();
    let text = configmap
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .ok_or_else(|| JournalError::Corrupt {
            chunk: chunk.clone(),
            message: format!("no {KEY}"),
        })?;
    serde_json::from_str(text).map_err(|e| JournalError::Corrupt {
        chunk,
        message: e.to_string(),
    })
}

/// Selects Environment `name`'s history chunks.
fn of_environment(name: &str) -> ListParams {
    ListParams::default().labels(&format!("{HISTORY_LABEL}={}", history_key(name)))
}

fn listing_failed(environment: &str, source: kube::Error) -> JournalError {
    JournalError::Request {
        verb: "list",
        environment: environment.to_owned(),
        source,
    }
}

/// The Environment's history chunks, oldest first.
async fn chunks(
    api: &Api<ConfigMap>,
    name: &str,
    environment: &str,
) -> Result<Vec<ConfigMap>, JournalError> {
    let list = api
        .list(&of_environment(name))
        .await
        .map_err(|source| listing_failed(environment, source))?;
    let mut chunks: Vec<(u64, ConfigMap)> = list
        .items
        .into_iter()
        .filter_map(|c| chunk_index(&c, name).map(|i| (i, c)))
        .collect();
    chunks.sort_by_key(|(i, _)| *i);
    Ok(chunks.into_iter().map(|(_, c)| c).collect())
}

/// The name and resourceVersion of each of the Environment's history
/// chunks, oldest first, from a list of their metadata only: what changes
/// when anything in the history does, for a fraction of reading it.
pub async fn versions(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, String)>, JournalError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let chunks = chunk_names(&api, name, &format!("{namespace}/{name}")).await?;
    Ok(chunks.into_iter().map(|(_, c, v)| (c, v)).collect())
}

/// Index, name and resourceVersion of each chunk, oldest first, from a
/// list of metadata.
async fn chunk_names(
    api: &Api<ConfigMap>,
    name: &str,
    environment: &str,
) -> Result<Vec<(u64, String, String)>, JournalError> {
    let list = api
        .list_metadata(&of_environment(name))
        .await
        .map_err(|source| listing_failed(environment, source))?;
    Ok(ordered(list.items.iter().map(|c| &c.metadata), name))
}

/// Index, name and resourceVersion of the chunks of Environment `name`
/// among `chunks` (the metadata of ConfigMaps of its namespace), oldest
/// first.
fn ordered<'a>(
    chunks: impl Iterator<Item = &'a ObjectMeta>,
    name: &str,
) -> Vec<(u64, String, String)> {
    let key = history_key(name);
    let mut found: Vec<(u64, String, String)> = chunks
        .filter(|m| m.labels.as_ref().and_then(|l| l.get(HISTORY_LABEL)) == Some(&key))
        .filter_map(|m| {
            let chunk = m.name.clone()?;
            let index = index_of(&chunk, name)?;
            Some((index, chunk, m.resource_version.clone().unwrap_or_default()))
        })
        .collect();
    found.sort();
    found
}

/// [`versions`] from the metadata of ConfigMaps already at hand (a watch's
/// cache of the history chunks) instead of a list request.
pub fn versions_among<'a>(
    chunks: impl Iterator<Item = &'a ObjectMeta>,
    namespace: &str,
    name: &str,
) -> Vec<(String, String)> {
    let in_namespace = chunks.filter(|m| m.namespace.as_deref() == Some(namespace));
    ordered(in_namespace, name)
        .into_iter()
        .map(|(_, c, v)| (c, v))
        .collect()
}

/// Selects every history chunk, of any Environment (for a watch).
pub fn all_chunks() -> String {
    HISTORY_LABEL.to_owned()
}

/// The newest chunk only: its name from a list of metadata, then the one
/// object, so an append does not read the whole history.
async fn newest_chunk(
    api: &Api<ConfigMap>,
    name: &str,
    environment: &str,
) -> Result<Option<ConfigMap>, JournalError> {
    let Some((_, chunk, _)) = chunk_names(api, name, environment).await?.pop() else {
        return Ok(None);
    };
    api.get_opt(&chunk)
        .await
        .map_err(|source| JournalError::Request {
            verb: "read",
            environment: environment.to_owned(),
            source,
        })
}

/// The newest chunk of one history as this controller last read or wrote
/// it, so that a reconcile's appends read it once (not once each): an
/// append that meets a newer chunk (409) reads it again.
#[derive(Debug, Default)]
pub enum Tip {
    /// Not read yet.
    #[default]
    Unknown,
    /// The newest chunk (none: the history is empty), boxed: a chunk is
    /// large and the tip mostly moves.
    Known(Option<Box<ConfigMap>>),
}

/// The entries of the newest chunk sealed after the newest of
/// `acknowledged` (the entries the status shows, oldest first): sealed by
/// a reconcile whose status write failed. With them, the sequences put
/// back.
///
/// A journal that ends before the status's newest entry lost its tail
/// (its newest chunk deleted or trimmed): the entries the status still
/// holds are written back as they were sealed, so the next entry links
/// after the right one and no sequence number is used twice; what the
/// status no longer holds stays missing, and `verify` names it.
///
/// With them, the [`Tip`] the next [`append`] starts from.
pub async fn unacknowledged(
    client: &Client,
    namespace: &str,
    name: &str,
    acknowledged: &[Entry],
) -> Result<(Vec<Entry>, Vec<u64>, Tip), JournalError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let newest = newest_chunk(&api, name, &format!("{namespace}/{name}")).await?;
    let entries = match &newest {
        Some(chunk) => parse_chunk(chunk)?,
        None => Vec::new(),
    };
    let mut tip = Tip::Known(newest.map(Box::new));
    let last = entries.last().map_or(0, |e| e.sequence);
    let mut restored = Vec::new();
    for lost in acknowledged.iter().filter(|e| e.sequence > last) {
        push(client, namespace, name, &mut tip, |_| lost.clone()).await?;
        restored.push(lost.sequence);
    }
    let shown = acknowledged.last().map_or(0, |e| e.sequence);
    Ok((
        entries.into_iter().filter(|e| e.sequence > shown).collect(),
        restored,
        tip,
    ))
}

/// How many of `new` (from the first) were sealed already: the longest
/// run at the start of `new` that the end of `unacknowledged` holds (same
/// result, same revision, in order). A reconcile whose status write
/// failed is done again from the same status and records the same
/// entries; those are not appended twice.
pub fn already_sealed(unacknowledged: &[Entry], new: &[Entry]) -> usize {
    let same = |a: &Entry, b: &Entry| a.result == b.result && a.revision == b.revision;
    (1..=new.len().min(unacknowledged.len()))
        .rev()
        .find(|&n| {
            let tail = &unacknowledged[unacknowledged.len() - n..];
            tail.iter().zip(&new[..n]).all(|(a, b)| same(a, b))
        })
        .unwrap_or(0)
}

/// The whole history of Environment `namespace/name`, oldest first.
pub async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Entry>, JournalError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut entries = Vec::new();
    for chunk in chunks(&api, name, &format!("{namespace}/{name}")).await? {
        entries.extend(parse_chunk(&chunk)?);
    }
    Ok(entries)
}

fn chunk_object(
    namespace: &str,
    name: &str,
    index: u64,
    entries: &[Entry],
    resource_version: Option<String>,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(chunk_name(name, index)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                HISTORY_LABEL.to_owned(),
                history_key(name),
            )])),
            resource_version,
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            KEY.to_owned(),
            serde_json::to_string(entries).unwrap_or_else(|_| "[]".into()),
        )])),
        ..ConfigMap::default()
    }
}

/// The bytes of entries a chunk holds now.
fn chunk_bytes(chunk: Option<&ConfigMap>) -> usize {
    chunk
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(KEY))
        .map_or(0, String::len)
}

/// Seals `entry` after the last one stored and appends it, starting from
/// `tip` (left at the chunk written); the sealed entry.
pub async fn append(
    client: &Client,
    namespace: &str,
    name: &str,
    tip: &mut Tip,
    entry: Entry,
) -> Result<Entry, JournalError> {
    push(client, namespace, name, tip, |last| {
        chain::seal(entry.clone(), last)
    })
    .await
}

/// Appends the entry `make` gives for the last one stored, from `tip`
/// (read when unknown, and again when another writer appended first);
/// the entry written, with `tip` left at the chunk written.
async fn push(
    client: &Client,
    namespace: &str,
    name: &str,
    tip: &mut Tip,
    make: impl Fn(Option<&Entry>) -> Entry,
) -> Result<Entry, JournalError> {
    let environment = format!("{namespace}/{name}");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let request = |verb: &'static str| {
        let environment = environment.clone();
        move |source| JournalError::Request {
            verb,
            environment,
            source,
        }
    };
    for _ in 0..ATTEMPTS {
        let newest = match std::mem::take(tip) {
            Tip::Known(chunk) => chunk.map(|c| *c),
            Tip::Unknown => newest_chunk(&api, name, &environment).await?,
        };
        let newest = newest.as_ref();
        let index = newest.and_then(|c| chunk_index(c, name)).unwrap_or(0);
        let mut entries = match newest {
            Some(c) => parse_chunk(c)?,
            None => Vec::new(),
        };
        let sealed = make(entries.last());
        let full = entries.len() >= CHUNK_ENTRIES
            || chunk_bytes(newest) + serde_json::to_string(&sealed).map_or(0, |t| t.len() + 1)
                > CHUNK_BYTES;
        let written = if newest.is_none() || full {
            let next = chunk_object(
                namespace,
                name,
                index + 1,
                std::slice::from_ref(&sealed),
                None,
            );
            api.create(&PostParams::default(), &next).await
        } else {
            entries.push(sealed.clone());
            let version = newest.and_then(|c| c.metadata.resource_version.clone());
            let chunk = chunk_object(namespace, name, index, &entries, version);
            api.replace(&chunk_name(name, index), &PostParams::default(), &chunk)
                .await
        };
        match written {
            Ok(chunk) => {
                *tip = Tip::Known(Some(Box::new(chunk)));
                return Ok(sealed);
            }
            // Someone appended first: read again and link after their entry.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(request("write")(e)),
        }
    }
    Err(JournalError::Contended { environment })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The review's reproduction: a 70-character Environment name (a
    /// valid name) got no history, its label value being too long.
    #[test]
    fn long_names_get_a_valid_label_and_chunk_name() {
        let long = format!("a{}", "-b".repeat(40));
        let key = history_key(&long);
        assert!(key.len() <= 63, "{key}");
        assert!(key.starts_with("a-b-b") && !key.contains("--"), "{key}");
        assert_ne!(history_key(&format!("{long}x")), key);
        assert_eq!(history_key("dev"), "dev");
        assert_eq!(index_of(&chunk_name(&long, 3), &long), Some(3));
        assert_eq!(index_of(&chunk_name(&long, 3), "dev"), None);
    }

    proptest! {
        /// Any DNS-subdomain name: the key is a valid label value.
        #[test]
        fn every_name_gives_a_valid_label(name in "[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?") {
            let key = history_key(&name);
            prop_assert!(!key.is_empty() && key.len() <= 63);
            let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            prop_assert!(ends_ok(key.chars().next()) && ends_ok(key.chars().last()), "{}", key);
            prop_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            prop_assert!(chunk_name(&name, 1).len() <= 253);
        }
    }

    #[test]
    fn entries_sealed_before_a_failed_status_write_are_not_sealed_again() {
        let entry = |result: &str, revision: &str| Entry {
            result: result.into(),
            revision: Some(revision.into()),
            ..Entry::default()
        };
        let failed = entry("HealthCheckFailed", "bad");
        let rolling = entry("RollingBack", "good");
        // Both sealed, the status not written: nothing to append.
        let tail = [failed.clone(), rolling.clone()];
        assert_eq!(already_sealed(&tail, &[failed.clone(), rolling.clone()]), 2);
        // Only the first sealed: the second is appended.
        assert_eq!(
            already_sealed(&tail[..1], &[failed.clone(), rolling.clone()]),
            1
        );
        // Something else happened since: everything is new.
        assert_eq!(already_sealed(&tail, &[entry("Healthy", "good")]), 0);
        assert_eq!(already_sealed(&[], std::slice::from_ref(&failed)), 0);
        // The end of the tail counts, not its start.
        assert_eq!(already_sealed(&tail, &[failed]), 0);
        assert_eq!(already_sealed(&tail, &[rolling]), 1);
    }

    #[test]
    fn chunks_are_named_and_ordered_by_index() {
        let c = chunk_object("ns", "dev", 12, &[], None);
        assert_eq!(c.metadata.name.as_deref(), Some("ferry-history-dev-00012"));
        assert_eq!(chunk_index(&c, "dev"), Some(12));
        assert_eq!(chunk_index(&c, "de"), None);
        assert!(parse_chunk(&c).unwrap().is_empty());
    }

    #[test]
    fn a_chunk_that_does_not_parse_is_named() {
        let mut c = chunk_object("ns", "dev", 1, &[], None);
        c.data = Some(BTreeMap::from([(KEY.to_owned(), "{not json".to_owned())]));
        let err = parse_chunk(&c).unwrap_err().to_string();
        assert!(err.contains("ferry-history-dev-00001"), "{err}");
        c.data = None;
        assert!(parse_chunk(&c).is_err());
    }
}

//! The verification of each Environment's history, for the status page
//! and `…/history/verify`, kept between requests: a history is read and
//! verified again only when one of its chunks changed (their
//! resourceVersions, from a watch of the chunks' metadata, or a list of it
//! while that watch is not up) or the entries its status names did, so a
//! page view over many Environments reads nothing from the API server
//! unless something was recorded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::audit::chain::{self, Break, Verified};
use crate::audit::journal::{self, JournalError};
use crate::crd::Environment;

/// What a verification of a history that could be read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The entries read.
    pub entries: usize,
    /// The chain head, or where the chain breaks.
    pub result: Result<Verified, Break>,
}

/// What a cached verification was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    chunks: Vec<(String, String)>,
    /// The sequence and hash of each entry the status names.
    witness: Vec<(u64, String)>,
}

/// The cache: by `namespace/name`, the inputs and the verification.
#[derive(Default)]
pub struct Verifications {
    cached: Mutex<HashMap<String, (Inputs, Verification)>>,
    /// The history chunks' metadata as a watch keeps it, and whether that
    /// watch is current (listed, and its last event not an error).
    chunks: Option<(Store<PartialObjectMeta<ConfigMap>>, Arc<AtomicBool>)>,
}

impl Verifications {
    /// Takes the chunks' versions from `store` while `current` holds.
    pub fn watching(store: Store<PartialObjectMeta<ConfigMap>>, current: Arc<AtomicBool>) -> Self {
        Verifications {
            cached: Mutex::default(),
            chunks: Some((store, current)),
        }
    }

    /// The chunks' names and resourceVersions: from the watch when it is
    /// current, else from a list.
    async fn versions(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<(String, String)>, JournalError> {
        match &self.chunks {
            Some((store, current)) if current.load(Ordering::Relaxed) => {
                let state = store.state();
                Ok(journal::versions_among(
                    state.iter().map(|c| &c.metadata),
                    namespace,
                    name,
                ))
            }
            _ => journal::versions(client, namespace, name).await,
        }
    }

    /// The verification of `env`'s history against its status: from the
    /// cache when neither changed, else read and verified (and kept). An
    /// error when the history could not be read (nothing is kept then).
    pub async fn of(
        &self,
        client: &Client,
        env: &Environment,
    ) -> Result<Verification, JournalError> {
        let (namespace, name) = (env.namespace().unwrap_or_default(), env.name_any());
        let key = format!("{namespace}/{name}");
        let witness = env
            .status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default();
        let inputs = Inputs {
            chunks: self.versions(client, &namespace, &name).await?,
            witness: witness
                .iter()
                .map(|e| (e.sequence, e.sha256.clone()))
                .collect(),
        };
        if let Some((cached_inputs, verification)) = self.lock().get(&key)
            && *cached_inputs == inputs
        {
            return Ok(verification.clone());
        }
        let entries = journal::read(client, &namespace, &name).await?;
        let verification = Verification {
            entries: entries.len(),
            result: chain::verify_against(&entries, 1, &chain::witnessed_by_status(&witness)),
        };
        self.lock().insert(key, (inputs, verification.clone()));
        Ok(verification)
    }

    /// Forgets the Environments not in `present` (deleted since).
    pub fn keep_only(&self, present: &[Arc<Environment>]) {
        let present: HashSet<String> = present
            .iter()
            .map(|e| format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any()))
            .collect();
        self.lock().retain(|key, _| present.contains(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Inputs, Verification)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use kube::runtime::{reflector, watcher};

    fn chunk(name: &str, version: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ferry-system".to_owned()),
                resource_version: Some(version.to_owned()),
                labels: Some([(journal::HISTORY_LABEL.to_owned(), "dev".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    fn dev() -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "dev", "namespace": "ferry-system"},
            "spec": {"source": {"url": "https://example.com/a.git", "path": "environments/dev"}}
        }))
        .unwrap()
    }

    /// A client whose every request fails: an answer proves none was made.
    fn nowhere() -> Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn a_current_watch_answers_without_a_request_until_a_chunk_changes() {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(chunk(
            "ferry-history-dev-00001",
            "7",
        )));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let current = Arc::new(AtomicBool::new(true));
        let verifications = Verifications::watching(store, current.clone());
        let kept = Verification {
            entries: 3,
            result: Ok(Verified {
                entries: 3,
                head: "sha256:ab".into(),
            }),
        };
        let inputs = Inputs {
            chunks: vec![("ferry-history-dev-00001".into(), "7".into())],
            witness: Vec::new(),
        };
        verifications
            .lock()
            .insert("ferry-system/dev".into(), (inputs, kept.clone()));
        assert_eq!(verifications.of(&nowhere(), &dev()).await.unwrap(), kept);
        // The chunk changes: the history is read again (and cannot be here).
        writer.apply_watcher_event(&watcher::Event::Apply(chunk(
            "ferry-history-dev-00001",
            "8",
        )));
        assert!(verifications.of(&nowhere(), &dev()).await.is_err());
        // A watch that is not current is not trusted: its versions are listed.
        writer.apply_watcher_event(&watcher::Event::Apply(chunk(
            "ferry-history-dev-00001",
            "7",
        )));
        assert_eq!(verifications.of(&nowhere(), &dev()).await.unwrap(), kept);
        current.store(false, Ordering::Relaxed);
        assert!(verifications.of(&nowhere(), &dev()).await.is_err());
    }
}

//! The verification of each Environment's history, for the status page
//! and `…/history/verify`, kept between requests: a history is read and
//! verified again only when one of its chunks changed (their
//! resourceVersions, from a list of metadata) or the entries its status
//! names did, so a page view over many Environments reads their
//! histories once, not on every request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Default)]
pub struct Verifications {
    cached: Mutex<HashMap<String, (Inputs, Verification)>>,
}

impl Verifications {
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
            chunks: journal::versions(client, &namespace, &name).await?,
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

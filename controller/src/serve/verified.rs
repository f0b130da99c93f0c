//! The verification of each Environment's history, for the status page
//! and `…/history/verify`, kept between requests: a history is read and
//! verified again only when one of its chunks changed (their
//! resourceVersions, from a list of metadata) or the entries its status
//! names did, so a page view over many Environments reads their
//! histories once, not on every request.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Client, ResourceExt};

use crate::audit::chain;
use crate::audit::journal;
use crate::crd::Environment;

/// What a verification found: the entries and the chain head, or the
/// break (or why the history could not be read).
pub type Verification = Result<chain::Verified, String>;

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
    /// cache when neither changed, else read and verified (and kept).
    pub async fn of(&self, client: &Client, env: &Environment) -> Verification {
        let (namespace, name) = (env.namespace().unwrap_or_default(), env.name_any());
        let key = format!("{namespace}/{name}");
        let witness = env
            .status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default();
        let chunks = journal::versions(client, &namespace, &name)
            .await
            .map_err(|e| e.to_string())?;
        let inputs = Inputs {
            chunks,
            witness: witness
                .iter()
                .map(|e| (e.sequence, e.sha256.clone()))
                .collect(),
        };
        if let Some((cached_inputs, verification)) = self.lock().get(&key)
            && *cached_inputs == inputs
        {
            return verification.clone();
        }
        let verification = match journal::read(client, &namespace, &name).await {
            Ok(entries) => chain::verify_against(&entries, 1, &witness).map_err(|b| b.to_string()),
            // A read that failed says nothing about the history: not kept.
            Err(e) => return Err(e.to_string()),
        };
        self.lock().insert(key, (inputs, verification.clone()));
        verification
    }

    /// Forgets Environments that are gone.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|key, _| keep(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Inputs, Verification)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

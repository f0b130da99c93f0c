//! What reconciles share ([`Context`]), and the client each Environment
//! applies with.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};

use crate::cluster::client::guarded;
use crate::cluster::discovery::DiscoveryCache;
use crate::cluster::leadership::Leadership;
use crate::cluster::owned::{OwnedObjects, Woken};
use crate::cluster::ownership;
use crate::crd::Environment;
use crate::github::Reporter;
use crate::source::cache::Cache;
use crate::telemetry::metrics::Metrics;

/// What reconcilers share.
pub struct Context {
    pub client: Client,
    /// The controller's own configuration, from which impersonating
    /// clients are made for Environments with `serviceAccountName`.
    pub config: kube::Config,
    pub cache: Cache,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// For the health gate's HTTP checks.
    pub http: reqwest::Client,
    /// Environments reconciled since the controller started.
    pub seen: Mutex<HashSet<String>>,
    /// Whether this replica may write now: every client here checks it.
    pub leadership: Leadership,
    /// Clients impersonating deployer accounts, by user name.
    pub impersonating: Mutex<HashMap<String, Client>>,
    /// Releases reported to GitHub (`spec.github`).
    pub github: Reporter,
    /// Discovery answers shared by reconciles.
    pub discovery: DiscoveryCache,
    /// When git's head was last looked at while a release was judged, by
    /// `namespace/name` ([`super::machine::head_due`]).
    pub heads: Mutex<HashMap<String, Instant>>,
    /// What ferry owns in the cluster, as its watches see it: spares the
    /// requests of planning objects left as they were, and wakes an
    /// Environment when one of its objects is edited.
    pub owned: OwnedObjects,
}

impl Context {
    /// The context of the reconciles, with the controller's own client,
    /// which (as every client made here) writes only while `leadership`
    /// holds; and the stream of Environments whose objects someone else
    /// changed ([`OwnedObjects`]).
    pub fn new(
        config: kube::Config,
        leadership: Leadership,
        cache_dir: PathBuf,
        metrics: Arc<Metrics>,
        public_url: Option<String>,
    ) -> Result<(Self, futures::channel::mpsc::UnboundedReceiver<Woken>), kube::Error> {
        let client = guarded(config.clone(), metrics.clone(), leadership.clone())?;
        let (owned, woken) = OwnedObjects::new(client.clone());
        let recorder = Recorder::new(client.clone(), "ferry-controller".into());
        let github = Reporter::start(client.clone(), public_url, metrics.clone());
        let context = Context {
            client,
            config,
            cache: Cache::new(&cache_dir),
            recorder,
            metrics,
            http: reqwest::Client::new(),
            seen: Default::default(),
            leadership,
            impersonating: Default::default(),
            github,
            discovery: Default::default(),
            heads: Default::default(),
            owned,
        };
        Ok((context, woken))
    }

    /// Seconds since git's head was looked at for `key` while judging.
    pub fn head_looked_secs_ago(&self, key: &str) -> Option<u64> {
        let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.get(key).map(|at| at.elapsed().as_secs())
    }

    /// Notes that git's head is looked at now for `key`.
    pub fn head_looked(&self, key: &str) {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.insert(key.to_owned(), Instant::now());
    }

    /// Whether this is the first reconcile of `env` since the controller
    /// started (and remembers that it was).
    pub fn first_since_start(&self, env: &Environment) -> bool {
        let key = format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any());
        self.seen
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(false)
    }
}

/// The client plan, apply and prune use: the controller's own, or one
/// impersonating `spec.serviceAccountName`.
pub fn client_for(ctx: &Context, env: &Environment) -> Result<Client, String> {
    let Some(account) = &env.spec.service_account_name else {
        return Ok(ctx.client.clone());
    };
    let namespace = env
        .spec
        .target_namespace
        .clone()
        .or_else(|| env.namespace())
        .unwrap_or_default();
    let user = format!("system:serviceaccount:{namespace}:{account}");
    // One client (and its connections) per account, not one per reconcile:
    // a release being judged is looked at every 2 s.
    if let Some(client) = ctx
        .impersonating
        .lock()
        .ok()
        .and_then(|c| c.get(&user).cloned())
    {
        return Ok(client);
    }
    let mut config = ctx.config.clone();
    // The API server adds the account's groups (system:serviceaccounts,
    // system:serviceaccounts:NS, system:authenticated) itself.
    config.auth_info.impersonate = Some(user.clone());
    config.auth_info.impersonate_groups = None;
    let client = guarded(config, ctx.metrics.clone(), ctx.leadership.clone()).map_err(|e| {
        format!("failed to make a client impersonating {namespace}/{account}: {e}; check the controller's kubeconfig or in-cluster configuration")
    })?;
    if let Ok(mut clients) = ctx.impersonating.lock() {
        clients.insert(user, client.clone());
    }
    Ok(client)
}

/// The owner label value of an Environment.
pub fn owner_of(env: &Environment) -> String {
    ownership::owner_id(&env.namespace().unwrap_or_default(), &env.name_any())
}

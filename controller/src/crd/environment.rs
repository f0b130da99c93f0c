//! The `Environment` custom resource (`ferry.dev/v1alpha1`): where an
//! environment's manifests live in git, and what ferry last did with them.
//! The CRD under `environments/controller/crd.yaml` is generated from these
//! types (`ferry-controller crd`); a test fails when it drifts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use ferry_manifests::object::ObjectRef;

use super::duration::rule;
use super::history::Entry;
use super::number;

/// Keeps a namespace equal to a path of a git repository.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Environment",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "env",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.lastAppliedRevision"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    pub source: GitSource,
    /// When set, namespaced objects without a namespace go into this one,
    /// objects in any other namespace are refused, and so are
    /// cluster-scoped objects other than this Namespace itself: a guard
    /// against an overlay writing into another environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// A ServiceAccount (in `targetNamespace`, or else the Environment's
    /// namespace) that the controller impersonates to plan, apply and
    /// prune, so this Environment can do only what that account may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How often to look at git and the cluster again (`30s`, `5m`,
    /// `1h30m`; 10 s to 24 h).
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": rule::INTERVAL, "message": "interval must be a duration from 10s to 24h, such as 30s, 5m or 1h30m"}]))]
    pub interval: String,
    /// Delete objects that ferry applied before and that left git.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Take over fields another field manager owns instead of reporting
    /// the conflict.
    #[serde(default)]
    pub force: bool,
    /// Stop reconciling (nothing is fetched or applied) while true.
    #[serde(default)]
    pub suspend: bool,
    /// The gate every applied revision must pass.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// What to do when a revision fails its gate.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Report every release to GitHub as a deployment, with its statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubReporting>,
}

/// Where and how releases are reported through GitHub's Deployments API:
/// one deployment per commit and environment, statuses `queued`,
/// `in_progress`, then `success`, `failure` or `error`; a rollback is a new
/// deployment of the healthy commit. Reporting never holds a reconcile
/// back: it is queued and retried.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubReporting {
    /// `owner/name` of the repository the commits are in.
    pub repository: String,
    /// A Secret in the Environment's namespace holding either `token` (a
    /// personal access token or an installation token), or a GitHub App's
    /// `githubAppID`, `githubAppInstallationID` and `githubAppPrivateKey`
    /// (PEM). Needs `deployments: write` (and `statuses: write` for
    /// `commitStatus`).
    pub secret_ref: SecretRef,
    /// The API's address (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// The GitHub environment's name; the Environment's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The service's address, shown on the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<String>,
    /// Also set a commit status `ferry/<environment>` on each commit.
    #[serde(default)]
    pub commit_status: bool,
}

fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}

/// The health gate: workloads healthy (kstatus rules), then the HTTP
/// checks, within `timeout` of the end of the apply.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// From the end of the apply to healthy (`5m`; 1 s to 24 h).
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": rule::HEALTH_TIMEOUT, "message": "healthCheck.timeout must be a duration from 1s to 24h, such as 5m"}]))]
    pub timeout: String,
    /// Requests that must succeed once the workloads are healthy (at most
    /// 20: each look at a release makes one attempt per check and pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub http: Vec<HttpCheck>,
    /// Whether a newer commit replaces a release that is not yet healthy
    /// (default true: a fix pushed during a bad release is applied within
    /// one interval or webhook, as Flux's `CancelHealthCheckOnNewRevision`
    /// does); false waits for the verdict first. The replaced release is
    /// recorded `Superseded`.
    #[serde(default = "default_true")]
    pub cancel_on_new_revision: bool,
    /// Verify each pod before it takes traffic (default false): ferry adds
    /// the readiness gate `ferry.dev/verified` to the pod template of every
    /// Deployment, StatefulSet and DaemonSet it applies, and once a new
    /// pod's containers are ready, makes the `{{.podIP}}` HTTP checks
    /// against that pod; it then sets the pod's condition
    /// `ferry.dev/verified` to True (the pod becomes Ready and joins its
    /// Services) or False (the release fails at once and is rolled back).
    /// The deployer needs `patch` on `pods/status`.
    #[serde(default)]
    pub before_traffic: bool,
    /// With `beforeTraffic`: the model-aware check of each new pod, made
    /// with the HTTP checks before the pod takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<Predictions>,
}

/// The prediction check: the pod must answer the cases of a file in the
/// same commit as the model CI gated answered them, so the pod is proven
/// to serve exactly the model CI tested.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Predictions {
    /// Where to send each case's request (POST, JSON), naming
    /// `{{.podIP}}`: `http://{{.podIP}}:9696/predict`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.contains('{{.podIP}}')", "message": "predictions.url must name {{.podIP}}: each pod is checked before it takes traffic"}]))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// The cases, a file in the same commit (path from the repository's
    /// root): JSON lines of `{"request": ..., "answer": ...}`, written by
    /// `ferry-pipelines` with each bump. At most 1000 cases, 1 MiB.
    #[schemars(length(min = 1, max = 1024))]
    pub cases: String,
    /// The share of cases whose answer may differ (numbers within 1e-9
    /// agree; default 0: every case must be answered as CI's model did).
    #[serde(default, deserialize_with = "number::fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_disagreement: f64,
    /// Also send the cases to a pod of the revision that runs now, and
    /// bound the share of cases whose class (the answer without its
    /// numbers) changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_with_running: Option<CompareWithRunning>,
}

/// The bound on how many classes a release may change.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareWithRunning {
    #[serde(default, deserialize_with = "number::fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_disagreement: f64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            timeout: default_health_timeout(),
            http: Vec::new(),
            cancel_on_new_revision: true,
            before_traffic: false,
            predictions: None,
        }
    }
}

/// One HTTP check. `url` may contain `{{.podIP}}`: it is then made against
/// every pod of the release's new revision directly.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(
        default = "default_expect_status",
        deserialize_with = "number::saturating_u16"
    )]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: u16,
    /// A JSON pointer into the response and the value it must hold.
    #[serde(
        rename = "expectJSON",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expect_json: Option<ExpectJson>,
    /// Consecutive successes needed (3; 1 to 1000).
    #[serde(
        default = "default_success_threshold",
        deserialize_with = "number::saturating_u32"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub success_threshold: u32,
    /// Time between attempts (`2s`; 1 s to 1 h).
    #[serde(default = "default_period")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": rule::PERIOD, "message": "period must be a duration from 1s to 1h, such as 2s"}]))]
    pub period: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ExpectJson {
    /// RFC 6901 pointer, such as `/status`.
    pub pointer: String,
    /// Any JSON value.
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub equals: serde_json::Value,
}

/// Automatic rollback to the last revision that passed the gate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RollbackPolicy {
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        RollbackPolicy { enabled: true }
    }
}

/// A path of a git repository at a branch, tag or commit.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// `https://`, `ssh://` (or `git@host:path`), `git://` or `file://`.
    pub url: String,
    /// Branch, tag or full commit id.
    #[serde(rename = "ref", default = "default_ref")]
    pub reference: String,
    /// The environment's directory in the repository, e.g. `environments/dev`.
    pub path: String,
    /// A Secret in the Environment's namespace with `token` (HTTPS), or
    /// `identity` and `known_hosts` (SSH; `passphrase` optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// The longest a fetch may take, connecting included (`60s`; 1 s to
    /// 1 h); a remote that hangs is reported and retried, never waited on
    /// for ever.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": rule::SOURCE_TIMEOUT, "message": "source.timeout must be a duration from 1s to 1h, such as 60s"}]))]
    pub timeout: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

/// What ferry observed and did, kstatus-style.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, with reasons from [`reason`].
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `ref@sha1:commit` of the last revision ferry tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// `ref@sha1:commit` of the last revision applied in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// sha256 of the canonical form of what was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_digest: Option<String>,
    /// The objects ferry applied: pruning deletes only from this list.
    #[serde(default)]
    pub inventory: Vec<ObjectRef>,
    /// `ref@sha1:commit` of the last revision that passed the health gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_healthy_revision: Option<String>,
    /// The revision that failed its gate (not applied again until the
    /// branch moves or `ferry.dev/retry` changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// Why `failedRevision` failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// The `ferry.dev/retry` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_retry: Option<String>,
    /// A release being judged: what a restarted controller resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The `ferry.dev/requested-at` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
    /// Where the last healthy revision was rendered from and placed: a
    /// rollback renders it the same way, whatever the spec says now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_healthy_placement: Option<Placement>,
    /// A revision about to be applied, recorded before its apply starts
    /// and cleared by the status that records what the apply did: found
    /// set, it means an apply ran (in full, in part or not at all) that
    /// the status does not tell of, and the next step applies it again
    /// before anything else, so the status never stays behind what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applying: Option<Applying>,
    /// The last 10 entries of the audit history; the whole chained log is
    /// in the ConfigMaps `ferry-history-<name>-NNNNN` beside the Environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Entry>,
}

impl EnvironmentStatus {
    /// The condition of type `kind` ([`super::names::condition`]), if set.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == kind)
    }
}

/// How many history entries the status keeps.
pub const STATUS_HISTORY: usize = 10;

/// A revision applied and waiting for its verdict.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `ref@sha1:commit` being judged.
    pub revision: String,
    /// When its apply ended (RFC 3339).
    pub started_at: String,
    /// Set while rolling back: the revision that failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Consecutive successes (or, negative, failures) per HTTP check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_streaks: Vec<i32>,
    /// When each HTTP check was last attempted (seconds since the epoch):
    /// a check is attempted again only after its `period`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_attempted_at: Vec<i64>,
    /// A rollback decided but not yet applied in full (its apply is
    /// retried with back-off after a transient failure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// Where `revision` was rendered from and placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// A release whose apply started: the revision and where it is placed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applying {
    /// `ref@sha1:commit` being applied.
    pub revision: String,
    pub placement: Placement,
}

/// The path a revision was rendered from and the namespace it was placed
/// in: what, with the commit, makes what ran.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
}

fn default_interval() -> String {
    "1m".into()
}

fn default_health_timeout() -> String {
    "5m".into()
}

fn default_method() -> String {
    "GET".into()
}

fn default_expect_status() -> u16 {
    200
}

fn default_success_threshold() -> u32 {
    3
}

fn default_period() -> String {
    "2s".into()
}

fn default_timeout() -> String {
    "60s".into()
}

fn default_true() -> bool {
    true
}

fn default_ref() -> String {
    "main".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let spec: EnvironmentSpec = serde_json::from_value(
            serde_json::json!({"source": {"url": "file:///r", "path": "environments/dev"}}),
        )
        .unwrap();
        assert_eq!(
            (
                spec.interval.as_str(),
                spec.prune,
                spec.source.reference.as_str()
            ),
            ("1m", true, "main")
        );
    }
}

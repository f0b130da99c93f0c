//! The names the Environment's users and alerts see: annotations, the
//! finalizer, condition types and reasons. Documented, stable.

/// Setting or changing this annotation makes the controller reconcile at
/// once (for example after a push, without waiting for the interval).
pub const REQUESTED_AT: &str = "ferry.dev/requested-at";

/// Changing this annotation makes the controller try the failed revision
/// again.
pub const RETRY: &str = "ferry.dev/retry";

/// The finalizer that lets the controller prune (or orphan, with
/// `prune: false`) what an Environment applied before it goes away.
pub const FINALIZER: &str = "ferry.dev/finalizer";

/// Annotation naming who or what asked for the reconcile: the
/// `requested-at` stamp it goes with, then who (`<stamp> github push by
/// ada of 1f3c2ab0aaaa (body sha256:72d3…)`).
pub const REQUESTED_BY: &str = "ferry.dev/requested-by";

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    /// The applied revision passed its health gate (True), failed it
    /// (False), or is being judged (Unknown).
    pub const HEALTHY: &str = "Healthy";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons, documented for alerting on them.
pub mod reason {
    /// The revision was applied (Ready=True).
    pub const APPLIED: &str = "Applied";
    /// Work in progress (Reconciling=True).
    pub const PROGRESSING: &str = "Progressing";
    /// The repository could not be fetched; nothing changed. Retried with back-off.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// The credentials Secret is missing or incomplete. Waits for it.
    pub const CREDENTIALS_MISSING: &str = "CredentialsMissing";
    /// The manifests do not render (Stalled): fix git.
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// The API server refused an object in a dry run; nothing was applied (Stalled): fix git.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// An object is outside `spec.targetNamespace` (Stalled): fix git or the Environment.
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// Another field manager owns fields git sets, or another Environment
    /// owns an object this one renders (Stalled): set `force`, remove the
    /// other manager's fields, or render the object in one Environment only.
    pub const CONFLICT: &str = "Conflict";
    /// The API server refused for lack of permission (Stalled): the
    /// message names the verb, resource and namespace to grant.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The Environment's spec is invalid (Stalled): fix the Environment.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Applying failed for a reason that may pass (API errors). Retried with back-off.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The applied revision passed its health gate (Healthy=True).
    pub const HEALTHY: &str = "Healthy";
    /// A revision failed its health gate and there was nothing to roll
    /// back to, or rollback is disabled (Stalled): fix git or retry.
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    /// A revision failed its gate and the last healthy one was restored
    /// (Stalled: git asks for a revision that failed).
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Restoring the last healthy revision failed too (Stalled).
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    /// The controller panicked reconciling this Environment (Stalled): a
    /// bug; the message says where. Other Environments go on.
    pub const RECONCILE_PANICKED: &str = "ReconcilePanicked";
}

//! Failure classes, as Flux's kustomize-controller draws them: what needs
//! a change in git or the cluster (terminal: `Stalled`, looked at again at
//! the interval) and what may pass by itself (transient: `Reconciling`,
//! retried with back-off).
//!
//! Guarantees: throttling (429), server errors (5xx), timeouts,
//! connection and discovery failures are transient, so an API server
//! restart or a busy etcd never stalls an Environment; refusals of the
//! manifests themselves (400, 404, 409, 422) and missing permissions (403)
//! are terminal.

/// Whether a failure needs a change (terminal) or time (transient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Terminal,
    Transient,
}

impl FailureClass {
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Terminal => "terminal",
            FailureClass::Transient => "transient",
        }
    }
}

/// The class of an HTTP status the API server answered with.
pub fn of_status(code: u16) -> FailureClass {
    match code {
        // 401: a rotated token; 408, 429: busy; 5xx: restarting or failing.
        401 | 408 | 429 | 500..=599 => FailureClass::Transient,
        _ => FailureClass::Terminal,
    }
}

/// The class of any client error: API answers by status, everything else
/// (connection refused, timeouts, TLS, a body cut short) is transient.
pub fn of_error(error: &kube::Error) -> FailureClass {
    match error {
        kube::Error::Api(status) => of_status(status.code),
        _ => FailureClass::Transient,
    }
}

/// Whether discovery said the kind does not exist (a terminal fault of the
/// manifests), as opposed to discovery failing.
pub fn is_unknown_kind(error: &kube::Error) -> bool {
    use kube::error::DiscoveryError;
    match error {
        kube::Error::Api(status) => status.code == 404,
        kube::Error::Discovery(
            DiscoveryError::MissingKind(_)
            | DiscoveryError::MissingApiGroup(_)
            | DiscoveryError::MissingResource(_)
            | DiscoveryError::InvalidGroupVersion(_)
            | DiscoveryError::EmptyApiGroup(_),
        ) => true,
        _ => false,
    }
}

/// Whether the API server refused for lack of permission.
pub fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// An error with its causes, `outer: inner: innermost`, for status
/// messages and Events, where a reader sees no source chain.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What to add to a 403: the API server's message already names the
/// user, the verb, the resource and the namespace.
pub const FORBIDDEN_HINT: &str = "grant it in the RBAC of the controller, or of spec.serviceAccountName when the Environment sets one";

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn descriptions_carry_the_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to read Secret a/b")]
        struct Outer(#[source] kube::Error);
        let forbidden = kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            message: "secrets \"b\" is forbidden: User \"x\" cannot get resource \"secrets\""
                .into(),
            ..Default::default()
        }));
        assert!(is_forbidden(&forbidden));
        let text = describe(&Outer(forbidden));
        assert!(
            text.starts_with("failed to read Secret a/b: ") && text.contains("cannot get resource"),
            "{text}"
        );
    }

    #[test]
    fn api_statuses_fall_in_the_documented_classes() {
        for code in [401, 408, 429, 500, 502, 503, 504] {
            assert_eq!(of_error(&api(code)), FailureClass::Transient, "{code}");
        }
        for code in [400, 403, 404, 409, 410, 422] {
            assert_eq!(of_error(&api(code)), FailureClass::Terminal, "{code}");
        }
        let discovery =
            kube::Error::Discovery(kube::error::DiscoveryError::MissingKind("X".into()));
        assert_eq!(of_error(&discovery), FailureClass::Transient);
        assert!(is_unknown_kind(&discovery));
        assert!(is_unknown_kind(&api(404)));
        assert!(!is_unknown_kind(&api(503)));
    }
}

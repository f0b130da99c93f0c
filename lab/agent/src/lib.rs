//! ferry-lab-agent: the node agent of ferry's lab. It registers nodes with
//! a real Kubernetes API server and runs the pods the scheduler binds to
//! them as local processes from their images, each in its own network
//! namespace, with real probes, restarts, graceful termination and
//! LoadBalancer services.
//!
//! Modules: [`node`] (registration, heartbeat), [`pod`] (one worker per
//! pod), [`image`] (pulling and unpacking images), [`process`] (a
//! container's confined process), [`probe`], [`network`],
//! [`service_account`] (the API server and a token for pods), [`status`],
//! [`loadbalancer`], [`watch_backoff`], [`kubelet`] (the log endpoint for
//! `kubectl logs`), and [`agent`] which ties them together.

pub mod agent;
pub mod image;
pub mod kubelet;
pub mod loadbalancer;
pub mod network;
pub mod node;
pub mod pod;
pub mod probe;
pub mod process;
pub mod service_account;
pub mod status;
pub mod watch_backoff;

/// An error with all its causes on one line, for a container's waiting
/// message and its Event (a user reads them with kubectl).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

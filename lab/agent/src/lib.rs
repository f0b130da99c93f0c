//! ferry-lab-agent: the node agent of ferry's lab. It registers nodes with
//! a real Kubernetes API server and runs the pods the scheduler binds to
//! them as local processes, each in its own network namespace, with real
//! probes, restarts, graceful termination and LoadBalancer services.
//!
//! Modules: [`node`] (registration, heartbeat), [`pod`] (one worker per
//! pod), [`process`], [`probe`], [`network`], [`image`], [`status`],
//! [`loadbalancer`], [`watch_backoff`], [`kubelet`] (the log endpoint for `kubectl logs`), and [`agent`] which ties them together.

pub mod agent;
pub mod image;
pub mod kubelet;
pub mod loadbalancer;
pub mod network;
pub mod node;
pub mod pod;
pub mod probe;
pub mod process;
pub mod status;
pub mod watch_backoff;

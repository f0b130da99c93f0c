//! Container images on a lab node, as a kubelet and its runtime have them:
//! a [`reference`] resolved over the registry API ([`registry`],
//! [`manifest`]) from the lab's registry, with the pod's
//! [`pull_secrets`], every blob checked against its digest, the layers
//! unpacked into a root filesystem ([`layers`]) kept per digest
//! ([`store`]), and the container run from the image config with
//! Kubernetes' overrides ([`run`]).

pub mod layers;
pub mod manifest;
pub mod pull_secrets;
pub mod reference;
pub mod registry;
pub mod run;
pub mod store;

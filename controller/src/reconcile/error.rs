//! The reconcile's own errors: never what git or the cluster hold (every
//! such failure is an [`super::outcome::Outcome`] written to the status),
//! only the controller's I/O on the Environment itself.

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to read Environment {name}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "failed to add ferry's finalizer to Environment {name} (retried); if refused, the controller's ClusterRole needs `patch` on environments.ferry.dev"
    )]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of Environment {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "failed to record the history of Environment {name}: the status is not written, so the step is done again and recorded then"
    )]
    History {
        name: String,
        #[source]
        source: Box<crate::audit::journal::JournalError>,
    },
    #[error("failed to clean up after Environment {name}: {message}")]
    Cleanup { name: String, message: String },
    #[error(
        "failed to reconcile Environment {name}: the controller panicked: {message}; this is a bug in ferry-controller: report it with this message (the reconcile is retried)"
    )]
    Panicked { name: String, message: String },
    #[error("failed to handle the finalizer of Environment {name}")]
    Finalizer {
        name: String,
        #[source]
        source: Box<finalizer::Error<ReconcileError>>,
    },
}

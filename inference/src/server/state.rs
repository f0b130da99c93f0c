//! What every handler shares: the verified model, its serving layout,
//! the metrics and readiness; and the limits on requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::artifact::{Artifact, Model};

use super::metrics::{Metrics, ROUTES};

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Default largest number of candidates in one request.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// What every handler shares. Cloning is one reference count (axum
/// clones the state for each extractor of each request, and counts that
/// several threads touch at once are not free).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    pub model: Arc<Model>,
    /// The model's forest in its serving layout.
    pub predictor: crate::serving::Predictor,
    /// The artifact's recorded (and verified) sha256.
    pub sha256: Arc<str>,
    pub metrics: Metrics,
    pub max_batch: usize,
    ready: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for a verified artifact; not ready until [`AppState::set_ready`].
    pub fn new(artifact: Artifact, max_batch: usize) -> Self {
        let metrics = Metrics::new(
            &artifact.model.name,
            &artifact.model.version,
            &artifact.sha256,
            &[ROUTES, &["unmatched"]].concat(),
        );
        let model = Arc::new(artifact.model);
        AppState(Arc::new(Shared {
            predictor: crate::serving::Predictor::new(model.clone()),
            model,
            sha256: artifact.sha256.into(),
            metrics,
            max_batch,
            ready: AtomicBool::new(false),
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(ready));
    }
}

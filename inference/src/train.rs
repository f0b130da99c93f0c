//! Training: from the labelled CSV to a sealed artifact, with both
//! cross-validation reports computed on the way.

use sha2::{Digest, Sha256};

use crate::artifact::{
    Artifact, FORMAT, MODEL_NAME, Model, ModelMetrics, SelfCheck, TrainingDataInfo,
};
use crate::data::{self, DataError};
use crate::evaluation::{self, EvaluationError, ModelKind};
use crate::forest::{self, ForestError, ForestParams};
use crate::metrics::binary_metrics;

/// Number of cross-validation folds in both protocols.
pub const FOLDS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("failed to read the training data")]
    Data(#[from] DataError),
    #[error("failed to cross-validate the model")]
    Evaluation(#[from] EvaluationError),
    #[error("failed to fit the final model")]
    Fit(#[from] ForestError),
}

/// Steps reported to a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Fold {
        protocol: &'static str,
        fold: usize,
        of: usize,
    },
    Final,
}

/// Trains the forest on `csv` and returns the sealed artifact.
///
/// Deterministic: the result depends only on the bytes of `csv`, `params`
/// and this crate's version.
pub fn train(
    csv: &[u8],
    params: &ForestParams,
    progress: &mut dyn FnMut(Step),
) -> Result<Artifact, TrainError> {
    let data = data::training_data(csv)?;
    let kind = ModelKind::Forest;

    let [unshuffled, stratified] = evaluation::protocols(&data.labels, FOLDS, params.seed);
    let mut validate = |protocol: &evaluation::Protocol| {
        let name = protocol.name;
        evaluation::cross_validate(kind, params, &data.x, &data.labels, protocol, &mut |fold| {
            progress(Step::Fold {
                protocol: name,
                fold,
                of: FOLDS,
            })
        })
    };
    let cv_unshuffled = validate(&unshuffled)?;
    let cv_stratified = validate(&stratified)?;

    progress(Step::Final);
    let forest = forest::fit(&data.x, &data.labels, params)?;
    let training_probability: Vec<f64> = data
        .x
        .rows()
        .into_iter()
        .map(|row| forest.probability(&row.to_vec()))
        .collect();
    let training = binary_metrics(&data.labels, &training_probability);

    let trainer = format!("ferry-inference {}", env!("CARGO_PKG_VERSION"));
    let version = model_version(&data.sha256, params, &trainer);
    let self_check = SelfCheck {
        candidate: data.schema.to_json(&data.candidates[0]),
        probability: training_probability[0],
    };
    let model = Model {
        format: FORMAT,
        name: MODEL_NAME.to_owned(),
        version,
        trainer,
        training_data: TrainingDataInfo {
            sha256: data.sha256.clone(),
            rows: data.labels.len(),
            positives: data.labels.iter().filter(|&&l| l).count(),
        },
        schema: data.schema,
        parameters: params.clone(),
        metrics: ModelMetrics {
            cv_unshuffled,
            cv_stratified,
            training,
        },
        self_check,
        forest,
    };
    Ok(Artifact::seal(model))
}

/// The first 12 hex digits of sha256 over what determines the model.
fn model_version(data_sha256: &str, params: &ForestParams, trainer: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(data_sha256.as_bytes());
    hasher.update(serde_json::to_vec(params).unwrap_or_default());
    hasher.update(trainer.as_bytes());
    hex::encode(hasher.finalize())[..12].to_owned()
}

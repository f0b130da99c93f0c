//! The model artifact: one JSON file holding everything the server needs
//! and everything a reviewer wants to know about a model.
//!
//! ```json
//! { "sha256": "<hex sha256 of the canonical form of `model`>", "model": { ... } }
//! ```
//!
//! The canonical form of `model` is its compact `serde_json` serialization:
//! fields in declaration order, maps sorted, floats in shortest round-trip
//! form. Nothing in it depends on the clock or the machine, so the same data
//! and parameters give a byte-identical file.
//!
//! Guarantees of [`load`]: the digest matches, the format is known, the
//! forest is structurally valid for the schema, and the recorded self-check
//! candidate gets the recorded probability. The digest protects against
//! corruption and accidental edits; authenticity comes from the image digest
//! that the environments pin.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::evaluation::CvReport;
use crate::features::{Candidate, FeatureError, FeatureKind, FeatureSchema};
use crate::forest::{Forest, ForestError, ForestParams};
use crate::metrics::BinaryMetrics;

/// The model's name in every API.
pub const MODEL_NAME: &str = "placement";
/// The artifact format this build reads and writes.
pub const FORMAT: u32 = 1;

/// The file: the model and the digest of its canonical form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub sha256: String,
    pub model: Model,
}

/// Everything about one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub format: u32,
    pub name: String,
    /// Derived from the training data digest, the parameters and the
    /// trainer, so a new version means a different model input.
    pub version: String,
    /// The program that trained it, `ferry-inference <version>`.
    pub trainer: String,
    pub schema: FeatureSchema,
    pub parameters: ForestParams,
    pub training_data: TrainingDataInfo,
    pub metrics: ModelMetrics,
    pub self_check: SelfCheck,
    pub forest: Forest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingDataInfo {
    pub sha256: String,
    pub rows: usize,
    pub positives: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetrics {
    pub cv_unshuffled: CvReport,
    pub cv_stratified: CvReport,
    /// On the training data itself: optimistic, kept for drift comparisons.
    pub training: BinaryMetrics,
}

/// A candidate and the probability the model gave it at training time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCheck {
    pub candidate: serde_json::Map<String, serde_json::Value>,
    pub probability: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("failed to read the model artifact {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the model artifact {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to parse the model artifact: not a ferry model file (retrain it with `ferry-inference train`)"
    )]
    Parse(#[source] serde_json::Error),
    #[error(
        "the model artifact is corrupted or was edited: its content has sha256 {actual}, but it records {recorded}; retrain it or restore the original file"
    )]
    Digest { recorded: String, actual: String },
    #[error(
        "the model artifact has format {0}, this build reads format {FORMAT}; retrain it with this build"
    )]
    Format(u32),
    #[error("the model artifact is for model {0:?}, this server serves {MODEL_NAME:?}")]
    Name(String),
    #[error("the model artifact's forest is invalid")]
    Forest(#[from] ForestError),
    #[error("the model artifact's schema is invalid: {0}")]
    Schema(String),
    #[error("the model artifact's self-check candidate is invalid")]
    SelfCheckInput(#[source] FeatureError),
    #[error(
        "the model artifact failed its self-check: it records probability {recorded}, the loaded model gives {actual}"
    )]
    SelfCheck { recorded: f64, actual: f64 },
}

/// sha256 of the canonical form of `model`, hex.
pub fn digest(model: &Model) -> String {
    // Serializing plain structs, vectors, strings and finite floats to a
    // Vec cannot fail; an error here would be a bug in the types above.
    let canonical = serde_json::to_vec(model).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

impl Artifact {
    /// Seals a model with the digest of its canonical form.
    pub fn seal(model: Model) -> Self {
        Artifact {
            sha256: digest(&model),
            model,
        }
    }

    /// The file's bytes: compact JSON and a final newline (pretty printing
    /// would put each of the forest's ~100,000 numbers on a line of its own
    /// and quadruple the size; `ferry-inference verify` or `jq` read it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| ArtifactError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses and verifies an artifact (see the module's guarantees).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ArtifactError> {
        let artifact: Artifact = serde_json::from_slice(bytes).map_err(ArtifactError::Parse)?;
        artifact.verify()?;
        Ok(artifact)
    }

    fn verify(&self) -> Result<(), ArtifactError> {
        let actual = digest(&self.model);
        if actual != self.sha256 {
            return Err(ArtifactError::Digest {
                recorded: self.sha256.clone(),
                actual,
            });
        }
        let model = &self.model;
        if model.format != FORMAT {
            return Err(ArtifactError::Format(model.format));
        }
        if model.name != MODEL_NAME {
            return Err(ArtifactError::Name(model.name.clone()));
        }
        check_schema(&model.schema)?;
        model.forest.validate()?;
        if model.forest.columns != model.schema.encoded_len() {
            return Err(ArtifactError::Schema(format!(
                "the forest reads {} columns, the schema encodes {}",
                model.forest.columns,
                model.schema.encoded_len()
            )));
        }
        let candidate = model
            .schema
            .parse_object(&serde_json::Value::Object(
                model.self_check.candidate.clone(),
            ))
            .map_err(ArtifactError::SelfCheckInput)?;
        let actual = model.predict(&candidate);
        if actual != model.self_check.probability {
            return Err(ArtifactError::SelfCheck {
                recorded: model.self_check.probability,
                actual,
            });
        }
        Ok(())
    }
}

fn check_schema(schema: &FeatureSchema) -> Result<(), ArtifactError> {
    if schema.features.is_empty() {
        return Err(ArtifactError::Schema("no features".into()));
    }
    for (i, f) in schema.features.iter().enumerate() {
        if schema.index_of(&f.name) != Some(i) {
            return Err(ArtifactError::Schema(format!(
                "feature {:?} appears twice",
                f.name
            )));
        }
        match &f.kind {
            FeatureKind::Numeric {
                valid_range: [lo, hi],
                ..
            } if !(lo.is_finite() && hi.is_finite() && lo <= hi) => {
                return Err(ArtifactError::Schema(format!(
                    "feature {:?} has an empty valid range",
                    f.name
                )));
            }
            FeatureKind::Categorical { categories } if categories.is_empty() => {
                return Err(ArtifactError::Schema(format!(
                    "feature {:?} has no categories",
                    f.name
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

impl Model {
    /// Probability that `candidate` is placed.
    pub fn predict(&self, candidate: &Candidate) -> f64 {
        self.forest.probability(&self.schema.encode(candidate))
    }
}

/// Reads and verifies an artifact file.
pub fn load(path: &Path) -> Result<Artifact, ArtifactError> {
    let bytes = std::fs::read(path).map_err(|source| ArtifactError::Read {
        path: path.to_owned(),
        source,
    })?;
    Artifact::from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::ForestParams;

    fn small_artifact() -> Artifact {
        let csv = include_bytes!("../data/Train_Data.csv");
        let params = ForestParams {
            trees: 4,
            ..ForestParams::default()
        };
        crate::train::train(csv, &params, &mut |_| {}).unwrap()
    }

    /// Re-seals after an edit, as someone who knows the format would.
    fn resealed(mut artifact: Artifact, edit: impl FnOnce(&mut Model)) -> Vec<u8> {
        edit(&mut artifact.model);
        Artifact::seal(artifact.model).to_bytes()
    }

    #[test]
    fn round_trips_through_bytes() {
        let artifact = small_artifact();
        assert_eq!(
            Artifact::from_bytes(&artifact.to_bytes()).unwrap(),
            artifact
        );
    }

    #[test]
    fn refuses_an_edited_file() {
        let bytes = small_artifact().to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        // Change the first tree's root threshold without updating the digest.
        let start = text.find("\"threshold\":[").unwrap() + "\"threshold\":[".len();
        let end = start + text[start..].find(',').unwrap();
        let tampered = format!("{}{}{}", &text[..start], "50.5", &text[end..]);
        let err = Artifact::from_bytes(tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, ArtifactError::Digest { .. }), "{err}");
        let renamed = text.replace("\"name\":\"placement\"", "\"name\":\"placemenT\"");
        let err = Artifact::from_bytes(renamed.as_bytes()).unwrap_err();
        assert!(matches!(err, ArtifactError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("corrupted or was edited"));
    }

    #[test]
    fn refuses_a_truncated_file() {
        let bytes = small_artifact().to_bytes();
        let err = Artifact::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, ArtifactError::Parse(_)), "{err}");
    }

    #[test]
    fn refuses_a_resealed_model_that_fails_its_self_check() {
        let bytes = resealed(small_artifact(), |m| {
            for tree in &mut m.forest.trees {
                for v in &mut tree.value {
                    *v = 1.0 - *v;
                }
            }
        });
        let err = Artifact::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, ArtifactError::SelfCheck { .. }), "{err}");
    }

    #[test]
    fn refuses_a_resealed_model_with_a_broken_forest_or_schema() {
        let bytes = resealed(small_artifact(), |m| m.forest.trees[0].left[0] = 0);
        assert!(matches!(
            Artifact::from_bytes(&bytes),
            Err(ArtifactError::Forest(_))
        ));
        let bytes = resealed(small_artifact(), |m| {
            m.schema.features.pop();
        });
        assert!(matches!(
            Artifact::from_bytes(&bytes),
            Err(ArtifactError::Schema(_))
        ));
        let bytes = resealed(small_artifact(), |m| m.format = 99);
        assert!(matches!(
            Artifact::from_bytes(&bytes),
            Err(ArtifactError::Format(99))
        ));
    }
}

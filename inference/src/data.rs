//! Reading candidates from CSV: the labelled training file, and unlabelled
//! files (any column order) for batch prediction.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::features::{Candidate, FeatureError, FeatureSchema, FeatureValue, SchemaError};

/// The label column of the training file and its positive class.
pub const TARGET: &str = "status";
pub const POSITIVE_CLASS: &str = "Placed";
/// Every numeric feature is a percentage.
pub const VALID_RANGE: [f64; 2] = [0.0, 100.0];

/// A labelled training set, with the schema learnt from it.
#[derive(Debug, Clone)]
pub struct TrainingData {
    pub schema: FeatureSchema,
    pub candidates: Vec<Candidate>,
    pub labels: Vec<bool>,
    /// Encoded rows, one per candidate.
    pub x: Array2<f64>,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse the CSV data")]
    Csv(#[source] csv::Error),
    #[error("the training data has no `{TARGET}` column; add the label column to the CSV header")]
    MissingTarget,
    #[error(
        "the `{TARGET}` column has {0:?}: expected exactly two classes, one of them {POSITIVE_CLASS:?}"
    )]
    Classes(Vec<String>),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("row {row}: {source}")]
    Row {
        row: usize,
        #[source]
        source: FeatureError,
    },
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_table(bytes: &[u8]) -> Result<(Vec<String>, Vec<Vec<String>>), DataError> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(DataError::Csv)?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(DataError::Csv)?;
        rows.push(record.iter().map(|v| v.trim().to_owned()).collect());
    }
    Ok((header, rows))
}

/// Parses labelled training CSV: every column but [`TARGET`] is a feature.
pub fn training_data(bytes: &[u8]) -> Result<TrainingData, DataError> {
    let (header, rows) = parse_table(bytes)?;
    let target = header
        .iter()
        .position(|h| h == TARGET)
        .ok_or(DataError::MissingTarget)?;

    let mut classes: Vec<String> = rows.iter().map(|r| r[target].clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() != 2 || !classes.iter().any(|c| c == POSITIVE_CLASS) {
        return Err(DataError::Classes(classes));
    }

    let columns: Vec<(String, Vec<String>)> = header
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != target)
        .map(|(i, name)| (name.clone(), rows.iter().map(|r| r[i].clone()).collect()))
        .collect();
    let schema = FeatureSchema::learn(&columns, VALID_RANGE)?;
    let candidates = candidates(&schema, &header, &rows)?;
    let labels = rows.iter().map(|r| r[target] == POSITIVE_CLASS).collect();
    let x = encode_all(&schema, &candidates);
    Ok(TrainingData {
        schema,
        candidates,
        labels,
        x,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// Parses candidates from CSV whose header names the schema's features in
/// any order (a label column, if present, is ignored).
pub fn unlabelled(schema: &FeatureSchema, bytes: &[u8]) -> Result<Vec<Candidate>, DataError> {
    let (header, rows) = parse_table(bytes)?;
    candidates(schema, &header, &rows)
}

fn candidates(
    schema: &FeatureSchema,
    header: &[String],
    rows: &[Vec<String>],
) -> Result<Vec<Candidate>, DataError> {
    let mut positions = Vec::with_capacity(schema.features.len());
    for feature in &schema.features {
        let position = header
            .iter()
            .position(|h| *h == feature.name)
            .ok_or_else(|| DataError::Row {
                row: 1,
                source: FeatureError::Missing {
                    field: feature.name.clone(),
                    expected: feature.kind.expected(),
                },
            })?;
        positions.push(position);
    }
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let values = positions
                .iter()
                .enumerate()
                .map(|(index, &column)| parse_text(schema, index, &row[column]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| DataError::Row { row: r + 2, source })?;
            Ok(Candidate(values))
        })
        .collect()
}

/// Validates a CSV cell the way a JSON value is validated: numbers for
/// numeric features, known categories for categorical ones.
fn parse_text(
    schema: &FeatureSchema,
    index: usize,
    text: &str,
) -> Result<FeatureValue, FeatureError> {
    let value = match text.parse::<f64>() {
        Ok(n) if schema.parse_category(index, text).is_none() => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::String(text.to_owned()),
    };
    schema.parse_value(index, &value)
}

/// Encodes candidates into a matrix, one row each.
pub fn encode_all(schema: &FeatureSchema, candidates: &[Candidate]) -> Array2<f64> {
    let width = schema.encoded_len();
    let mut x = Array2::zeros((candidates.len(), width));
    for (mut row, candidate) in x.rows_mut().into_iter().zip(candidates) {
        let mut encoded = vec![0.0; width];
        schema.encode_into(candidate, &mut encoded);
        row.assign(&ndarray::ArrayView1::from(&encoded));
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "gender,ssc_p,status\nM,60,Placed\nF,70.5,Not Placed\nM,80,Placed\n";

    #[test]
    fn reads_labels_schema_and_digest() {
        let data = training_data(CSV.as_bytes()).unwrap();
        assert_eq!(data.labels, [true, false, true]);
        assert_eq!(data.schema.names().collect::<Vec<_>>(), ["gender", "ssc_p"]);
        assert_eq!(data.x.row(1).to_vec(), [1.0, 0.0, 70.5]);
        assert_eq!(data.sha256, hex::encode(Sha256::digest(CSV.as_bytes())));
    }

    #[test]
    fn unlabelled_columns_in_any_order() {
        let data = training_data(CSV.as_bytes()).unwrap();
        let c = unlabelled(&data.schema, b"ssc_p,gender\n65,F\n").unwrap();
        assert_eq!(data.schema.encode(&c[0]), [1.0, 0.0, 65.0]);
        let err = unlabelled(&data.schema, b"ssc_p,gender\n65,X\n").unwrap_err();
        assert!(err.to_string().contains("row 2"), "{err}");
    }

    #[test]
    fn refuses_a_file_without_two_classes() {
        let err = training_data(b"gender,status\nM,Placed\nF,Placed\n").unwrap_err();
        assert!(matches!(err, DataError::Classes(_)));
        assert!(matches!(
            training_data(b"gender\nM\n"),
            Err(DataError::MissingTarget)
        ));
    }
}

//! The model's input features: what a candidate is, how a request value is
//! validated, and how a candidate is one-hot encoded for the trees.
//!
//! The schema is learnt from the training data (a column whose every value
//! parses as a number is numeric, any other column is categorical with the
//! categories seen) and stored in the artifact, so the server validates
//! requests against exactly what the model was trained on.
//!
//! Encoding follows scikit-learn's `DictVectorizer`, which the original
//! service used: a numeric feature is one column holding its value, a
//! categorical feature is one column per category (in sorted order) holding
//! 1.0 for the category present and 0.0 for the others.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one feature accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// A finite number inside `valid_range`; `range_seen` records the
    /// training data's extent for readers (it is not enforced: a score the
    /// training set did not contain is still a valid score).
    Numeric {
        valid_range: [f64; 2],
        range_seen: [f64; 2],
    },
    /// One of `categories`, compared exactly (case matters).
    Categorical { categories: Vec<String> },
}

/// One named input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

/// The ordered list of input features of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub features: Vec<Feature>,
}

/// One validated feature value, aligned with the schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureValue {
    Number(f64),
    /// Index into the feature's `categories`.
    Category(usize),
}

/// A validated candidate: one value per schema feature, in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate(pub Vec<FeatureValue>);

/// Why a request value was refused. Every message names the field and what
/// was expected, because it is returned to the client as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("missing field `{field}`: expected {expected}")]
    Missing { field: String, expected: String },
    #[error("unknown field `{field}`: expected only the fields {expected}")]
    Unknown { field: String, expected: String },
    #[error("wrong type for field `{field}`: expected {expected}, got {got}")]
    WrongType {
        field: String,
        expected: String,
        got: &'static str,
    },
    #[error("unknown category {value:?} for field `{field}`: expected one of {expected}")]
    UnknownCategory {
        field: String,
        value: String,
        expected: String,
    },
    #[error(
        "value {value} for field `{field}` is out of range: expected a number from {min} to {max}"
    )]
    OutOfRange {
        field: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("expected a JSON object of the {count} features, got {got}")]
    NotAnObject { count: usize, got: &'static str },
}

/// Why a schema could not be learnt from training columns.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("failed to learn the schema: column `{column}` has no values")]
    EmptyColumn { column: String },
    #[error(
        "failed to learn the schema: numeric column `{column}` has value {value} outside the valid range {min}..={max}"
    )]
    OutOfRange {
        column: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("failed to learn the schema: column `{column}` has a non-finite value")]
    NotFinite { column: String },
}

/// The JSON type name of a value, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl FeatureKind {
    /// A short description of what the feature accepts, for error messages.
    pub fn expected(&self) -> String {
        match self {
            FeatureKind::Numeric { valid_range, .. } => {
                format!("a number from {} to {}", valid_range[0], valid_range[1])
            }
            FeatureKind::Categorical { categories } => {
                format!("one of the strings {}", quoted_list(categories))
            }
        }
    }
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|c| format!("{c:?}")).collect();
    quoted.join(", ")
}

impl FeatureSchema {
    /// Learns a schema from named columns of raw text values.
    ///
    /// A column is numeric when every value parses as a finite `f64`; such
    /// values must lie in `valid_range`. Categories are kept sorted so the
    /// encoding does not depend on row order.
    pub fn learn(
        columns: &[(String, Vec<String>)],
        valid_range: [f64; 2],
    ) -> Result<Self, SchemaError> {
        let mut features = Vec::with_capacity(columns.len());
        for (name, values) in columns {
            if values.is_empty() {
                return Err(SchemaError::EmptyColumn {
                    column: name.clone(),
                });
            }
            let numbers: Option<Vec<f64>> = values.iter().map(|v| v.trim().parse().ok()).collect();
            let kind = match numbers {
                Some(numbers) => {
                    let mut seen = [f64::INFINITY, f64::NEG_INFINITY];
                    for &n in &numbers {
                        if !n.is_finite() {
                            return Err(SchemaError::NotFinite {
                                column: name.clone(),
                            });
                        }
                        if n < valid_range[0] || n > valid_range[1] {
                            return Err(SchemaError::OutOfRange {
                                column: name.clone(),
                                value: n,
                                min: valid_range[0],
                                max: valid_range[1],
                            });
                        }
                        seen = [seen[0].min(n), seen[1].max(n)];
                    }
                    FeatureKind::Numeric {
                        valid_range,
                        range_seen: seen,
                    }
                }
                None => {
                    let categories: BTreeSet<&String> = values.iter().collect();
                    FeatureKind::Categorical {
                        categories: categories.into_iter().cloned().collect(),
                    }
                }
            };
            features.push(Feature {
                name: name.clone(),
                kind,
            });
        }
        Ok(FeatureSchema { features })
    }

    /// The feature names, in schema order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// Position of a feature by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// Number of columns of the encoded row.
    pub fn encoded_len(&self) -> usize {
        self.features
            .iter()
            .map(|f| match &f.kind {
                FeatureKind::Numeric { .. } => 1,
                FeatureKind::Categorical { categories } => categories.len(),
            })
            .sum()
    }

    /// Names of the encoded columns, `name` for numeric and `name=category`
    /// for one-hot columns (the `DictVectorizer` convention).
    pub fn encoded_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.encoded_len());
        for f in &self.features {
            match &f.kind {
                FeatureKind::Numeric { .. } => names.push(f.name.clone()),
                FeatureKind::Categorical { categories } => {
                    names.extend(categories.iter().map(|c| format!("{}={c}", f.name)))
                }
            }
        }
        names
    }

    /// Validates one JSON value for the feature at `index`.
    pub fn parse_value(&self, index: usize, value: &Value) -> Result<FeatureValue, FeatureError> {
        let feature = &self.features[index];
        match &feature.kind {
            FeatureKind::Numeric { .. } => {
                let number = value.as_f64().ok_or_else(|| FeatureError::WrongType {
                    field: feature.name.clone(),
                    expected: feature.kind.expected(),
                    got: json_type(value),
                })?;
                self.check_number(index, number)
            }
            FeatureKind::Categorical { categories } => {
                let text = value.as_str().ok_or_else(|| FeatureError::WrongType {
                    field: feature.name.clone(),
                    expected: feature.kind.expected(),
                    got: json_type(value),
                })?;
                self.parse_category(index, text)
                    .ok_or_else(|| FeatureError::UnknownCategory {
                        field: feature.name.clone(),
                        value: text.to_owned(),
                        expected: quoted_list(categories),
                    })
            }
        }
    }

    /// Validates a number for the numeric feature at `index`.
    pub fn check_number(&self, index: usize, number: f64) -> Result<FeatureValue, FeatureError> {
        let feature = &self.features[index];
        let [min, max] = valid_range_of(feature).unwrap_or([f64::MIN, f64::MAX]);
        // `!(a <= b)` also refuses NaN, which never compares.
        if !(number >= min && number <= max) {
            return Err(FeatureError::OutOfRange {
                field: feature.name.clone(),
                value: number,
                min,
                max,
            });
        }
        Ok(FeatureValue::Number(number))
    }

    /// Looks up a category of the categorical feature at `index`.
    pub fn parse_category(&self, index: usize, text: &str) -> Option<FeatureValue> {
        match &self.features[index].kind {
            FeatureKind::Categorical { categories } => categories
                .iter()
                .position(|c| c == text)
                .map(FeatureValue::Category),
            FeatureKind::Numeric { .. } => None,
        }
    }

    /// Validates a JSON object holding exactly the schema's features.
    pub fn parse_object(&self, value: &Value) -> Result<Candidate, FeatureError> {
        let object = value.as_object().ok_or(FeatureError::NotAnObject {
            count: self.features.len(),
            got: json_type(value),
        })?;
        // An unknown key is reported before a missing one. Searching for one
        // compares every key with every name, so it runs only when the
        // counts differ or a feature is not found (as many keys as
        // features, all found, leaves no room for an unknown key).
        let unknown = || {
            object
                .keys()
                .find(|k| self.index_of(k).is_none())
                .map(|unknown| FeatureError::Unknown {
                    field: unknown.clone(),
                    expected: self.names().collect::<Vec<_>>().join(", "),
                })
        };
        if object.len() != self.features.len()
            && let Some(error) = unknown()
        {
            return Err(error);
        }
        let mut values = Vec::with_capacity(self.features.len());
        for (index, feature) in self.features.iter().enumerate() {
            let Some(value) = object.get(&feature.name) else {
                return Err(unknown().unwrap_or_else(|| FeatureError::Missing {
                    field: feature.name.clone(),
                    expected: feature.kind.expected(),
                }));
            };
            values.push(self.parse_value(index, value)?);
        }
        Ok(Candidate(values))
    }

    /// Writes the encoded row of `candidate` into `row`, which must be
    /// `encoded_len()` long.
    pub fn encode_into(&self, candidate: &Candidate, row: &mut [f64]) {
        debug_assert_eq!(row.len(), self.encoded_len());
        let mut column = 0;
        for (feature, value) in self.features.iter().zip(&candidate.0) {
            match (&feature.kind, value) {
                (FeatureKind::Numeric { .. }, FeatureValue::Number(n)) => {
                    row[column] = *n;
                    column += 1;
                }
                (FeatureKind::Categorical { categories }, FeatureValue::Category(i)) => {
                    for (j, slot) in row[column..column + categories.len()]
                        .iter_mut()
                        .enumerate()
                    {
                        *slot = if j == *i { 1.0 } else { 0.0 };
                    }
                    column += categories.len();
                }
                // A candidate is only built through this schema, so kinds match;
                // a mismatch would be a programming error, encoded as zeros.
                (FeatureKind::Numeric { .. }, _) => column += 1,
                (FeatureKind::Categorical { categories }, _) => column += categories.len(),
            }
        }
    }

    /// The encoded row of `candidate`.
    pub fn encode(&self, candidate: &Candidate) -> Vec<f64> {
        let mut row = vec![0.0; self.encoded_len()];
        self.encode_into(candidate, &mut row);
        row
    }

    /// The candidate as a JSON object, the shape the `/predict` API takes.
    pub fn to_json(&self, candidate: &Candidate) -> serde_json::Map<String, Value> {
        let mut object = serde_json::Map::new();
        for (feature, value) in self.features.iter().zip(&candidate.0) {
            let json = match (&feature.kind, value) {
                (_, FeatureValue::Number(n)) => serde_json::json!(n),
                (FeatureKind::Categorical { categories }, FeatureValue::Category(i)) => {
                    Value::String(categories[*i].clone())
                }
                (FeatureKind::Numeric { .. }, FeatureValue::Category(_)) => Value::Null,
            };
            object.insert(feature.name.clone(), json);
        }
        object
    }
}

fn valid_range_of(feature: &Feature) -> Option<[f64; 2]> {
    match &feature.kind {
        FeatureKind::Numeric { valid_range, .. } => Some(*valid_range),
        FeatureKind::Categorical { .. } => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A small schema with one feature of each kind.
    pub(crate) fn schema() -> FeatureSchema {
        FeatureSchema::learn(
            &[
                ("gender".into(), vec!["M".into(), "F".into(), "M".into()]),
                (
                    "ssc_p".into(),
                    vec!["60".into(), "71.5".into(), "80".into()],
                ),
                (
                    "hsc_s".into(),
                    vec!["Science".into(), "Arts".into(), "Commerce".into()],
                ),
            ],
            [0.0, 100.0],
        )
        .unwrap()
    }

    #[test]
    fn learns_kinds_sorted_categories_and_ranges() {
        let s = schema();
        assert_eq!(
            s.features[0].kind,
            FeatureKind::Categorical {
                categories: vec!["F".into(), "M".into()]
            }
        );
        assert_eq!(
            s.features[1].kind,
            FeatureKind::Numeric {
                valid_range: [0.0, 100.0],
                range_seen: [60.0, 80.0]
            }
        );
        assert_eq!(
            s.encoded_names(),
            [
                "gender=F",
                "gender=M",
                "ssc_p",
                "hsc_s=Arts",
                "hsc_s=Commerce",
                "hsc_s=Science"
            ]
        );
    }

    #[test]
    fn refuses_training_values_outside_the_valid_range() {
        let err = FeatureSchema::learn(&[("x".into(), vec!["101".into()])], [0.0, 100.0]);
        assert!(matches!(err, Err(SchemaError::OutOfRange { .. })));
    }

    #[test]
    fn encodes_one_hot_in_dictvectorizer_order() {
        let s = schema();
        let c = s
            .parse_object(&json!({"gender": "M", "ssc_p": 71.5, "hsc_s": "Commerce"}))
            .unwrap();
        assert_eq!(s.encode(&c), [0.0, 1.0, 71.5, 0.0, 1.0, 0.0]);
        assert_eq!(
            Value::Object(s.to_json(&c)),
            json!({"gender": "M", "ssc_p": 71.5, "hsc_s": "Commerce"})
        );
    }

    #[test]
    fn each_bad_input_class_names_the_field() {
        let s = schema();
        let cases = [
            (
                json!({"ssc_p": 70, "hsc_s": "Arts"}),
                "missing field `gender`",
            ),
            (
                json!({"gender": "M", "ssc_P": 70, "hsc_s": "Arts"}),
                "unknown field `ssc_P`",
            ),
            (
                json!({"gender": "M", "ssc_p": 70, "hsc_s": "Arts", "age": 3}),
                "unknown field `age`",
            ),
            (
                json!({"gender": "M", "ssc_p": "70", "hsc_s": "Arts"}),
                "wrong type for field `ssc_p`: expected a number from 0 to 100, got a string",
            ),
            (
                json!({"gender": "X", "ssc_p": 70, "hsc_s": "Arts"}),
                "unknown category \"X\" for field `gender`: expected one of \"F\", \"M\"",
            ),
            (
                json!({"gender": "M", "ssc_p": 170, "hsc_s": "Arts"}),
                "value 170 for field `ssc_p` is out of range",
            ),
            (
                json!(["M"]),
                "expected a JSON object of the 3 features, got an array",
            ),
        ];
        for (input, expected) in cases {
            let err = s.parse_object(&input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn nan_is_out_of_range() {
        let err = schema().check_number(1, f64::NAN).unwrap_err();
        assert!(matches!(err, FeatureError::OutOfRange { .. }));
    }
}

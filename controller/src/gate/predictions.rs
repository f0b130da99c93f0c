//! The prediction check (`healthCheck.predictions`): a pod must answer the
//! cases CI wrote (the requests, and the answers of the model that passed
//! CI's gate) as that model did, so ferry knows the pod serves exactly the
//! model CI tested; and, with `compareWithRunning`, it may change the
//! class of at most a share of the cases against the revision that runs.
//!
//! Guarantees: the cases come from git and the answers from a pod, both
//! untrusted: parsing is bounded ([`MAX_CASES`], [`MAX_BYTES`]) and never
//! panics, and an error names the line. Two answers agree when they have
//! the same shape and values, numbers within [`TOLERANCE`] of each other;
//! two classes agree when the answers without their numbers are equal.

use serde::Deserialize;
use serde_json::Value;

use super::observe::cap;

/// At most this many cases are read from the file.
pub const MAX_CASES: usize = 1000;
/// A cases file may be at most this long.
pub const MAX_BYTES: usize = 1 << 20;
/// Numbers that differ by no more than this agree (ferry-inference is
/// deterministic: the same model gives the same probabilities).
pub const TOLERANCE: f64 = 1e-9;

/// One case: what is sent, and what the gated model answered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub request: Value,
    pub answer: Value,
}

/// Reads the JSON lines of a cases file (`path` names it in errors).
pub fn parse_cases(text: &[u8], path: &str) -> Result<Vec<Case>, String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "{path} is {} bytes; a cases file may be at most {MAX_BYTES}",
            text.len()
        ));
    }
    let text = std::str::from_utf8(text).map_err(|e| format!("{path} is not UTF-8: {e}"))?;
    let mut cases = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if cases.len() == MAX_CASES {
            return Err(format!("{path} has more than {MAX_CASES} cases"));
        }
        let case: Case = serde_json::from_str(line).map_err(|e| {
            format!(
                "{path} line {}: not a case {{\"request\": ..., \"answer\": ...}}: {e}",
                number + 1
            )
        })?;
        cases.push(case);
    }
    if cases.is_empty() {
        return Err(format!("{path} holds no cases"));
    }
    Ok(cases)
}

/// Whether `got` answers as `expected` does: same shape, same values,
/// numbers within [`TOLERANCE`].
pub fn agrees(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE,
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| agrees(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| agrees(v, w)))
        }
        (a, b) => a == b,
    }
}

/// An answer's class: the answer without its numbers (`{"Placement":
/// true}` of `{"Placement": true, "Placement_Probability": 0.97}`).
pub fn class_of(answer: &Value) -> Value {
    match answer {
        Value::Number(_) => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(class_of).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_number())
                .map(|(k, v)| (k.clone(), class_of(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// How a pod answered the cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub cases: usize,
    pub disagreements: usize,
    /// The first case answered otherwise: its line (1-based among the
    /// cases), the answer wanted and the answer given.
    pub first: Option<(usize, Value, Value)>,
}

impl Tally {
    /// Tallies `answers` (the pod's, in the cases' order) against what
    /// `wanted` says each should be; `same` decides agreement.
    pub fn of(wanted: &[Value], answers: &[Value], same: impl Fn(&Value, &Value) -> bool) -> Tally {
        let mut tally = Tally {
            cases: wanted.len(),
            disagreements: 0,
            first: None,
        };
        for (i, (want, got)) in wanted.iter().zip(answers).enumerate() {
            if !same(want, got) {
                tally.disagreements += 1;
                tally
                    .first
                    .get_or_insert_with(|| (i + 1, want.clone(), got.clone()));
            }
        }
        tally
    }

    /// Within `max` (a share of the cases)?
    pub fn within(&self, max: f64) -> bool {
        self.cases > 0 && (self.disagreements as f64) <= max * self.cases as f64
    }

    /// `3 of 50 cases disagree (at most 0% may); case 7: wanted ..., got ...`.
    pub fn describe(&self, max: f64) -> String {
        // To a tenth of a percent: 0.07 reads 7, not 7.000000000000001.
        let percent = (max * 1000.0).round() / 10.0;
        let mut text = format!(
            "{} of {} cases disagree (at most {percent}% may)",
            self.disagreements, self.cases
        );
        if let Some((line, want, got)) = &self.first {
            text.push_str(&format!(
                "; case {line}: wanted {}, got {}",
                cap(&want.to_string(), 200),
                cap(&got.to_string(), 200)
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn cases_are_json_lines_and_errors_name_the_line() {
        let text = b"{\"request\": {\"a\": 1}, \"answer\": {\"p\": 0.5}}\n\n{\"request\": 2, \"answer\": 3}\n";
        let cases = parse_cases(text, "golden.jsonl").unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[1].answer, json!(3));
        let broken = parse_cases(b"{\"request\": 1, \"answer\": 2}\n{\"request\": 1}\n", "g");
        assert!(broken.unwrap_err().starts_with("g line 2: not a case"));
        assert!(
            parse_cases(b"\n", "g")
                .unwrap_err()
                .contains("holds no cases")
        );
        let many = "{\"request\": 1, \"answer\": 2}\n".repeat(MAX_CASES + 1);
        assert!(
            parse_cases(many.as_bytes(), "g")
                .unwrap_err()
                .contains("more than 1000")
        );
        assert!(parse_cases(&vec![b' '; MAX_BYTES + 1], "g").is_err());
    }

    #[test]
    fn answers_agree_on_values_with_numbers_within_the_tolerance() {
        let wanted = json!({"Placement": true, "Placement_Probability": 0.966796875});
        assert!(agrees(
            &wanted,
            &json!({"Placement_Probability": 0.9667968750000001, "Placement": true})
        ));
        assert!(!agrees(
            &wanted,
            &json!({"Placement": true, "Placement_Probability": 0.97})
        ));
        assert!(!agrees(
            &wanted,
            &json!({"Placement": false, "Placement_Probability": 0.966796875})
        ));
        assert!(!agrees(&wanted, &json!({"Placement": true})));
        assert!(!agrees(&json!([1, 2]), &json!([1])));
        assert!(agrees(&json!(["a", 1]), &json!(["a", 1.0])));
    }

    #[test]
    fn classes_leave_the_numbers_out() {
        let a = json!({"Placement": true, "Placement_Probability": 0.97});
        let b = json!({"Placement": true, "Placement_Probability": 0.51});
        assert_eq!(class_of(&a), class_of(&b));
        assert_ne!(
            class_of(&a),
            class_of(&json!({"Placement": false, "Placement_Probability": 0.49}))
        );
    }

    #[test]
    fn a_tally_counts_disagreements_against_the_share_allowed() {
        let wanted = [json!(1), json!(2), json!(3), json!(4)];
        let answers = [json!(1), json!(5), json!(3), json!(4)];
        let tally = Tally::of(&wanted, &answers, agrees);
        assert_eq!((tally.cases, tally.disagreements), (4, 1));
        assert!(!tally.within(0.0));
        assert!(tally.within(0.25));
        assert_eq!(
            tally.describe(0.0),
            "1 of 4 cases disagree (at most 0% may); case 2: wanted 2, got 5"
        );
        assert!(tally.describe(0.07).contains("(at most 7% may)"));
        // A pod that answered nothing cannot pass.
        assert!(!Tally::of(&[], &[], agrees).within(1.0));
    }

    proptest! {
        #[test]
        fn any_cases_file_is_read_without_panic(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_cases(&text, "g");
        }

        #[test]
        fn an_answer_agrees_with_itself(text in "\\PC{0,60}", n in any::<f64>()) {
            let value = json!({"t": text, "n": if n.is_finite() { json!(n) } else { json!(0) }});
            prop_assert!(agrees(&value, &value));
            prop_assert_eq!(class_of(&value), class_of(&value));
        }
    }
}

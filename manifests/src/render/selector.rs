//! Kubernetes label selectors in their string form, as patch targets and
//! replacements use them (`labelSelector`, `annotationSelector`): `key`,
//! `!key`, `key=value`, `key==value`, `key!=value`, `key in (a, b)` and
//! `key notin (a, b)`, joined by commas.
//!
//! Guarantees: the meaning is the API server's (`k8s.io/apimachinery`'s
//! `labels.Parse`): `!=` and `notin` also match objects without the key;
//! every term must hold. A selector that does not parse is an error that
//! quotes it, never a silent "matches nothing" or "matches everything".

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, map: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = |key: &str| map.and_then(|m| m.get(key)).and_then(Value::as_str);
        match self {
            Requirement::Exists(key) => map.is_some_and(|m| m.contains_key(key)),
            Requirement::NotExists(key) => !map.is_some_and(|m| m.contains_key(key)),
            Requirement::In(key, values) => {
                value(key).is_some_and(|v| values.iter().any(|w| w == v))
            }
            Requirement::NotIn(key, values) => {
                !value(key).is_some_and(|v| values.iter().any(|w| w == v))
            }
        }
    }
}

/// A parsed selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Whether a label (or annotation) map satisfies the selector. A
    /// missing or non-mapping `map` is an object without labels.
    pub fn matches(&self, map: Option<&Value>) -> bool {
        let map = map.and_then(Value::as_object);
        self.0.iter().all(|r| r.matches(map))
    }
}

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    out.push(&text[start..]);
    Ok(out)
}

fn key(text: &str) -> Result<String, String> {
    let key = text.trim();
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("{key:?} is not a label key"))
    }
}

fn value(text: &str) -> Result<String, String> {
    let value = text.trim();
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

/// `key in (a, b)` / `key notin (a, b)`: the operator word and the set.
fn set_term(term: &str) -> Option<Result<Requirement, String>> {
    let open = term.find('(')?;
    let head = term[..open].trim_end();
    let (key_text, negated) = if let Some(k) = head.strip_suffix(" notin") {
        (k, true)
    } else if let Some(k) = head.strip_suffix(" in") {
        (k, false)
    } else {
        return None;
    };
    let rest = &term[open + 1..];
    let parsed = (|| {
        let inner = rest
            .trim_end()
            .strip_suffix(')')
            .ok_or_else(|| format!("{term:?}: the set must end with ')'"))?;
        let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        let key = key(key_text)?;
        Ok(if negated {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        })
    })();
    Some(parsed)
}

/// Parses a selector. The empty selector matches everything, as in
/// Kubernetes.
pub fn parse(text: &str) -> Result<Selector, String> {
    let mut requirements = Vec::new();
    if text.trim().is_empty() {
        return Ok(Selector(requirements));
    }
    for term in terms(text)? {
        let term = term.trim();
        if term.is_empty() {
            return Err("an empty term (two commas, or a trailing comma)".into());
        }
        if let Some(set) = set_term(term) {
            requirements.push(set?);
        } else if let Some((k, v)) = term.split_once("!=") {
            requirements.push(Requirement::NotIn(key(k)?, vec![value(v)?]));
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            requirements.push(Requirement::In(key(k)?, vec![value(v)?]));
        } else if let Some(k) = term.strip_prefix('!') {
            requirements.push(Requirement::NotExists(key(k)?));
        } else {
            requirements.push(Requirement::Exists(key(term)?));
        }
    }
    Ok(Selector(requirements))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn matches(selector: &str, labels: Value) -> bool {
        parse(selector).unwrap().matches(Some(&labels))
    }

    #[test]
    fn every_operator_means_what_the_api_server_says() {
        let web = json!({"app": "web", "tier": "front"});
        let db = json!({"app": "db"});
        for (selector, on_web, on_db) in [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app in (web, api)", true, false),
            ("app notin (web,api)", false, true),
            ("app in (db),!tier", false, true),
            ("tier!=back", true, true),
            ("tier notin (back)", true, true),
            ("", true, true),
        ] {
            assert_eq!(matches(selector, web.clone()), on_web, "{selector} on web");
            assert_eq!(matches(selector, db.clone()), on_db, "{selector} on db");
        }
        // No labels at all: only negative terms match.
        assert!(parse("app!=web").unwrap().matches(None));
        assert!(!parse("app=web").unwrap().matches(None));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "app in (web",
            "app)",
            "app=web,,tier",
            "app=web,",
            "=web",
            "app=we b",
            "app in web",
            "a b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        /// Untrusted text from git: parsing never panics.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn negation_is_the_complement(key in "[a-z]{1,3}", v in "[a-z]{1,3}", label in "[a-z]{1,3}") {
            let labels = json!({ key.clone(): label });
            let eq = matches(&format!("{key}={v}"), labels.clone());
            let ne = matches(&format!("{key}!={v}"), labels.clone());
            prop_assert_ne!(eq, ne);
            let is_in = matches(&format!("{key} in ({v})"), labels.clone());
            let not_in = matches(&format!("{key} notin ({v})"), labels);
            prop_assert_ne!(is_in, not_in);
        }
    }
}

//! `configMapGenerator` and `secretGenerator`: ConfigMaps and Secrets from
//! literals, files and env files, named with kustomize's content hash so a
//! change of content rolls the pods that use them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::error::RenderError;
use super::files::{Files, join};
use super::kustomization::{Generator, GeneratorOptions};
use super::transform::set;

/// Which object a generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
}

/// kustomize's name hash: sha256 of the JSON of kind, name and data (and
/// type for Secrets), the first ten hex digits with 0, 1, 3, a, e swapped
/// for g, h, k, m, t.
///
/// The name in that JSON is always empty: kustomize looks it up with a
/// path its lookup does not split, and finds nothing. That is what
/// `kubectl kustomize` 5.x produces (see the tests), so it is what we do.
pub fn content_hash(object: &Value) -> String {
    let name = Value::String(String::new());
    let field = |key: &str| {
        object
            .get(key)
            .cloned()
            .unwrap_or(Value::String(String::new()))
    };
    let mut m = Map::new();
    m.insert("name".into(), name);
    m.insert("data".into(), field("data"));
    if object.get("kind").and_then(Value::as_str) == Some("Secret") {
        m.insert("kind".into(), "Secret".into());
        m.insert("type".into(), field("type"));
        if let Some(v @ Value::Object(_)) = object.get("stringData") {
            m.insert("stringData".into(), v.clone());
        }
    } else {
        m.insert("kind".into(), "ConfigMap".into());
        if let Some(v @ Value::Object(_)) = object.get("binaryData") {
            m.insert("binaryData".into(), v.clone());
        }
    }
    // Go's encoding/json, which kustomize uses, escapes these in strings.
    let encoded = serde_json::to_string(&Value::Object(m))
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let hex = hex::encode(Sha256::digest(encoded.as_bytes()));
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

fn split_pair<'a>(
    text: &'a str,
    file: &str,
    what: &str,
) -> Result<(&'a str, &'a str), RenderError> {
    text.split_once('=')
        .map(|(k, v)| (k.trim(), v))
        .ok_or_else(|| RenderError::Invalid {
            file: file.to_owned(),
            message: format!("{what} {text:?} is not KEY=VALUE"),
        })
}

fn strip_quotes(v: &str) -> &str {
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// The data of a generator, key to bytes. Files may hold any bytes
/// (kustomize puts those that are not UTF-8 in `binaryData`); env files
/// are text.
fn data(
    files: &dyn Files,
    dir: &str,
    file: &str,
    generator: &Generator,
) -> Result<BTreeMap<String, Vec<u8>>, RenderError> {
    let mut out = BTreeMap::new();
    let read = |path: &str| -> Result<(String, Vec<u8>), RenderError> {
        let full = join(dir, path)?;
        let bytes = files.read(&full)?.ok_or_else(|| RenderError::Missing {
            file: file.to_owned(),
            path: full.clone(),
        })?;
        Ok((full, bytes))
    };
    for env in &generator.envs {
        let (full, bytes) = read(env)?;
        let text = String::from_utf8(bytes).map_err(|_| RenderError::Invalid {
            file: full,
            message: "an env file must be UTF-8 text".into(),
        })?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = split_pair(line, file, "env line")?;
            out.insert(k.to_owned(), v.as_bytes().to_vec());
        }
    }
    for entry in &generator.files {
        let (key, path) = match entry.split_once('=') {
            Some((k, p)) => (k.to_owned(), p.to_owned()),
            None => (
                entry.rsplit('/').next().unwrap_or(entry).to_owned(),
                entry.clone(),
            ),
        };
        out.insert(key, read(&path)?.1);
    }
    for literal in &generator.literals {
        let (k, v) = split_pair(literal, file, "literal")?;
        out.insert(k.to_owned(), strip_quotes(v).as_bytes().to_vec());
    }
    Ok(out)
}

/// The object a generator makes, named with the hash unless disabled.
pub fn generate(
    files: &dyn Files,
    dir: &str,
    file: &str,
    kind: Kind,
    generator: &Generator,
    defaults: Option<&GeneratorOptions>,
) -> Result<Value, RenderError> {
    use base64::Engine;
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    if let Some(behavior) = &generator.behavior
        && behavior != "create"
    {
        return Err(RenderError::Unsupported {
            file: file.to_owned(),
            field: format!("generator behavior: {behavior}"),
        });
    }
    let entries = data(files, dir, file, generator)?;
    let mut object = match kind {
        Kind::ConfigMap => {
            let mut text = BTreeMap::new();
            let mut binary = BTreeMap::new();
            for (key, bytes) in entries {
                match String::from_utf8(bytes) {
                    Ok(t) => text.insert(key, t),
                    Err(e) => binary.insert(key, base64(e.as_bytes())),
                };
            }
            let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator.name}, "data": text});
            if !binary.is_empty() {
                set(&mut object, &["binaryData"], json!(binary));
            }
            object
        }
        Kind::Secret => {
            let encoded: BTreeMap<String, String> =
                entries.into_iter().map(|(k, v)| (k, base64(&v))).collect();
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator.name},
                   "type": generator.type_.clone().unwrap_or_else(|| "Opaque".into()), "data": encoded})
        }
    };
    if let Some(ns) = &generator.namespace {
        set(&mut object, &["metadata", "namespace"], ns.clone().into());
    }
    let options: Vec<&GeneratorOptions> = defaults
        .into_iter()
        .chain(generator.options.as_ref())
        .collect();
    for o in &options {
        for (k, v) in &o.labels {
            set(&mut object, &["metadata", "labels", k], v.clone().into());
        }
        for (k, v) in &o.annotations {
            set(
                &mut object,
                &["metadata", "annotations", k],
                v.clone().into(),
            );
        }
        if let Some(immutable) = o.immutable {
            set(&mut object, &["immutable"], immutable.into());
        }
    }
    let hashed = !options
        .iter()
        .rev()
        .find_map(|o| o.disable_name_suffix_hash)
        .unwrap_or(false);
    if hashed {
        let hash = content_hash(&object);
        set(
            &mut object,
            &["metadata", "name"],
            format!("{}-{hash}", generator.name).into(),
        );
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_kubectl_kustomize() {
        // `kubectl kustomize` (kustomize v5.5.0) on `configMapGenerator: [{name: x, literals: [a=1]}]`
        // names it x-h29d89cmmt, and `secretGenerator: [{name: token, literals: [token=s3cr3t]}]`
        // token-ckd59g56hk.
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
        assert_eq!(content_hash(&cm), "h29d89cmmt");
        let secret = json!({"kind": "Secret", "metadata": {"name": "token"}, "type": "Opaque", "data": {"token": "czNjcjN0"}});
        assert_eq!(content_hash(&secret), "ckd59g56hk");
    }
}

//! Rendering an environment: a kustomize-compatible build of the subset of
//! kustomize that ferry's environments use, read from a directory or from
//! a commit's tree through [`Files`].
//!
//! Implemented: `resources` (files, folders, nested kustomizations),
//! `bases`, `namespace`, `namePrefix`/`nameSuffix`, `commonLabels`,
//! `labels`, `commonAnnotations`, `images`, `replicas`, `patches`,
//! `patchesStrategicMerge`, `patchesJson6902`, `configMapGenerator` and
//! `secretGenerator` (behavior `create`) with name hashes and references.
//! A folder without a kustomization renders its YAML files in name order.
//!
//! Guarantees: any other kustomization field is an error naming the field
//! and the file; the tests compare the output with `kubectl kustomize` on
//! every environment and a fixture corpus that exercises each feature; the
//! [`digest`] of the same objects is the same whatever their order.

pub mod error;
pub mod files;
pub mod generator;
pub mod kustomization;
pub mod patch;
pub mod selector;
pub mod transform;
pub mod validate;
pub mod yaml;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use error::RenderError;
pub use files::{Disk, Files};
use kustomization::{FILE_NAMES, Kustomization, PatchEntry, Target};
use transform::{Rename, kind, name};

/// `Kind/namespace/name` of an object, for messages and ordering.
pub fn object_id(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        kind(object),
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        name(object)
    )
}

/// Parses multi-document YAML; empty documents are skipped.
pub fn parse_yaml(text: &str, file: &str) -> Result<Vec<Value>, RenderError> {
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| RenderError::Yaml {
                file: file.to_owned(),
                message: e.to_string(),
            })?;
        match value {
            Value::Null => {}
            Value::Object(_) => objects.push(value),
            other => {
                return Err(RenderError::Invalid {
                    file: file.to_owned(),
                    message: format!("expected Kubernetes objects, found {other}"),
                });
            }
        }
    }
    Ok(objects)
}

fn read_text(files: &dyn Files, path: &str, from: &str) -> Result<String, RenderError> {
    let bytes = files.read(path)?.ok_or_else(|| RenderError::Missing {
        file: from.to_owned(),
        path: path.to_owned(),
    })?;
    String::from_utf8(bytes).map_err(|_| RenderError::Invalid {
        file: path.to_owned(),
        message: "not UTF-8 text".into(),
    })
}

/// Key under which an object's source file rides through the build.
const ORIGIN: &str = "__ferryOrigin";

/// Renders the kustomization (or plain folder) at `dir`.
pub fn render(files: &dyn Files, dir: &str) -> Result<Vec<Value>, RenderError> {
    Ok(render_with_origins(files, dir)?
        .into_iter()
        .map(|(o, _)| o)
        .collect())
}

/// Renders `dir`, and says for each object the file it came from (the
/// kustomization, for generated objects), so errors can name it.
pub fn render_with_origins(
    files: &dyn Files,
    dir: &str,
) -> Result<Vec<(Value, String)>, RenderError> {
    let dir = files::join("", dir)?;
    let objects = build(files, &dir, 0)?;
    let mut seen = std::collections::BTreeSet::new();
    for o in &objects {
        if !seen.insert(object_id(o)) {
            return Err(RenderError::Duplicate {
                file: dir.clone(),
                id: object_id(o),
            });
        }
    }
    let mut out: Vec<(Value, String)> = objects
        .into_iter()
        .map(|mut o| {
            let origin = o
                .as_object_mut()
                .and_then(|m| m.remove(ORIGIN))
                .and_then(|v| v.as_str().map(str::to_owned));
            (o, origin.unwrap_or_else(|| dir.clone()))
        })
        .collect();
    out.sort_by_key(|(o, _)| apply_rank(o));
    Ok(out)
}

/// Output order: the order the controller applies in (what others depend
/// on first), then by identity.
pub fn apply_rank(object: &Value) -> (usize, String) {
    (crate::order::apply_rank(kind(object)), object_id(object))
}

fn build(files: &dyn Files, dir: &str, depth: usize) -> Result<Vec<Value>, RenderError> {
    if depth > 32 {
        return Err(RenderError::Invalid {
            file: dir.to_owned(),
            message: "resources nest more than 32 levels (a cycle?)".into(),
        });
    }
    let kustomization_file = FILE_NAMES
        .iter()
        .map(|n| files::join(dir, n))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|p| files.read(p).ok().flatten().is_some());
    let Some(file) = kustomization_file else {
        return plain_folder(files, dir);
    };
    let text = read_text(files, &file, &file)?;
    let k: Kustomization = kustomization::parse(&text).map_err(|message| {
        match message
            .split("unknown field `")
            .nth(1)
            .and_then(|r| r.split('`').next())
        {
            Some(field) => RenderError::Unsupported {
                file: file.clone(),
                field: field.to_owned(),
            },
            None => RenderError::Yaml {
                file: file.clone(),
                message,
            },
        }
    })?;
    if let Some(kind) = &k.kind
        && kind != "Kustomization"
    {
        return Err(RenderError::Unsupported {
            file,
            field: format!("kind: {kind}"),
        });
    }

    let mut objects = Vec::new();
    for resource in k.resources.iter().chain(&k.bases) {
        if resource.contains("://") || resource.starts_with("github.com/") {
            return Err(RenderError::Unsupported {
                file: file.clone(),
                field: format!("remote resource {resource}"),
            });
        }
        let path = files::join(dir, resource)?;
        if files.list(&path)?.is_some() {
            objects.extend(build(files, &path, depth + 1)?);
        } else {
            objects.extend(with_origin(
                parse_yaml(&read_text(files, &path, &file)?, &path)?,
                &path,
            )?);
        }
    }
    let mut renames = Vec::new();
    for (kind, generators) in [
        (generator::Kind::ConfigMap, &k.config_map_generator),
        (generator::Kind::Secret, &k.secret_generator),
    ] {
        for g in generators {
            let mut object =
                generator::generate(files, dir, &file, kind, g, k.generator_options.as_ref())?;
            renames.push(Rename {
                kind: transform::kind(&object).to_owned(),
                from: g.name.clone(),
                to: name(&object).to_owned(),
            });
            set_origin(&mut object, &file);
            objects.push(object);
        }
    }

    for path in &k.patches_strategic_merge {
        let entry = PatchEntry {
            path: Some(path.clone()),
            ..PatchEntry::default()
        };
        apply_patch(files, dir, &file, &entry, &mut objects)?;
    }
    for entry in &k.patches {
        apply_patch(files, dir, &file, entry, &mut objects)?;
    }
    if let Some(ns) = &k.namespace {
        transform::namespace(&mut objects, ns);
    }
    transform::prefix_suffix(
        &mut objects,
        k.name_prefix.as_deref().unwrap_or(""),
        k.name_suffix.as_deref().unwrap_or(""),
        &mut renames,
    );
    transform::labels(&mut objects, &k.common_labels, &k.labels);
    transform::annotations(&mut objects, &k.common_annotations);
    for entry in &k.patches_json6902 {
        apply_patch(files, dir, &file, entry, &mut objects)?;
    }
    transform::replicas(&mut objects, &k.replicas, &renames);
    transform::images(&mut objects, &k.images);
    transform::name_references(&mut objects, &renames);
    Ok(objects)
}

fn plain_folder(files: &dyn Files, dir: &str) -> Result<Vec<Value>, RenderError> {
    let entries = files.list(dir)?.ok_or_else(|| RenderError::Missing {
        file: dir.to_owned(),
        path: dir.to_owned(),
    })?;
    let mut objects = Vec::new();
    for entry in entries.iter().filter(|e| !e.is_dir) {
        if entry.name.ends_with(".yaml")
            || entry.name.ends_with(".yml")
            || entry.name.ends_with(".json")
        {
            let path = files::join(dir, &entry.name)?;
            objects.extend(with_origin(
                parse_yaml(&read_text(files, &path, dir)?, &path)?,
                &path,
            )?);
        }
    }
    Ok(objects)
}

/// Checks each object of a resource file and marks where it came from.
fn with_origin(objects: Vec<Value>, path: &str) -> Result<Vec<Value>, RenderError> {
    objects
        .into_iter()
        .map(|mut o| {
            validate::object(&o, path)?;
            set_origin(&mut o, path);
            Ok(o)
        })
        .collect()
}

fn set_origin(object: &mut Value, path: &str) {
    if let Some(map) = object.as_object_mut() {
        map.insert(ORIGIN.to_owned(), Value::String(path.to_owned()));
    }
}

/// The file an object came from, as the build carries it.
fn origin_of(object: &Value) -> Option<&str> {
    object.get(ORIGIN).and_then(Value::as_str)
}

fn describe(target: &Target) -> String {
    let parts: Vec<String> = [
        ("group", &target.group),
        ("version", &target.version),
        ("kind", &target.kind),
        ("name", &target.name),
        ("namespace", &target.namespace),
        ("labelSelector", &target.label_selector),
        ("annotationSelector", &target.annotation_selector),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    parts.join(", ")
}

fn selector_matches(selector: &str, map: Option<&Value>, file: &str) -> Result<bool, RenderError> {
    let parsed = selector::parse(selector).map_err(|message| RenderError::Invalid {
        file: file.to_owned(),
        message: format!("selector {selector:?} does not parse: {message}"),
    })?;
    Ok(parsed.matches(map))
}

fn target_matches(target: &Target, object: &Value, file: &str) -> Result<bool, RenderError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let anchored = |pattern: &str, value: &str| -> Result<bool, RenderError> {
        let re =
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| RenderError::Invalid {
                file: file.to_owned(),
                message: format!("target pattern {pattern:?}: {e}"),
            })?;
        Ok(re.is_match(value))
    };
    let checks = [
        (&target.group, group),
        (&target.version, version),
        (&target.kind, kind(object)),
        (&target.name, name(object)),
        (
            &target.namespace,
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
    ];
    for (wanted, actual) in checks {
        if let Some(w) = wanted
            && !anchored(w, actual)?
        {
            return Ok(false);
        }
    }
    if let Some(s) = &target.label_selector
        && !selector_matches(s, object.pointer("/metadata/labels"), file)?
    {
        return Ok(false);
    }
    if let Some(s) = &target.annotation_selector
        && !selector_matches(s, object.pointer("/metadata/annotations"), file)?
    {
        return Ok(false);
    }
    Ok(true)
}

fn apply_patch(
    files: &dyn Files,
    dir: &str,
    file: &str,
    entry: &PatchEntry,
    objects: &mut Vec<Value>,
) -> Result<(), RenderError> {
    if entry.options.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(RenderError::Unsupported {
            file: file.to_owned(),
            field: "patches[].options".into(),
        });
    }
    let (text, source) = match (&entry.path, &entry.patch) {
        (Some(path), None) => {
            let full = files::join(dir, path)?;
            (read_text(files, &full, file)?, full)
        }
        (None, Some(inline)) => (inline.clone(), file.to_owned()),
        _ => {
            return Err(RenderError::Invalid {
                file: file.to_owned(),
                message: "a patch needs exactly one of path and patch".into(),
            });
        }
    };
    let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).map_err(|e| RenderError::Yaml {
                file: source.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        let json6902 = document.is_array();
        let targets: Vec<usize> = match &entry.target {
            Some(target) => {
                let mut matched = Vec::new();
                for (i, o) in objects.iter().enumerate() {
                    if target_matches(target, o, file)? {
                        matched.push(i);
                    }
                }
                if matched.is_empty() {
                    return Err(RenderError::NoTarget {
                        file: file.to_owned(),
                        target: describe(target),
                    });
                }
                matched
            }
            None if json6902 => {
                return Err(RenderError::Invalid {
                    file: file.to_owned(),
                    message: "a JSON 6902 patch needs a target".into(),
                });
            }
            None => {
                let wanted_kind = kind(&document).to_owned();
                let wanted_name = name(&document).to_owned();
                let wanted_ns = document
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let matched: Vec<usize> = objects
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| {
                        kind(o) == wanted_kind
                            && name(o) == wanted_name
                            && wanted_ns.as_deref().is_none_or(|ns| {
                                o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
                            })
                    })
                    .map(|(i, _)| i)
                    .collect();
                if matched.is_empty() {
                    return Err(RenderError::NoTarget {
                        file: file.to_owned(),
                        target: format!("kind={wanted_kind}, name={wanted_name}"),
                    });
                }
                matched
            }
        };
        let mut delete = Vec::new();
        for i in targets {
            let object = &mut objects[i];
            if json6902 {
                patch::json6902(object, &document).map_err(|message| RenderError::Patch {
                    file: source.clone(),
                    object: object_id(object),
                    message,
                })?;
            } else if patch::is_delete(&document) {
                delete.push(i);
            } else {
                // A targeted strategic-merge patch keeps the object's own identity.
                let mut body = document.clone();
                if entry.target.is_some()
                    && let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    meta.remove("name");
                    meta.remove("namespace");
                }
                patch::strategic_merge(object, &body).map_err(|message| RenderError::Patch {
                    file: source.clone(),
                    object: object_id(object),
                    message,
                })?;
            }
            if !delete.contains(&i) {
                let object = &objects[i];
                validate::check(object).map_err(|message| RenderError::Patch {
                    file: source.clone(),
                    object: format!(
                        "{} (from {})",
                        object_id(object),
                        origin_of(object).unwrap_or(file)
                    ),
                    message: format!("the result is not a valid object: {message}"),
                })?;
            }
        }
        for i in delete.into_iter().rev() {
            objects.remove(i);
        }
    }
    Ok(())
}

/// sha256 of the canonical form of a set of objects: each object as
/// compact JSON with sorted keys, in [`object_id`] order, newline-separated.
pub fn digest(objects: &[Value]) -> String {
    let mut lines: Vec<(String, String)> = objects
        .iter()
        .map(|o| (object_id(o), serde_json::to_string(o).unwrap_or_default()))
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for (_, line) in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Objects as multi-document YAML that YAML 1.1 readers (kubectl) and
/// YAML 1.2 readers take back unchanged ([`yaml`]).
pub fn to_yaml(objects: &[Value]) -> String {
    yaml::documents(objects)
}

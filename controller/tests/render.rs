//! The renderer against the reference: on every environment and on a
//! corpus of fixtures that exercises each implemented feature, the rendered
//! objects equal what `kubectl kustomize` produces (compared as parsed
//! objects, not text).

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_controller::render::files::Memory;
use ferry_controller::render::{self, Disk, RenderError};
use proptest::prelude::*;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn by_id(mut objects: Vec<Value>) -> Vec<(String, Value)> {
    objects.sort_by_key(render::object_id);
    objects
        .into_iter()
        .map(|o| (render::object_id(&o), o))
        .collect()
}

fn kubectl_kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", repo().join(dir).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    render::parse_yaml(&String::from_utf8(out.stdout).unwrap(), dir).unwrap()
}

fn assert_same(dir: &str) {
    let ours =
        by_id(render::render(&Disk::new(&repo()), dir).unwrap_or_else(|e| panic!("{dir}: {e}")));
    let reference = by_id(kubectl_kustomize(dir));
    let ids = |v: &[(String, Value)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ours), ids(&reference), "{dir}: different objects");
    for ((id, a), (_, b)) in ours.iter().zip(&reference) {
        assert!(
            a == b,
            "{dir}: {id} differs\nferry:   {}\nkubectl: {}",
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(b).unwrap()
        );
    }
}

#[test]
fn every_environment_renders_like_kubectl_kustomize() {
    for env in [
        "environments/base",
        "environments/dev",
        "environments/prod",
        "environments/controller",
    ] {
        assert_same(env);
    }
}

#[test]
fn each_feature_renders_like_kubectl_kustomize() {
    for fixture in ["prefix-labels/overlay", "generators", "patches", "images"] {
        assert_same(&format!("controller/tests/fixtures/render/{fixture}"));
    }
}

#[test]
fn the_policy_fixtures_render_like_kubectl_kustomize() {
    let dir = repo().join("controller/tests/fixtures/policy");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_same(&format!("controller/tests/fixtures/policy/{name}"));
    }
}

#[test]
fn a_folder_without_kustomization_renders_its_yaml_files() {
    let objects = render::render(
        &Disk::new(&repo()),
        "controller/tests/fixtures/render/plain-folder",
    )
    .unwrap();
    let ids: Vec<String> = objects.iter().map(render::object_id).collect();
    assert_eq!(
        ids,
        ["ServiceAccount//web", "ConfigMap//settings", "Service//web"]
    );
}

#[test]
fn an_unsupported_field_is_an_error_naming_field_and_file() {
    let err = render::render(
        &Disk::new(&repo()),
        "controller/tests/fixtures/render/unsupported",
    )
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::Unsupported { field, .. } if field == "helmCharts"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "controller/tests/fixtures/render/unsupported/kustomization.yaml: `helmCharts`"
        ),
        "{err}"
    );
}

#[test]
fn the_digest_ignores_order_and_follows_content() {
    let objects = render::render(&Disk::new(&repo()), "environments/dev").unwrap();
    let mut reversed = objects.clone();
    reversed.reverse();
    assert_eq!(render::digest(&objects), render::digest(&reversed));
    let mut changed = objects.clone();
    changed[0]["metadata"]["labels"]["x"] = "y".into();
    assert_ne!(render::digest(&objects), render::digest(&changed));
    assert!(render::digest(&objects).starts_with("sha256:"));
}

fn yaml_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z./:-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        let key = prop::sample::select(vec![
            "resources",
            "namespace",
            "namePrefix",
            "images",
            "patches",
            "labels",
            "commonLabels",
            "replicas",
            "configMapGenerator",
            "name",
            "newTag",
            "path",
            "patch",
            "target",
            "kind",
            "metadata",
            "spec",
            "literals",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.prop_map(String::from), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever a repository holds, rendering returns objects or an error;
    /// it never panics or loops.
    #[test]
    fn arbitrary_kustomizations_never_panic(
        kustomization in yaml_value(),
        resource in yaml_value(),
        raw in "\\PC{0,80}",
    ) {
        let mut files = Memory::new();
        files.insert("env/kustomization.yaml", serde_norway::to_string(&kustomization).unwrap());
        files.insert("env/a.yaml", serde_norway::to_string(&resource).unwrap());
        files.insert("raw/kustomization.yaml", raw);
        let _ = render::render(&files, "env");
        let _ = render::render(&files, "raw");
    }
}

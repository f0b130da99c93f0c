//! The renderer against the reference: on every environment and on a
//! corpus of fixtures that exercises each implemented feature, the rendered
//! objects equal what `kubectl kustomize` produces (compared as parsed
//! objects, not text).

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_manifests::render::files::Memory;
use ferry_manifests::render::{self, Disk, RenderError};
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
    for fixture in [
        "prefix-labels/overlay",
        "generators",
        "patches",
        "images",
        "selectors",
        "binary",
        "yaml11",
    ] {
        assert_same(&format!("manifests/tests/fixtures/render/{fixture}"));
    }
}

#[test]
fn the_policy_fixtures_render_like_kubectl_kustomize() {
    let dir = repo().join("manifests/tests/fixtures/policy");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_same(&format!("manifests/tests/fixtures/policy/{name}"));
    }
}

#[test]
fn a_folder_without_kustomization_renders_its_yaml_files() {
    let objects = render::render(
        &Disk::new(&repo()),
        "manifests/tests/fixtures/render/plain-folder",
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
        "manifests/tests/fixtures/render/unsupported",
    )
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::Unsupported { field, .. } if field == "helmCharts"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "manifests/tests/fixtures/render/unsupported/kustomization.yaml: `helmCharts`"
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

/// Inputs kustomize refuses (each folder of `fixtures/refused`, with the
/// expected message in `expect`): ferry refuses them too, naming the file,
/// instead of rendering them or panicking.
#[test]
fn what_kustomize_refuses_ferry_refuses_naming_the_file() {
    let dir = repo().join("manifests/tests/fixtures/refused");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = format!("manifests/tests/fixtures/refused/{name}");
        let expected = std::fs::read_to_string(repo().join(&path).join("expect")).unwrap();
        let err = render::render(&Disk::new(&repo()), &path)
            .map(|objects| format!("rendered {} objects", objects.len()))
            .unwrap_or_else(|e| e.to_string());
        assert!(
            err.contains(expected.trim()) && err.starts_with(&path),
            "{name}: expected an error with {expected:?}, got {err:?}"
        );
        let kustomize = Command::new("kubectl")
            .args(["kustomize", repo().join(&path).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            !kustomize.status.success(),
            "{name}: kubectl kustomize accepts it; it does not belong in refused/"
        );
        cases += 1;
    }
    assert!(cases >= 11, "only {cases} cases in {}", dir.display());
}

/// What `ferry-controller render` prints, fed to kubectl (a YAML 1.1
/// reader), gives back exactly the objects ferry rendered: strings such as
/// `yes`, `on` or `0777` stay strings.
#[test]
fn kubectl_reads_our_yaml_back_unchanged() {
    if !ferry_lab_testkit::lab_enabled("kubectl_reads_our_yaml_back_unchanged") {
        return;
    }
    for dir in [
        "manifests/tests/fixtures/render/yaml11",
        "manifests/tests/fixtures/render/binary",
        "manifests/tests/fixtures/render/generators",
        "environments/dev",
    ] {
        let ours = render::render(&Disk::new(&repo()), dir).unwrap();
        let out = ferry_lab_testkit::kubectl(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            Some(&render::to_yaml(&ours)),
        );
        assert!(
            out.status.success(),
            "{dir}: kubectl refused our YAML: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One JSON object after another; kubectl fills in the default
        // namespace where ours has none.
        let theirs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<Value>()
            .map(|o| o.unwrap())
            .zip(&ours)
            .map(|(mut theirs, ours)| {
                if ours.pointer("/metadata/namespace").is_none()
                    && let Some(meta) = theirs["metadata"].as_object_mut()
                {
                    meta.remove("namespace");
                }
                theirs
            })
            .collect();
        assert_eq!(by_id(theirs), by_id(ours), "{dir}");
    }
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

/// A field that is usually well formed, sometimes anything, sometimes absent.
fn field(valid: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => valid.prop_map(Some),
        1 => yaml_value().prop_map(Some),
        1 => Just(None),
    ]
}

fn object_from(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
    )
}

/// Kubernetes-like objects with realistic and broken parts.
fn resource() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "Deployment",
        "ConfigMap",
        "Service",
        "Namespace",
        "Job",
        "CronJob",
        "RoleBinding",
        "HorizontalPodAutoscaler",
    ]);
    let labels = prop::collection::btree_map("[a-z]{1,3}", "[a-z]{0,3}", 0..3)
        .prop_map(|m| serde_json::to_value(m).unwrap());
    let metadata = (
        field("[a-z]{1,4}".prop_map(Value::from)),
        field("[a-z]{1,4}".prop_map(Value::from)),
        field(labels),
    )
        .prop_map(|(name, namespace, labels)| {
            object_from(vec![
                ("name", name),
                ("namespace", namespace),
                ("labels", labels),
            ])
        });
    let spec = field(yaml_value().prop_map(|v| serde_json::json!({
        "replicas": 1,
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "img:1"}, v]}},
        "scaleTargetRef": {"kind": "Deployment", "name": "a"},
    })));
    (
        field(prop::sample::select(vec!["v1", "apps/v1", "batch/v1"]).prop_map(Value::from)),
        field(kind.prop_map(Value::from)),
        field(metadata),
        spec,
    )
        .prop_map(|(api_version, kind, metadata, spec)| {
            object_from(vec![
                ("apiVersion", api_version),
                ("kind", kind),
                ("metadata", metadata),
                ("spec", spec),
            ])
        })
}

fn patch_entry() -> impl Strategy<Value = Value> {
    let selector = prop::sample::select(vec![
        "app=a",
        "app!=a",
        "app in (a,b)",
        "app notin (a)",
        "app",
        "!app",
        "app in (a",
        "=",
        "a,,b",
        "",
    ]);
    let body = prop_oneof![
        yaml_value().prop_map(|v| serde_norway::to_string(&v).unwrap()),
        yaml_value().prop_map(|v| serde_norway::to_string(
            &serde_json::json!([{"op": "replace", "path": "/metadata", "value": v}])
        )
        .unwrap()),
        yaml_value().prop_map(|v| serde_norway::to_string(
            &serde_json::json!([{"op": "add", "path": "/spec/x", "value": v}])
        )
        .unwrap()),
        Just("metadata: 7\n".to_owned()),
        Just("$patch: delete\nkind: ConfigMap\nmetadata: {name: a}\n".to_owned()),
    ];
    (field(prop::sample::select(vec!["Deployment", "ConfigMap", ".*"]).prop_map(Value::from)), selector, body)
        .prop_map(|(kind, selector, body)| {
            serde_json::json!({"target": object_from(vec![("kind", kind), ("labelSelector", Some(Value::from(selector)))]), "patch": body})
        })
}

fn kustomization() -> impl Strategy<Value = Value> {
    let names = "[a-z]{0,3}-?".prop_map(Value::from);
    (
        field("[a-z]{1,4}".prop_map(Value::from)),
        field(names.clone()),
        field(
            prop::collection::btree_map("[a-z]{1,3}", "[a-z]{0,3}", 0..3)
                .prop_map(|m| serde_json::to_value(m).unwrap()),
        ),
        field(prop::collection::vec(patch_entry(), 0..3).prop_map(Value::from)),
        field(Just(serde_json::json!([{"name": "img", "newTag": "2"}]))),
        field(Just(serde_json::json!([{"name": "a", "count": 3}]))),
        field(Just(
            serde_json::json!([{"name": "a", "literals": ["k=yes"], "files": ["bin"]}]),
        )),
    )
        .prop_map(
            |(namespace, prefix, labels, patches, images, replicas, generators)| {
                let mut k = object_from(vec![
                    ("namespace", namespace),
                    ("namePrefix", prefix),
                    ("commonLabels", labels),
                    ("patches", patches),
                    ("images", images),
                    ("replicas", replicas),
                    ("configMapGenerator", generators),
                ]);
                k["resources"] = serde_json::json!(["a.yaml", "b.yaml"]);
                k
            },
        )
}

fn fuzz_cases() -> u32 {
    std::env::var("FERRY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
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

proptest! {
    // The bounded fuzz run of the suite; `FERRY_FUZZ_CASES=200000 cargo
    // test -p ferry-controller --test render fuzz` runs it for longer.
    // Failures are kept in proptest-regressions/ and replayed first.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    /// Realistic kustomizations over realistic and broken objects: render
    /// never panics, and what it renders is well formed and reads back
    /// from its YAML unchanged.
    #[test]
    fn fuzz_render_never_panics_and_emits_valid_objects(
        kustomization in kustomization(),
        a in resource(),
        b in prop::collection::vec(resource(), 0..3),
        binary in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut files = Memory::new();
        files.insert("env/kustomization.yaml", serde_norway::to_string(&kustomization).unwrap());
        files.insert("env/a.yaml", serde_norway::to_string(&a).unwrap());
        let b: Vec<String> = b.iter().map(|o| serde_norway::to_string(o).unwrap()).collect();
        files.insert("env/b.yaml", b.join("---\n"));
        files.insert("env/bin", binary);
        if let Ok(objects) = render::render(&files, "env") {
            for o in &objects {
                prop_assert!(render::validate::check(o).is_ok(), "{o}");
            }
            let text = render::to_yaml(&objects);
            let back = render::parse_yaml(&text, "out").unwrap();
            prop_assert_eq!(back, objects);
        }
    }
}

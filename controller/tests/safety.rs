//! The controller stays safe with any commit and any cluster state: the
//! bullets of "controller: safe with any commit and any cluster state",
//! each pinned against the lab with the real `ferry-controller run`.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it after lab/up), except
//! the CRD validation test, which needs only the lab's API server too.

mod common;

use std::time::Duration;

use common::{Lab, condition};
use ferry_lab_testkit::{get, k, kubectl, lab_enabled, wait_until};

/// A commit whose YAML holds a scalar where a mapping belongs is a
/// `RenderFailed` naming the file; the controller keeps running and
/// applies the next good commit.
#[test]
fn a_commit_that_crashed_the_renderer_is_a_render_failure() {
    if !lab_enabled("a_commit_that_crashed_the_renderer_is_a_render_failure") {
        return;
    }
    let (lab, _) = Lab::running("safe-render", "ctrl-test", "");
    lab.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: hello\n",
    );
    let bad = lab.commit("metadata: hello");
    let s = lab.wait_condition("test", "Stalled", "True", "RenderFailed", Some(&bad));
    let message = condition(&s, "Stalled").2;
    assert!(
        message.contains("env/config.yaml") && message.contains("`metadata` must be a mapping"),
        "{message}"
    );
    lab.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: again}\n",
    );
    let fixed = lab.commit("fixed");
    lab.wait_applied("test", &fixed);
    assert_eq!(
        lab.get("configmap", "settings").unwrap()["data"]["mode"],
        "again"
    );
}

/// A field another manager owns is a conflict found by the dry run: the
/// Environment stalls naming the manager and nothing is applied, not even
/// the objects before it in the apply order. With `force` it is taken over.
#[test]
fn a_conflict_stops_the_sync_before_anything_changes() {
    if !lab_enabled("a_conflict_stops_the_sync_before_anything_changes") {
        return;
    }
    let mut lab = Lab::new("safe-conflict", "ctrl-test");
    let theirs = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {}}}\ndata: {{mode: theirs}}\n",
        lab.target
    );
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=someone",
            "-f",
            "-",
        ],
        Some(&theirs),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("test", "");
    let s = lab.wait_condition("test", "Stalled", "True", "Conflict", Some(&first));
    let message = condition(&s, "Stalled").2;
    assert!(
        message.contains("someone") && message.contains("ConfigMap safe-conflict/settings"),
        "{message}"
    );
    assert!(
        lab.get("configmap", "extra").is_none(),
        "part of a conflicting revision was applied"
    );
    assert!(lab.get("deployment", "web").is_none());
    assert_eq!(
        lab.get("configmap", "settings").unwrap()["data"]["mode"],
        "theirs"
    );

    lab.environment("test", "\n  force: true");
    lab.wait_applied("test", &first);
    assert_eq!(
        lab.get("configmap", "settings").unwrap()["data"]["mode"],
        "fast"
    );
}

/// Hand edits of fields git sets are set back at the next reconcile, with
/// an Event naming the field and who changed it, and a counter; fields git
/// does not set, and objects that opt out, are left alone.
#[test]
fn drift_is_set_back_and_reported() {
    if !lab_enabled("drift_is_set_back_and_reported") {
        return;
    }
    let mut lab = Lab::new("safe-drift", "ctrl-test");
    lab.write(
        "tuning.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tuning\n  annotations: {ferry.dev/ssa: IfNotPresent}\ndata: {level: \"1\"}\n",
    );
    lab.edit("kustomization.yaml", "app.yaml]", "app.yaml, tuning.yaml]");
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("test", "");
    lab.wait_applied("test", &first);

    let ns = lab.target.clone();
    k(&["scale", "deployment", "web", "-n", &ns, "--replicas=3"]);
    k(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"edited"}}"#,
    ]);
    k(&[
        "annotate",
        "configmap",
        "settings",
        "-n",
        &ns,
        "note=by-hand",
    ]);
    k(&[
        "patch",
        "configmap",
        "tuning",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"level":"9"}}"#,
    ]);
    lab.reconcile_now("test");
    wait_until("the drift to be set back", Duration::from_secs(30), || {
        lab.get("deployment", "web")
            .is_some_and(|d| d["spec"]["replicas"] == 1)
            && lab
                .get("configmap", "settings")
                .is_some_and(|c| c["data"]["mode"] == "fast")
    });
    let settings = lab.get("configmap", "settings").unwrap();
    assert_eq!(
        settings["metadata"]["annotations"]["note"], "by-hand",
        "a field git does not set was touched"
    );
    assert_eq!(
        lab.get("configmap", "tuning").unwrap()["data"]["level"],
        "9",
        "IfNotPresent was overridden"
    );
    // A corrected drift is judged again, as any change: healthy again.
    wait_until(
        "Ready again after the correction",
        Duration::from_secs(30),
        || condition(&lab.status("test"), "Ready").0 == "True",
    );
    let mut events = String::new();
    wait_until("the DriftCorrected event", Duration::from_secs(20), || {
        events = lab.events("test");
        events.contains("DriftCorrected")
    });
    assert!(
        events.contains("spec.replicas (changed by kubectl)")
            && events.contains("data.mode (changed by kubectl-patch)"),
        "{events}"
    );
    let metrics = lab.metrics();
    let corrected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_drift_corrected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(corrected >= 2.0, "{metrics}");
}

/// Two Environments rendering the same objects: the second gets a
/// `Conflict` naming the owner and changes nothing; deleting it deletes
/// nothing of the first's.
#[test]
fn an_object_of_another_environment_is_a_conflict_and_never_pruned() {
    if !lab_enabled("an_object_of_another_environment_is_a_conflict_and_never_pruned") {
        return;
    }
    let mut lab = Lab::new("safe-owner", "ctrl-test");
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("a", "");
    lab.wait_applied("a", &first);
    lab.environment("b", "");
    let s = lab.wait_condition("b", "Stalled", "True", "Conflict", Some(&first));
    let message = condition(&s, "Stalled").2;
    assert!(
        message.contains(&format!("belongs to Environment {}.a", lab.system)),
        "{message}"
    );
    lab.delete_environment("b");
    assert!(lab.get("configmap", "settings").is_some());
    assert!(lab.get("deployment", "web").is_some());
    let s = lab.status("a");
    assert_eq!(condition(&s, "Ready").0, "True");
}

/// targetNamespace: objects without a namespace go there; cluster-scoped
/// objects other than the target's Namespace are refused.
#[test]
fn target_namespace_places_objects_and_refuses_cluster_scoped_ones() {
    if !lab_enabled("target_namespace_places_objects_and_refuses_cluster_scoped_ones") {
        return;
    }
    let mut lab = Lab::new("safe-target", "ctrl-test");
    lab.edit("kustomization.yaml", "namespace: safe-target\n", "");
    let first = lab.commit("no namespace in the kustomization");
    lab.start_controller();
    lab.environment("test", "");
    lab.wait_applied("test", &first);
    assert!(lab.get("configmap", "settings").is_some(), "{}", lab.log());
    lab.write(
        "role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: safe-target-escape}\nrules: []\n",
    );
    lab.edit("kustomization.yaml", "app.yaml]", "app.yaml, role.yaml]");
    let second = lab.commit("a cluster role");
    let s = lab.wait_condition(
        "test",
        "Stalled",
        "True",
        "NamespaceNotAllowed",
        Some(&second),
    );
    assert!(condition(&s, "Stalled").2.contains("ClusterRole.rbac.authorization.k8s.io safe-target-escape (from env/role.yaml) is cluster-scoped"), "{s}");
    assert!(get(&["clusterrole", "safe-target-escape"]).is_none());
}

/// With spec.serviceAccountName the Environment may do only what that
/// account may: a Secret its Role does not cover is `Forbidden`, naming
/// what to grant, and nothing is applied.
#[test]
fn the_deployer_account_limits_what_an_environment_may_do() {
    if !lab_enabled("the_deployer_account_limits_what_an_environment_may_do") {
        return;
    }
    let mut lab = Lab::new("safe-rbac", "ctrl-test");
    lab.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: s3cr3t}\n",
    );
    lab.edit("kustomization.yaml", "app.yaml]", "app.yaml, secret.yaml]");
    let first = lab.commit("a secret");
    lab.start_controller();
    lab.environment("test", "");
    let s = lab.wait_condition("test", "Stalled", "True", "Forbidden", Some(&first));
    let message = condition(&s, "Stalled").2;
    assert!(
        message.contains("cannot")
            && message.contains("secrets")
            && message.contains("safe-rbac")
            && message.contains("RBAC"),
        "{message}"
    );
    assert!(lab.get("configmap", "settings").is_none());
}

/// A revision that brings a CRD and resources of it: the CRD is applied
/// and Established first, then the rest.
#[test]
fn crds_of_a_revision_are_established_before_their_resources() {
    if !lab_enabled("crds_of_a_revision_are_established_before_their_resources") {
        return;
    }
    let mut lab = Lab::new("safe-crd", "ctrl-test");
    let _ = kubectl(
        &["delete", "crd", "gadgets.safe-crd.ferry.dev", "--wait=true"],
        None,
    );
    // This Environment has no targetNamespace; its deployer lives next to it.
    let rbac = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: ferry-deployer, namespace: {sys}}}\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: safe-crd-deployer}}\nrules:\n\
- {{apiGroups: [apiextensions.k8s.io], resources: [customresourcedefinitions], verbs: [get, create, patch, delete]}}\n\
- {{apiGroups: [safe-crd.ferry.dev], resources: [gadgets], verbs: [get, create, patch, delete]}}\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: safe-crd-deployer}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: safe-crd-deployer}}\n\
subjects: [{{kind: ServiceAccount, name: ferry-deployer, namespace: {sys}}}]\n",
        sys = lab.system
    );
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&rbac));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["namespace.yaml", "config.yaml", "app.yaml"] {
        std::fs::remove_file(lab.repo.join("env").join(file)).unwrap();
    }
    lab.write("kustomization.yaml", "resources: [crd.yaml, gadget.yaml]\n");
    lab.write(
        "crd.yaml",
        concat!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n",
            "metadata: {name: gadgets.safe-crd.ferry.dev}\n",
            "spec:\n  group: safe-crd.ferry.dev\n  scope: Namespaced\n",
            "  names: {plural: gadgets, singular: gadget, kind: Gadget}\n",
            "  versions:\n  - name: v1\n    served: true\n    storage: true\n",
            "    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n",
        ),
    );
    lab.write(
        "gadget.yaml",
        "apiVersion: safe-crd.ferry.dev/v1\nkind: Gadget\nmetadata: {name: g, namespace: NAMESPACE}\nspec: {size: 3}\n",
    );
    let first = lab.commit("a CRD and a resource of it");
    lab.start_controller();
    lab.environment_exactly("test", "\n  serviceAccountName: ferry-deployer");
    lab.wait_applied("test", &first);
    let gadget = get(&["gadget.safe-crd.ferry.dev", "-n", &lab.target, "g"])
        .expect("the Gadget was applied");
    assert_eq!(gadget["spec"]["size"], 3);
    // The controller may not list Gadgets (its ClusterRole names the
    // usual kinds): its cache asks once, not at every plan, and the
    // Gadget is read at each plan instead.
    for _ in 0..3 {
        let before = lab.metric("ferry_reconcile_duration_seconds_count");
        lab.reconcile_now("test");
        wait_until("the reconcile asked for", Duration::from_secs(30), || {
            lab.metric("ferry_reconcile_duration_seconds_count") > before
        });
    }
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("may not list this kind") && l.contains("Gadget"))
            .count()
    };
    wait_until("the refusal to be logged", Duration::from_secs(10), || {
        refusals(&lab.log()) > 0
    });
    assert_eq!(refusals(&lab.log()), 1, "{}", lab.log());
    // Deleting the Environment deletes the Gadget, then the CRD.
    lab.delete_environment("test");
    wait_until("the CRD to be pruned", Duration::from_secs(30), || {
        get(&["crd", "gadgets.safe-crd.ferry.dev"]).is_none()
    });
    let _ = kubectl(
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            "safe-crd-deployer",
        ],
        None,
    );
}

/// The CRD refuses intervals that are not durations of at least 10 s.
#[test]
fn a_bad_interval_is_refused_by_the_crd() {
    if !lab_enabled("a_bad_interval_is_refused_by_the_crd") {
        return;
    }
    common::install_controller_rbac();
    for (interval, accepted) in [
        ("1s", false),
        ("5", false),
        ("", false),
        ("9s", false),
        ("10s", true),
        ("1h30m", true),
    ] {
        let manifest = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {{name: interval-check, namespace: default}}\n\
spec:\n  source: {{url: \"file:///nowhere\", path: env}}\n  interval: \"{interval}\"\n"
        );
        let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        assert_eq!(
            out.status.success(),
            accepted,
            "{interval:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !accepted {
            let message = String::from_utf8_lossy(&out.stderr);
            assert!(message.contains("interval"), "{message}");
        }
    }
}

/// Values that once crashed every replica (a source timeout that
/// overflowed `Instant + Duration`, a successThreshold beyond u32) and
/// any duration or number out of its bounds are refused by the API server.
#[test]
fn spec_values_out_of_bounds_are_refused_by_the_crd() {
    if !lab_enabled("spec_values_out_of_bounds_are_refused_by_the_crd") {
        return;
    }
    common::install_controller_rbac();
    let check = |spec: &str, accepted: bool, field: &str| {
        let manifest = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {{name: bounds-check, namespace: default}}\n\
spec:\n  source: {{url: \"file:///nowhere\", path: env}}\n{spec}\n"
        );
        let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        let message = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), accepted, "{spec}: {message}");
        if !accepted {
            assert!(message.contains(field), "{spec}: {message}");
        }
    };
    let timeout =
        |t: &str| format!("  source: {{url: \"file:///nowhere\", path: env, timeout: \"{t}\"}}");
    check(&timeout("9999999999999999999s"), false, "timeout");
    check(&timeout("2h"), false, "timeout");
    check(&timeout("0s"), false, "timeout");
    check(&timeout("90s"), true, "");
    check("  interval: 25h", false, "interval");
    check("  interval: 24h", true, "");
    check("  healthCheck: {timeout: 25h}", false, "timeout");
    let http = |field: &str| format!("  healthCheck: {{http: [{{url: \"http://x/\", {field}}}]}}");
    check(
        &http("successThreshold: 99999999999999"),
        false,
        "successThreshold",
    );
    check(&http("successThreshold: 0"), false, "successThreshold");
    check(&http("successThreshold: 1000"), true, "");
    check(&http("expectStatus: 700"), false, "expectStatus");
    check(&http("period: \"0s\""), false, "period");
    check(&http("period: \"2h\""), false, "period");
    check(&http("period: \"5s\""), true, "");
    let many: Vec<String> = (0..21)
        .map(|i| format!("{{url: \"http://x/{i}\"}}"))
        .collect();
    check(
        &format!("  healthCheck: {{http: [{}]}}", many.join(", ")),
        false,
        "http",
    );
}

/// A panic while reconciling one Environment (injected: debug builds of
/// the controller panic on the Environment that FERRY_TEST_PANIC names)
/// is recorded on it as `ReconcilePanicked`; the process lives and the
/// other Environments go on.
#[test]
fn a_panic_costs_one_reconcile_of_one_environment() {
    if !lab_enabled("a_panic_costs_one_reconcile_of_one_environment") {
        return;
    }
    let (mut lab, _) = Lab::running("safe-panic", "ctrl-test", "");
    let boom = format!("{}/boom", lab.system);
    lab.controller_env.push(("FERRY_TEST_PANIC".into(), boom));
    lab.start_controller();
    lab.environment_exactly("boom", "");
    let s = lab.wait_condition("boom", "Stalled", "True", "ReconcilePanicked", None);
    let message = condition(&s, "Stalled").2;
    assert!(
        message.contains("injected by FERRY_TEST_PANIC"),
        "{message}"
    );
    // Once more: the next reconcile panics too, and is contained too.
    lab.reconcile_now("boom");
    lab.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: after-the-panic}\n",
    );
    let next = lab.commit("after the panic");
    lab.wait_applied("test", &next);
    assert_eq!(
        lab.get("configmap", "settings").unwrap()["data"]["mode"],
        "after-the-panic"
    );
    assert!(
        lab.log().contains("injected by FERRY_TEST_PANIC"),
        "the panic is in the log"
    );
    lab.delete_environment("boom");
}

/// An Environment whose name is too long for a label value (69
/// characters, a valid name) keeps its history like any other.
#[test]
fn an_environment_with_a_long_name_keeps_its_history() {
    if !lab_enabled("an_environment_with_a_long_name_keeps_its_history") {
        return;
    }
    let name = format!("long{}", "-name".repeat(13));
    assert_eq!(name.len(), 69);
    let mut lab = Lab::new("safe-long", "ctrl-test");
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment(&name, "");
    lab.wait_applied(&name, &first);
    let history = lab.history(&name);
    assert!(
        history.iter().any(|e| e["result"] == "Applied"),
        "{history:#?}"
    );
    assert!(
        lab.status(&name)["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(
        lab.verified_history(&name).starts_with("verified"),
        "the chain holds"
    );
    lab.delete_environment(&name);
}

/// The API server answers 500 (an admission webhook it cannot reach,
/// scoped to this test's namespace): transient, `Reconciling` with
/// back-off, never `Stalled`; applied once the webhook goes.
#[test]
fn server_errors_are_retried_not_stalled() {
    if !lab_enabled("server_errors_are_retried_not_stalled") {
        return;
    }
    let mut lab = Lab::new("safe-5xx", "ctrl-test");
    let webhook = format!(
        concat!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n",
            "metadata: {{name: safe-5xx}}\nwebhooks:\n- name: unreachable.safe-5xx.ferry.dev\n",
            "  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Fail\n  timeoutSeconds: 2\n",
            "  clientConfig: {{service: {{namespace: {ns}, name: nowhere, path: /validate}}}}\n",
            "  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n",
            "  rules: [{{apiGroups: ['*'], apiVersions: ['*'], operations: [CREATE, UPDATE], resources: [configmaps]}}]\n",
        ),
        ns = lab.target
    );
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&webhook));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("test", "");
    let s = lab.wait_condition("test", "Reconciling", "True", "ApplyFailed", Some(&first));
    assert_eq!(condition(&s, "Stalled").0, "False", "{s}");
    let message = condition(&s, "Reconciling").2;
    assert!(
        message.contains("retrying with back-off") && message.contains("(500)"),
        "{message}"
    );
    assert!(lab.get("configmap", "settings").is_none());
    k(&["delete", "validatingwebhookconfiguration", "safe-5xx"]);
    lab.wait_applied("test", &first);
}

/// Deleting an Environment with `prune: false` orphans what it applied.
#[test]
fn an_environment_deleted_without_prune_orphans_its_objects() {
    if !lab_enabled("an_environment_deleted_without_prune_orphans_its_objects") {
        return;
    }
    let (lab, _) = Lab::running("safe-orphan", "ctrl-test", "\n  prune: false");
    lab.delete_environment("test");
    assert!(lab.get("configmap", "settings").is_some(), "{}", lab.log());
    assert!(lab.get("deployment", "web").is_some());
}

/// The cache of owned objects (controller/src/cluster/owned.rs): a
/// reconcile asked for with nothing to change makes at most two requests
/// (the Environment read fresh, and its status written because the
/// request was handled), and a hand edit wakes its Environment, so it is
/// set back within seconds at an interval of ten minutes.
#[test]
fn a_quiet_reconcile_is_nearly_free_and_a_hand_edit_wakes_its_environment() {
    if !lab_enabled("a_quiet_reconcile_is_nearly_free_and_a_hand_edit_wakes_its_environment") {
        return;
    }
    let mut lab = Lab::new("safe-cache", "ctrl-test");
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("test", "\n  interval: 10m");
    lab.wait_applied("test", &first);
    wait_until("Ready", Duration::from_secs(60), || {
        condition(&lab.status("test"), "Ready").0 == "True"
    });
    let reconciles = || lab.metric("ferry_reconcile_duration_seconds_count");
    let requests = || lab.metric("ferry_api_requests_total");
    let quiet_reconcile = || {
        let before = reconciles();
        lab.reconcile_now("test");
        wait_until("the reconcile asked for", Duration::from_secs(30), || {
            reconciles() > before
        });
        // Its Events and status write are counted once they are done.
        std::thread::sleep(Duration::from_millis(500));
    };
    // The first may read objects the cluster's own controllers touched
    // since the apply (a Deployment's revision annotation).
    quiet_reconcile();
    let (before, counted) = (requests(), reconciles());
    for _ in 0..3 {
        quiet_reconcile();
    }
    let per_reconcile = (requests() - before) / (reconciles() - counted);
    assert!(
        per_reconcile <= 2.0,
        "a reconcile with nothing to change made {per_reconcile} requests\n{}",
        lab.log()
    );

    let ns = lab.target.clone();
    let edited = std::time::Instant::now();
    k(&["scale", "deployment", "web", "-n", &ns, "--replicas=3"]);
    wait_until(
        "the hand edit to be set back without a reconcile asked for",
        Duration::from_secs(10),
        || {
            lab.get("deployment", "web")
                .is_some_and(|d| d["spec"]["replicas"] == 1)
        },
    );
    eprintln!("a hand edit set back in {:?}", edited.elapsed());
    wait_until("the DriftCorrected Event", Duration::from_secs(30), || {
        let events = lab.events("test");
        events.contains("DriftCorrected") && events.contains("spec.replicas")
    });
    lab.stop_controller();
}

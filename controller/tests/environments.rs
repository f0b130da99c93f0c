//! The environments under `environments/`: they render, pass the policy
//! rules, are accepted by a real API server, and `dev` runs on the lab.
//! Every policy rule is shown to catch a deliberately bad overlay in
//! `manifests/tests/fixtures/policy/`.
//!
//! Rendering uses `kubectl kustomize`, the reference the controller's own
//! renderer is tested against. The lab tests run when FERRY_LAB_TESTS=1
//! (scripts/test sets it after lab/up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_lab_testkit::{kubectl, lab_enabled, wait_until};
use ferry_manifests::policy::{self, Rule, Tier};
use serde_json::Value;

/// The tests that create or delete the namespace placement-dev take turns.
static PLACEMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

const ENVIRONMENTS: [&str; 2] = ["dev", "prod"];

fn render(dir: &Path) -> Vec<Value> {
    let out = kubectl(&["kustomize", dir.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    policy::parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

#[test]
fn every_environment_renders_and_passes_the_policy() {
    for env in ENVIRONMENTS {
        let objects = render(&repo().join("environments").join(env));
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for kind in [
            "Namespace",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ] {
            assert!(kinds.contains(&kind), "{env} renders no {kind}: {kinds:?}");
        }
        let findings = policy::check(&objects, Tier::of_environment(env));
        assert!(
            findings.is_empty(),
            "{env}:\n{}",
            findings
                .iter()
                .map(|f| format!("  {f}\n"))
                .collect::<String>()
        );
    }
}

#[test]
fn environments_keep_the_original_names_and_port() {
    for env in ENVIRONMENTS {
        let objects = render(&repo().join("environments").join(env));
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["metadata"]["name"], "recruitment-rank-app");
        assert_eq!(
            deployment["metadata"]["namespace"],
            format!("placement-{env}")
        );
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["name"], "placement-app");
        assert_eq!(container["ports"][0]["containerPort"], 9696);
        let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(service["metadata"]["name"], "recruitment-rank-app");
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
    }
}

/// Each bad fixture trips exactly the rule it was written to break.
#[test]
fn each_policy_rule_catches_its_bad_overlay() {
    let cases = [
        (
            "no-limits",
            Tier::Standard,
            vec![Rule::Limits, Rule::Limits],
        ),
        (
            "no-probes",
            Tier::Standard,
            vec![Rule::Probes, Rule::Probes],
        ),
        ("runs-as-root", Tier::Standard, vec![Rule::NonRoot]),
        ("latest-tag", Tier::Standard, vec![Rule::ImageTag]),
        ("missing-tag", Tier::Standard, vec![Rule::ImageTag]),
        (
            "prod-one-replica",
            Tier::Production,
            vec![Rule::ProdReplicas],
        ),
        (
            "prod-no-budget",
            Tier::Production,
            vec![Rule::ProdDisruptionBudget],
        ),
        ("prod-by-tag", Tier::Production, vec![Rule::ProdDigest]),
        (
            "relaxed-pod-security",
            Tier::Standard,
            vec![Rule::PodSecurity],
        ),
        ("host-network", Tier::Standard, vec![Rule::PodSecurity]),
    ];
    for (case, tier, expected) in cases {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/tests/fixtures/policy")
            .join(case);
        let findings = policy::check(&render(&dir), tier);
        let rules: Vec<Rule> = findings.iter().map(|f| f.rule).collect();
        assert_eq!(rules, expected, "{case}: {findings:#?}");
        assert!(
            findings[0].object.starts_with("Deployment/placement-")
                || findings[0].object == "Namespace/-/placement-dev"
                || findings[0].rule == Rule::ProdReplicas
        );
        assert!(
            findings[0]
                .to_string()
                .contains(&format!("[{}]", expected[0].name())),
            "{}",
            findings[0]
        );
    }
}

#[test]
fn every_environment_passes_a_server_side_dry_run_on_the_lab() {
    if !lab_enabled("every_environment_passes_a_server_side_dry_run_on_the_lab") {
        return;
    }
    for env in ENVIRONMENTS {
        // A dry run does not create the namespace its other objects need.
        let ns = format!("placement-{env}-dryrun");
        let _ = kubectl(&["create", "namespace", &ns], None);
        let rendered = kubectl(
            &[
                "kustomize",
                repo().join("environments").join(env).to_str().unwrap(),
            ],
            None,
        );
        let yaml = String::from_utf8(rendered.stdout)
            .unwrap()
            .replace(&format!("placement-{env}\n"), &format!("{ns}\n"));
        let mut child = Command::new("kubectl")
            .args(["apply", "--server-side", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
        assert!(
            out.status.success(),
            "{env}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(
                "deployment.apps/recruitment-rank-app serverside-applied (server dry run)"
            ),
            "{stdout}"
        );
    }
}

#[test]
fn dev_runs_on_the_lab_spread_over_both_zones_and_answers_behind_its_load_balancer() {
    if !lab_enabled(
        "dev_runs_on_the_lab_spread_over_both_zones_and_answers_behind_its_load_balancer",
    ) {
        return;
    }
    let binary = std::env::var("FERRY_INFERENCE_BIN")
        .expect("FERRY_INFERENCE_BIN names the ferry-inference binary (scripts/test sets it)");
    let _placement = PLACEMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dev = repo().join("environments/dev");
    let objects = render(&dev);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    let model = repo().join("inference/model/placement.json");
    let status = Command::new(repo().join("lab/image"))
        .arg("--add")
        .arg(&model)
        .args([image, &binary, "serve", "--model", model.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());

    let _ = kubectl(
        &[
            "delete",
            "namespace",
            "placement-dev",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    let out = kubectl(
        &["apply", "--server-side", "-k", dev.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut zones = Vec::new();
    wait_until(
        "two ready pods in two zones",
        Duration::from_secs(120),
        || {
            let out = kubectl(&["get", "pods", "-n", "placement-dev", "-o", "json"], None);
            let pods: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let ready_nodes: Vec<String> = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
                .collect();
            zones = ready_nodes;
            zones.sort();
            zones == ["lab-node-a", "lab-node-b"]
        },
    );

    let mut ip = String::new();
    wait_until("the load balancer", Duration::from_secs(30), || {
        let out = kubectl(
            &[
                "get",
                "service",
                "-n",
                "placement-dev",
                "recruitment-rank-app",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ],
            None,
        );
        ip = String::from_utf8_lossy(&out.stdout).into_owned();
        !ip.is_empty()
    });
    let body = r#"[{"gender":"M","ssc_p":71,"ssc_b":"Central","hsc_p":58.66,"hsc_b":"Central","hsc_s":"Science","degree_p":58,"degree_t":"Sci&Tech","etest_p":56,"mba_p":61.3,"specialisation":"Mkt&Fin","workex":"Yes"}]"#;
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-d",
            body,
            &format!("http://{ip}/predict"),
        ])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("{\"Placement\":true,\"Placement_Probability\":"),
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = kubectl(
        &["delete", "namespace", "placement-dev", "--wait=false"],
        None,
    );
}

#[test]
fn the_controller_install_renders_and_passes_the_policy() {
    let objects = render(&repo().join("environments/controller"));
    let findings = policy::check(&objects, Tier::Standard);
    assert!(findings.is_empty(), "{findings:#?}");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    // The Environments are the install's second step: one apply cannot
    // create a CRD and objects of its kind.
    assert!(!kinds.contains(&"Environment"), "{kinds:?}");
    // Every pod that pulls a ferry image gets the pull secret from its
    // ServiceAccount at creation: the references are in the install, not
    // added afterwards (which reaches no existing pod).
    for (namespace, account) in [
        ("ferry-system", "ferry-controller"),
        ("placement-dev", "default"),
        ("placement-prod", "default"),
    ] {
        let sa = objects
            .iter()
            .find(|o| {
                o["kind"] == "ServiceAccount"
                    && o["metadata"]["namespace"] == namespace
                    && o["metadata"]["name"] == account
            })
            .unwrap_or_else(|| panic!("no ServiceAccount {namespace}/{account}"));
        assert_eq!(
            sa["imagePullSecrets"],
            serde_json::json!([{"name": "ghcr-pull"}]),
            "{namespace}/{account}"
        );
    }
    // Two replicas that a drain or one lost node or zone cannot take both
    // of: a disruption budget, and spread over zones and nodes.
    let budget = objects
        .iter()
        .find(|o| o["kind"] == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget for the controller");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"]["app"],
        "ferry-controller"
    );
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let spread: Vec<&str> = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["whenUnsatisfiable"] == "DoNotSchedule")
        .filter_map(|c| c["topologyKey"].as_str())
        .collect();
    assert_eq!(
        spread,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"],
        "{deployment:#}"
    );
    let text =
        std::fs::read_to_string(repo().join("environments/controller/environments.yaml")).unwrap();
    let environments: Vec<serde_json::Value> = text
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str(doc).ok())
        .filter(|doc: &serde_json::Value| doc["kind"] == "Environment")
        .collect();
    assert_eq!(environments.len(), 2);
    let prod = environments
        .iter()
        .find(|e| e["metadata"]["name"] == "prod")
        .unwrap();
    assert_eq!(
        prod["spec"]["suspend"], true,
        "prod waits for its first promotion"
    );
    for environment in &environments {
        assert_eq!(
            environment["spec"]["healthCheck"]["beforeTraffic"], true,
            "no client reaches an unverified pod: {environment}"
        );
    }
}

/// The example shard is the controller's Deployment under its own name,
/// selecting only its own pods, with its shard's name set.
#[test]
fn the_example_shard_renders_as_a_deployment_of_its_own() {
    let objects = render(&repo().join("environments/controller/shards/example"));
    let findings = policy::check(&objects, Tier::Standard);
    assert!(findings.is_empty(), "{findings:#?}");
    let [deployment] = objects.as_slice() else {
        panic!("one Deployment: {objects:#?}");
    };
    assert_eq!(
        deployment["metadata"]["name"],
        "ferry-controller-shard-example"
    );
    let own = "ferry-controller-shard-example";
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], own);
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["app"], own);
    for spread in pod["spec"]["topologySpreadConstraints"].as_array().unwrap() {
        assert_eq!(
            spread["labelSelector"]["matchLabels"]["app"], own,
            "{spread}"
        );
    }
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|v| v["name"] == "FERRY_SHARD" && v["value"] == "example"),
        "{env:?}"
    );
    assert!(
        env.iter().any(|v| v["name"] == "FERRY_LEADER_ELECTION"),
        "{env:?}"
    );
}

#[test]
fn the_controller_install_passes_a_server_side_dry_run_on_the_lab() {
    if !lab_enabled("the_controller_install_passes_a_server_side_dry_run_on_the_lab") {
        return;
    }
    let _placement = PLACEMENT.lock().unwrap_or_else(|e| e.into_inner());
    // The Environments need their CRD, and a dry run creates nothing:
    // install it first, and the namespaces the deployers live in.
    let crd = repo().join("environments/controller/crd.yaml");
    assert!(
        kubectl(
            &["apply", "--server-side", "-f", crd.to_str().unwrap()],
            None
        )
        .status
        .success()
    );
    for ns in ["placement-dev", "placement-prod"] {
        // Another test may have left it terminating.
        let _ = kubectl(
            &["delete", "namespace", ns, "--wait=true", "--timeout=90s"],
            None,
        );
    }
    for ns in ["ferry-system", "placement-dev", "placement-prod"] {
        let _ = kubectl(&["create", "namespace", ns], None);
    }
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-k",
            repo().join("environments/controller").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let environments = repo().join("environments/controller/environments.yaml");
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            environments.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("environment.ferry.dev/prod serverside-applied (server dry run)")
    );
}

/// Removes the admission policy at the end of the test that installs it,
/// even when the test fails: lab tests' fixtures do not run as
/// `restricted` pods.
struct PolicyInstalled(PathBuf);

impl Drop for PolicyInstalled {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "--ignore-not-found",
                "-f",
                self.0.to_str().unwrap(),
            ],
            None,
        );
    }
}

/// The install's ValidatingAdmissionPolicy, on the lab's API server: a
/// deployer cannot relax its Namespace's Pod Security nor write a
/// privileged, host-namespace or hostPath pod template, whatever git
/// says; its other changes, and an administrator's, go through.
#[test]
fn the_api_server_refuses_a_deployer_that_relaxes_pod_security() {
    if !lab_enabled("the_api_server_refuses_a_deployer_that_relaxes_pod_security") {
        return;
    }
    let _placement = PLACEMENT.lock().unwrap_or_else(|e| e.into_inner());
    let ns = "ferry-vap-test";
    let _ = kubectl(
        &["delete", "namespace", ns, "--wait=true", "--timeout=90s"],
        None,
    );
    let setup = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{pod-security.kubernetes.io/enforce: restricted}}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: ferry-deployer, namespace: {ns}}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {ns}}}\nrules:\n- apiGroups: [\"\"]\n  resources: [namespaces]\n  verbs: [get, patch]\n  resourceNames: [{ns}]\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, create, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}}}\nsubjects: [{{kind: ServiceAccount, name: ferry-deployer, namespace: {ns}}}]\n"
    );
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&setup));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = repo().join("environments/controller/admission-policy.yaml");
    let _installed = PolicyInstalled(policy.clone());
    let out = kubectl(
        &["apply", "--server-side", "-f", policy.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deployer = format!("--as=system:serviceaccount:{ns}:ferry-deployer");
    let label_with = |who: Option<&str>, value: &str, extra: &[&str]| {
        let mut args = vec!["label", "namespace", ns, value, "--overwrite"];
        args.extend_from_slice(extra);
        if let Some(who) = who {
            args.push(who);
        }
        kubectl(&args, None)
    };
    let label = |who: Option<&str>, value: &str| label_with(who, value, &[]);
    let relax = "pod-security.kubernetes.io/enforce=privileged";
    // The policy takes effect within a few seconds of its creation: wait
    // with dry runs, which change nothing while it is not in force yet.
    let mut refused = String::new();
    wait_until(
        "the policy to refuse the deployer",
        Duration::from_secs(30),
        || {
            let out = label_with(Some(&deployer), relax, &["--dry-run=server"]);
            refused = String::from_utf8_lossy(&out.stderr).into_owned();
            !out.status.success()
        },
    );
    assert!(
        refused.contains("ferry-deployer-pod-security")
            && refused.contains("may not relax Pod Security"),
        "{refused}"
    );
    assert!(!label(Some(&deployer), relax).status.success());
    for weaker in [
        "pod-security.kubernetes.io/warn=baseline",
        "pod-security.kubernetes.io/enforce-version=v1.20",
    ] {
        let out = label(Some(&deployer), weaker);
        assert!(!out.status.success(), "{weaker} was allowed");
    }
    assert!(label(Some(&deployer), "team=placement").status.success());
    let deployment = |pod: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n{pod}"
        )
    };
    let container = "      containers: [{name: web, image: web:1}]\n";
    let cases = [
        (
            "      containers: [{name: web, image: web:1, securityContext: {privileged: true}}]\n"
                .to_owned(),
            "may not run privileged containers",
        ),
        (
            format!("{container}      hostPID: true\n"),
            "host's network, PID or IPC",
        ),
        (
            format!("{container}      volumes: [{{name: root, hostPath: {{path: /}}}}]\n"),
            "may not mount hostPath volumes",
        ),
    ];
    let apply = |manifest: &str| {
        kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                &deployer,
                "-f",
                "-",
            ],
            Some(manifest),
        )
    };
    for (pod, message) in &cases {
        let out = apply(&deployment(pod));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(message), "{said}");
    }
    let out = apply(&deployment(container));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An administrator is not bound by it.
    assert!(label(None, relax).status.success());
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    let _ = kubectl(&["delete", "clusterrole,clusterrolebinding", ns], None);
}

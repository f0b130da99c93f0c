//! The pull-request review of environment changes: every environment
//! rendered at the base and head revisions with the controller's own
//! renderer, compared object by object, with image and model changes
//! summarized and the policy findings of the head, as one Markdown comment.

use std::collections::BTreeMap;

use ferry_manifests::diff::{redact_pair, unified_diff_labeled};
use ferry_manifests::object::ObjectRef;
use ferry_manifests::policy::{self, Finding, Tier};
use ferry_manifests::render::{self, Files};
use serde_json::Value;

/// GitHub's limit for one comment.
pub const COMMENT_LIMIT: usize = 65_536;
/// The hidden marker that identifies ferry's comment.
pub const MARKER: &str = "<!-- ferry:environment-diff -->";

/// The environments of a tree: the folders under `environments/` with a
/// kustomization, except `base`.
pub fn environments(files: &dyn Files) -> Vec<String> {
    let Ok(Some(entries)) = files.list("environments") else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| e.is_dir && e.name != "base")
        .filter(|e| {
            ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                .iter()
                .any(|f| {
                    files
                        .read(&format!("environments/{}/{f}", e.name))
                        .ok()
                        .flatten()
                        .is_some()
                })
        })
        .map(|e| e.name)
        .collect()
}

/// One object's change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectChange {
    pub object: ObjectRef,
    pub verb: &'static str,
    pub diff: String,
}

/// One environment's review.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentReview {
    pub name: String,
    pub changes: Vec<ObjectChange>,
    /// (container, image before, image after) for every image that changed.
    pub images: Vec<(String, String, String)>,
    pub findings: Vec<Finding>,
    /// The head does not render: why.
    pub error: Option<String>,
}

fn images(objects: &[Value]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in objects {
        let id = ObjectRef::of(o);
        for pointer in [
            "/spec/template/spec/containers",
            "/spec/template/spec/initContainers",
            "/spec/jobTemplate/spec/template/spec/containers",
        ] {
            for c in o
                .pointer(pointer)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = c["name"].as_str().unwrap_or("?");
                if let Some(image) = c["image"].as_str() {
                    out.insert(format!("{id} {name}"), image.to_owned());
                }
            }
        }
    }
    out
}

/// Where the controller's Environments are defined: their specs decide
/// what the controller adds to a render (the readiness gate of
/// `healthCheck.beforeTraffic`).
pub const ENVIRONMENTS_FILE: &str = "environments/controller/environments.yaml";

/// Whether the Environment that applies `path` in `files`'s
/// [`ENVIRONMENTS_FILE`] verifies pods before traffic.
pub fn before_traffic(files: &dyn Files, path: &str) -> bool {
    let Ok(Some(text)) = files.read(ENVIRONMENTS_FILE) else {
        return false;
    };
    let text = String::from_utf8_lossy(&text);
    policy::parse_documents(&text)
        .unwrap_or_default()
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("Environment"))
        .filter(|d| d.pointer("/spec/source/path").and_then(Value::as_str) == Some(path))
        .any(|d| d.pointer("/spec/healthCheck/beforeTraffic") == Some(&Value::Bool(true)))
}

/// `path` rendered as the controller would apply it from `files`.
fn render_as_applied(files: &dyn Files, path: &str) -> Result<Vec<Value>, render::RenderError> {
    let mut objects = render::render(files, path)?;
    if before_traffic(files, path) {
        ferry_manifests::readiness::add_verified_gate(objects.iter_mut());
    }
    Ok(objects)
}

/// Compares one environment at two trees.
pub fn review(base: &dyn Files, head: &dyn Files, env: &str) -> EnvironmentReview {
    let path = format!("environments/{env}");
    let before = render_as_applied(base, &path).unwrap_or_default();
    let mut review = EnvironmentReview {
        name: env.to_owned(),
        changes: Vec::new(),
        images: Vec::new(),
        findings: Vec::new(),
        error: None,
    };
    let after = match render_as_applied(head, &path) {
        Ok(a) => a,
        Err(e) => {
            review.error = Some(e.to_string());
            return review;
        }
    };
    let index = |objects: &[Value]| -> BTreeMap<ObjectRef, Value> {
        objects
            .iter()
            .map(|o| {
                let mut id = ObjectRef::of(o);
                id.version.clear();
                (id, o.clone())
            })
            .collect()
    };
    let (old, new) = (index(&before), index(&after));
    let ids: std::collections::BTreeSet<&ObjectRef> = old.keys().chain(new.keys()).collect();
    for id in ids {
        let (mut a, mut b) = (
            old.get(id).cloned().unwrap_or(Value::Null),
            new.get(id).cloned().unwrap_or(Value::Null),
        );
        if a == b {
            continue;
        }
        redact_pair(&mut a, &mut b);
        let verb = match (a.is_null(), b.is_null()) {
            (true, _) => "added",
            (_, true) => "removed",
            _ => "changed",
        };
        let object = if b.is_null() {
            ObjectRef::of(&a)
        } else {
            ObjectRef::of(&b)
        };
        review.changes.push(ObjectChange {
            diff: unified_diff_labeled(&object, &a, &b, "base", "head"),
            object,
            verb,
        });
    }
    let (old_images, new_images) = (images(&before), images(&after));
    for (container, image) in &new_images {
        let previous = old_images.get(container).cloned().unwrap_or_default();
        if previous != *image {
            review
                .images
                .push((container.clone(), previous, image.clone()));
        }
    }
    review.findings = policy::check(&after, Tier::of_environment(env));
    review
}

/// The comment: per environment its images, findings and per-object diffs,
/// cut to fit `limit` with a note saying what was left out.
pub fn markdown(
    reviews: &[EnvironmentReview],
    model_changes: Option<&str>,
    limit: usize,
) -> String {
    let mut head = format!("{MARKER}\n## Environment changes\n\n");
    if let Some(model) = model_changes {
        head.push_str(model);
        head.push('\n');
    }
    let mut details: Vec<String> = Vec::new();
    for r in reviews {
        let summary = if let Some(e) = &r.error {
            format!(
                "### `{}`: does not render\n\n{}\n",
                r.name,
                fenced("", &format!("{e}\n"))
            )
        } else if r.changes.is_empty() {
            format!("### `{}`: no changes\n\n", r.name)
        } else {
            format!(
                "### `{}`: {} object(s) changed\n\n",
                r.name,
                r.changes.len()
            )
        };
        head.push_str(&summary);
        for (container, before, after) in &r.images {
            let before = if before.is_empty() {
                "(new)".to_owned()
            } else {
                format!("`{before}`")
            };
            head.push_str(&format!("- image of {container}: {before} → `{after}`\n"));
        }
        if r.findings.is_empty() {
            head.push_str("- policy: no findings\n");
        }
        for f in &r.findings {
            head.push_str(&format!("- :warning: policy: {f}\n"));
        }
        head.push('\n');
        for c in &r.changes {
            details.push(format!(
                "<details><summary>{} {} ({})</summary>\n\n{}</details>\n\n",
                c.verb,
                c.object,
                r.name,
                fenced("diff", &c.diff)
            ));
        }
    }
    let mut out = head;
    let mut left_out = 0;
    for (i, d) in details.iter().enumerate() {
        let note_room = 200;
        if out.len() + d.len() + note_room > limit {
            left_out = details.len() - i;
            break;
        }
        out.push_str(d);
    }
    if left_out > 0 {
        out.push_str(&format!(
            "\n_{left_out} diff(s) left out to fit one comment; run `ferry-pipelines diff` or `ferry-controller render` locally for all of them._\n"
        ));
    }
    if out.len() > limit {
        let mut cut = limit.saturating_sub(240);
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // At a line's end, then close what the cut left open.
        if let Some(newline) = out[..cut].rfind('\n') {
            cut = newline + 1;
        }
        out.truncate(cut);
        out.push_str(&closing(&out));
        out.push_str("\n\n_(cut to fit one comment)_\n");
    }
    out
}

/// `text` in a code fence longer than any run of backticks inside it, so
/// a diff of a file holding Markdown cannot end the block early.
fn fenced(lang: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    format!("{fence}{lang}\n{text}{newline}{fence}\n")
}

/// What closes the code fence and `<details>` blocks `text` leaves open.
fn closing(text: &str) -> String {
    let mut fence: Option<usize> = None;
    let mut details = 0usize;
    for line in text.lines() {
        let trimmed = line.trim();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        match fence {
            Some(open) if ticks >= open && ticks == trimmed.len() => fence = None,
            Some(_) => {}
            None if ticks >= 3 => fence = Some(ticks),
            None => {
                details += trimmed.matches("<details>").count();
                details = details.saturating_sub(trimmed.matches("</details>").count());
            }
        }
    }
    let mut out = String::new();
    if let Some(open) = fence {
        out.push_str(&format!("\n{}\n", "`".repeat(open)));
    }
    for _ in 0..details {
        out.push_str("</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_manifests::render::files::Memory;

    fn tree(tag: &str, extra: bool) -> Memory {
        let mut m = Memory::new();
        m.insert(
            "environments/base/kustomization.yaml",
            "resources: [app.yaml]\n",
        );
        m.insert(
            "environments/base/app.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: app}]\n",
        );
        m.insert(
            "environments/dev/kustomization.yaml",
            format!(
                "namespace: dev\nresources: [../base]\nimages: [{{name: app, newTag: \"{tag}\"}}]\n"
            ),
        );
        if extra {
            m.insert(
                "environments/dev/extra.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: czNjcjN0}\n",
            );
            m.insert("environments/dev/kustomization.yaml", format!("namespace: dev\nresources: [../base, extra.yaml]\nimages: [{{name: app, newTag: \"{tag}\"}}]\n"));
        }
        m.insert("environments/cluster/cluster.yaml", "kind: ClusterConfig\n");
        m
    }

    #[test]
    fn turning_before_traffic_on_shows_the_readiness_gate() {
        let mut on = tree("1", false);
        on.insert(
            ENVIRONMENTS_FILE,
            "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  source: {url: x, path: environments/dev}\n  healthCheck: {beforeTraffic: true}\n",
        );
        assert!(before_traffic(&on, "environments/dev"));
        assert!(!before_traffic(&on, "environments/prod"));
        let r = review(&tree("1", false), &on, "dev");
        let verbs: Vec<&str> = r.changes.iter().map(|c| c.verb).collect();
        assert_eq!(verbs, ["changed"]);
        let text = markdown(&[r], None, COMMENT_LIMIT);
        assert!(
            text.contains("+      - conditionType: ferry.dev/verified"),
            "{text}"
        );
    }

    #[test]
    fn finds_environments_but_not_base_or_plain_folders() {
        assert_eq!(environments(&tree("1", false)), ["dev"]);
    }

    #[test]
    fn shows_the_tag_change_and_redacts_secrets() {
        let r = review(&tree("1", false), &tree("2", true), "dev");
        assert_eq!(
            r.images,
            [(
                "Deployment.apps dev/app c".to_owned(),
                "app:1".to_owned(),
                "app:2".to_owned()
            )]
        );
        let verbs: Vec<&str> = r.changes.iter().map(|c| c.verb).collect();
        assert_eq!(verbs, ["added", "changed"]);
        let text = markdown(&[r], None, COMMENT_LIMIT);
        assert!(text.starts_with(MARKER));
        assert!(
            text.contains("- image of Deployment.apps dev/app c: `app:1` → `app:2`"),
            "{text}"
        );
        assert!(
            text.contains("-      - image: app:1\n+      - image: app:2"),
            "{text}"
        );
        assert!(
            !text.contains("czNjcjN0") && text.contains("<redacted"),
            "{text}"
        );
        assert!(
            text.contains("policy: Deployment/dev/app [container-limits]"),
            "{text}"
        );
    }

    #[test]
    fn a_diff_holding_a_fence_cannot_close_its_block() {
        let text = fenced("diff", "+ ```\n+ `x`\n");
        assert!(text.starts_with("````diff\n"), "{text}");
        assert!(text.ends_with("\n````\n"), "{text}");
        assert_eq!(closing(&text), "");
    }

    #[test]
    fn a_cut_inside_a_block_closes_it() {
        let open = "<details><summary>x</summary>\n\n````diff\n+ a\n+ ```\n";
        assert_eq!(closing(open), "\n````\n</details>\n");
        assert_eq!(closing("```\nstill open"), "\n```\n");
        assert_eq!(closing("done\n"), "");
    }

    #[test]
    fn a_hard_cut_leaves_balanced_markdown() {
        // One environment that does not render, with an error longer than
        // a comment: the cut falls inside its code block.
        let r = EnvironmentReview {
            error: Some("x".repeat(100) + &"\nline".repeat(30_000)),
            ..review(&tree("1", false), &tree("2", false), "dev")
        };
        let text = markdown(&[r], None, COMMENT_LIMIT);
        assert!(text.len() <= COMMENT_LIMIT, "{}", text.len());
        assert!(text.contains("cut to fit one comment"));
        let body = text.trim_end_matches("\n\n_(cut to fit one comment)_\n");
        assert_eq!(
            closing(body),
            "",
            "left open: {}",
            &body[body.len() - 200..]
        );
    }

    #[test]
    fn long_reviews_fit_one_comment_with_a_note() {
        let r = review(&tree("1", false), &tree("2", true), "dev");
        let many: Vec<EnvironmentReview> = (0..2000).map(|_| r.clone()).collect();
        let text = markdown(&many, None, COMMENT_LIMIT);
        assert!(text.len() <= COMMENT_LIMIT, "{}", text.len());
        assert!(
            text.contains("left out to fit one comment") || text.contains("cut to fit one comment")
        );
    }
}

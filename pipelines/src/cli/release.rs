//! `ferry-pipelines release-bump` and `start-checks`: a released image
//! lands in an environment on the tip of a branch, directly or, when the
//! branch is protected, as a pull request that merges itself once its
//! checks pass (started here when GitHub would not start them).

use std::path::Path;

use crate::{BumpArgs, GOLDEN_CASES, GitHubArgs, golden_file, golden_text, kustomization, run_git};

pub(crate) fn release_bump(
    args: &BumpArgs,
    golden: Option<(&Path, &Path)>,
    remote: &str,
    branch: &str,
    attempts: u32,
    pull_request_if_protected: bool,
    github: &GitHubArgs,
) -> anyhow::Result<()> {
    use ferry_pipelines::publish::{self, Change, EditError, FileEdit, Outcome};
    let BumpArgs {
        env, image, tag, ..
    } = args;
    let digest = args.digest.as_deref();
    let file = kustomization(env);
    let label = file.to_string_lossy().into_owned();
    // Never backwards: when the tip already runs an image built from a
    // commit that descends from this one, nothing is written.
    let newer = std::cell::RefCell::new(None::<String>);
    let edit = |text: &str| -> Result<String, EditError> {
        *newer.borrow_mut() = newer_release(text, image, tag);
        if newer.borrow().is_some() {
            return Ok(text.to_owned());
        }
        Ok(args.apply(text, &label)?)
    };
    // Read now: publishing checks out the branch's tip, whose model may be
    // newer than the image's.
    let cases = golden
        .map(|(model, data)| golden_text(model, data, GOLDEN_CASES))
        .transpose()?;
    let golden_file = golden_file(env);
    let write_cases = |current: &str| -> Result<String, EditError> {
        if newer.borrow().is_some() {
            return Ok(current.to_owned());
        }
        Ok(cases.clone().unwrap_or_default())
    };
    let mut files = vec![FileEdit {
        file: &file,
        edit: &edit,
    }];
    if cases.is_some() {
        files.push(FileEdit {
            file: &golden_file,
            edit: &write_cases,
        });
    }
    let message = format!(
        "{env}: release {image}:{tag}\n\n{}",
        digest.map(|d| format!("Digest: {d}")).unwrap_or_default()
    );
    let change = Change {
        dir: &std::env::current_dir()?,
        remote,
        branch,
        files: &files,
        message: message.trim_end(),
        attempts,
        pause: std::time::Duration::from_secs(2),
    };
    match publish::publish(&change)? {
        Outcome::Unchanged => match newer.borrow().as_deref() {
            Some(running) => eprintln!(
                "not released: {env} on {branch} already runs {image}:{running}, built from a commit that contains this one ({tag}); a release never moves an environment backwards"
            ),
            None => eprintln!("{branch} already points {env} at {image}:{tag}"),
        },
        Outcome::Pushed { commit, retries } => {
            eprintln!("pushed {commit} to {remote} {branch} ({retries} lost races before)")
        }
        Outcome::Protected { commit, message } => {
            anyhow::ensure!(
                pull_request_if_protected,
                "{remote} refused the push to {branch} as protected:\n{message}\nGive a token that may bypass the protection (a GitHub App's, see docs/eks.md) or pass --pull-request-if-protected"
            );
            anyhow::ensure!(
                github.is_set(),
                "{branch} is protected: set GITHUB_TOKEN and GITHUB_REPOSITORY to open a pull request"
            );
            let head = format!("release/{env}-{tag}");
            run_git(&[
                "push",
                "-q",
                "--force",
                remote,
                &format!("{commit}:refs/heads/{head}"),
            ])?;
            let title = format!("{env}: release {image}:{tag}");
            let body = format!(
                "Points `{env}` at `{image}:{tag}`{}.\n\n`{branch}` is protected, so the release comes as a pull request that merges itself once its checks pass.\n\nOpened by `ferry-pipelines release-bump`.",
                digest.map(|d| format!(" (`{d}`)")).unwrap_or_default()
            );
            let (title, head, body) = (&title, &head, &body);
            let pr = github.run(|client| async move {
                let pr = client
                    .open_or_update_pull_request(title, head, branch, body)
                    .await?;
                client.enable_auto_merge(&pr).await?;
                Ok(pr)
            })?;
            let verb = if pr.created { "opened" } else { "updated" };
            eprintln!(
                "{branch} is protected: {verb} #{} {} (auto-merge on)",
                pr.number, pr.url
            );
            // For the workflow's next step (start-checks, without an App).
            println!("branch={head}");
        }
    }
    Ok(())
}

/// The tag `image` has in `kustomization` when it names a commit that
/// strictly descends from the commit `tag` names (so releasing `tag` would
/// move the environment backwards). None when either tag names no commit,
/// or git cannot tell (a commit it does not have: the release goes ahead,
/// with a warning).
fn newer_release(kustomization: &str, image: &str, tag: &str) -> Option<String> {
    let running = ferry_pipelines::bump::current_tag(kustomization, image)?;
    let theirs = ferry_pipelines::bump::commit_of_tag(&running)?;
    let ours = ferry_pipelines::bump::commit_of_tag(tag)?;
    if theirs.starts_with(ours) || ours.starts_with(theirs) {
        return None;
    }
    let status = std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", ours, theirs])
        .stderr(std::process::Stdio::null())
        .status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => Some(running),
        Ok(Some(1)) => None,
        _ => {
            eprintln!(
                "warning: cannot tell whether {ours} ({tag}) is older than {theirs} ({running}, running now): releasing it"
            );
            None
        }
    }
}

/// Starts the checks GitHub starts for a pull request a person opens, for
/// one a workflow token opened (GitHub starts no workflow for those): the
/// CI workflow dispatched on `branch`, and the `ferry/policy` status on
/// its head from this command's own review from the merge base with
/// `base`, as `environments-pr` would set it. Nothing of the branch is
/// executed: it is read as git objects.
pub(crate) fn start_checks(
    branch: &str,
    base: &str,
    remote: &str,
    workflow: &str,
    target_url: Option<&str>,
    github: &GitHubArgs,
) -> anyhow::Result<()> {
    use octocrab::models::StatusState;
    anyhow::ensure!(
        github.is_set(),
        "set GITHUB_TOKEN (a token with actions: write and statuses: write) and GITHUB_REPOSITORY to start the checks of {branch}"
    );
    let tracking = |b: &str| format!("refs/remotes/{remote}/{b}");
    run_git(&[
        "fetch",
        "-q",
        remote,
        &format!("+refs/heads/{branch}:{}", tracking(branch)),
        &format!("+refs/heads/{base}:{}", tracking(base)),
    ])?;
    let head = run_git(&["rev-parse", &tracking(branch)])?;
    let merge_base = run_git(&["merge-base", &tracking(base), &head])?;
    let (_, failing) = crate::review_between(&merge_base, &head)?;
    let (state, description) = if failing.is_empty() {
        (StatusState::Success, "no policy findings".to_owned())
    } else {
        (
            StatusState::Failure,
            format!(
                "policy findings in {}: run ferry-pipelines diff",
                failing.join(", ")
            ),
        )
    };
    let (head, description) = (&head, &description);
    github.run(|client| async move {
        client
            .set_status(head, state, "ferry/policy", description, target_url)
            .await?;
        client.dispatch_workflow(workflow, branch).await?;
        Ok(())
    })?;
    eprintln!("{branch}: ferry/policy set on {head} ({description}); {workflow} started");
    Ok(())
}

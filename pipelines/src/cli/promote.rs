//! `ferry-pipelines promote`: the image one environment runs, pinned by
//! digest, proposed to another as a pull request a person merges.

use std::path::Path;

use anyhow::Context;

use crate::{GitHubArgs, golden_file, kustomization, run_git};

pub(crate) fn promote(
    from: &str,
    to: &str,
    image: Option<&str>,
    base: &str,
    local: bool,
    github: &GitHubArgs,
) -> anyhow::Result<()> {
    use ferry_pipelines::promote as p;
    let (from_file, to_file) = (kustomization(from), kustomization(to));
    let read = |f: &Path| {
        std::fs::read_to_string(f).with_context(|| format!("failed to read {}", f.display()))
    };
    let reference = p::image_of(&read(&from_file)?, &from_file.to_string_lossy(), image)?;
    let current = read(&to_file)?;
    let promoted = p::promote(&current, &to_file.to_string_lossy(), &reference)?;
    let what = format!("{}:{}@{}", reference.name, reference.tag, reference.digest);
    if promoted == current {
        eprintln!("{to} already runs {what}");
        return Ok(());
    }
    // The prediction cases go with the image they were written for.
    let (from_cases, to_cases) = (golden_file(from), golden_file(to));
    let cases = std::fs::read(&from_cases).ok();
    let write = |promoted: &str| -> anyhow::Result<Vec<String>> {
        std::fs::write(&to_file, promoted)?;
        let mut written = vec![to_file.to_string_lossy().into_owned()];
        if let Some(cases) = &cases {
            std::fs::write(&to_cases, cases)?;
            written.push(to_cases.to_string_lossy().into_owned());
        }
        Ok(written)
    };
    if local {
        write(&promoted)?;
        eprintln!("{}: now {what}", to_file.display());
        return Ok(());
    }
    anyhow::ensure!(
        github.is_set(),
        "set GITHUB_TOKEN and GITHUB_REPOSITORY (or --local)"
    );
    let short: String = reference
        .digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let branch = format!("promote/{from}-to-{to}-{short}");
    let original = run_git(&["rev-parse", "--abbrev-ref", "HEAD"])?;
    // A re-run (the same digest) rewrites the same branch and updates its
    // pull request.
    run_git(&["switch", "-q", "-C", &branch])?;
    let written = write(&promoted)?;
    let title = format!(
        "{to}: promote {} {} from {from}",
        reference.name, reference.tag
    );
    let paths: Vec<&str> = written.iter().map(String::as_str).collect();
    run_git(&[&["add", "--"][..], &paths].concat())?;
    run_git(&[&["commit", "-q", "-m", &title, "--"][..], &paths].concat())?;
    run_git(&["push", "-q", "--force", "origin", &branch])?;
    run_git(&["switch", "-q", &original])?;
    let body = format!(
        "Promotes `{what}` from `{from}` to `{to}`: the image `{from}` runs, pinned by digest.\n\nOpened by `ferry-pipelines promote`."
    );
    let (title, branch, body) = (&title, &branch, &body);
    let pr = github.run(|client| async move {
        Ok(client
            .open_or_update_pull_request(title, branch, base, body)
            .await?)
    })?;
    let verb = if pr.created { "opened" } else { "updated" };
    eprintln!("{verb} #{} {}: {title}", pr.number, pr.url);
    println!("branch={branch}");
    Ok(())
}

//! The GitHub Actions workflows: they lint clean with actionlint, pin every
//! action to a commit, and declare their permissions.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workflows() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn actionlint_finds_nothing() {
    // scripts/test builds actionlint from the Go module proxy and says where.
    let Ok(actionlint) = std::env::var("FERRY_ACTIONLINT") else {
        eprintln!("skipped: FERRY_ACTIONLINT is not set (scripts/test sets it)");
        return;
    };
    let out = Command::new(actionlint)
        .arg("-no-color")
        .args(workflows())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn actions_are_pinned_and_permissions_declared() {
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        assert!(
            doc.get("permissions").is_some(),
            "{} declares no permissions",
            file.display()
        );
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- uses:") || l.starts_with("uses:"))
        {
            let reference = line
                .split("uses:")
                .nth(1)
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .trim();
            let (_, sha) = reference.split_once('@').unwrap_or((reference, ""));
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: {reference} is not pinned to a commit",
                file.display()
            );
        }
    }
}

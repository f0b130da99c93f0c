//! `bump`: point an environment's `images:` entry at a new tag (and
//! digest), changing nothing else in `kustomization.yaml`: comments, order,
//! quoting and every other byte stay as they were.
//!
//! The edit is made on the text, one line at a time, and then checked by
//! parsing the result: the entry must read back with exactly the new
//! values, or the bump fails without writing.
//!
//! Guarantees: running it twice changes nothing the second time. Without a
//! digest, an existing `digest:` line is removed: it would keep pinning the
//! old image whatever the tag says.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BumpError {
    #[error("{file} has no `images:` list; add one with an entry for {image}")]
    NoImages { file: String, image: String },
    #[error("{file} has no `images:` entry named {image}; the entries are: {present}")]
    NoEntry {
        file: String,
        image: String,
        present: String,
    },
    #[error(
        "{file}: the `images:` list must use block style (one `- name: ...` entry with one field per line)"
    )]
    Style { file: String },
    #[error(
        "{file}: the edited file does not read back as intended ({reason}); it was not written"
    )]
    Verify { file: String, reason: String },
}

/// A field line of an entry: `<indent>key: value  # comment`.
struct Field {
    line: usize,
    key: String,
    value_start: usize,
    value_end: usize,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn parse_field(line: &str, index: usize) -> Option<Field> {
    let body = line.trim_end_matches(['\n', '\r']);
    let start = indent(body) + usize::from(body.trim_start().starts_with("- ")) * 2;
    let rest = &body[start..];
    let colon = rest.find(':')?;
    let key = rest[..colon].trim();
    if key.is_empty() || key.contains(' ') {
        return None;
    }
    let after = &rest[colon + 1..];
    let leading = after.len() - after.trim_start().len();
    let value_start = start + colon + 1 + leading;
    let value_text = &body[value_start..];
    // A comment starts at ` #` outside quotes; tags and digests hold neither.
    let value_len = value_text.find(" #").unwrap_or(value_text.len());
    let value_end = value_start + value_text[..value_len].trim_end().len();
    Some(Field {
        line: index,
        key: key.to_owned(),
        value_start,
        value_end,
    })
}

fn unquote(v: &str) -> &str {
    v.trim_matches(|c| c == '"' || c == '\'')
}

/// `value` as a YAML scalar that reads back as this string, in the quoting
/// style of `previous` when there was one.
fn scalar(value: &str, previous: Option<&str>) -> String {
    let quote = previous
        .and_then(|p| p.chars().next())
        .filter(|c| *c == '"' || *c == '\'');
    if let Some(q) = quote {
        return format!("{q}{value}{q}");
    }
    match serde_norway::from_str::<Value>(value) {
        Ok(Value::String(s)) if s == value => value.to_owned(),
        _ => format!("\"{value}\""),
    }
}

/// The text with `image`'s entry set to `tag` (and `digest`).
pub fn bump(
    text: &str,
    file: &str,
    image: &str,
    tag: &str,
    digest: Option<&str>,
) -> Result<String, BumpError> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let start = lines
        .iter()
        .position(|l| {
            l.trim_end() == "images:"
                || l.starts_with("images:") && l[7..].trim_start().starts_with('#')
        })
        .ok_or_else(|| BumpError::NoImages {
            file: file.to_owned(),
            image: image.to_owned(),
        })?;
    if lines[start].trim_end().len() > "images:".len()
        && !lines[start][7..].trim_start().starts_with('#')
    {
        return Err(BumpError::Style {
            file: file.to_owned(),
        });
    }
    // The block: lines after `images:` that are blank, comments or indented.
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            !(l.trim().is_empty()
                || l.trim_start().starts_with('#')
                || l.starts_with(' ')
                || l.starts_with('-'))
        })
        .map_or(lines.len(), |p| start + 1 + p);
    // Entries: each starts at a `- ` line.
    let mut entries: Vec<Vec<Field>> = Vec::new();
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("- {") || trimmed.starts_with("-{") {
            return Err(BumpError::Style {
                file: file.to_owned(),
            });
        }
        if trimmed.starts_with("- ") || trimmed.trim_end() == "-" {
            entries.push(Vec::new());
        }
        if let (Some(entry), Some(field)) = (entries.last_mut(), parse_field(line, i)) {
            entry.push(field);
        }
    }
    let value_of =
        |f: &Field, lines: &[String]| lines[f.line][f.value_start..f.value_end].to_owned();
    let names: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            e.iter()
                .find(|f| f.key == "name")
                .map(|f| unquote(&value_of(f, &lines)).to_owned())
        })
        .collect();
    let Some(entry) = entries.iter().find(|e| {
        e.iter()
            .any(|f| f.key == "name" && unquote(&value_of(f, &lines)) == image)
    }) else {
        return Err(BumpError::NoEntry {
            file: file.to_owned(),
            image: image.to_owned(),
            present: names.join(", "),
        });
    };
    let name_field = entry
        .iter()
        .find(|f| f.key == "name")
        .expect("found by name");
    let field_indent = {
        let l = &lines[name_field.line];
        if l.trim_start().starts_with("- ") {
            indent(l) + 2
        } else {
            indent(l)
        }
    };
    let newline = if lines[name_field.line].ends_with("\r\n") {
        "\r\n"
    } else {
        "\n"
    };

    // Edits from the bottom up, so line numbers stay valid.
    enum Edit {
        Replace {
            line: usize,
            start: usize,
            end: usize,
            value: String,
        },
        Insert {
            after: usize,
            text: String,
        },
        Remove {
            line: usize,
        },
    }
    let mut edits = Vec::new();
    let set = |key: &str, value: &str, after: usize, edits: &mut Vec<Edit>| match entry
        .iter()
        .find(|f| f.key == key)
    {
        Some(f) => {
            let old = value_of(f, &lines);
            if unquote(&old) != value {
                edits.push(Edit::Replace {
                    line: f.line,
                    start: f.value_start,
                    end: f.value_end,
                    value: scalar(value, Some(&old)),
                });
            }
            f.line
        }
        None => {
            edits.push(Edit::Insert {
                after,
                text: format!(
                    "{}{key}: {}{newline}",
                    " ".repeat(field_indent),
                    scalar(value, None)
                ),
            });
            after
        }
    };
    let last_line = entry
        .iter()
        .map(|f| f.line)
        .max()
        .unwrap_or(name_field.line);
    let tag_line = set("newTag", tag, last_line, &mut edits);
    match digest {
        Some(d) => {
            set("digest", d, tag_line, &mut edits);
        }
        None => {
            if let Some(f) = entry.iter().find(|f| f.key == "digest") {
                edits.push(Edit::Remove { line: f.line });
            }
        }
    }
    // Apply: replacements in place first, then inserts and removals from the bottom.
    for edit in &edits {
        if let Edit::Replace {
            line,
            start,
            end,
            value,
        } = edit
        {
            let l = &lines[*line];
            lines[*line] = format!("{}{value}{}", &l[..*start], &l[*end..]);
        }
    }
    let mut structural: Vec<&Edit> = edits
        .iter()
        .filter(|e| !matches!(e, Edit::Replace { .. }))
        .collect();
    structural.sort_by_key(|e| {
        std::cmp::Reverse(match e {
            Edit::Insert { after, .. } => (*after, 1),
            Edit::Remove { line } => (*line, 0),
            Edit::Replace { .. } => (0, 0),
        })
    });
    for edit in structural {
        match edit {
            Edit::Insert { after, text } => lines.insert(after + 1, text.clone()),
            Edit::Remove { line } => {
                lines.remove(*line);
            }
            Edit::Replace { .. } => {}
        }
    }
    let result = lines.concat();
    verify(&result, file, image, tag, digest)?;
    Ok(result)
}

fn verify(
    text: &str,
    file: &str,
    image: &str,
    tag: &str,
    digest: Option<&str>,
) -> Result<(), BumpError> {
    let fail = |reason: String| BumpError::Verify {
        file: file.to_owned(),
        reason,
    };
    let doc: Value = serde_norway::from_str(text).map_err(|e| fail(e.to_string()))?;
    let entry = image_entry(&doc, image).ok_or_else(|| fail("the entry is gone".into()))?;
    if entry["newTag"].as_str() != Some(tag) {
        return Err(fail(format!("newTag reads {}", entry["newTag"])));
    }
    if entry.get("digest").and_then(Value::as_str) != digest {
        return Err(fail(format!("digest reads {}", entry["digest"])));
    }
    Ok(())
}

/// The entry named `image` in a parsed kustomization's `images:` list.
pub fn image_entry<'a>(kustomization: &'a Value, image: &str) -> Option<&'a Value> {
    kustomization
        .get("images")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(image))
}

/// The `newTag` of `image`'s entry in a kustomization (None when the text
/// does not parse, or has no such entry or tag).
pub fn current_tag(text: &str, image: &str) -> Option<String> {
    let doc: Value = serde_norway::from_str(text).ok()?;
    image_entry(&doc, image)?
        .get("newTag")?
        .as_str()
        .map(str::to_owned)
}

/// The commit a release tag names: its last `-`-separated part when that
/// is 7 to 40 lowercase hex digits (`0.3.0-1a2b3c4d5e6f` names
/// `1a2b3c4d5e6f`), as the release workflow writes tags.
pub fn commit_of_tag(tag: &str) -> Option<&str> {
    let (_, last) = tag.rsplit_once('-')?;
    (7..=40).contains(&last.len()).then_some(last).filter(|c| {
        c.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "# Development: follows main.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: placement-dev\nimages:\n  # the model image\n  - name: ghcr.io/ferry-dev/placement\n    newTag: 0.1.0-ab4e228d77a7 # written by the release pipeline\n  - name: 'other'\n    newTag: \"1.0\"\npatches:\n  - path: replicas.yaml\n";

    #[test]
    fn changes_only_the_tag_and_is_idempotent() {
        let once = bump(
            DEV,
            "k.yaml",
            "ghcr.io/ferry-dev/placement",
            "0.2.0-ffff",
            None,
        )
        .unwrap();
        assert_eq!(once, DEV.replace("0.1.0-ab4e228d77a7", "0.2.0-ffff"));
        assert_eq!(
            bump(
                &once,
                "k.yaml",
                "ghcr.io/ferry-dev/placement",
                "0.2.0-ffff",
                None
            )
            .unwrap(),
            once
        );
    }

    #[test]
    fn keeps_quoting_and_quotes_what_would_not_read_as_a_string() {
        let out = bump(DEV, "k.yaml", "other", "2.0", None).unwrap();
        assert!(out.contains("newTag: \"2.0\"\n"), "{out}");
        let text = "images:\n- name: app\n  newTag: v1\n";
        assert_eq!(
            bump(text, "k", "app", "1.10", None).unwrap(),
            "images:\n- name: app\n  newTag: \"1.10\"\n"
        );
    }

    #[test]
    fn adds_replaces_and_removes_the_digest() {
        let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let pinned = bump(
            DEV,
            "k.yaml",
            "ghcr.io/ferry-dev/placement",
            "0.2.0",
            Some(digest),
        )
        .unwrap();
        assert!(
            pinned.contains(&format!(
                "    newTag: 0.2.0 # written by the release pipeline\n    digest: {digest}\n"
            )),
            "{pinned}"
        );
        assert_eq!(
            bump(
                &pinned,
                "k.yaml",
                "ghcr.io/ferry-dev/placement",
                "0.2.0",
                Some(digest)
            )
            .unwrap(),
            pinned
        );
        let unpinned = bump(
            &pinned,
            "k.yaml",
            "ghcr.io/ferry-dev/placement",
            "0.3.0",
            None,
        )
        .unwrap();
        assert!(!unpinned.contains("digest"), "{unpinned}");
    }

    #[test]
    fn inserts_a_missing_tag() {
        let text = "images:\n  - name: app\n    newName: registry/app\nresources: [a.yaml]\n";
        let out = bump(text, "k", "app", "v2", None).unwrap();
        assert_eq!(
            out,
            "images:\n  - name: app\n    newName: registry/app\n    newTag: v2\nresources: [a.yaml]\n"
        );
    }

    #[test]
    fn a_missing_entry_is_a_clear_error() {
        let err = bump(
            DEV,
            "environments/dev/kustomization.yaml",
            "ghcr.io/acme/nope",
            "1",
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environments/dev/kustomization.yaml has no `images:` entry named ghcr.io/acme/nope; the entries are: ghcr.io/ferry-dev/placement, other"
        );
        assert!(matches!(
            bump("resources: []\n", "k", "x", "1", None),
            Err(BumpError::NoImages { .. })
        ));
        assert!(matches!(
            bump("images:\n  - {name: x, newTag: y}\n", "k", "x", "1", None),
            Err(BumpError::Style { .. })
        ));
    }

    #[test]
    fn a_tag_names_its_commit_and_the_kustomization_its_tag() {
        assert_eq!(commit_of_tag("0.3.0-1a2b3c4d5e6f"), Some("1a2b3c4d5e6f"));
        assert_eq!(commit_of_tag("0.1.0-ab4e228"), Some("ab4e228"));
        for none in [
            "0.1.0",
            "latest",
            "0.1.0-rc1",
            "0.1.0-ABCDEF123456",
            "-",
            "",
            "0.1.0-abc",
        ] {
            assert_eq!(commit_of_tag(none), None, "{none}");
        }
        let text = "images:\n  - name: a\n    newTag: 1.0-abcdef0\n  - name: b\n";
        assert_eq!(current_tag(text, "a").as_deref(), Some("1.0-abcdef0"));
        assert_eq!(current_tag(text, "b"), None);
        assert_eq!(current_tag("images: 7", "a"), None);
        assert_eq!(current_tag(": :", "a"), None);
    }
}

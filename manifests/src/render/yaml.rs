//! YAML output that every reader takes back unchanged: YAML 1.2 readers
//! and YAML 1.1 readers alike (kubectl, go-yaml v2, PyYAML), which read
//! `yes`, `no`, `on`, `off`, `y`, `n`, `0777`, `1_000` or `12:30` as
//! booleans and numbers.
//!
//! Guarantees: a string is written plain only when no YAML 1.1 or 1.2
//! reader could take it for anything but that string; otherwise it is
//! double-quoted with escapes (or, with line breaks, a literal block that
//! keeps them exactly). Numbers, booleans and null are written in the
//! form both versions read the same way. Keys are in the order the value
//! holds them (sorted, for `serde_json`'s maps).

use serde_json::Value;

/// Multi-document YAML: each object a document, `---` between them.
pub fn documents(objects: &[Value]) -> String {
    objects
        .iter()
        .map(to_string)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One value as a YAML document (ends with a newline).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_list(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in map {
        indent(out, level);
        out.push_str(&scalar_string(key, level, false));
        out.push(':');
        write_child(out, value, level, false);
    }
}

fn write_list(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        write_child(out, item, level, true);
    }
}

/// What follows `key:` or `-`. Lists under a key sit at the key's level
/// (kubectl's style); maps in a list start on the dash's line.
fn write_child(out: &mut String, value: &Value, level: usize, in_list: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            if in_list {
                out.push(' ');
                let mut nested = String::new();
                write_map(&mut nested, map, level + 2);
                // The first key goes on the dash's line.
                out.push_str(nested.trim_start_matches(' '));
            } else {
                out.push('\n');
                write_map(out, map, level + 2);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if in_list {
                out.push(' ');
                let mut nested = String::new();
                write_list(&mut nested, items, level + 2);
                out.push_str(nested.trim_start_matches(' '));
            } else {
                out.push('\n');
                write_list(out, items, level);
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, level + 2));
            out.push('\n');
        }
    }
}

fn inline(value: &Value, level: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => scalar_string(s, level, true),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Floats with an exponent in the form YAML 1.1 requires (`1.0e+30`,
/// not `1e30`, which a YAML 1.1 reader takes for a string).
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) if n.is_f64() => {
            let dot = if mantissa.contains('.') { "" } else { ".0" };
            let sign = if exponent.starts_with(['-', '+']) {
                ""
            } else {
                "+"
            };
            format!("{mantissa}{dot}e{sign}{exponent}")
        }
        _ => text,
    }
}

/// Words YAML 1.1 or 1.2 reads as booleans or null.
const KEYWORDS: [&str; 17] = [
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", "", "<<", "=", ".inf",
    "-.inf", "+.inf", ".nan",
];

fn is_keyword(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    KEYWORDS.contains(&lower.as_str())
}

/// Anything a YAML 1.1 or 1.2 reader may take for a number or a date:
/// a sign, digit or dot followed by digits, dots, underscores, colons,
/// exponents, hex or octal or binary prefixes, dashes (dates), `T`/`Z`
/// (timestamps). Conservative: it also quotes some plain strings.
fn looks_numeric(s: &str) -> bool {
    let body = s.trim_start_matches(['-', '+']);
    let Some(first) = body.chars().next() else {
        return !s.is_empty();
    };
    (first.is_ascii_digit() || first == '.')
        && body.chars().all(|c| {
            c.is_ascii_hexdigit()
                || matches!(
                    c,
                    '.' | '_'
                        | ':'
                        | '-'
                        | '+'
                        | 'x'
                        | 'X'
                        | 'o'
                        | 'O'
                        | 't'
                        | 'T'
                        | 'z'
                        | 'Z'
                        | ' '
                )
        })
}

/// Whether `s` can be written without quotes and read back as itself.
fn plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if is_keyword(s) || looks_numeric(s) {
        return false;
    }
    // Indicators that cannot start a plain scalar.
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first == ' ' {
        // `-x`, `?x`, `:x` are plain in YAML 1.2 but not in every 1.1 reader.
        return false;
    }
    if s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains(['\t', '\n', '\r']) {
        return false;
    }
    // Flow indicators and anything outside printable ASCII: quote.
    s.chars()
        .all(|c| (' '..='~').contains(&c) && !matches!(c, ',' | '[' | ']' | '{' | '}'))
}

/// A string scalar: plain, a literal block (multi-line, printable), or
/// double-quoted.
fn scalar_string(s: &str, level: usize, block_allowed: bool) -> String {
    if plain_safe(s) {
        return s.to_owned();
    }
    if block_allowed && let Some(block) = literal_block(s, level) {
        return block;
    }
    double_quoted(s)
}

/// `|`, `|-` or `|+` with the lines indented, when that keeps `s` exactly.
fn literal_block(s: &str, level: usize) -> Option<String> {
    if !s.contains('\n')
        || s.starts_with([' ', '\t', '\n'])
        || s.chars().any(|c| c == '\r' || !printable(c) && c != '\n')
        || s.lines().any(|l| l.ends_with([' ', '\t']))
    {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!("|{chomp}");
    let pad = " ".repeat(level.max(2));
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    Some(out)
}

/// YAML's printable set, without the characters some readers take for
/// line breaks (NEL, LS, PS) or a byte-order mark.
fn printable(c: char) -> bool {
    matches!(c, '\t' | ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(value: &Value) -> Value {
        let text = to_string(value);
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn yaml_11_booleans_numbers_and_null_are_quoted() {
        for word in [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "Y",
            "NO",
            "True",
            "null",
            "~",
            "",
            "0777",
            "1_000",
            "12:30",
            "1e3",
            "0x1F",
            ".5",
            "-1",
            "+1",
            "2026-11-28",
            ".inf",
            "3.",
        ] {
            let text = to_string(&json!({ "v": word }));
            assert!(
                text.contains(&format!("v: \"{word}\"")),
                "{word:?} written as {text}"
            );
        }
        for word in [
            "web",
            "ghcr.io/ferry-dev/placement:0.1.0",
            "app.kubernetes.io/name",
            "v1",
        ] {
            assert_eq!(to_string(&json!({ "v": word })), format!("v: {word}\n"));
        }
    }

    #[test]
    fn kubectl_style_layout() {
        let value = json!({"metadata": {"name": "web", "labels": {}}, "spec": {"ports": [{"port": 80, "name": "http"}], "args": ["a", "b"]}, "n": 1.5, "b": true, "z": null});
        assert_eq!(
            to_string(&value),
            "b: true\nmetadata:\n  labels: {}\n  name: web\n\"n\": 1.5\nspec:\n  args:\n  - a\n  - b\n  ports:\n  - name: http\n    port: 80\nz: null\n"
        );
        assert_eq!(round_trip(&value), value);
    }

    #[test]
    fn multi_line_strings_keep_every_line_break() {
        for text in [
            "a\nb\n",
            "a\nb",
            "a\n\nb\n\n",
            "line: one\n# not a comment\n",
            " lead\n",
            "tab\t\n x",
        ] {
            let value = json!({"data": {"f": text}, "list": [text]});
            assert_eq!(round_trip(&value), value, "{text:?}");
        }
    }

    proptest! {
        /// Whatever a string holds, it reads back as itself.
        #[test]
        fn strings_round_trip(s in "\\PC{0,24}", t in "[ -~\n\t]{0,24}", key in "\\PC{0,8}") {
            let value = json!({ key: [s, t, {"n": 1}] });
            prop_assert_eq!(round_trip(&value), value);
        }
    }
}

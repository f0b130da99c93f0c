//! Server-side apply's names: ferry's field manager, and who manages an
//! object's fields.

use serde_json::Value;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "ferry";

/// Field managers of a live object.
pub fn managers(live: &Value) -> Vec<String> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("manager").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

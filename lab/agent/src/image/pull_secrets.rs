//! Credentials from a pod's `imagePullSecrets`, read as the kubelet reads
//! them: Secrets of type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`,
//! `{"auths": {HOST: {...}}}`) or the older `kubernetes.io/dockercfg`
//! (`.dockercfg`, `{HOST: {...}}`); an entry gives `auth` (base64 of
//! `user:password`) or `username` and `password`. A Secret is untrusted
//! input: a malformed one gives no credentials, never a panic.

use base64::Engine;
use serde_json::Value;

use super::registry::Credentials;

/// The registry host a config key names: `https://ghcr.io/v1/` and
/// `ghcr.io` are both `ghcr.io`.
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (username, password) = decoded.split_once(':')?;
        return Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    Some(Credentials {
        username: text("username")?.to_owned(),
        password: text("password").unwrap_or_default().to_owned(),
    })
}

/// The credentials one Secret's data holds for `host`.
pub fn credentials_for(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    host: &str,
) -> Option<Credentials> {
    let (config, nested) = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
        (Some(json), _) => (json, true),
        (None, Some(cfg)) => (cfg, false),
        (None, None) => return None,
    };
    let config: Value = serde_json::from_slice(config).ok()?;
    let auths = if nested {
        config.get("auths")?
    } else {
        &config
    };
    auths
        .as_object()?
        .iter()
        .find(|(key, _)| host_of(key) == host)
        .and_then(|(_, entry)| entry_credentials(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn data(key: &str, value: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_owned(), value.as_bytes().to_vec())])
    }

    #[test]
    fn reads_both_secret_forms() {
        let auth = base64::engine::general_purpose::STANDARD.encode("lab:pa:ss");
        let json = data(
            ".dockerconfigjson",
            &format!(r#"{{"auths": {{"https://127.0.0.1:5001/v1/": {{"auth": "{auth}"}}}}}}"#),
        );
        let c = credentials_for(&json, "127.0.0.1:5001").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("lab", "pa:ss"));
        assert!(credentials_for(&json, "ghcr.io").is_none());
        let cfg = data(
            ".dockercfg",
            r#"{"ghcr.io": {"username": "u", "password": "p"}}"#,
        );
        assert_eq!(credentials_for(&cfg, "ghcr.io").unwrap().password, "p");
    }

    #[test]
    fn malformed_secrets_give_nothing() {
        for bad in [
            r#"{"auths": 3}"#,
            r#"{"auths": {"h": {"auth": "!!"}}}"#,
            "[]",
            "not json",
            r#"{"auths": {"h": []}}"#,
        ] {
            assert!(
                credentials_for(&data(".dockerconfigjson", bad), "h").is_none(),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(value in "\\PC{0,120}", host in "[a-z0-9.:]{0,12}") {
            let _ = credentials_for(&data(".dockerconfigjson", &value), &host);
            let _ = credentials_for(&data(".dockercfg", &value), &host);
        }

        #[test]
        fn never_panics_on_json_shaped_secrets(
            auth in "(\"[A-Za-z0-9+/=]{0,16}\"|1|null|\\[\\])",
            user in "(\"u\"|1|null)",
        ) {
            let json = format!(r#"{{"auths": {{"h": {{"auth": {auth}, "username": {user}}}}}}}"#);
            let _ = credentials_for(&data(".dockerconfigjson", &json), "h");
        }
    }
}

//! Credentials for a repository: how to authenticate, and reading them
//! from the Secret an Environment names (`spec.source.secretRef`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::Environment;

/// How to authenticate to the remote.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Public repositories, `file://`, `git://`.
    #[default]
    None,
    /// HTTPS with a token (GitHub: a fine-grained token with read access).
    Token(String),
    /// SSH with a private key (PEM/OpenSSH) and the `known_hosts` lines
    /// the server's host key must match.
    Ssh {
        private_key: String,
        passphrase: Option<String>,
        known_hosts: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Token(_) => "Token(<redacted>)",
            Credentials::Ssh { .. } => "Ssh(<redacted>)",
        })
    }
}

/// The credentials `env` names, read from its Secret; a message that says
/// what is missing when the Secret does not hold them.
pub async fn read(client: &Client, env: &Environment) -> Result<Credentials, String> {
    let Some(secret_ref) = &env.spec.source.secret_ref else {
        return Ok(Credentials::None);
    };
    let ns = env.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| format!("failed to read Secret {ns}/{}: {e}", secret_ref.name))?
        .ok_or_else(|| {
            format!(
                "Secret {ns}/{} does not exist; create it with token, or identity and known_hosts",
                secret_ref.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    match (text("token"), text("identity"), text("known_hosts")) {
        (Some(token), _, _) => Ok(Credentials::Token(token.trim().to_owned())),
        (None, Some(private_key), Some(known_hosts)) => Ok(Credentials::Ssh {
            private_key,
            passphrase: text("passphrase"),
            known_hosts,
        }),
        _ => Err(format!(
            "Secret {ns}/{} has neither token nor identity and known_hosts",
            secret_ref.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Credentials::Token("s3cr3t".into())),
            "Token(<redacted>)"
        );
    }
}

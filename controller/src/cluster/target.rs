//! Where an Environment's objects may go: `spec.targetNamespace`.
//!
//! Guarantees (pure, given each object's scope): with a target, every
//! namespaced object ends up in the target (those without a namespace are
//! put there, as Flux's `targetNamespace` does; those in another one are
//! refused), and the only cluster-scoped object allowed is the target's
//! own Namespace. Without a target, a namespaced object must name its
//! namespace: it never lands silently in the controller's own.

use serde_json::Value;

use ferry_manifests::object::ObjectRef;
use ferry_manifests::render::transform::set;

/// Whether an object's kind is namespaced; `None` when not known (the plan
/// then reports the unknown kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "{object} (from {origin}) is outside the target namespace {target}; drop its namespace (it then goes to {target}) or render it from another Environment"
    )]
    OtherNamespace {
        object: ObjectRef,
        origin: String,
        target: String,
    },
    #[error(
        "{object} (from {origin}) is cluster-scoped; an Environment with targetNamespace {target} may only hold namespaced objects and the Namespace {target}"
    )]
    ClusterScoped {
        object: ObjectRef,
        origin: String,
        target: String,
    },
    #[error(
        "{object} (from {origin}) has no namespace; set metadata.namespace, the kustomization's namespace, or the Environment's targetNamespace"
    )]
    NoNamespace { object: ObjectRef, origin: String },
}

/// Places `desired` per the rules above; `scope_of` tells each kind's scope.
pub fn place(
    desired: &mut [(Value, String)],
    target: Option<&str>,
    scope_of: impl Fn(&ObjectRef) -> Option<Scope>,
) -> Result<(), Box<PlacementError>> {
    for (object, origin) in desired.iter_mut() {
        let id = ObjectRef::of(object);
        match (scope_of(&id), target, &id.namespace) {
            (Some(Scope::Cluster), Some(t), _) => {
                let own_namespace = id.is_namespace() && id.name == t;
                if !own_namespace {
                    return Err(Box::new(PlacementError::ClusterScoped {
                        object: id,
                        origin: origin.clone(),
                        target: t.to_owned(),
                    }));
                }
            }
            (Some(Scope::Namespaced), Some(t), None) => {
                set(object, &["metadata", "namespace"], t.into());
            }
            (_, Some(t), Some(ns)) if ns != t => {
                return Err(Box::new(PlacementError::OtherNamespace {
                    object: id,
                    origin: origin.clone(),
                    target: t.to_owned(),
                }));
            }
            (Some(Scope::Namespaced), None, None) => {
                return Err(Box::new(PlacementError::NoNamespace {
                    object: id,
                    origin: origin.clone(),
                }));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, namespace: Option<&str>) -> (Value, String) {
        let mut o = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}});
        if let Some(ns) = namespace {
            o["metadata"]["namespace"] = ns.into();
        }
        (o, "env/app.yaml".into())
    }

    fn scope(id: &ObjectRef) -> Option<Scope> {
        match id.kind.as_str() {
            "Namespace" | "ClusterRole" => Some(Scope::Cluster),
            "Widget" => None,
            _ => Some(Scope::Namespaced),
        }
    }

    #[test]
    fn objects_without_a_namespace_go_to_the_target() {
        let mut desired = vec![object("ConfigMap", None), object("ConfigMap", Some("dev"))];
        place(&mut desired, Some("dev"), scope).unwrap();
        assert_eq!(desired[0].0["metadata"]["namespace"], "dev");
    }

    #[test]
    fn other_namespaces_and_cluster_objects_are_refused() {
        let mut other = vec![object("ConfigMap", Some("prod"))];
        assert!(matches!(
            place(&mut other, Some("dev"), scope),
            Err(e) if matches!(*e, PlacementError::OtherNamespace { .. })
        ));
        let mut role = vec![object("ClusterRole", None)];
        let err = place(&mut role, Some("dev"), scope).unwrap_err();
        assert!(
            err.to_string()
                .contains("ClusterRole x (from env/app.yaml) is cluster-scoped"),
            "{err}"
        );
        let mut namespace = vec![object("Namespace", None)];
        namespace[0].0["metadata"]["name"] = "dev".into();
        assert!(place(&mut namespace, Some("dev"), scope).is_ok());
        let mut other = namespace.clone();
        other[0].0["metadata"]["name"] = "prod".into();
        assert!(place(&mut other, Some("dev"), scope).is_err());
    }

    #[test]
    fn without_a_target_a_namespace_is_required() {
        let mut bare = vec![object("ConfigMap", None)];
        assert!(matches!(
            place(&mut bare, None, scope),
            Err(e) if matches!(*e, PlacementError::NoNamespace { .. })
        ));
        let mut fine = vec![
            object("ConfigMap", Some("a")),
            object("Namespace", None),
            object("Widget", None),
        ];
        assert!(place(&mut fine, None, scope).is_ok());
    }
}

//! The order objects are applied in: what others depend on first
//! (namespaces, CRDs, accounts, configuration, services), workloads next,
//! what refers to workloads last. Pruning runs it backwards.

/// Position of a kind in the apply order; unknown kinds (custom
/// resources) go after workloads and before autoscalers.
pub fn apply_rank(kind: &str) -> usize {
    const ORDER: [&[&str]; 8] = [
        &["Namespace"],
        &["CustomResourceDefinition"],
        &[
            "ServiceAccount",
            "ClusterRole",
            "Role",
            "ClusterRoleBinding",
            "RoleBinding",
        ],
        &[
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "LimitRange",
            "ResourceQuota",
            "NetworkPolicy",
        ],
        &["Service"],
        &[
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Pod",
        ],
        &[],
        &["HorizontalPodAutoscaler", "PodDisruptionBudget"],
    ];
    ORDER
        .iter()
        .position(|group| group.contains(&kind))
        .unwrap_or(6)
}

#[cfg(test)]
mod tests {
    use super::apply_rank;

    #[test]
    fn dependency_order() {
        let kinds = [
            "PodDisruptionBudget",
            "Deployment",
            "Service",
            "ConfigMap",
            "RoleBinding",
            "CustomResourceDefinition",
            "Namespace",
            "Widget",
        ];
        let mut sorted = kinds.to_vec();
        sorted.sort_by_key(|k| apply_rank(k));
        assert_eq!(
            sorted,
            [
                "Namespace",
                "CustomResourceDefinition",
                "RoleBinding",
                "ConfigMap",
                "Service",
                "Deployment",
                "Widget",
                "PodDisruptionBudget"
            ]
        );
    }
}

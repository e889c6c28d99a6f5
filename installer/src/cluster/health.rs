//! Health of applied objects, read from their status as the API server reports it: ready or not
//! (with ready/desired counts for progress), and, for a wait that timed out, the likely cause
//! read from the pods' container states and conditions (an image that cannot be pulled, and from
//! which registry; a pod that cannot be scheduled, and why).

use serde_json::Value;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Not ready yet: `ready` of `desired` (replicas, pods, completions).
    Waiting {
        ready: u64,
        desired: u64,
    },
    /// It will not get ready by waiting (a failed Job, a lost claim).
    Failed(String),
    /// A kind that has no readiness of its own (ConfigMap, Service, ...).
    NotTracked,
}

fn num(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The condition `kind` of `v`'s status.
pub(crate) fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// The health of `obj` (a whole object as the API server returns it).
pub fn assess(obj: &Value) -> Health {
    let kind = text(obj, "/kind");
    let generation = num(obj, "/metadata/generation");
    let observed = num(obj, "/status/observedGeneration");
    // The controller has not seen the latest spec yet: its status describes an older one.
    let stale = generation > 0 && observed < generation;
    match kind {
        "Deployment" | "StatefulSet" => {
            let desired = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let updated = num(obj, "/status/updatedReplicas");
            let ready = num(obj, "/status/readyReplicas");
            let available = if kind == "Deployment" {
                num(obj, "/status/availableReplicas")
            } else {
                ready
            };
            let total = num(obj, "/status/replicas");
            let deadline = condition(obj, "Progressing")
                .filter(|c| text(c, "/reason") == "ProgressDeadlineExceeded");
            if let (true, Some(c)) = (kind == "Deployment", deadline) {
                return Health::Failed(format!(
                    "its rollout exceeded its progress deadline: {}",
                    text(c, "/message")
                ));
            }
            if !stale
                && updated >= desired
                && ready >= desired
                && available >= desired
                && total <= desired
            {
                Health::Ready
            } else {
                Health::Waiting {
                    ready: ready.min(updated),
                    desired,
                }
            }
        }
        "DaemonSet" => {
            let desired = num(obj, "/status/desiredNumberScheduled");
            let updated = num(obj, "/status/updatedNumberScheduled");
            let ready = num(obj, "/status/numberReady");
            if !stale && updated >= desired && ready >= desired {
                Health::Ready
            } else {
                Health::Waiting {
                    ready: ready.min(updated),
                    desired,
                }
            }
        }
        "Job" => {
            if condition(obj, "Complete").is_some_and(|c| text(c, "/status") == "True") {
                Health::Ready
            } else if let Some(c) =
                condition(obj, "Failed").filter(|c| text(c, "/status") == "True")
            {
                Health::Failed(format!(
                    "the Job failed ({}): {}",
                    text(c, "/reason"),
                    text(c, "/message")
                ))
            } else {
                Health::Waiting {
                    ready: num(obj, "/status/succeeded"),
                    desired: obj
                        .pointer("/spec/completions")
                        .and_then(Value::as_u64)
                        .unwrap_or(1),
                }
            }
        }
        "PersistentVolumeClaim" => match text(obj, "/status/phase") {
            "Bound" => Health::Ready,
            "Lost" => Health::Failed("its volume was lost".into()),
            _ => Health::Waiting {
                ready: 0,
                desired: 1,
            },
        },
        _ => Health::NotTracked,
    }
}

/// The likely cause of pods not getting ready, from their status: the first problem found, said
/// so an operator can act on it. None when the pods show nothing wrong.
pub fn stall_cause(pods: &[Value]) -> Option<String> {
    for pod in pods {
        let name = text(pod, "/metadata/name");
        let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
            .iter()
            .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
            .flatten();
        for c in statuses {
            let reason = text(c, "/state/waiting/reason");
            let message = text(c, "/state/waiting/message");
            match reason {
                "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => {
                    let image = text(c, "/image");
                    return Some(format!(
                        "pod {name} cannot pull image {image} ({reason}): containerd asks the site registry through the mirror for {}; check that the image is in the bundle, that the registry was seeded, and that registries.yaml mirrors that registry{}",
                        registry_of(image),
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(" ({message})")
                        }
                    ));
                }
                "CrashLoopBackOff" | "CreateContainerConfigError" | "RunContainerError" => {
                    return Some(format!(
                        "pod {name}: container {} is in {reason}{}; see `k3s kubectl logs -n {} {name} -c {}`",
                        text(c, "/name"),
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(" ({message})")
                        },
                        text(pod, "/metadata/namespace"),
                        text(c, "/name"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(c) = condition(pod, "PodScheduled").filter(|c| text(c, "/status") == "False") {
            let message = text(c, "/message");
            let hint = if message.contains("unbound") && message.contains("PersistentVolumeClaim") {
                ": a claim is not bound; check the storage class and its provisioner"
            } else if message.contains("Insufficient") {
                ": the nodes lack the resources it requests; lower its requests or add a node"
            } else {
                ""
            };
            return Some(format!("pod {name} cannot be scheduled ({message}){hint}"));
        }
    }
    None
}

/// The registry host of an image reference as containerd resolves it (`docker.io` when none).
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => host,
        _ => "docker.io",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_ready_when_every_replica_of_the_current_spec_is_available() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                       "readyReplicas": 2, "availableReplicas": 2}});
        // An old replica is still terminating.
        assert_eq!(
            assess(&d),
            Health::Waiting {
                ready: 2,
                desired: 2
            }
        );
        d["status"]["replicas"] = json!(2);
        assert_eq!(assess(&d), Health::Ready);
        // A new spec the controller has not observed yet.
        d["metadata"]["generation"] = json!(3);
        assert!(matches!(assess(&d), Health::Waiting { .. }));
        d["status"]["observedGeneration"] = json!(3);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"api-5d\" has timed out progressing."}]);
        let Health::Failed(why) = assess(&d) else {
            panic!()
        };
        assert!(why.contains("timed out progressing"), "{why}");
    }

    #[test]
    fn statefulsets_daemonsets_jobs_and_claims_report_their_own_readiness() {
        let s = json!({"kind": "StatefulSet", "spec": {"replicas": 3},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 1}});
        assert_eq!(
            assess(&s),
            Health::Waiting {
                ready: 1,
                desired: 3
            }
        );
        let ds = json!({"kind": "DaemonSet", "status": {"desiredNumberScheduled": 4,
            "updatedNumberScheduled": 4, "numberReady": 4}});
        assert_eq!(assess(&ds), Health::Ready);
        let job = json!({"kind": "Job", "status": {"conditions": [{"type": "Failed",
            "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}});
        let Health::Failed(why) = assess(&job) else {
            panic!()
        };
        assert!(why.contains("BackoffLimitExceeded"), "{why}");
        let done = json!({"kind": "Job", "status": {"succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess(&done), Health::Ready);
        let pvc = json!({"kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert_eq!(
            assess(&pvc),
            Health::Waiting {
                ready: 0,
                desired: 1
            }
        );
        assert_eq!(assess(&json!({"kind": "ConfigMap"})), Health::NotTracked);
    }

    #[test]
    fn a_stall_is_explained_by_the_image_and_registry_or_the_scheduling_problem() {
        let pull = json!({"metadata": {"name": "api-5d-x", "namespace": "rin-system"},
            "status": {"containerStatuses": [{"name": "api",
                "image": "ghcr.io/rin/api:1.4",
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"ghcr.io/rin/api:1.4\""}}}]}});
        let why = stall_cause(&[pull]).unwrap();
        assert!(
            why.contains("api-5d-x")
                && why.contains("ghcr.io/rin/api:1.4")
                && why.contains("for ghcr.io")
                && why.contains("ImagePullBackOff"),
            "{why}"
        );
        let hub = json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"name": "c", "image": "busybox:1.36", "state": {"waiting": {"reason": "ErrImagePull"}}}]}});
        assert!(stall_cause(&[hub]).unwrap().contains("for docker.io"));
        let pending = json!({"metadata": {"name": "pg-1"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]}});
        let why = stall_cause(&[pending]).unwrap();
        assert!(
            why.contains("pg-1") && why.contains("storage class"),
            "{why}"
        );
        let crash = json!({"metadata": {"name": "w-1", "namespace": "rin-system"},
            "status": {"containerStatuses": [{"name": "worker", "image": "x",
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                    "message": "back-off 5m0s restarting failed container"}}}]}});
        let why = stall_cause(&[crash]).unwrap();
        assert!(
            why.contains("CrashLoopBackOff")
                && why.contains("k3s kubectl logs -n rin-system w-1 -c worker"),
            "{why}"
        );
        let big = json!({"metadata": {"name": "big"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False",
             "message": "0/1 nodes are available: 1 Insufficient cpu."}]}});
        let why = stall_cause(&[big]).unwrap();
        assert!(
            why.contains("Insufficient cpu") && why.contains("lower its requests"),
            "{why}"
        );
        let fine = json!({"metadata": {"name": "ok"}, "status": {"containerStatuses": [
            {"name": "c", "image": "x", "state": {"running": {}}}]}});
        assert_eq!(stall_cause(&[fine]), None);
    }
}

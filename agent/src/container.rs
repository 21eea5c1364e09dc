//! What to execute for a container, worked out from the Pod alone (pure):
//! program and arguments with `$(VAR)` expansion, environment (values and
//! `fieldRef`s), working directory, volume mounts and limits.
//!
//! Skiff runs containers **without images**: `command` names a program on
//! the node's filesystem, executed inside the pod's namespaces. A container
//! without `command` cannot run and gets `CreateContainerError`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume};

use crate::error::AgentError;
use crate::quantity;
use crate::sandbox::cgroup::Limits;

/// PATH given to containers that do not set one (an image would).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reason for specs the agent cannot run.
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Reason for unusable configuration (env sources, volumes).
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// A fully resolved container start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLaunch {
    /// Container name.
    pub name: String,
    /// Program (`command[0]`), looked up in the container's PATH if relative.
    pub program: String,
    /// Remaining command words, then `args`.
    pub args: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (default `/`).
    pub working_dir: PathBuf,
    /// Bind mounts into the container's mount namespace.
    pub mounts: Vec<BindMount>,
    /// cgroup limits.
    pub limits: Limits,
}

/// One volume mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path on the node (emptyDir directory or hostPath, plus subPath).
    pub source: PathBuf,
    /// `mountPath`; must already exist on the node (there is no image to
    /// provide it).
    pub target: PathBuf,
    /// `readOnly`.
    pub read_only: bool,
    /// For hostPath volumes, the declared `type` (checked at start).
    pub host_path_type: Option<String>,
}

/// What the launch plan may read about the pod beyond its spec.
#[derive(Debug, Clone)]
pub struct PodContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its IP.
    pub pod_ip: Ipv4Addr,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
    /// The node's name.
    pub node_name: &'a str,
    /// `<data_dir>/pods/<uid>`.
    pub pod_dir: &'a Path,
    /// The pod's hostname.
    pub hostname: &'a str,
}

/// A volume as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePath {
    /// emptyDir: `<pod_dir>/volumes/<name>`, made with the sandbox.
    EmptyDir(PathBuf),
    /// hostPath with its optional type.
    HostPath(PathBuf, Option<String>),
    /// Any other kind; mounting it is a config error with this message.
    Unsupported(String),
}

/// The pod's volumes by name.
pub fn volumes(pod: &Pod, pod_dir: &Path) -> BTreeMap<String, VolumePath> {
    let vols: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    vols.iter()
        .map(|v| {
            let path = if v.empty_dir.is_some() {
                VolumePath::EmptyDir(pod_dir.join("volumes").join(crate::sandbox::names::sanitize(&v.name)))
            } else if let Some(hp) = &v.host_path {
                VolumePath::HostPath(PathBuf::from(&hp.path), hp.type_.clone().filter(|t| !t.is_empty()))
            } else {
                VolumePath::Unsupported(format!(
                    "volume {:?}: only emptyDir and hostPath volumes are supported by the Skiff agent",
                    v.name
                ))
            };
            (v.name.clone(), path)
        })
        .collect()
}

/// The hostname of a pod: `spec.hostname` or the pod name, cut to 63 bytes.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h = name;
    h.truncate(63);
    h.trim_end_matches(['-', '.']).to_owned()
}

/// Works out the launch of `container` in the pod described by `ctx`.
///
/// Fails with [`AgentError::PodSpec`]: `CreateContainerError` when there is
/// no `command`, `CreateContainerConfigError` for unsupported env sources,
/// unknown or unsupported volumes, relative mount paths or escaping
/// subPaths.
pub fn launch(ctx: &PodContext<'_>, container: &Container) -> Result<ContainerLaunch, AgentError> {
    let cname = &container.name;
    let command = container.command.clone().unwrap_or_default();
    let Some((program, rest)) = command.split_first() else {
        return Err(AgentError::PodSpec {
            reason: CREATE_CONTAINER_ERROR,
            message: format!(
                "container {cname:?} has no command: Skiff runs containers without images, \
                 so `command` must name a program on the node"
            ),
        });
    };

    let env = environment(ctx, container)?;
    let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let program = expand(program, &lookup);
    let args = rest
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, &lookup))
        .collect();

    let working_dir = match container.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if Path::new(w).is_absolute() => PathBuf::from(w),
        Some(w) => {
            return Err(config_error(format!(
                "container {cname:?}: workingDir {w:?} must be absolute"
            )));
        }
        None => PathBuf::from("/"),
    };

    let vols = volumes(ctx.pod, ctx.pod_dir);
    let mut mounts = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let source = match vols.get(&vm.name) {
            None => {
                return Err(config_error(format!(
                    "container {cname:?} mounts volume {:?}, which the pod does not declare",
                    vm.name
                )));
            }
            Some(VolumePath::Unsupported(msg)) => return Err(config_error(msg.clone())),
            Some(VolumePath::EmptyDir(p)) => (p.clone(), None),
            Some(VolumePath::HostPath(p, t)) => (p.clone(), t.clone()),
        };
        let target = PathBuf::from(&vm.mount_path);
        if !target.is_absolute() {
            return Err(config_error(format!(
                "container {cname:?}: mountPath {:?} must be absolute",
                vm.mount_path
            )));
        }
        let sub = vm.sub_path.as_deref().unwrap_or("");
        let source_path = if sub.is_empty() {
            source.0
        } else {
            let p = Path::new(sub);
            if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(config_error(format!(
                    "container {cname:?}: subPath {sub:?} must be relative and may not contain '..'"
                )));
            }
            source.0.join(p)
        };
        mounts.push(BindMount {
            source: source_path,
            target,
            read_only: vm.read_only.unwrap_or(false),
            host_path_type: source.1,
        });
    }

    let limits = limits(container)?;
    Ok(ContainerLaunch {
        name: cname.clone(),
        program,
        args,
        env,
        working_dir,
        mounts,
        limits,
    })
}

fn config_error(message: String) -> AgentError {
    AgentError::PodSpec {
        reason: CREATE_CONTAINER_CONFIG_ERROR,
        message,
    }
}

fn limits(container: &Container) -> Result<Limits, AgentError> {
    let get = |key: &str| {
        container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(key))
            .map(|q| q.0.clone())
    };
    let bad =
        |e: quantity::QuantityError| config_error(format!("container {:?}: {e}", container.name));
    Ok(Limits {
        cpu_millis: get("cpu")
            .map(|q| quantity::cpu_millis(&q))
            .transpose()
            .map_err(bad)?,
        memory_bytes: get("memory")
            .map(|q| quantity::bytes(&q))
            .transpose()
            .map_err(bad)?,
    })
}

/// The container's environment: `PATH` and `HOSTNAME` defaults, then the
/// spec's `env` in order, each value `$(VAR)`-expanded against those before it.
fn environment(
    ctx: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, AgentError> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), ctx.hostname.into()),
    ];
    for var in container.env.iter().flatten() {
        let value = env_value(ctx, container, var)?;
        let value = {
            let lookup: BTreeMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(&value, &lookup)
        };
        if let Some(slot) = env.iter_mut().find(|(k, _)| *k == var.name) {
            slot.1 = value;
        } else {
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

fn env_value(
    ctx: &PodContext<'_>,
    container: &Container,
    var: &EnvVar,
) -> Result<String, AgentError> {
    let Some(from) = &var.value_from else {
        return Ok(var.value.clone().unwrap_or_default());
    };
    let Some(field) = &from.field_ref else {
        return Err(config_error(format!(
            "container {:?}: env {:?}: only `value` and `valueFrom.fieldRef` are supported \
             (configMapKeyRef, secretKeyRef and resourceFieldRef are not)",
            container.name, var.name
        )));
    };
    field_value(ctx, &field.field_path).ok_or_else(|| {
        config_error(format!(
            "container {:?}: env {:?}: unsupported fieldPath {:?}",
            container.name, var.name, field.field_path
        ))
    })
}

/// The downward-API value of `path` (the fieldRef paths Kubernetes allows
/// for env), or `None` for an unsupported path.
pub fn field_value(ctx: &PodContext<'_>, path: &str) -> Option<String> {
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(rest.to_owned())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.into()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced,
/// undefined references are left as written, `$$` is a literal `$`.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn ctx<'a>(pod: &'a Pod, dir: &'a Path) -> PodContext<'a> {
        PodContext {
            pod,
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            host_ip: Ipv4Addr::new(192, 168, 250, 2),
            node_name: "node1",
            pod_dir: dir,
            hostname: "web",
        }
    }

    fn sample() -> Pod {
        pod(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "node1",
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "host", "hostPath": {"path": "/srv/data", "type": "Directory"}},
                    {"name": "cfg", "configMap": {"name": "x"}}
                ],
                "containers": [{
                    "name": "app",
                    "command": ["/bin/server", "--ip=$(MY_IP)"],
                    "args": ["--name", "$(MY_NAME)", "$$(MY_NAME)", "$(UNSET)"],
                    "workingDir": "/tmp",
                    "env": [
                        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "GREETING", "value": "hi $(MY_NAME)"}
                    ],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "host", "mountPath": "/data", "readOnly": true, "subPath": "a/b"}
                    ],
                    "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
                }]
            }
        }))
    }

    #[test]
    fn resolves_command_env_mounts_and_limits() {
        let p = sample();
        let dir = PathBuf::from("/var/lib/skiff/agent/node1/pods/u-1");
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let l = launch(&ctx(&p, &dir), c).expect("launch");
        assert_eq!(l.program, "/bin/server");
        assert_eq!(
            l.args,
            ["--ip=10.244.1.5", "--name", "web", "$(MY_NAME)", "$(UNSET)"]
        );
        let env: BTreeMap<_, _> = l.env.iter().cloned().collect();
        assert_eq!(env["MY_NS"], "shop");
        assert_eq!(env["MY_NODE"], "node1");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["GREETING"], "hi web");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["HOSTNAME"], "web");
        assert_eq!(l.working_dir, Path::new("/tmp"));
        assert_eq!(
            l.mounts,
            [
                BindMount {
                    source: dir.join("volumes/scratch"),
                    target: "/scratch".into(),
                    read_only: false,
                    host_path_type: None
                },
                BindMount {
                    source: "/srv/data/a/b".into(),
                    target: "/data".into(),
                    read_only: true,
                    host_path_type: Some("Directory".into())
                },
            ]
        );
        assert_eq!(
            l.limits,
            Limits {
                cpu_millis: Some(250),
                memory_bytes: Some(64 << 20)
            }
        );
    }

    #[test]
    fn missing_command_is_a_create_container_error() {
        let p = pod(
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        );
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let err = launch(&ctx(&p, Path::new("/d")), c).expect_err("no command");
        match err {
            AgentError::PodSpec { reason, message } => {
                assert_eq!(reason, CREATE_CONTAINER_ERROR);
                assert!(message.contains("without images"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_sources_are_config_errors() {
        let cases = [
            json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "nope", "mountPath": "/a"}]}),
            json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "v", "mountPath": "rel"}]}),
            json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "v", "mountPath": "/a", "subPath": "../etc"}]}),
            json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "cm", "mountPath": "/a"}]}),
            json!({"name": "c", "command": ["x"], "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            json!({"name": "c", "command": ["x"], "env": [{"name": "S", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
            json!({"name": "c", "command": ["x"], "workingDir": "relative"}),
            json!({"name": "c", "command": ["x"], "resources": {"limits": {"cpu": "lots"}}}),
        ];
        for c in cases {
            let p = pod(json!({"metadata": {"name": "x"}, "spec": {
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "c"}}],
                "containers": [c.clone()]}}));
            let container = &p.spec.as_ref().expect("spec").containers[0];
            match launch(&ctx(&p, Path::new("/d")), container) {
                Err(AgentError::PodSpec { reason, .. }) => {
                    assert_eq!(reason, CREATE_CONTAINER_CONFIG_ERROR, "{c}")
                }
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    #[test]
    fn expansion_rules() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A) $(C) $ $( x", &vars), "$(A) $(C) $ $( x");
        assert_eq!(expand("cost $$5", &vars), "cost $5");
    }

    #[test]
    fn hostname_defaults_to_pod_name() {
        let p = pod(json!({"metadata": {"name": "web-0"}, "spec": {"containers": []}}));
        assert_eq!(hostname(&p), "web-0");
        let p =
            pod(json!({"metadata": {"name": "x"}, "spec": {"hostname": "h", "containers": []}}));
        assert_eq!(hostname(&p), "h");
    }
}

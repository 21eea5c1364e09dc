//! kubectl-like tables (pure): columns per kind from the object JSON, ages
//! in kubectl's human form, aligned output.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A rendered table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns padded to their widest cell, separated by 3 spaces, like
    /// kubectl's tabwriter.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths = vec![0; n];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// kubectl's `HumanDuration`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x.into()
    }
}

fn age(v: &Value, now: DateTime<Utc>) -> String {
    DateTime::parse_from_rfc3339(s(v, "/metadata/creationTimestamp"))
        .map(|t| human_age((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|_| "<unknown>".into())
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &statuses {
        let waiting = s(c, "/state/waiting/reason");
        if !waiting.is_empty() && waiting != "ContainerCreating" {
            return waiting.into();
        }
        let term = s(c, "/state/terminated/reason");
        if !term.is_empty() && s(p, "/status/phase") != "Succeeded" {
            return term.into();
        }
    }
    let phase = s(p, "/status/phase");
    if phase.is_empty() {
        "Pending".into()
    } else {
        phase.into()
    }
}

fn pod_row(p: &Value, wide: bool) -> Vec<String> {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let mut row = vec![
        format!("{ready}/{total}"),
        pod_status(p),
        restarts.to_string(),
    ];
    if wide {
        row.push(or_none(s(p, "/status/podIP")));
        row.push(or_none(s(p, "/spec/nodeName")));
    }
    row
}

fn service_row(v: &Value, wide: bool) -> Vec<String> {
    let ports: Vec<String> = v
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                None => format!("{}/{proto}", n(p, "/port")),
            }
        })
        .collect();
    let typ = match s(v, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let external = match typ {
        "ExternalName" => s(v, "/spec/externalName").to_owned(),
        _ => "<none>".into(),
    };
    let mut row = vec![
        typ.into(),
        or_none(s(v, "/spec/clusterIP")),
        external,
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
    ];
    if wide {
        let sel: Vec<String> = v
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, val)| format!("{k}={}", val.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        row.push(if sel.is_empty() {
            "<none>".into()
        } else {
            sel.join(",")
        });
    }
    row
}

/// kubectl's ROLES: `node-role.kubernetes.io/<role>` label keys and the
/// value of `kubernetes.io/role`.
fn node_roles(v: &Value) -> String {
    let mut roles: Vec<&str> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(
                    |(k, val)| match k.strip_prefix("node-role.kubernetes.io/") {
                        Some(role) => Some(role),
                        None if k == "kubernetes.io/role" => val.as_str(),
                        None => None,
                    },
                )
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    or_none(&roles.join(","))
}

fn node_row(v: &Value, wide: bool) -> Vec<String> {
    let ready = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Ready"))
        .map(|c| match s(c, "/status") {
            "True" => "Ready",
            "False" => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let status = if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_owned()
    };
    let mut row = vec![status, node_roles(v)];
    row.push(or_none(s(v, "/status/nodeInfo/kubeletVersion")));
    if wide {
        let ip = v
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x, "/type") == "InternalIP"))
            .map_or("", |x| s(x, "/address"));
        row.push(or_none(ip));
        row.push(or_none(s(v, "/spec/podCIDR")));
    }
    row
}

/// Builds the cells of a kind's columns for one object (`wide`: with the
/// `-o wide` ones).
type RowFn = fn(&Value, bool) -> Vec<String>;

/// The columns of `kind` (between NAME and AGE) and a row builder.
fn columns(kind: &str, wide: bool) -> (Vec<&'static str>, RowFn) {
    match kind {
        "Pod" => {
            let mut c = vec!["READY", "STATUS", "RESTARTS"];
            if wide {
                c.extend(["IP", "NODE"]);
            }
            (c, pod_row)
        }
        "Service" => {
            let mut c = vec!["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"];
            if wide {
                c.push("SELECTOR");
            }
            (c, service_row)
        }
        "Deployment" => (vec!["READY", "UP-TO-DATE", "AVAILABLE"], |v, _| {
            vec![
                format!(
                    "{}/{}",
                    n(v, "/status/readyReplicas"),
                    n(v, "/spec/replicas")
                ),
                n(v, "/status/updatedReplicas").to_string(),
                n(v, "/status/availableReplicas").to_string(),
            ]
        }),
        "ReplicaSet" => (vec!["DESIRED", "CURRENT", "READY"], |v, _| {
            vec![
                n(v, "/spec/replicas").to_string(),
                n(v, "/status/replicas").to_string(),
                n(v, "/status/readyReplicas").to_string(),
            ]
        }),
        "Node" => {
            let mut c = vec!["STATUS", "ROLES", "VERSION"];
            if wide {
                c.extend(["INTERNAL-IP", "POD-CIDR"]);
            }
            (c, node_row)
        }
        "Namespace" => (vec!["STATUS"], |v, _| {
            vec![match s(v, "/status/phase") {
                "" => "Active".into(),
                p => p.into(),
            }]
        }),
        "EndpointSlice" => (vec!["ADDRESSTYPE", "PORTS", "ENDPOINTS"], |v, _| {
            let ports: Vec<String> = v
                .pointer("/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| n(p, "/port").to_string())
                .collect();
            let eps: Vec<String> = v
                .pointer("/endpoints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|e| {
                    e.pointer("/addresses/0")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            vec![
                s(v, "/addressType").to_owned(),
                if ports.is_empty() {
                    "<unset>".into()
                } else {
                    ports.join(",")
                },
                if eps.is_empty() {
                    "<unset>".into()
                } else {
                    eps.join(",")
                },
            ]
        }),
        "DaemonSet" => (
            vec![
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
            ],
            |v, _| {
                let selector = v
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, val)| format!("{k}={}", val.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                vec![
                    n(v, "/status/desiredNumberScheduled").to_string(),
                    n(v, "/status/currentNumberScheduled").to_string(),
                    n(v, "/status/numberReady").to_string(),
                    n(v, "/status/updatedNumberScheduled").to_string(),
                    n(v, "/status/numberAvailable").to_string(),
                    or_none(&selector),
                ]
            },
        ),
        "StatefulSet" => (vec!["READY"], |v, _| {
            vec![format!(
                "{}/{}",
                n(v, "/status/readyReplicas"),
                n(v, "/spec/replicas")
            )]
        }),
        "Job" => (vec!["STATUS", "COMPLETIONS", "DURATION"], |v, _| {
            job_row(v, Utc::now())
        }),
        "ConfigMap" => (vec!["DATA"], |v, _| {
            let count = |ptr: &str| {
                v.pointer(ptr)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            vec![(count("/data") + count("/binaryData")).to_string()]
        }),
        "Secret" => (vec!["TYPE", "DATA"], |v, _| {
            let data = v
                .pointer("/data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![s(v, "/type").to_owned(), data.to_string()]
        }),
        "Lease" => (vec!["HOLDER"], |v, _| {
            vec![s(v, "/spec/holderIdentity").to_owned()]
        }),
        _ => (vec![], |_, _| vec![]),
    }
}

fn job_condition(v: &Value, kind: &str) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
        })
}

/// kubectl's STATUS, COMPLETIONS and DURATION of a Job.
fn job_row(v: &Value, now: DateTime<Utc>) -> Vec<String> {
    let status = [
        "Complete",
        "Failed",
        "Suspended",
        "FailureTarget",
        "SuccessCriteriaMet",
    ]
    .into_iter()
    .find(|c| job_condition(v, c))
    .unwrap_or("Running");
    let succeeded = n(v, "/status/succeeded");
    let completions = match v.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match n(v, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |ptr: &str| {
        DateTime::parse_from_rfc3339(s(v, ptr))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_age((now - start).num_seconds()),
        (Some(start), Some(end)) => human_age((end - start).num_seconds()),
    };
    vec![status.to_owned(), completions, duration]
}

/// A table of `objects` of one `kind`; `with_namespace` adds the
/// NAMESPACE column (`-A`).
pub fn table(
    kind: &str,
    objects: &[Value],
    with_namespace: bool,
    wide: bool,
    now: DateTime<Utc>,
) -> Table {
    if kind == "Event" {
        return event_table(objects, with_namespace, now);
    }
    let (cols, row) = columns(kind, wide);
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.push("NAME".to_owned());
    header.extend(cols.iter().map(|c| (*c).to_owned()));
    header.push("AGE".to_owned());
    let rows = objects
        .iter()
        .map(|o| {
            let mut r = Vec::new();
            if with_namespace {
                r.push(s(o, "/metadata/namespace").to_owned());
            }
            r.push(s(o, "/metadata/name").to_owned());
            r.extend(row(o, wide));
            r.push(age(o, now));
            r
        })
        .collect();
    Table { header, rows }
}

/// kubectl's `get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (no
/// NAME or AGE), oldest first.
fn event_table(objects: &[Value], with_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut events: Vec<&Value> = objects.iter().collect();
    events.sort_by_key(|v| event_last_seen(v));
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(str::to_owned));
    let rows = events
        .into_iter()
        .map(|v| {
            let mut r = Vec::new();
            if with_namespace {
                r.push(s(v, "/metadata/namespace").to_owned());
            }
            r.extend(event_row(v, now));
            r
        })
        .collect();
    Table { header, rows }
}

/// When an Event last happened: its last, series or first timestamp.
fn event_last_seen(v: &Value) -> Option<DateTime<Utc>> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| s(v, p))
    .find(|t| !t.is_empty())
    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    .map(|t| t.with_timezone(&Utc))
}

/// LAST SEEN, TYPE, REASON, OBJECT, MESSAGE of an Event.
fn event_row(v: &Value, now: DateTime<Utc>) -> [String; 5] {
    [
        event_last_seen(v)
            .map(|t| human_age((now - t).num_seconds()))
            .unwrap_or_else(|| "<unknown>".into()),
        s(v, "/type").to_owned(),
        s(v, "/reason").to_owned(),
        format!(
            "{}/{}",
            s(v, "/involvedObject/kind").to_lowercase(),
            s(v, "/involvedObject/name")
        ),
        s(v, "/message").to_owned(),
    ]
}

/// The type of a Table column (`columnDefinitions[].type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellType {
    /// Shown as is.
    String,
    /// A whole number.
    Integer,
}

/// One column of the `meta.k8s.io/v1` Table the API server returns for
/// kubectl's server-side printing, named as kube-apiserver names it
/// (kubectl upper-cases the names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerColumn {
    /// `Name`, `Cluster-IP`, `Port(s)`...
    pub name: &'static str,
    /// Cell type.
    pub cell_type: CellType,
    /// `name` for the object-name column, else empty.
    pub format: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
    /// What the column shows.
    pub description: &'static str,
}

const fn col(name: &'static str, description: &'static str) -> ServerColumn {
    ServerColumn {
        name,
        cell_type: CellType::String,
        format: "",
        priority: 0,
        description,
    }
}

const fn int(name: &'static str, description: &'static str) -> ServerColumn {
    ServerColumn {
        cell_type: CellType::Integer,
        ..col(name, description)
    }
}

const fn wide(column: ServerColumn) -> ServerColumn {
    ServerColumn {
        priority: 1,
        ..column
    }
}

const NAME: ServerColumn = ServerColumn {
    format: "name",
    ..col(
        "Name",
        "Name must be unique within a namespace. Cannot be updated.",
    )
};
const AGE: ServerColumn = col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
const CONTAINERS: ServerColumn = wide(col(
    "Containers",
    "Names of each container in the template.",
));
const IMAGES: ServerColumn = wide(col(
    "Images",
    "Images referenced by each container in the template.",
));
const SELECTOR: ServerColumn = wide(col(
    "Selector",
    "Label selector over pods; matching pods are managed by this object.",
));

/// kube-apiserver's columns for `kind` (kubectl's `get` output): Name
/// first, Age where kubectl shows it, wide columns last. Unknown kinds get
/// Name and Age.
pub fn server_columns(kind: &str) -> Vec<ServerColumn> {
    match kind {
        "Pod" => vec![
            NAME,
            col(
                "Ready",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "The number of times the containers in this pod have been restarted.",
            ),
            AGE,
            wide(col("IP", "IP address allocated to the pod.")),
            wide(col("Node", "Name of the Node this pod is bound to.")),
            wide(col(
                "Nominated Node",
                "Name of the node where the pod is nominated to run.",
            )),
            wide(col(
                "Readiness Gates",
                "Pod readiness gates and how many of them are true.",
            )),
        ],
        "Service" => vec![
            NAME,
            col("Type", "How the service is exposed."),
            col(
                "Cluster-IP",
                "The IP address of the service in the cluster.",
            ),
            col("External-IP", "External addresses of the service."),
            col("Port(s)", "The ports the service exposes."),
            AGE,
            wide(col(
                "Selector",
                "Route service traffic to pods with labels matching this selector.",
            )),
        ],
        "Deployment" => vec![
            NAME,
            col("Ready", "Number of the pod with ready state."),
            int(
                "Up-to-date",
                "Total number of non-terminated pods with the desired template.",
            ),
            int("Available", "Total number of available pods."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "ReplicaSet" => vec![
            NAME,
            int("Desired", "Number of desired pods."),
            int("Current", "Number of actual replicas."),
            int("Ready", "The number of ready replicas."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "Node" => vec![
            NAME,
            col("Status", "The status of the node."),
            col("Roles", "The roles of the node."),
            AGE,
            col("Version", "Kubelet version reported by the node."),
            wide(col("Internal-IP", "List of internal IPs of the node.")),
            wide(col("External-IP", "List of external IPs of the node.")),
            wide(col("OS-Image", "OS image reported by the node.")),
            wide(col(
                "Kernel-Version",
                "Kernel version reported by the node.",
            )),
            wide(col(
                "Container-Runtime",
                "Container runtime and version reported by the node.",
            )),
        ],
        "Namespace" => vec![NAME, col("Status", "The status of the namespace."), AGE],
        "EndpointSlice" => vec![
            NAME,
            col("AddressType", "The type of addresses in this slice."),
            col("Ports", "The ports of the endpoints of this slice."),
            col("Endpoints", "The addresses of the endpoints of this slice."),
            AGE,
        ],
        "DaemonSet" => vec![
            NAME,
            int("Desired", "The desired number of pods."),
            int("Current", "The current number of pods."),
            int("Ready", "The number of pods ready."),
            int("Up-to-date", "The number of pods updated."),
            int(
                "Available",
                "The number of pods ready for at least minReadySeconds.",
            ),
            col(
                "Node Selector",
                "Which nodes the pods of the daemon set run on.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "StatefulSet" => vec![
            NAME,
            col("Ready", "Number of the pod with ready state."),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        "Job" => vec![
            NAME,
            col("Status", "Status of the job."),
            col(
                "Completions",
                "The desired number of successfully finished pods the job should be run with.",
            ),
            col("Duration", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "ConfigMap" => vec![NAME, int("Data", "Number of keys."), AGE],
        "Secret" => vec![
            NAME,
            col("Type", "The type of the secret."),
            int("Data", "Number of keys."),
            AGE,
        ],
        "Lease" => vec![NAME, col("Holder", "The holder of the lease."), AGE],
        "Event" => vec![
            col("Last Seen", "Time since the event last happened."),
            col("Type", "Type of this event (Normal, Warning)."),
            col("Reason", "Why the action was taken."),
            col("Object", "The object this event is about."),
            col("Message", "A human-readable description of the event."),
            wide(NAME),
        ],
        _ => vec![NAME, AGE],
    }
}

fn joined(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.filter(|i| !i.is_empty()).collect();
    or_none(&items.join(","))
}

/// Container names, images and the selector of a workload, for the wide
/// columns.
fn workload_wide(v: &Value) -> [String; 3] {
    let containers = v
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selector = v
        .pointer("/spec/selector")
        .and_then(|sel| serde_json::from_value(sel.clone()).ok())
        .and_then(|sel| crate::selector::Selector::from_label_selector(&sel).ok())
        .map(|sel| sel.to_string())
        .unwrap_or_default();
    [
        joined(containers.iter().map(|c| s(c, "/name").to_owned())),
        joined(containers.iter().map(|c| s(c, "/image").to_owned())),
        or_none(&selector),
    ]
}

fn node_address(v: &Value, kind: &str) -> String {
    joined(
        v.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_owned()),
    )
}

fn readiness_gates(p: &Value) -> String {
    let gates: Vec<&str> = p
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| s(g, "/conditionType"))
        .collect();
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions = p
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let met = gates
        .iter()
        .filter(|g| {
            conditions
                .iter()
                .any(|c| s(c, "/type") == **g && s(c, "/status") == "True")
        })
        .count();
    format!("{met}/{}", gates.len())
}

/// The cells of one object under [`server_columns`] (same order and
/// count), as strings.
pub fn server_cells(kind: &str, v: &Value, now: DateTime<Utc>) -> Vec<String> {
    let name = s(v, "/metadata/name").to_owned();
    let age = age(v, now);
    let (_, base_row) = columns(kind, false);
    match kind {
        "Pod" => {
            let r = pod_row(v, true);
            let nominated = or_none(s(v, "/status/nominatedNodeName"));
            vec![
                name,
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                age,
                r[3].clone(),
                r[4].clone(),
                nominated,
                readiness_gates(v),
            ]
        }
        "Service" => {
            let mut r = service_row(v, true);
            let selector = r.pop().unwrap_or_default();
            let mut cells = vec![name];
            cells.extend(r);
            cells.extend([age, selector]);
            cells
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            let mut cells = vec![name];
            cells.extend(base_row(v, false));
            cells.push(age);
            cells.extend(workload_wide(v));
            cells
        }
        "StatefulSet" => {
            let mut cells = vec![name];
            cells.extend(base_row(v, false));
            cells.push(age);
            cells.extend(workload_wide(v).into_iter().take(2));
            cells
        }
        "Node" => {
            let r = node_row(v, false);
            let runtime = s(v, "/status/nodeInfo/containerRuntimeVersion");
            vec![
                name,
                r[0].clone(),
                r[1].clone(),
                age,
                r[2].clone(),
                node_address(v, "InternalIP"),
                node_address(v, "ExternalIP"),
                or_none(s(v, "/status/nodeInfo/osImage")),
                or_none(s(v, "/status/nodeInfo/kernelVersion")),
                or_none(runtime),
            ]
        }
        "Namespace" | "EndpointSlice" | "ConfigMap" | "Secret" | "Lease" => {
            let mut cells = vec![name];
            cells.extend(base_row(v, false));
            cells.push(age);
            cells
        }
        "Event" => {
            let mut cells = event_row(v, now).to_vec();
            cells.push(name);
            cells
        }
        _ => vec![name, age],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn human_ages_match_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(119), "119s");
        assert_eq!(human_age(330), "5m30s");
        assert_eq!(human_age(45 * 60), "45m");
        assert_eq!(human_age(5 * 3600 + 30 * 60), "5h30m");
        assert_eq!(human_age(30 * 3600), "30h");
        assert_eq!(human_age(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_age(40 * 86400), "40d");
    }

    #[test]
    fn pod_table_wide_with_crashloop_and_terminating() {
        let pods = vec![
            json!({"metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:59:00Z"},
                   "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node1"},
                   "status": {"phase": "Running", "podIP": "10.244.1.5",
                              "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}},
                                                    {"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
            json!({"metadata": {"name": "web-2", "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-01T01:00:00Z"},
                   "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}}),
        ];
        let t = table("Pod", &pods, false, true, now());
        assert_eq!(
            t.header,
            ["NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE", "AGE"]
        );
        assert_eq!(
            t.rows[0],
            [
                "web-1",
                "1/2",
                "CrashLoopBackOff",
                "5",
                "10.244.1.5",
                "node1",
                "60s"
            ]
        );
        assert_eq!(t.rows[1][2], "Terminating");
        assert_eq!(t.rows[1][5], "<none>");
        let out = t.render();
        assert!(out.starts_with("NAME    READY   STATUS"), "{out}");
    }

    #[test]
    fn service_table_shows_node_ports() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let t = table("Service", &[svc], true, false, now());
        assert_eq!(
            t.rows[0],
            [
                "default",
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53/UDP",
                "60m"
            ]
        );
    }

    #[test]
    fn unknown_kinds_get_name_and_age() {
        let t = table(
            "Widget",
            &[json!({"metadata": {"name": "w"}})],
            false,
            false,
            now(),
        );
        assert_eq!(t.header, ["NAME", "AGE"]);
        assert_eq!(t.rows[0], ["w", "<unknown>"]);
    }

    #[test]
    fn events_show_like_kubectl_oldest_first() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let event = |name: &str, at: &str, reason: &str| {
            json!({
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web-1"},
                "type": "Warning",
                "reason": reason,
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
                "lastTimestamp": at,
            })
        };
        let t = table(
            "Event",
            &[
                event("b", "2026-01-01T00:09:30Z", "Second"),
                event("a", "2026-01-01T00:05:00Z", "FailedScheduling"),
            ],
            false,
            false,
            now,
        );
        assert_eq!(
            t.header,
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            t.rows[0],
            [
                "5m",
                "Warning",
                "FailedScheduling",
                "pod/web-1",
                "0/3 nodes are available: 3 Insufficient cpu."
            ]
        );
        assert_eq!(t.rows[1][0], "30s");
    }

    #[test]
    fn server_tables_follow_kubectl_layout() {
        for kind in [
            "Pod",
            "Service",
            "Deployment",
            "ReplicaSet",
            "Node",
            "Namespace",
            "EndpointSlice",
            "DaemonSet",
            "StatefulSet",
            "Job",
            "ConfigMap",
            "Secret",
            "Lease",
            "Widget",
        ] {
            let cells = server_cells(kind, &json!({"metadata": {"name": "x"}}), now());
            let columns = server_columns(kind);
            assert_eq!(cells.len(), columns.len(), "{kind}");
            assert_eq!(columns[0].format, "name");
            assert!(columns.iter().any(|c| c.name == "Age"), "{kind}");
        }
        // Events: kubectl's LAST SEEN ... MESSAGE, the name only with -o wide.
        let event = json!({"metadata": {"name": "e1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "ok",
            "lastTimestamp": "2026-01-01T00:59:00Z"});
        let columns = server_columns("Event");
        let cells = server_cells("Event", &event, now());
        assert_eq!(cells.len(), columns.len());
        assert_eq!(cells, ["60s", "Normal", "Scheduled", "pod/p", "ok", "e1"]);
        assert_eq!(
            columns.last().map(|c| (c.format, c.priority)),
            Some(("name", 1))
        );
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z",
                                       "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.0.2.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.34.0", "osImage": "Debian", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "skiff://0.1"}}});
        let names: Vec<&str> = server_columns("Node").iter().map(|c| c.name).collect();
        assert_eq!(&names[..5], ["Name", "Status", "Roles", "Age", "Version"]);
        assert_eq!(
            server_cells("Node", &node, now()),
            [
                "n1",
                "Ready",
                "control-plane,edge",
                "60m",
                "v1.34.0",
                "192.0.2.5",
                "<none>",
                "Debian",
                "6.1",
                "skiff://0.1"
            ]
        );
        let deploy = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:59:30Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "a", "image": "nginx:1.27"}, {"name": "b", "image": "envoy"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            server_cells("Deployment", &deploy, now()),
            [
                "web",
                "2/3",
                "3",
                "2",
                "30s",
                "a,b",
                "nginx:1.27,envoy",
                "app=web"
            ]
        );
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "nodeName": "n1",
                                                             "readinessGates": [{"conditionType": "x"}]},
                         "status": {"phase": "Running", "podIP": "10.244.0.5", "conditions": [{"type": "x", "status": "True"}]}});
        let cells = server_cells("Pod", &pod, now());
        assert_eq!(cells[1..4], ["0/1", "Running", "0"]);
        assert_eq!(cells[5..], ["10.244.0.5", "n1", "<none>", "1/1"]);
    }

    #[test]
    fn job_status_completions_and_duration() {
        let running = json!({"spec": {"completions": 3}, "status": {"succeeded": 1, "startTime": "2026-01-01T00:58:00Z"}});
        assert_eq!(job_row(&running, now()), ["Running", "1/3", "2m"]);
        let done = json!({"spec": {"parallelism": 2}, "status": {"succeeded": 1,
            "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:42Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(job_row(&done, now()), ["Complete", "1/1 of 2", "42s"]);
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"a": "1"}, "binaryData": {"b": "eA=="}});
        assert_eq!(server_cells("ConfigMap", &cm, now()), ["c", "2", "60m"]);
    }
}

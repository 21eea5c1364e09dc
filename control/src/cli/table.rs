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
    let mut row = vec![status, "<none>".into()];
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

/// The columns of `kind` (between NAME and AGE) and a row builder.
fn columns(kind: &str, wide: bool) -> (Vec<&'static str>, fn(&Value, bool) -> Vec<String>) {
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
        _ => (vec![], |_, _| vec![]),
    }
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
}

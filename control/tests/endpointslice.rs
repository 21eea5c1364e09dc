//! The EndpointSlice controller against the real API server, in process:
//! Services and Pods go in through `kube::Api`, and the slices must follow
//! as Pods come, change labels, become unready and go.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use skiff_control::api::{RunningServer, ServerConfig};
use skiff_control::endpointslice::{self, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use skiff_control::store::MemStore;
use tokio::sync::oneshot;

/// Upper bound for any one expected change; the loop polls every 10 ms and
/// normally sees the change within a few.
const DEADLINE: Duration = Duration::from_secs(15);

struct Cluster {
    server: RunningServer,
    client: Client,
    stop_controller: oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<Result<(), endpointslice::Error>>,
}

async fn start() -> Cluster {
    let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), "/nonexistent-unused");
    let server = config
        .build_with_store(Arc::new(MemStore::new()))
        .await
        .expect("build API server")
        .spawn();
    let kube_config = kube::Config::new(server.url().parse().expect("server url"));
    let client = Client::try_from(kube_config).expect("kube client");
    let (stop_controller, stop) = oneshot::channel::<()>();
    let controller = tokio::spawn(endpointslice::run(client.clone(), async move {
        let _ = stop.await;
    }));
    Cluster {
        server,
        client,
        stop_controller,
        controller,
    }
}

impl Cluster {
    async fn stop(self) {
        let _ = self.stop_controller.send(());
        let result = tokio::time::timeout(DEADLINE, self.controller)
            .await
            .expect("controller stops after shutdown")
            .expect("controller task");
        result.expect("controller ran cleanly");
        self.server.shutdown().await.expect("server shutdown");
    }
}

fn service(name: &str, selector: &[(&str, &str)]) -> Service {
    let selector: BTreeMap<&str, &str> = selector.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "admin", "port": 9000, "targetPort": 9001},
            ]
        }
    }))
    .expect("service manifest")
}

fn pod(name: &str, app: &str, web_port: Option<i32>) -> Pod {
    let ports = web_port.map_or_else(Vec::new, |p| {
        vec![json!({"name": "web", "containerPort": p})]
    });
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "main", "image": "example.invalid/app:1", "ports": ports}]
        }
    }))
    .expect("pod manifest")
}

/// Sets what the node agent would report: Running, an IP and readiness.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch pod status");
}

/// One endpoint as the assertions see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    pod: String,
    address: String,
    ready: bool,
    serving: bool,
    /// (port name, port) pairs of the slice the endpoint is in.
    ports: Vec<(String, i32)>,
}

async fn slices_of(slices: &Api<EndpointSlice>, service: &str) -> Vec<EndpointSlice> {
    let selector = format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={MANAGED_BY}");
    slices
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list slices")
        .items
}

fn seen(slices: &[EndpointSlice]) -> Vec<Seen> {
    let mut out = Vec::new();
    for slice in slices {
        let mut ports: Vec<(String, i32)> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
            .collect();
        ports.sort();
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            out.push(Seen {
                pod: ep
                    .target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .unwrap_or_default(),
                address: ep.addresses.first().cloned().unwrap_or_default(),
                ready: c.ready.unwrap_or(false),
                serving: c.serving.unwrap_or(false),
                ports: ports.clone(),
            });
        }
    }
    out.sort();
    out
}

/// Polls until `check` holds for the Service's slices; panics with the
/// last state after [`DEADLINE`].
async fn eventually<F, Fut>(
    what: &str,
    mut probe: F,
    check: impl Fn(&[EndpointSlice]) -> bool,
) -> Vec<EndpointSlice>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<EndpointSlice>>,
{
    let start = Instant::now();
    loop {
        let slices = probe().await;
        if check(&slices) {
            return slices;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not reached within {DEADLINE:?}; last seen {:#?}",
            seen(&slices)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ep(pod: &str, address: &str, ready: bool, ports: &[(&str, i32)]) -> Seen {
    Seen {
        pod: pod.into(),
        address: address.into(),
        ready,
        serving: ready,
        ports: {
            let mut p: Vec<(String, i32)> =
                ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect();
            p.sort();
            p
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_follow_pods() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let probe = || slices_of(&slices, "web");

    services
        .create(&PostParams::default(), &service("web", &[("app", "web")]))
        .await
        .expect("create service");
    // A selector with no Pods yet: one empty placeholder slice, owned by the Service.
    let placeholder =
        eventually("placeholder", probe, |s| s.len() == 1 && seen(s).is_empty()).await;
    let owner = &placeholder[0]
        .metadata
        .owner_references
        .as_ref()
        .expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );

    // Pods come: named targetPort "web" resolves per Pod (a on 8080, b on
    // 8081); c declares no "web" port so it only has the numeric port.
    // d is selected but never gets an IP, e is not selected.
    for (name, app, port) in [
        ("a", "web", Some(8080)),
        ("b", "web", Some(8081)),
        ("c", "web", None),
        ("d", "web", Some(8080)),
        ("e", "db", Some(8080)),
    ] {
        pods.create(&PostParams::default(), &pod(name, app, port))
            .await
            .expect("create pod");
    }
    set_status(&pods, "a", "10.244.0.10", true).await;
    set_status(&pods, "b", "10.244.0.11", true).await;
    set_status(&pods, "c", "10.244.0.12", true).await;
    set_status(&pods, "e", "10.244.0.14", true).await;
    let all = vec![
        ep("a", "10.244.0.10", true, &[("http", 8080), ("admin", 9001)]),
        ep("b", "10.244.0.11", true, &[("http", 8081), ("admin", 9001)]),
        ep("c", "10.244.0.12", true, &[("admin", 9001)]),
    ];
    let grouped = eventually("pods come", probe, |s| seen(s) == all).await;
    assert_eq!(grouped.len(), 3, "one slice per resolved port set");

    // b's labels change: it leaves the Service.
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .expect("relabel b");
    let without_b = vec![all[0].clone(), all[2].clone()];
    eventually("b relabelled away", probe, |s| seen(s) == without_b).await;

    // e's labels change: it joins.
    pods.patch(
        "e",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .expect("relabel e");
    let with_e = vec![
        all[0].clone(),
        all[2].clone(),
        ep("e", "10.244.0.14", true, &[("http", 8080), ("admin", 9001)]),
    ];
    eventually("e relabelled in", probe, |s| seen(s) == with_e).await;

    // a becomes unready: still listed, neither ready nor serving.
    set_status(&pods, "a", "10.244.0.10", false).await;
    let a_unready = vec![
        ep(
            "a",
            "10.244.0.10",
            false,
            &[("http", 8080), ("admin", 9001)],
        ),
        all[2].clone(),
        with_e[2].clone(),
    ];
    eventually("a unready", probe, |s| seen(s) == a_unready).await;

    // Pods go.
    for name in ["a", "c", "e"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    eventually("pods gone", probe, |s| s.len() == 1 && seen(s).is_empty()).await;

    // A slice of ours removed by hand is put back.
    pods.create(&PostParams::default(), &pod("f", "web", Some(8080)))
        .await
        .expect("create f");
    set_status(&pods, "f", "10.244.0.15", true).await;
    let only_f = vec![ep(
        "f",
        "10.244.0.15",
        true,
        &[("http", 8080), ("admin", 9001)],
    )];
    let current = eventually("f comes", probe, |s| seen(s) == only_f).await;
    let name = current[0].metadata.name.clone().expect("slice name");
    slices
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete slice");
    eventually("slice repaired", probe, |s| seen(s) == only_f).await;

    // The Service goes: its slices go with it.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("service gone", probe, <[EndpointSlice]>::is_empty).await;

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_selector_are_left_alone() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    // A manual Service and a selecting one; the selecting one is a marker
    // that the controller has caught up.
    services
        .create(&PostParams::default(), &service("manual", &[]))
        .await
        .expect("create manual service");
    pods.create(&PostParams::default(), &pod("a", "web", Some(8080)))
        .await
        .expect("create pod");
    set_status(&pods, "a", "10.244.0.10", true).await;
    services
        .create(&PostParams::default(), &service("web", &[("app", "web")]))
        .await
        .expect("create service");
    eventually(
        "web has a",
        || slices_of(&slices, "web"),
        |s| seen(s).len() == 1,
    )
    .await;
    assert!(slices_of(&slices, "manual").await.is_empty());

    cluster.stop().await;
}

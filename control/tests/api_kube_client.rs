//! A real Kubernetes client (kube-rs) against the server: typed CRUD,
//! patches, subresources, and `kube::runtime::watcher` streams (list+watch
//! and streaming-list) seeing changes.

mod api_support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

fn client(base: &str) -> kube::Client {
    let config = kube::Config::new(base.parse().expect("server url"));
    kube::Client::try_from(config).expect("client")
}

fn typed_pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox:1.36".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Waits until `stream` yields an event for which `want` is true.
async fn wait_for<S, K>(stream: &mut S, what: &str, want: impl Fn(&Event<K>) -> bool)
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            if want(&event.expect("watcher event")) {
                return;
            }
        }
        panic!("watcher ended before {what}");
    })
    .await;
    assert!(found.is_ok(), "watcher did not see {what}");
}

fn is_apply_of(event: &Event<Pod>, name: &str) -> bool {
    match event {
        Event::Apply(p) | Event::InitApply(p) => p.metadata.name.as_deref() == Some(name),
        _ => false,
    }
}

#[tokio::test]
async fn kube_api_pod_crud_and_watcher() {
    let mut server = api_support::start().await;
    let client = client(&server.base);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    pods.create(&PostParams::default(), &typed_pod("seed", "web"))
        .await
        .expect("create seed");
    let mut list_watch = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut streaming =
        watcher::watcher(pods.clone(), watcher::Config::default().streaming_lists()).boxed();
    wait_for(&mut list_watch, "seed in the initial list", |e| {
        is_apply_of(e, "seed")
    })
    .await;
    wait_for(&mut list_watch, "end of the initial list", |e| {
        matches!(e, Event::InitDone)
    })
    .await;
    wait_for(&mut streaming, "seed in the streamed list", |e| {
        is_apply_of(e, "seed")
    })
    .await;
    wait_for(&mut streaming, "end of the streamed list", |e| {
        matches!(e, Event::InitDone)
    })
    .await;

    let created = pods
        .create(&PostParams::default(), &typed_pod("web", "web"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    wait_for(
        &mut list_watch,
        "the added pod",
        |e| matches!(e, Event::Apply(p) if p.metadata.name.as_deref() == Some("web")),
    )
    .await;
    wait_for(
        &mut streaming,
        "the added pod (streaming)",
        |e| matches!(e, Event::Apply(p) if p.metadata.name.as_deref() == Some("web")),
    )
    .await;

    let got = pods.get("web").await.expect("get");
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    let listed = pods
        .list(&ListParams::default().labels("app in (web),app!=db"))
        .await
        .expect("list");
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["seed", "web"]);
    assert!(listed.metadata.resource_version.is_some());

    let patched = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tier"))
            .map(String::as_str),
        Some("front")
    );
    let status = pods
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
        )
        .await
        .expect("status patch");
    assert_eq!(
        status.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );

    // Replace with a stale resourceVersion is a 409 the client can see.
    let err = pods
        .replace("web", &PostParams::default(), &got)
        .await
        .expect_err("stale replace");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 409),
        other => panic!("expected an API error, got {other:?}"),
    }

    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        &mut list_watch,
        "the deletion",
        |e| matches!(e, Event::Delete(p) if p.metadata.name.as_deref() == Some("web")),
    )
    .await;
    match pods.get("web").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    drop(list_watch);
    drop(streaming);
    server.stop().await;
}

#[tokio::test]
async fn kube_api_services_and_deployment_scale() {
    let mut server = api_support::start().await;
    let client = client(&server.base);
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let created = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    let spec = created.spec.expect("spec");
    assert!(
        spec.cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.9"))
    );
    assert!(
        spec.ports
            .as_ref()
            .and_then(|p| p[0].node_port)
            .is_some_and(|p| (30000..=32767).contains(&p))
    );

    let mut bad = svc.clone();
    bad.metadata.name = Some("bad".into());
    if let Some(s) = bad.spec.as_mut() {
        s.ports = Some(vec![ServicePort {
            port: 70000,
            ..ServicePort::default()
        }]);
    }
    match services.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("spec.ports[0].port"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }

    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let scale = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    let d = deployments.get("web").await.expect("get");
    assert_eq!(d.spec.replicas, Some(3));
    assert_eq!(
        deployments
            .get_scale("web")
            .await
            .expect("get scale")
            .status
            .map(|s| s.selector),
        Some(Some("app=web".to_owned()))
    );
    server.stop().await;
}

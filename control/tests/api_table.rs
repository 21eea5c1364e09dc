//! `as=Table` output over HTTP, asked for the way kubectl asks.

mod api_support;

use api_support::*;
use serde_json::{Value, json};

const KUBECTL_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async fn get_as_table(server: &TestServer, path: &str) -> Value {
    let response = server
        .client
        .get(server.url(path))
        .header("accept", KUBECTL_ACCEPT)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.expect("json")
}

fn column_names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

fn cells(table: &Value, row: usize) -> Vec<Value> {
    table["rows"][row]["cells"]
        .as_array()
        .expect("cells")
        .clone()
}

async fn populate(server: &TestServer) {
    server
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "addresses": [{"type": "InternalIP", "address": "192.0.2.5"}],
                               "nodeInfo": {"kubeletVersion": "v1.34.0-skiff", "osImage": "Debian GNU/Linux 13",
                                            "kernelVersion": "6.12.0", "containerRuntimeVersion": "skiff://0.1",
                                            "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": "",
                                            "operatingSystem": "linux", "architecture": "amd64"}}}),
        )
        .await
        .expect(201);
    let pods = "/api/v1/namespaces/default/pods";
    server
        .post(pods, &pod("web-1", json!({"app": "web"})))
        .await
        .expect(201);
    server
        .post(
            &format!("{pods}/web-1/binding"),
            &json!({"metadata": {"name": "web-1"}, "target": {"kind": "Node", "name": "node-1"}}),
        )
        .await
        .expect(201);
    server
        .patch(
            &format!("{pods}/web-1/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Running", "podIP": "10.244.0.7",
                               "containerStatuses": [{"name": "app", "image": "busybox:1.36", "imageID": "", "ready": true,
                                                      "restartCount": 2, "state": {"running": {}}}]}}),
        )
        .await
        .expect(200);
    server
        .post(
            "/api/v1/namespaces/default/services",
            &service(
                "web",
                json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
        )
        .await
        .expect(201);
    server
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("web", "web", 3),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn kubectl_gets_its_columns_for_every_core_kind() {
    let mut server = start().await;
    populate(&server).await;

    let pods = get_as_table(&server, "/api/v1/namespaces/default/pods").await;
    assert_eq!(pods["kind"], "Table");
    assert_eq!(pods["apiVersion"], "meta.k8s.io/v1");
    assert!(pods["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        column_names(&pods),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let row = cells(&pods, 0);
    assert_eq!(
        row[..4],
        [json!("web-1"), json!("1/1"), json!("Running"), json!("2")]
    );
    assert_eq!(row[5..7], [json!("10.244.0.7"), json!("node-1")]);
    let object = &pods["rows"][0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert_eq!(object["metadata"]["labels"]["app"], "web");
    assert!(object.get("spec").is_none());

    let services = get_as_table(&server, "/api/v1/namespaces/default/services").await;
    assert_eq!(
        column_names(&services),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let web = services["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cells"][0] == "web")
        .expect("web row");
    assert_eq!(web["cells"][1], "NodePort");
    assert_eq!(web["cells"][4], "80:30080/TCP");
    assert_eq!(web["cells"][6], "app=web");

    let deployments = get_as_table(&server, "/apis/apps/v1/namespaces/default/deployments").await;
    assert_eq!(
        column_names(&deployments),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let row = cells(&deployments, 0);
    assert_eq!(row[..4], [json!("web"), json!("0/3"), json!(0), json!(0)]);
    assert_eq!(
        row[5..],
        [json!("app"), json!("nginx:1.27"), json!("app=web")]
    );

    let nodes = get_as_table(&server, "/api/v1/nodes").await;
    assert_eq!(
        column_names(&nodes)[..5],
        ["Name", "Status", "Roles", "Age", "Version"]
    );
    let row = cells(&nodes, 0);
    assert_eq!(
        row[..3],
        [json!("node-1"), json!("Ready"), json!("control-plane")]
    );
    assert_eq!(row[4], "v1.34.0-skiff");
    assert_eq!(row[5], "192.0.2.5");

    let namespaces = get_as_table(&server, "/api/v1/namespaces").await;
    assert_eq!(column_names(&namespaces), ["Name", "Status", "Age"]);
    assert!(
        namespaces["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["cells"][0] == "kube-system" && r["cells"][1] == "Active")
    );

    let replica_sets = get_as_table(&server, "/apis/apps/v1/replicasets").await;
    assert_eq!(
        column_names(&replica_sets)[..5],
        ["Name", "Desired", "Current", "Ready", "Age"]
    );
    server
        .post(
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}),
        )
        .await
        .expect(201);
    let config_maps = get_as_table(&server, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(column_names(&config_maps), ["Name", "Data", "Age"]);
    assert_eq!(cells(&config_maps, 0)[..2], [json!("settings"), json!(2)]);
    let slices = get_as_table(&server, "/apis/discovery.k8s.io/v1/endpointslices").await;
    assert_eq!(
        column_names(&slices),
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );
    server.stop().await;
}

#[tokio::test]
async fn single_objects_watches_and_negotiation() {
    let mut server = start().await;
    populate(&server).await;

    let one = get_as_table(&server, "/api/v1/namespaces/default/pods/web-1").await;
    assert_eq!(one["rows"].as_array().expect("rows").len(), 1);
    assert_eq!(one["rows"][0]["cells"][0], "web-1");
    let full = get_as_table(
        &server,
        "/api/v1/namespaces/default/pods?includeObject=Object",
    )
    .await;
    assert_eq!(full["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(
        full["rows"][0]["object"]["spec"]["nodeName"], "node-1",
        "the whole object"
    );
    let none = get_as_table(
        &server,
        "/api/v1/namespaces/default/pods?includeObject=None",
    )
    .await;
    assert!(none["rows"][0].get("object").is_none());

    // Plain JSON without the header; 406 for what is not offered.
    let plain = server
        .get("/api/v1/namespaces/default/pods")
        .await
        .expect(200);
    assert_eq!(plain["kind"], "PodList");
    let refused = server
        .client
        .get(server.url("/api/v1/namespaces/default/pods"))
        .header("accept", "application/vnd.kubernetes.protobuf")
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 406);

    // kubectl get -w: each event's object is a one-row Table.
    let response =
        server
            .client
            .get(server.url(
                "/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3Dweb-2",
            ))
            .header("accept", KUBECTL_ACCEPT)
            .send()
            .await
            .expect("watch");
    assert_eq!(response.status().as_u16(), 200);
    let mut events = WatchReader::new(response);
    server
        .post(
            "/api/v1/namespaces/default/pods",
            &pod("web-2", json!({"app": "web"})),
        )
        .await
        .expect(201);
    let event = events.next_event().await;
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["kind"], "Table");
    assert_eq!(event["object"]["rows"][0]["cells"][0], "web-2");
    assert_eq!(event["object"]["rows"][0]["cells"][2], "Pending");
    server.stop().await;
}

//! `limit` / `continue` list paging over HTTP.

mod api_support;

use api_support::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

fn token(list: &Value) -> Option<String> {
    list["metadata"]["continue"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn pages_cover_the_list_in_key_order() {
    let mut server = start().await;
    for i in 0..5 {
        server
            .post(PODS, &pod(&format!("p{i}"), json!({"app": "web"})))
            .await
            .expect(201);
    }
    let first = server.get(&format!("{PODS}?limit=2")).await.expect(200);
    assert_eq!(names(&first), ["p0", "p1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let revision = first["metadata"]["resourceVersion"].clone();
    let next = token(&first).expect("continue");

    // Written between pages: shows up on a later page, as it is now.
    server
        .post(PODS, &pod("p5", json!({"app": "web"})))
        .await
        .expect(201);
    let second = server
        .get(&format!("{PODS}?limit=2&continue={next}"))
        .await
        .expect(200);
    assert_eq!(names(&second), ["p2", "p3"]);
    assert_eq!(
        second["metadata"]["resourceVersion"], revision,
        "every page reports the first page's revision"
    );
    let last = server
        .get(&format!(
            "{PODS}?limit=2&continue={}",
            token(&second).expect("continue")
        ))
        .await
        .expect(200);
    assert_eq!(names(&last), ["p4", "p5"]);
    assert!(token(&last).is_none(), "the last page has no token");
    assert!(last["metadata"].get("remainingItemCount").is_none());

    // Without a limit: everything, no token.
    let all = server.get(PODS).await.expect(200);
    assert_eq!(names(&all).len(), 6);
    assert!(token(&all).is_none());

    // With a selector the limit counts matching items; no remaining count.
    server
        .post(PODS, &pod("other", json!({"app": "db"})))
        .await
        .expect(201);
    let selected = server
        .get(&format!("{PODS}?limit=3&labelSelector=app%3Dweb"))
        .await
        .expect(200);
    assert_eq!(names(&selected), ["p0", "p1", "p2"]);
    assert!(token(&selected).is_some());
    assert!(selected["metadata"].get("remainingItemCount").is_none());
    server.stop().await;
}

#[tokio::test]
async fn all_namespace_pages_and_bad_tokens() {
    let mut server = start().await;
    server
        .post("/api/v1/namespaces", &namespace("team"))
        .await
        .expect(201);
    for (ns, name) in [
        ("default", "a"),
        ("team", "b"),
        ("default", "c"),
        ("team", "d"),
    ] {
        server
            .post(
                &format!("/api/v1/namespaces/{ns}/pods"),
                &pod(name, json!({})),
            )
            .await
            .expect(201);
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let path = match &next {
            Some(t) => format!("/api/v1/pods?limit=1&continue={t}"),
            None => "/api/v1/pods?limit=1".to_owned(),
        };
        let page = server.get(&path).await.expect(200);
        seen.extend(names(&page));
        next = token(&page);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        ["a", "c", "b", "d"],
        "key order: namespace, then name"
    );

    let first = server.get("/api/v1/pods?limit=1").await.expect(200);
    let t = token(&first).expect("continue");
    // A token is for the collection it came from.
    server
        .get(&format!(
            "/api/v1/namespaces/team/pods?limit=1&continue={t}"
        ))
        .await
        .expect(400);
    server
        .get("/api/v1/pods?limit=1&continue=garbage")
        .await
        .expect(400);
    server
        .get(&format!(
            "/api/v1/pods?limit=1&continue={t}&resourceVersion=5"
        ))
        .await
        .expect(400);
    server.get("/api/v1/pods?limit=-1").await.expect(400);

    // Once the token's revision is compacted away: 410 Expired.
    server
        .post("/api/v1/namespaces/default/pods", &pod("e", json!({})))
        .await
        .expect(201);
    let now = server.store.current_revision().await.expect("revision");
    server.store.compact(now).await.expect("compact");
    let expired = server
        .get(&format!("/api/v1/pods?limit=1&continue={t}"))
        .await
        .expect(410);
    assert_eq!(expired["reason"], "Expired");
    server.stop().await;
}

#[tokio::test]
async fn kube_client_pages_and_tables_carry_the_token() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};

    let mut server = start().await;
    for i in 0..5 {
        server
            .post(PODS, &pod(&format!("p{i}"), json!({})))
            .await
            .expect(201);
    }
    let client = kube::Client::try_from(kube::Config::new(server.base.parse().expect("url")))
        .expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut params = ListParams::default().limit(2);
    let mut all = Vec::new();
    for _ in 0..5 {
        let page = pods.list(&params).await.expect("list");
        all.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => break,
        }
    }
    assert_eq!(all, ["p0", "p1", "p2", "p3", "p4"]);

    let table: Value = server
        .client
        .get(server.url(&format!("{PODS}?limit=2")))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"].as_array().expect("rows").len(), 2);
    assert!(table["metadata"]["continue"].is_string());
    server.stop().await;
}

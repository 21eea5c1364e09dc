//! Watch streams over HTTP: exact event sequences from a resourceVersion,
//! selector transitions, initial events, bookmarks, timeouts and expiry.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::{config, pod, start, start_with, summary};
use serde_json::json;
use skiff_control::store::{MemStore, Store};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn rv(object: &serde_json::Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

#[tokio::test]
async fn watch_from_resource_version_sees_exactly_later_events() {
    let mut server = start().await;
    server
        .post(PODS, &pod("before", json!({})))
        .await
        .expect(201);
    let list = server.get(PODS).await.expect(200);
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();

    let a = server.post(PODS, &pod("a", json!({}))).await.expect(201);
    let mut watch = server
        .watch(&format!("{PODS}?watch=true&resourceVersion={from}"))
        .await;
    let mut a2 = a.clone();
    a2["metadata"]["labels"] = json!({"x": "y"});
    let a2 = server.put(&format!("{PODS}/a"), &a2).await.expect(200);
    server.delete(&format!("{PODS}/a")).await.expect(200);
    // Other namespaces and kinds are not part of this watch.
    server
        .post(
            "/api/v1/namespaces/kube-system/pods",
            &pod("elsewhere", json!({})),
        )
        .await
        .expect(201);
    server
        .post(
            "/api/v1/namespaces/default/services",
            &json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .await
        .expect(201);
    let b = server.post(PODS, &pod("b", json!({}))).await.expect(201);

    let added = watch.next_event().await;
    assert_eq!(summary(&added), ("ADDED".into(), "a".into()));
    assert_eq!(rv(&added["object"]), rv(&a));
    let modified = watch.next_event().await;
    assert_eq!(summary(&modified), ("MODIFIED".into(), "a".into()));
    assert_eq!(rv(&modified["object"]), rv(&a2));
    let deleted = watch.next_event().await;
    assert_eq!(summary(&deleted), ("DELETED".into(), "a".into()));
    assert!(
        rv(&deleted["object"]).parse::<i64>().expect("rv") > rv(&a2).parse::<i64>().expect("rv")
    );
    let b_event = watch.next_event().await;
    assert_eq!(summary(&b_event), ("ADDED".into(), "b".into()));
    assert_eq!(rv(&b_event["object"]), rv(&b));
    watch.expect_quiet(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_current_objects() {
    let mut server = start().await;
    server.post(PODS, &pod("x", json!({}))).await.expect(201);
    server.post(PODS, &pod("y", json!({}))).await.expect(201);
    for query in ["watch=1", "watch=true&resourceVersion=0"] {
        let mut watch = server.watch(&format!("{PODS}?{query}")).await;
        assert_eq!(
            summary(&watch.next_event().await),
            ("ADDED".into(), "x".into())
        );
        assert_eq!(
            summary(&watch.next_event().await),
            ("ADDED".into(), "y".into())
        );
        watch.expect_quiet(Duration::from_millis(200)).await;
    }
    let mut watch = server.watch(&format!("{PODS}?watch=1")).await;
    let _ = watch.next_event().await;
    let _ = watch.next_event().await;
    server.post(PODS, &pod("z", json!({}))).await.expect(201);
    assert_eq!(
        summary(&watch.next_event().await),
        ("ADDED".into(), "z".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn selector_transitions_become_added_and_deleted() {
    let mut server = start().await;
    let created = server
        .post(PODS, &pod("p", json!({"app": "web"})))
        .await
        .expect(201);
    let mut watch = server
        .watch(&format!(
            "{PODS}?watch=1&resourceVersion={}&labelSelector=app%20in%20(web)",
            rv(&created)
        ))
        .await;
    let mut other = server
        .post(PODS, &pod("other", json!({"app": "db"})))
        .await
        .expect(201);

    let relabel = |v: &serde_json::Value, app: &str| {
        let mut v = v.clone();
        v["metadata"]["labels"] = json!({"app": app});
        v
    };
    let p_db = server
        .put(&format!("{PODS}/p"), &relabel(&created, "db"))
        .await
        .expect(200);
    let event = watch.next_event().await;
    assert_eq!(
        summary(&event),
        ("DELETED".into(), "p".into()),
        "stopped matching"
    );
    assert_eq!(
        event["object"]["metadata"]["labels"]["app"], "web",
        "last matching state"
    );
    assert_eq!(rv(&event["object"]), rv(&p_db));

    other = server
        .put(&format!("{PODS}/other"), &relabel(&other, "web"))
        .await
        .expect(200);
    let event = watch.next_event().await;
    assert_eq!(
        summary(&event),
        ("ADDED".into(), "other".into()),
        "started matching"
    );
    assert_eq!(rv(&event["object"]), rv(&other));
    server.delete(&format!("{PODS}/p")).await.expect(200);
    server.delete(&format!("{PODS}/other")).await.expect(200);
    assert_eq!(
        summary(&watch.next_event().await),
        ("DELETED".into(), "other".into())
    );
    watch.expect_quiet(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn field_selector_and_single_object_watch() {
    let mut server = start().await;
    let a = server.post(PODS, &pod("a", json!({}))).await.expect(201);
    let b = server.post(PODS, &pod("b", json!({}))).await.expect(201);
    let mut bound = server
        .watch(&format!(
            "{PODS}?watch=1&resourceVersion={}&fieldSelector=spec.nodeName%3Dn1",
            rv(&a)
        ))
        .await;
    let mut single = server
        .watch(&format!("{PODS}/b?watch=1&resourceVersion={}", rv(&b)))
        .await;
    server
        .post(
            &format!("{PODS}/a/binding"),
            &json!({"target": {"name": "n1"}}),
        )
        .await
        .expect(201);
    server
        .post(
            &format!("{PODS}/b/binding"),
            &json!({"target": {"name": "n2"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        summary(&bound.next_event().await),
        ("ADDED".into(), "a".into())
    );
    bound.expect_quiet(Duration::from_millis(300)).await;
    // The single-object watch (started after b existed) sees b's change only.
    let event = single.next_event().await;
    assert_eq!(summary(&event), ("MODIFIED".into(), "b".into()));
    assert_eq!(event["object"]["spec"]["nodeName"], "n2");
    server.stop().await;
}

#[tokio::test]
async fn bookmarks_timeout_and_initial_events_end() {
    let mut server = start().await;
    let created = server.post(PODS, &pod("p", json!({}))).await.expect(201);
    let mut watch = server
        .watch(&format!(
            "{PODS}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=1",
            rv(&created)
        ))
        .await;
    let bookmark = watch
        .next_within(Duration::from_secs(5))
        .await
        .expect("bookmark");
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some()
    );
    // timeoutSeconds=1 ends the stream.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while watch.next_within(Duration::from_secs(5)).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "stream did not end at its timeout");

    // sendInitialEvents=true: ADDED for current objects, then the
    // initial-events-end bookmark (kube-rs streaming lists use this).
    let mut watch = server
        .watch(&format!("{PODS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .await;
    assert_eq!(
        summary(
            &watch
                .next_within(Duration::from_secs(5))
                .await
                .expect("event")
        ),
        ("ADDED".into(), "p".into())
    );
    let end = watch
        .next_within(Duration::from_secs(5))
        .await
        .expect("bookmark");
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    server.stop().await;
}

#[tokio::test]
async fn compacted_resource_version_gets_410_expired() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut server = start_with(config(std::path::Path::new("/nonexistent")), store.clone()).await;
    let first = server.post(PODS, &pod("a", json!({}))).await.expect(201);
    let old_rv = rv(&first);
    for i in 0..3 {
        server
            .post(PODS, &pod(&format!("p{i}"), json!({})))
            .await
            .expect(201);
    }
    let current = store.current_revision().await.expect("revision");
    store.compact(current - 1).await.expect("compacts");

    let mut watch = server
        .watch(&format!("{PODS}?watch=1&resourceVersion={old_rv}"))
        .await;
    let error = watch
        .next_within(Duration::from_secs(5))
        .await
        .expect("error event");
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .expect("message")
            .starts_with("too old resource version")
    );
    assert!(
        watch.next_within(Duration::from_secs(5)).await.is_none(),
        "stream ends after the error"
    );

    // A resourceVersion at the compaction point still works.
    let mut ok = server
        .watch(&format!("{PODS}?watch=1&resourceVersion={}", current - 1))
        .await;
    let event = ok.next_event().await;
    assert_eq!(summary(&event), ("ADDED".into(), "p2".into()));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let mut server = start().await;
    let mut watch = server.watch(&format!("{PODS}?watch=1")).await;
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while watch.next_within(Duration::from_secs(5)).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok());
}

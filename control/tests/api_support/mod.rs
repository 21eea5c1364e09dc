//! Shared helpers for the API integration tests: start a real server on
//! loopback, talk to it over HTTP, read watch streams.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use skiff_control::api::{RunningServer, ServerConfig};
use skiff_control::store::{MemStore, Store};

/// How long any single network step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A config listening on an ephemeral loopback port, storing under `dir`.
pub fn config(dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir);
    config.bookmark_interval = Duration::from_millis(200);
    config
}

/// A running server plus an HTTP client for it.
pub struct TestServer {
    pub running: Option<RunningServer>,
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
}

/// Starts a server over a fresh in-memory store.
pub async fn start() -> TestServer {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    start_with(config(std::path::Path::new("/nonexistent")), store).await
}

/// Starts a server with `config` over `store`.
pub async fn start_with(config: ServerConfig, store: Arc<dyn Store>) -> TestServer {
    let server = config
        .build_with_store(store.clone())
        .await
        .expect("server builds");
    let running = server.spawn();
    TestServer {
        base: running.url(),
        running: Some(running),
        client: reqwest::Client::new(),
        store,
    }
}

/// Starts a server over the durable store in `dir`.
pub async fn start_durable(dir: &std::path::Path) -> TestServer {
    let server = config(dir).build().await.expect("durable server builds");
    let running = server.spawn();
    TestServer {
        base: running.url(),
        running: Some(running),
        client: reqwest::Client::new(),
        store: Arc::new(MemStore::new()),
    }
}

/// One HTTP reply: status and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    /// Panics unless the status is `expected`.
    #[track_caller]
    pub fn expect(self, expected: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }
}

impl TestServer {
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(STEP, running.shutdown())
                .await
                .expect("shutdown in time")
                .expect("clean shutdown");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = tokio::time::timeout(STEP, request.send())
            .await
            .expect("reply in time")
            .expect("request sent");
        let status = response.status();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            warnings,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body.to_owned());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(request).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.put(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .patch(self.url(path))
                .header("content-type", content_type)
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path))).await
    }

    pub async fn delete_with(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.delete(self.url(path)).json(body))
            .await
    }

    /// Opens a watch (path with query) and returns a line reader.
    pub async fn watch(&self, path_and_query: &str) -> WatchReader {
        let response = tokio::time::timeout(STEP, self.client.get(self.url(path_and_query)).send())
            .await
            .expect("watch reply in time")
            .expect("watch request sent");
        assert_eq!(response.status().as_u16(), 200, "watch refused");
        WatchReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// Names of the items of a list reply.
    pub async fn names(&self, path: &str) -> Vec<String> {
        let list = self.get(path).await.expect(200);
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["metadata"]["name"].as_str().expect("name").to_owned())
            .collect()
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// Reads newline-delimited watch events.
pub struct WatchReader {
    stream: ByteStream,
    buffer: Vec<u8>,
}

impl WatchReader {
    /// Reads the events of a watch response.
    pub fn new(response: reqwest::Response) -> Self {
        WatchReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// The next event, or None when the server ends the stream; panics if
    /// nothing comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("event is JSON"));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("no watch event within {wait:?}"),
                Ok(None) => return None,
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk.expect("chunk")),
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let event = self.next_within(STEP).await.expect("stream still open");
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }

    /// Asserts no non-bookmark event arrives within `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return;
            }
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                let event: Value = serde_json::from_slice(&line).expect("event is JSON");
                assert_eq!(event["type"], "BOOKMARK", "unexpected event {event}");
                continue;
            }
            match tokio::time::timeout(remaining, self.stream.next()).await {
                Err(_) => return,
                Ok(None) => return,
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk.expect("chunk")),
            }
        }
    }
}

/// Summarises an event as (type, name).
pub fn summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap_or_default().to_owned(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

pub fn pod(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 8080, "name": "http"}]}]}
    })
}

pub fn service(name: &str, spec: Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

pub fn namespace(name: &str) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

pub fn deployment(name: &str, app: &str, replicas: i64) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
            }
        }
    })
}

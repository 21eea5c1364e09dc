//! `cargo xtask bench api`: the API server's cost over its store, measured
//! side by side in one run.
//!
//! - create throughput: Pods POSTed over HTTP (loopback, a pool of
//!   concurrent clients) ÷ the same objects written straight into the same
//!   kind of store (RedbStore, durable) with the same concurrency;
//! - watch delivery: events per second a `?watch=true` HTTP watcher receives
//!   while objects are written ÷ events per second a store watcher receives
//!   for the same writes.
//!
//! Each case runs several alternating rounds (A, B, A, B, ...) and reports
//! medians, so drift on a shared machine hits both sides alike. Results are
//! printed and written as JSON (one object per case with raw figures and
//! the ratio).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_control::api::ServerConfig;
use skiff_control::store::{RedbStore, Store};

#[derive(Parser)]
struct Args {
    /// Where to write the JSON results.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Small sizes for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "skiff/echo", "command": ["skiff", "echo-server"]}]}
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `n` pods straight into `store` with `conc` concurrent writers;
/// returns objects per second.
async fn store_creates(store: Arc<dyn Store>, round: usize, n: usize, conc: usize) -> Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                let name = format!("s{round}-{i}");
                let bytes = serde_json::to_vec(&pod(&name))?;
                store
                    .create(&format!("/registry/pods/default/{name}"), bytes)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// POSTs `n` pods to the API with `conc` concurrent clients; objects/s.
async fn api_creates(
    http: &reqwest::Client,
    url: &str,
    round: usize,
    n: usize,
    conc: usize,
) -> Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let http = http.clone();
        let url = format!("{url}/api/v1/namespaces/default/pods");
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                let resp = http
                    .post(&url)
                    .json(&pod(&format!("a{round}-{i}")))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("create failed: {} {}", resp.status(), resp.text().await?);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Writes `n` objects into `store` with `conc` concurrent writers (so the
/// event rate is as high as the store can commit) while `events` counts
/// deliveries; returns events per second from the first write to the n-th
/// event.
async fn timed_delivery<S>(
    store: Arc<dyn Store>,
    prefix: &str,
    n: usize,
    conc: usize,
    mut events: S,
) -> Result<f64>
where
    S: futures::Stream<Item = usize> + Unpin,
{
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..conc {
        let store = store.clone();
        let prefix = prefix.to_owned();
        writers.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                let name = format!("{prefix}{i}");
                store
                    .create(
                        &format!("/registry/pods/default/{name}"),
                        serde_json::to_vec(&pod(&name))?,
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(k)) => seen += k,
            Ok(None) => bail!("watch ended after {seen} of {n} events"),
            Err(_) => bail!("watch stalled after {seen} of {n} events"),
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for w in writers {
        w.await??;
    }
    Ok(rate)
}

async fn store_watch_rate(
    store: Arc<dyn Store>,
    round: usize,
    n: usize,
    conc: usize,
) -> Result<f64> {
    let from = store.current_revision().await?;
    let stream = store
        .watch(&format!("/registry/pods/default/ws{round}-"), from)
        .await?
        .map(|e| usize::from(e.is_ok()));
    timed_delivery(store, &format!("ws{round}-"), n, conc, stream).await
}

async fn api_watch_rate(
    store: Arc<dyn Store>,
    http: &reqwest::Client,
    url: &str,
    round: usize,
    n: usize,
    conc: usize,
) -> Result<f64> {
    let list: Value = http
        .get(format!("{url}/api/v1/namespaces/default/pods?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let resp = http
        .get(format!(
            "{url}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&labelSelector=app%3Dbench"
        ))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("watch failed: {}", resp.status());
    }
    // Count complete JSON lines (one event each) across chunk boundaries.
    let prefix = format!("wa{round}-");
    let stream = resp.bytes_stream().map(|chunk| match chunk {
        Ok(b) => b.iter().filter(|c| **c == b'\n').count(),
        Err(_) => 0,
    });
    timed_delivery(store, &prefix, n, conc, Box::pin(stream)).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (n, rounds) = if args.quick { (500, 3) } else { (5_000, 5) };
    let conc = args.concurrency;
    eprintln!("bench api: {n} objects per round, {rounds} rounds, {conc} concurrent writers");

    // Two durable stores: one behind the API server, one written directly.
    let api_dir = tempfile::tempdir()?;
    let raw_dir = tempfile::tempdir()?;
    let api_store: Arc<dyn Store> = Arc::new(RedbStore::open(api_dir.path())?);
    let raw_store: Arc<dyn Store> = Arc::new(RedbStore::open(raw_dir.path())?);
    let server = ServerConfig::new("127.0.0.1:0".parse()?, api_dir.path())
        .build_with_store(api_store.clone())
        .await
        .context("starting the API server")?
        .spawn();
    let url = server.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()?;

    let (mut api_c, mut raw_c, mut api_w, mut raw_w) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        raw_c.push(store_creates(raw_store.clone(), r, n, conc).await?);
        api_c.push(api_creates(&http, &url, r, n, conc).await?);
        raw_w.push(store_watch_rate(raw_store.clone(), r, n, conc).await?);
        api_w.push(api_watch_rate(api_store.clone(), &http, &url, r, n, conc).await?);
        eprintln!(
            "  round {}: create api {:.0}/s store {:.0}/s | watch api {:.0}/s store {:.0}/s",
            r + 1,
            api_c[r],
            raw_c[r],
            api_w[r],
            raw_w[r]
        );
    }
    server.shutdown().await?;

    let cases = [
        ("create_throughput", "objects/s", api_c, raw_c),
        ("watch_delivery", "events/s", api_w, raw_w),
    ];
    let mut results = Vec::new();
    println!(
        "{:<20} {:>14} {:>14} {:>8}",
        "case", "via API", "store direct", "ratio"
    );
    for (name, unit, api, raw) in cases {
        let (a, s) = (median(api.clone()), median(raw.clone()));
        println!("{name:<20} {a:>12.0}/s {s:>12.0}/s {:>8.3}", a / s);
        results.push(json!({
            "case": name, "unit": unit, "objects_per_round": n, "concurrency": conc,
            "api_rounds": api, "store_rounds": raw,
            "api_median": a, "store_median": s, "ratio": a / s,
        }));
    }
    if let Some(path) = args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json!({"bench": "api", "cases": results}))?,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

//! Building a Kubernetes API client for a Skiff (or any Kubernetes) API
//! server URL.

use anyhow::{Context, Result};

/// A kube client talking plain HTTP/HTTPS to `server`, e.g.
/// `http://127.0.0.1:6443`.
pub fn kube_client(server: &str) -> Result<kube::Client> {
    let uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let config = kube::Config::new(uri);
    kube::Client::try_from(config).with_context(|| format!("building an API client for {server}"))
}

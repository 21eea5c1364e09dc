//! HTTP routing: Kubernetes REST paths → the object layer.
//!
//! Resource paths are parsed by one pure function ([`parse_resource_path`])
//! and served by one generic handler, whatever the kind:
//!
//! ```text
//! /api/v1/{plural}                                  list (all namespaces / cluster-scoped), create (cluster-scoped)
//! /api/v1/{plural}/{name}[/{sub}]                   cluster-scoped object
//! /api/v1/namespaces/{ns}/{plural}                  namespaced collection
//! /api/v1/namespaces/{ns}/{plural}/{name}[/{sub}]   namespaced object
//! /apis/{group}/{version}/...                       the same for named groups
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tracing::Instrument;

use super::deletion::{DeleteOptions, OptionsError};
use super::discovery;
use super::error::ApiError;
use super::patch::PatchKind;
use super::query::{ObjectFilter, Params};
use super::resources::{PatchRequest, Resources, ScaleChange, Subresource, WriteOptions, Written};
use super::table::{self as table_output, IncludeObject, TableRequest};
use super::watch::{self, Start, WatchSpec};
use crate::kinds::KindInfo;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The object layer.
    pub resources: Arc<Resources>,
    /// `host:port` clients reach this server at (for `/api`).
    pub server_address: String,
    /// Watch timeout when the client gives none.
    pub default_watch_timeout: Duration,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Flips to true at shutdown; open watches end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .route("/livez", get(health))
        .route(
            "/version",
            get(|| async { axum::Json(discovery::version()) }),
        )
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_resources))
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .fallback(not_found)
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        status = tracing::field::Empty,
    );
    async move {
        let response = next.run(request).await;
        tracing::Span::current().record("status", response.status().as_u16());
        tracing::debug!("served");
        response
    }
    .instrument(span)
    .await
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "the server could not find the requested resource".to_owned(),
        subject: None,
    }
}

async fn api_versions(State(state): State<AppState>) -> Response {
    axum::Json(discovery::api_versions(&state.server_address)).into_response()
}

async fn api_groups(State(state): State<AppState>) -> Response {
    axum::Json(discovery::api_group_list(state.resources.kinds())).into_response()
}

async fn api_group(State(state): State<AppState>, Path(group): Path<String>) -> Response {
    match discovery::api_group(state.resources.kinds(), &group) {
        Some(doc) => axum::Json(doc).into_response(),
        None => not_found().await.into_response(),
    }
}

async fn core_resources(State(state): State<AppState>) -> Response {
    resource_list_response(&state, "", "v1").await
}

async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    resource_list_response(&state, &group, &version).await
}

async fn resource_list_response(state: &AppState, group: &str, version: &str) -> Response {
    match discovery::api_resource_list(state.resources.kinds(), group, version) {
        Some(doc) => axum::Json(doc).into_response(),
        None => not_found().await.into_response(),
    }
}

/// A parsed resource path.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourcePath {
    /// The kind addressed.
    pub kind: Arc<KindInfo>,
    /// Namespace from the path (`None`: cluster-scoped kind or all namespaces).
    pub namespace: Option<String>,
    /// Object name (`None`: the collection).
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `binding`).
    pub subresource: Option<String>,
}

/// Parses the segments after `/api/v1/` or `/apis/{group}/{version}/`.
/// `None` when no served resource matches.
pub fn parse_resource_path(
    kinds: &crate::kinds::Kinds,
    group: &str,
    version: &str,
    rest: &str,
) -> Option<ResourcePath> {
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let lookup = |plural: &str| kinds.by_resource(group, version, plural).cloned();
    let owned = |s: &str| Some(s.to_owned());
    match segments.as_slice() {
        // namespaces/{ns}/{plural}[/{name}[/{sub}]] for namespaced kinds.
        ["namespaces", ns, plural, tail @ ..]
            if lookup(plural).is_some_and(|k| k.namespaced) && tail.len() <= 2 =>
        {
            Some(ResourcePath {
                kind: lookup(plural)?,
                namespace: owned(ns),
                name: tail.first().and_then(|n| owned(n)),
                subresource: tail.get(1).and_then(|s| owned(s)),
            })
        }
        [plural] => Some(ResourcePath {
            kind: lookup(plural)?,
            namespace: None,
            name: None,
            subresource: None,
        }),
        [plural, name, tail @ ..] if tail.len() <= 1 => {
            let kind = lookup(plural)?;
            if kind.namespaced {
                return None;
            }
            Some(ResourcePath {
                kind,
                namespace: None,
                name: owned(name),
                subresource: tail.first().and_then(|s| owned(s)),
            })
        }
        _ => None,
    }
}

async fn core_resource(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    method: Method,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, "", "v1", &rest, method, &query, &headers, body).await
}

async fn group_resource(
    State(state): State<AppState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &state, &group, &version, &rest, method, &query, &headers, body,
    )
    .await
}

#[expect(clippy::too_many_arguments, reason = "the parts of one HTTP request")]
async fn handle(
    state: &AppState,
    group: &str,
    version: &str,
    rest: &str,
    method: Method,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some(path) = parse_resource_path(state.resources.kinds(), group, version, rest) else {
        return not_found().await.into_response();
    };
    match dispatch(state, &path, method, query, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// Decodes a request body: JSON by default (also with no Content-Type, as
/// some clients send), YAML for `application/yaml`.
fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let essence = content_type(headers)
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "" | "*/*" | "text/plain" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not UTF-8: {e}"))
            })?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json, application/yaml"
        ))),
    }
}

fn decode_patch_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
}

fn patch_request(headers: &HeaderMap, body: &[u8]) -> Result<PatchRequest, ApiError> {
    Ok(PatchRequest {
        kind: PatchKind::from_content_type(content_type(headers))?,
        body: decode_patch_body(body)?,
    })
}

fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut response = (code, axum::Json(value)).into_response();
    for warning in warnings {
        let text = format!("299 - {warning:?}");
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn written(code: StatusCode, written: &Written) -> Response {
    json_response(code, &written.object, &written.warnings)
}

fn success_status(code: StatusCode) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()});
    (code, axum::Json(status)).into_response()
}

fn write_options(params: &Params) -> Result<WriteOptions, ApiError> {
    if params.dry_run {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this server",
        ));
    }
    Ok(WriteOptions {
        field_validation: params.field_validation,
    })
}

/// The `DeleteOptions` of a DELETE: its body when there is one, else the
/// query parameters.
fn delete_options(
    headers: &HeaderMap,
    body: &[u8],
    query: &BTreeMap<String, String>,
) -> Result<DeleteOptions, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(decode_body(headers, body)?)
    };
    let mut options = DeleteOptions::from_request(body.as_ref(), query).map_err(|e| match e {
        OptionsError::BadRequest(message) => ApiError::BadRequest(message),
        OptionsError::Invalid(errors) => ApiError::Invalid {
            kind: "DeleteOptions".to_owned(),
            group: "meta.k8s.io".to_owned(),
            name: String::new(),
            errors,
        },
    })?;
    // `?dryRun=` on the URL counts whatever the body says.
    options.dry_run |= query.get("dryRun").is_some_and(|d| !d.is_empty());
    Ok(options)
}

async fn dispatch(
    state: &AppState,
    path: &ResourcePath,
    method: Method,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = path.kind.as_ref();
    let resources = state.resources.as_ref();
    let params = Params::parse(query, kind)?;
    let ns = path.namespace.as_deref();
    let table = if method == Method::GET && path.subresource.is_none() {
        table_output::negotiate(headers)?
            .map(|version| {
                Ok::<_, ApiError>(TableRequest {
                    version,
                    include: IncludeObject::parse(query.get("includeObject").map(String::as_str))?,
                })
            })
            .transpose()?
    } else {
        None
    };
    match (&path.name, path.subresource.as_deref()) {
        (None, _) => match method {
            Method::GET if params.watch => Ok(watch(state, path, &params, None, table).await),
            Method::GET => list(resources, kind, ns, &params, table).await,
            Method::POST if kind.namespaced && ns.is_none() => Err(ApiError::MethodNotAllowed),
            Method::POST => {
                let created = resources
                    .create(
                        kind,
                        ns,
                        decode_body(headers, &body)?,
                        write_options(&params)?,
                    )
                    .await?;
                Ok(written(StatusCode::CREATED, &created))
            }
            Method::DELETE => {
                let options = delete_options(headers, &body, query)?;
                let deleted = resources
                    .delete_collection(kind, ns, &params.filter, &options)
                    .await?;
                let list = json!({
                    "kind": kind.list_kind(),
                    "apiVersion": kind.api_version(),
                    "metadata": {},
                    "items": deleted,
                });
                Ok(json_response(StatusCode::OK, &list, &[]))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), None) => match method {
            Method::GET if params.watch => Ok(watch(state, path, &params, Some(name), table).await),
            Method::GET => {
                let object = resources.get(kind, ns, name).await?;
                let body = match table {
                    None => object,
                    Some(request) => {
                        let metadata =
                            json!({"resourceVersion": object.pointer("/metadata/resourceVersion")});
                        table_output::render(
                            kind.kind,
                            std::slice::from_ref(&object),
                            metadata,
                            request,
                            chrono::Utc::now(),
                        )
                    }
                };
                Ok(json_response(StatusCode::OK, &body, &[]))
            }
            Method::PUT => {
                let updated = resources
                    .update(
                        kind,
                        ns,
                        name,
                        decode_body(headers, &body)?,
                        Subresource::Main,
                        write_options(&params)?,
                    )
                    .await?;
                Ok(written(StatusCode::OK, &updated))
            }
            Method::PATCH => {
                let request = patch_request(headers, &body)?;
                let patched = resources
                    .patch(
                        kind,
                        ns,
                        name,
                        &request,
                        Subresource::Main,
                        write_options(&params)?,
                    )
                    .await?;
                Ok(written(StatusCode::OK, &patched))
            }
            Method::DELETE => {
                let options = delete_options(headers, &body, query)?;
                let deleted = resources.delete(kind, ns, name, &options).await?;
                Ok(written(StatusCode::OK, &deleted))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("status")) if kind.status_subresource => match method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &resources.get(kind, ns, name).await?,
                &[],
            )),
            Method::PUT => {
                let updated = resources
                    .update(
                        kind,
                        ns,
                        name,
                        decode_body(headers, &body)?,
                        Subresource::Status,
                        write_options(&params)?,
                    )
                    .await?;
                Ok(written(StatusCode::OK, &updated))
            }
            Method::PATCH => {
                let request = patch_request(headers, &body)?;
                let patched = resources
                    .patch(
                        kind,
                        ns,
                        name,
                        &request,
                        Subresource::Status,
                        write_options(&params)?,
                    )
                    .await?;
                Ok(written(StatusCode::OK, &patched))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("scale")) if kind.scale_subresource => match method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &resources.get_scale(kind, ns, name).await?,
                &[],
            )),
            Method::PUT => {
                write_options(&params)?;
                let change = ScaleChange::Replace(decode_body(headers, &body)?);
                Ok(json_response(
                    StatusCode::OK,
                    &resources.update_scale(kind, ns, name, change).await?,
                    &[],
                ))
            }
            Method::PATCH => {
                write_options(&params)?;
                let patch_kind = PatchKind::from_content_type(content_type(headers))?;
                let change = ScaleChange::Patch(patch_kind, decode_patch_body(&body)?);
                Ok(json_response(
                    StatusCode::OK,
                    &resources.update_scale(kind, ns, name, change).await?,
                    &[],
                ))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("binding")) if kind.is::<k8s_openapi::api::core::v1::Pod>() => {
            match (method, ns) {
                (Method::POST, Some(ns)) => {
                    write_options(&params)?;
                    resources
                        .bind(ns, name, &decode_body(headers, &body)?)
                        .await?;
                    Ok(success_status(StatusCode::CREATED))
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        (Some(_), Some(_)) => Err(not_found().await),
    }
}

async fn list(
    resources: &Resources,
    kind: &KindInfo,
    namespace: Option<&str>,
    params: &Params,
    table: Option<TableRequest>,
) -> Result<Response, ApiError> {
    let page = resources
        .list_page(
            kind,
            namespace,
            &params.filter,
            params.limit,
            params.continue_token.as_deref(),
        )
        .await?;
    let items = page.items;
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = Value::from(token);
        // As Kubernetes: only exact without selectors.
        if params.filter == ObjectFilter::default() {
            metadata["remainingItemCount"] = Value::from(page.remaining);
        }
    }
    let body = match table {
        Some(request) => {
            table_output::render(kind.kind, &items, metadata, request, chrono::Utc::now())
        }
        None => json!({
            "kind": kind.list_kind(),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    };
    Ok(json_response(StatusCode::OK, &body, &[]))
}

async fn watch(
    state: &AppState,
    path: &ResourcePath,
    params: &Params,
    name: Option<&str>,
    table: Option<TableRequest>,
) -> Response {
    let mut filter = params.filter.clone();
    if let Some(name) = name {
        // Watching one object is a watch of its collection by name.
        filter
            .fields
            .requirements
            .push(super::query::FieldRequirement {
                field: "metadata.name".to_owned(),
                op: super::query::FieldOp::Equals,
                value: name.to_owned(),
            });
    }
    let start = match (params.resource_version, params.send_initial_events) {
        (_, Some(true)) => Start::Initial {
            end_bookmark: params.allow_bookmarks,
        },
        (Some(rv), _) if rv > 0 => Start::After(rv),
        _ => Start::Initial {
            end_bookmark: false,
        },
    };
    let spec = WatchSpec {
        kind: path.kind.clone(),
        prefix: path.kind.prefix(path.namespace.as_deref()),
        filter,
        start,
        timeout: params.timeout.unwrap_or(state.default_watch_timeout),
        bookmark_every: params.allow_bookmarks.then_some(state.bookmark_interval),
        table,
    };
    let body: Body = watch::stream(
        state.resources.store().clone(),
        spec,
        state.shutdown.clone(),
    );
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;

    #[test]
    fn resource_paths() {
        let kinds = Kinds::builtin();
        let p = parse_resource_path(&kinds, "", "v1", "namespaces/default/pods/web/status")
            .expect("pod status");
        assert_eq!(p.kind.kind, "Pod");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));

        let p = parse_resource_path(&kinds, "", "v1", "pods").expect("all pods");
        assert_eq!((p.namespace, p.name), (None, None));

        let p =
            parse_resource_path(&kinds, "", "v1", "namespaces/default").expect("namespace object");
        assert_eq!(p.kind.kind, "Namespace");
        assert_eq!(p.name.as_deref(), Some("default"));

        let p = parse_resource_path(&kinds, "", "v1", "namespaces/default/status")
            .expect("namespace status");
        assert_eq!(p.kind.kind, "Namespace");
        assert_eq!(p.subresource.as_deref(), Some("status"));

        let p = parse_resource_path(&kinds, "", "v1", "nodes/n1").expect("node");
        assert_eq!(p.kind.kind, "Node");

        let p = parse_resource_path(&kinds, "apps", "v1", "namespaces/x/deployments/d/scale")
            .expect("scale");
        assert_eq!(p.kind.kind, "Deployment");

        assert!(
            parse_resource_path(&kinds, "", "v1", "pods/web").is_none(),
            "namespaced kind without namespace"
        );
        assert!(parse_resource_path(&kinds, "", "v1", "widgets").is_none());
        assert!(
            parse_resource_path(&kinds, "apps", "v1", "pods").is_none(),
            "wrong group"
        );
        assert!(parse_resource_path(&kinds, "", "v1", "namespaces/a/pods/b/c/d").is_none());
    }

    #[test]
    fn bodies_decode_by_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            decode_body(&headers, br#"{"a":1}"#).expect("json default")["a"],
            1
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        let v = decode_body(
            &headers,
            b"metadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n",
        )
        .expect("yaml");
        assert_eq!(v["spec"]["ports"][0]["port"], 80);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert_eq!(
            decode_body(&headers, b"x").expect_err("415").code(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}

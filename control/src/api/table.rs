//! `meta.k8s.io/v1` Table output (kubectl's server-side printing).
//!
//! kubectl asks for it with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`
//! on get, list and watch; it then prints the columns the server chose
//! (upper-cased) instead of NAME and AGE. The columns and cells of each
//! kind come from [`crate::cli::table`], the same code `skiff get` prints
//! with, so the two never disagree. Each row carries the object as
//! `includeObject` asks: `Metadata` (the default: a PartialObjectMetadata,
//! which kubectl reads for `-A` and `--show-labels`), `Object`, or `None`.

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::cli::table::{CellType, server_cells, server_columns};

/// The group of Table and PartialObjectMetadata.
const META_GROUP: &str = "meta.k8s.io";

/// Which Table version the client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableVersion {
    /// `meta.k8s.io/v1`.
    V1,
    /// `meta.k8s.io/v1beta1` (same shape).
    V1beta1,
}

impl TableVersion {
    fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What each row carries (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// The object's metadata as a PartialObjectMetadata.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses `includeObject`.
    ///
    /// # Errors
    /// 400 for another value.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("" | "Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject must be None, Metadata or Object, not {other:?}"
            ))),
        }
    }
}

/// How a response is to be rendered: as the objects, or as a Table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRequest {
    /// The Table version.
    pub version: TableVersion,
    /// What rows carry.
    pub include: IncludeObject,
}

/// Reads the `Accept` header: `Some` when the first acceptable media type
/// is a Table, `None` for plain JSON (also when there is no header).
///
/// # Errors
/// 406 when nothing acceptable is offered.
pub fn negotiate(headers: &HeaderMap) -> Result<Option<TableVersion>, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let mut offered_anything = false;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        if essence.is_empty() {
            continue;
        }
        offered_anything = true;
        let (mut as_, mut group, mut version) = (None, None, None);
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "as" => as_ = Some(value),
                    "g" => group = Some(value),
                    "v" => version = Some(value),
                    _ => {}
                }
            }
        }
        let json_like = matches!(
            essence.as_str(),
            "application/json" | "application/*" | "*/*" | "application/yaml"
        );
        if !json_like {
            continue;
        }
        match (as_, group, version) {
            (None, _, _) => return Ok(None),
            (Some("Table"), Some(META_GROUP), Some("v1")) => return Ok(Some(TableVersion::V1)),
            (Some("Table"), Some(META_GROUP), Some("v1beta1")) => {
                return Ok(Some(TableVersion::V1beta1));
            }
            // Another rendering we do not offer: try the next one.
            _ => {}
        }
    }
    if offered_anything {
        Err(ApiError::NotAcceptable(format!(
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {accept:?})"
        )))
    } else {
        Ok(None)
    }
}

fn row_object(object: &Value, include: IncludeObject, version: TableVersion) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => object.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": version.api_version(),
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// The Table of `objects` of kind `kind` (its Kind name), with
/// `list_metadata` (resourceVersion, continue) as the Table's metadata.
pub fn render(
    kind: &str,
    objects: &[Value],
    list_metadata: Value,
    request: TableRequest,
    now: DateTime<Utc>,
) -> Value {
    let columns = server_columns(kind);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": match c.cell_type { CellType::String => "string", CellType::Integer => "integer" },
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = server_cells(kind, object, now)
                .into_iter()
                .zip(&columns)
                .map(|(cell, column)| match column.cell_type {
                    CellType::Integer => cell
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::from(cell)),
                    CellType::String => Value::from(cell),
                })
                .collect();
            let mut row = json!({"cells": cells});
            let carried = row_object(object, request.include, request.version);
            if !carried.is_null() {
                row["object"] = carried;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": request.version.api_version(),
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn kubectl_accept_header_asks_for_a_table() {
        let kubectl = accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        );
        assert_eq!(negotiate(&kubectl).expect("ok"), Some(TableVersion::V1));
        let beta = accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io");
        assert_eq!(negotiate(&beta).expect("ok"), Some(TableVersion::V1beta1));
        assert_eq!(negotiate(&HeaderMap::new()).expect("ok"), None);
        assert_eq!(negotiate(&accept("application/json")).expect("ok"), None);
        assert_eq!(negotiate(&accept("*/*")).expect("ok"), None);
        // Metadata-only rendering is not offered: plain objects are (the
        // client listed them as acceptable).
        let meta = accept(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        );
        assert_eq!(negotiate(&meta).expect("ok"), None);
        let err = negotiate(&accept("application/vnd.kubernetes.protobuf")).expect_err("406");
        assert_eq!(err.code().as_u16(), 406);
        let err =
            negotiate(&accept("application/json;as=Table;v=v2;g=meta.k8s.io")).expect_err("406");
        assert_eq!(err.code().as_u16(), 406);
    }

    #[test]
    fn rows_carry_cells_and_metadata() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let rs = json!({"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}});
        let table = render(
            "ReplicaSet",
            std::slice::from_ref(&rs),
            json!({"resourceVersion": "7"}),
            TableRequest {
                version: TableVersion::V1,
                include: IncludeObject::Metadata,
            },
            now,
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        assert_eq!(table["columnDefinitions"][1]["name"], "Desired");
        assert_eq!(table["columnDefinitions"][1]["type"], "integer");
        assert_eq!(table["columnDefinitions"][5]["priority"], 1);
        let row = &table["rows"][0];
        assert_eq!(
            row["cells"],
            json!(["web-1", 3, 2, 1, "60s", "<none>", "<none>", "<none>"])
        );
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
        let bare = render(
            "ReplicaSet",
            &[rs],
            json!({}),
            TableRequest {
                version: TableVersion::V1,
                include: IncludeObject::None,
            },
            now,
        );
        assert!(bare["rows"][0].get("object").is_none());
        assert!(IncludeObject::parse(Some("Everything")).is_err());
    }
}

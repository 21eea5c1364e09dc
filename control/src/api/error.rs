//! API errors and their Kubernetes `Status` form.
//!
//! Every failure the API returns is a `Status` object (`kind: Status`,
//! `status: Failure`) with the HTTP code, the machine-readable `reason`
//! Kubernetes clients switch on (NotFound, AlreadyExists, Conflict, Invalid,
//! Expired, ...), a message worded as Kubernetes words it, and `details`
//! naming the object and, for `Invalid`, each bad field.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::kinds::KindInfo;
use crate::store::StoreError;
use crate::validation::{FieldError, join_errors};

/// The object an error is about, for `Status.details`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// Object name (may be empty).
    pub name: String,
    /// API group (empty for core).
    pub group: String,
    /// Resource plural (NotFound, AlreadyExists, Conflict) or Kind (Invalid).
    pub kind: String,
}

impl Subject {
    /// `details` for errors Kubernetes reports by resource (plural).
    pub fn resource(kind: &KindInfo, name: &str) -> Self {
        Subject {
            name: name.to_owned(),
            group: kind.group.to_owned(),
            kind: kind.plural.to_owned(),
        }
    }
}

/// An API failure. Converts into a `Status` response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 NotFound.
    #[error("{message}")]
    NotFound {
        /// Full message.
        message: String,
        /// The object.
        subject: Option<Subject>,
    },
    /// 409 AlreadyExists.
    #[error("{message}")]
    AlreadyExists {
        /// Full message.
        message: String,
        /// The object.
        subject: Subject,
    },
    /// 409 Conflict (stale resourceVersion or failed precondition).
    #[error("{message}")]
    Conflict {
        /// Full message.
        message: String,
        /// The object.
        subject: Subject,
    },
    /// 422 Invalid: validation failed.
    #[error("{kind} {name:?} is invalid: {}", join_errors(.errors))]
    Invalid {
        /// Kind (e.g. `Service`).
        kind: String,
        /// API group.
        group: String,
        /// Object name.
        name: String,
        /// Each bad field.
        errors: Vec<FieldError>,
    },
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 403 Forbidden.
    #[error("{message}")]
    Forbidden {
        /// Full message.
        message: String,
        /// The object.
        subject: Option<Subject>,
    },
    /// 405 MethodNotAllowed.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406 NotAcceptable.
    #[error("{0}")]
    NotAcceptable(String),
    /// 410 Expired: a resourceVersion older than the retained history.
    #[error("too old resource version: {requested} ({compacted})")]
    Expired {
        /// The resourceVersion asked for.
        requested: i64,
        /// The oldest revision still available minus one.
        compacted: i64,
    },
    /// 410 Expired: a list continue token whose revision was compacted.
    #[error(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."
    )]
    ContinueExpired,
    /// 415 UnsupportedMediaType.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 500 InternalError: a store or encoding failure.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 504 Timeout (used when the store is closed or unresponsive).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// `pods "x" not found`.
    pub fn not_found(kind: &KindInfo, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} {name:?} not found", kind.qualified_resource()),
            subject: Some(Subject::resource(kind, name)),
        }
    }

    /// `pods "x" already exists`.
    pub fn already_exists(kind: &KindInfo, name: &str) -> Self {
        ApiError::AlreadyExists {
            message: format!("{} {name:?} already exists", kind.qualified_resource()),
            subject: Subject::resource(kind, name),
        }
    }

    /// The optimistic-concurrency conflict message of Kubernetes.
    pub fn conflict(kind: &KindInfo, name: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_resource()
            ),
            subject: Subject::resource(kind, name),
        }
    }

    /// A conflict with a custom reason (failed precondition, already bound).
    pub fn conflict_because(kind: &KindInfo, name: &str, why: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                kind.qualified_resource()
            ),
            subject: Subject::resource(kind, name),
        }
    }

    /// 422 with these field errors.
    pub fn invalid(kind: &KindInfo, name: &str, errors: Vec<FieldError>) -> Self {
        ApiError::Invalid {
            kind: kind.kind.to_owned(),
            group: kind.group.to_owned(),
            name: name.to_owned(),
            errors,
        }
    }

    /// 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// A store error met while working on `kind`/`name`.
    pub fn from_store(kind: &KindInfo, name: &str, error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => ApiError::not_found(kind, name),
            StoreError::AlreadyExists { .. } => ApiError::already_exists(kind, name),
            StoreError::Conflict { .. } => ApiError::conflict(kind, name),
            other => ApiError::from(other),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Expired { .. } | ApiError::ContinueExpired => StatusCode::GONE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Expired { .. } | ApiError::ContinueExpired => "Expired",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unavailable(_) => "Timeout",
        }
    }

    /// The full `Status` object.
    pub fn status(&self) -> Value {
        let details = match self {
            ApiError::NotFound {
                subject: Some(s), ..
            }
            | ApiError::Forbidden {
                subject: Some(s), ..
            }
            | ApiError::AlreadyExists { subject: s, .. }
            | ApiError::Conflict { subject: s, .. } => Some(details(s, &[])),
            ApiError::Invalid {
                kind,
                group,
                name,
                errors,
            } => Some(details(
                &Subject {
                    name: name.clone(),
                    group: group.clone(),
                    kind: kind.clone(),
                },
                errors,
            )),
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

#[derive(Serialize)]
struct Cause<'a> {
    reason: &'static str,
    message: String,
    field: &'a str,
}

fn details(subject: &Subject, errors: &[FieldError]) -> Value {
    let mut details = serde_json::Map::new();
    if !subject.name.is_empty() {
        details.insert("name".into(), Value::from(subject.name.clone()));
    }
    if !subject.group.is_empty() {
        details.insert("group".into(), Value::from(subject.group.clone()));
    }
    details.insert("kind".into(), Value::from(subject.kind.clone()));
    if !errors.is_empty() {
        let causes: Vec<Cause<'_>> = errors
            .iter()
            .map(|e| Cause {
                reason: e.reason(),
                message: e.body(),
                field: &e.field,
            })
            .collect();
        details.insert(
            "causes".into(),
            serde_json::to_value(causes).unwrap_or_default(),
        );
    }
    Value::Object(details)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Expired {
                requested,
                compacted,
            },
            StoreError::Closed => ApiError::Unavailable("the storage backend is closed".to_owned()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(reason = self.reason(), error = %self, "request rejected");
        }
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn not_found_names_group_qualified_resource() {
        let kinds = Kinds::builtin();
        let deploy = kinds.of::<Deployment>().expect("deployments");
        let status = ApiError::not_found(deploy, "web").status();
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "deployments");
        assert_eq!(status["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let kinds = Kinds::builtin();
        let svc = kinds.of::<Service>().expect("services");
        let error = ApiError::invalid(
            svc,
            "web",
            vec![FieldError::invalid(
                "spec.ports[0].port",
                "70000",
                "must be between 1 and 65535, inclusive",
            )],
        );
        assert_eq!(error.code(), StatusCode::UNPROCESSABLE_ENTITY);
        let status = error.status();
        assert_eq!(
            status["message"],
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(status["details"]["kind"], "Service");
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[0].port"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueInvalid"
        );
    }

    #[test]
    fn compaction_is_expired_410() {
        let error = ApiError::from(StoreError::Compacted {
            requested: 3,
            compacted: 10,
        });
        assert_eq!(error.code(), StatusCode::GONE);
        assert_eq!(error.status()["reason"], "Expired");
        assert_eq!(error.to_string(), "too old resource version: 3 (10)");
    }
}

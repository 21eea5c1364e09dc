//! Query parameters of list, watch and write requests, and the object
//! filter (label + field selectors) they describe.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::error::ApiError;
use crate::kinds::KindInfo;
use crate::selector::Selector;
use crate::store::Revision;

/// `fieldSelector` operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub op: FieldOp,
    /// The value compared with.
    pub value: String,
}

/// A parsed `fieldSelector`: a conjunction of requirements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms, all of which must hold.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d` for `kind`, rejecting fields the kind does not
    /// support (Kubernetes: `"foo" is not a known field selector`).
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the bad term or field.
    pub fn parse(input: &str, kind: &KindInfo) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, op, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, FieldOp::NotEquals, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, FieldOp::Equals, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, FieldOp::Equals, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {input:?}: invalid selector: {term:?}; can't understand it, expected field=value or field!=value"
                )));
            };
            let field = field.trim();
            if !kind.field_selectors().any(|f| f == field) {
                let supported: Vec<&str> = kind.field_selectors().collect();
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field} (fieldSelector for {} supports: {})",
                    kind.plural,
                    supported.join(", ")
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                op,
                value: unescape(value.trim()),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object satisfies every requirement. A missing field
    /// reads as the empty string, as in Kubernetes.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(object, &r.field);
            match r.op {
                FieldOp::Equals => actual == r.value,
                FieldOp::NotEquals => actual != r.value,
            }
        })
    }

    /// True when there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn split_unescaped(input: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The string value of a dotted field path in an object (`""` if absent).
pub fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(v) => current = v,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The labels of an object (`metadata.labels`).
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Label and field selectors together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectFilter {
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl ObjectFilter {
    /// Whether `object` passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&labels_of(object)))
            && self.fields.matches(object)
    }
}

/// How a write treats fields the schema does not know (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header (the default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

/// The query parameters Skiff understands. Unknown parameters are ignored,
/// as Kubernetes does.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// `watch=true|1`.
    pub watch: bool,
    /// `labelSelector` + `fieldSelector`.
    pub filter: ObjectFilter,
    /// `resourceVersion`; `None` when unset or empty.
    pub resource_version: Option<Revision>,
    /// `timeoutSeconds` (watch only).
    pub timeout: Option<Duration>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `dryRun` was given.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `limit` (list): at most this many items per page; 0 means no limit.
    pub limit: Option<usize>,
    /// `continue` (list): the token of the previous page.
    pub continue_token: Option<String>,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {other:?} (expected true or false)"
        ))),
    }
}

impl Params {
    /// Parses raw query pairs for a request on `kind`.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the parameter that does not parse.
    pub fn parse(raw: &BTreeMap<String, String>, kind: &KindInfo) -> Result<Self, ApiError> {
        let mut params = Params::default();
        if let Some(w) = raw.get("watch") {
            params.watch = parse_bool("watch", w)?;
        }
        if let Some(s) = raw.get("labelSelector") {
            params.filter.labels = Selector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        }
        if let Some(s) = raw.get("fieldSelector") {
            params.filter.fields = FieldSelector::parse(s, kind)?;
        }
        if let Some(rv) = raw.get("resourceVersion").filter(|rv| !rv.is_empty()) {
            let parsed: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resource version {rv:?}: must be an integer"
                ))
            })?;
            if parsed < 0 {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version {rv:?}: must not be negative"
                )));
            }
            params.resource_version = Some(parsed);
        }
        if let Some(t) = raw.get("timeoutSeconds") {
            let seconds: u64 = t.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid timeoutSeconds {t:?}: must be a non-negative integer"
                ))
            })?;
            params.timeout = Some(Duration::from_secs(seconds));
        }
        if let Some(b) = raw.get("allowWatchBookmarks") {
            params.allow_bookmarks = parse_bool("allowWatchBookmarks", b)?;
        }
        if let Some(b) = raw.get("sendInitialEvents") {
            params.send_initial_events = Some(parse_bool("sendInitialEvents", b)?);
        }
        if let Some(limit) = raw.get("limit").filter(|l| !l.is_empty()) {
            params.limit = Some(limit.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid limit {limit:?}: must be a non-negative integer"
                ))
            })?);
        }
        params.continue_token = raw.get("continue").filter(|c| !c.is_empty()).cloned();
        if params.continue_token.is_some() && params.resource_version.is_some_and(|rv| rv > 0) {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        params.dry_run = raw.get("dryRun").is_some_and(|d| !d.is_empty());
        if let Some(v) = raw.get("fieldValidation") {
            params.field_validation = match v.as_str() {
                "Ignore" => FieldValidation::Ignore,
                "Warn" | "" => FieldValidation::Warn,
                "Strict" => FieldValidation::Strict,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "fieldValidation parameter unsupported: {other:?} (supported: Ignore, Warn, Strict)"
                    )));
                }
            };
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use serde_json::json;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn field_selector_matches_pod_fields() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let unscheduled = json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": {}});
        let sel =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", pods).expect("parses");
        assert!(sel.matches(&pod));
        assert!(!sel.matches(&unscheduled));
        let sel = FieldSelector::parse("spec.nodeName=", pods).expect("parses");
        assert!(sel.matches(&unscheduled) && !sel.matches(&pod));
        let sel = FieldSelector::parse("metadata.name==a", pods).expect("parses");
        assert!(sel.matches(&pod));
    }

    #[test]
    fn unsupported_field_is_named() {
        let kinds = Kinds::builtin();
        let services = kinds.of::<Service>().expect("services");
        let err = FieldSelector::parse("spec.nodeName=x", services).expect_err("unsupported");
        assert!(err.to_string().contains("spec.nodeName"), "{err}");
        assert!(FieldSelector::parse("garbage", services).is_err());
    }

    #[test]
    fn params_parse() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let p = Params::parse(
            &raw(&[
                ("watch", "1"),
                ("resourceVersion", "42"),
                ("labelSelector", "app in (a,b),!canary"),
                ("timeoutSeconds", "5"),
                ("allowWatchBookmarks", "true"),
            ]),
            pods,
        )
        .expect("parses");
        assert!(p.watch && p.allow_bookmarks);
        assert_eq!(p.resource_version, Some(42));
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        let obj = json!({"metadata": {"labels": {"app": "a"}}});
        assert!(p.filter.matches(&obj));
        let canary = json!({"metadata": {"labels": {"app": "a", "canary": "1"}}});
        assert!(!p.filter.matches(&canary));
        assert!(Params::parse(&raw(&[("resourceVersion", "x")]), pods).is_err());
        assert!(Params::parse(&raw(&[("labelSelector", "a in (")]), pods).is_err());
        assert!(
            Params::parse(&raw(&[("resourceVersion", "")]), pods)
                .is_ok_and(|p| p.resource_version.is_none())
        );
    }

    #[test]
    fn escaped_commas_stay_in_values() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let sel = FieldSelector::parse(r"metadata.name=a\,b", pods).expect("parses");
        assert_eq!(sel.requirements[0].value, "a,b");
    }
}

//! Semantic validation of API objects, as the Kubernetes API server does it.
//!
//! Pure functions over the k8s-openapi types: each returns every problem it
//! finds as a [`FieldError`] naming the field (`spec.ports[0].port`), what is
//! wrong with it and, where it helps, the offending value. The API layer turns
//! a non-empty list into a `422 Invalid` Status whose message reads like the
//! Kubernetes one:
//!
//! ```text
//! Service "web" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive
//! ```
//!
//! Structural problems (a string where a number belongs, a missing required
//! field of the typed schema) are caught earlier, when the body is decoded
//! into the typed object; this module sees only well-typed objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Event, Namespace, Node, Pod, PodSpec, PodTemplateSpec, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::selector::{Selector, validate_label_key, validate_label_value};

/// Longest DNS-1123 label (and DNS-1035 label).
const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest IANA service name (a named port).
const IANA_SVC_NAME_MAX: usize = 15;
/// Total size limit of all annotation keys and values, as Kubernetes.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;
/// Most endpoints one EndpointSlice may hold, as Kubernetes.
const ENDPOINTS_PER_SLICE_MAX: usize = 1000;
/// Most addresses one endpoint may list, as Kubernetes.
const ADDRESSES_PER_ENDPOINT_MAX: usize = 100;
/// Most ports one EndpointSlice may list, as Kubernetes.
const PORTS_PER_SLICE_MAX: usize = 20_000;
/// Total size limit of a ConfigMap's or Secret's data, as Kubernetes.
pub const DATA_MAX_BYTES: usize = 1024 * 1024;
/// Most completions of an Indexed Job, as Kubernetes.
const INDEXED_COMPLETIONS_MAX: i32 = 100_000;

/// Service types the API accepts. `LoadBalancer` is accepted and behaves as
/// on a bare-metal Kubernetes cluster without a load-balancer implementation:
/// it gets a ClusterIP and NodePorts, and its external address stays pending.
pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
/// Protocols of service, container and endpoint ports.
pub const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// How a field's value is wrong; mirrors `field.ErrorType` of Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// The value is malformed or out of range; `value` is its rendering
    /// (strings quoted, numbers bare).
    Invalid {
        /// The offending value, rendered.
        value: String,
    },
    /// A required field is missing or empty.
    Required,
    /// The value repeats one that must be unique.
    Duplicate {
        /// The repeated value, rendered.
        value: String,
    },
    /// The value is not one of an enumerated set.
    NotSupported {
        /// The offending value, rendered.
        value: String,
        /// The allowed values.
        supported: Vec<String>,
    },
    /// The field may not be set (or changed) in this context.
    Forbidden,
    /// The value is longer than allowed.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A list has more items than allowed.
    TooMany {
        /// How many it has.
        actual: usize,
        /// The limit.
        max: usize,
    },
}

/// One problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, JSON-style: `spec.containers[0].name`.
    pub field: String,
    /// What kind of problem.
    pub error_type: ErrorType,
    /// Human-readable explanation; may be empty.
    pub detail: String,
}

impl FieldError {
    /// `field: Invalid value: value: detail`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Invalid {
                value: value.into(),
            },
            detail: detail.into(),
        }
    }

    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Required,
            detail: detail.into(),
        }
    }

    /// `field: Duplicate value: value`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Duplicate {
                value: value.into(),
            },
            detail: String::new(),
        }
    }

    /// `field: Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::NotSupported {
                value: quote(value),
                supported: supported.iter().map(|s| quote(s)).collect(),
            },
            detail: String::new(),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Forbidden,
            detail: detail.into(),
        }
    }

    /// `field: Too long: may not be more than N bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TooLong { max },
            detail: String::new(),
        }
    }

    /// `field: Too many: N: must have at most M items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TooMany { actual, max },
            detail: String::new(),
        }
    }

    /// The `StatusCause.reason` Kubernetes uses for this error type.
    pub fn reason(&self) -> &'static str {
        match self.error_type {
            ErrorType::Invalid { .. } => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate { .. } => "FieldValueDuplicate",
            ErrorType::NotSupported { .. } => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong { .. } => "FieldValueTooLong",
            ErrorType::TooMany { .. } => "FieldValueTooMany",
        }
    }

    /// The message without the leading field path (`StatusCause.message`).
    pub fn body(&self) -> String {
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.error_type {
            ErrorType::Invalid { value } => with_detail(format!("Invalid value: {value}")),
            ErrorType::Required => with_detail("Required value".to_owned()),
            ErrorType::Duplicate { value } => with_detail(format!("Duplicate value: {value}")),
            ErrorType::NotSupported { value, supported } => with_detail(format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            )),
            ErrorType::Forbidden => with_detail("Forbidden".to_owned()),
            ErrorType::TooLong { max } => {
                with_detail(format!("Too long: may not be more than {max} bytes"))
            }
            ErrorType::TooMany { actual, max } => {
                with_detail(format!("Too many: {actual}: must have at most {max} items"))
            }
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Renders a string value the way Kubernetes does in messages: quoted.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Joins errors into the tail of a Kubernetes `Invalid` message: one error
/// as is, several as `[a, b]`.
pub fn join_errors(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// Which naming rule an object's `metadata.name` follows (it differs by kind
/// in Kubernetes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// Lowercase RFC 1123 subdomain, at most 253 characters (most kinds).
    Dns1123Subdomain,
    /// Lowercase RFC 1123 label, at most 63 characters (Namespace).
    Dns1123Label,
    /// RFC 1035 label: like a 1123 label but starting with a letter (Service).
    Dns1035Label,
}

impl NameRule {
    /// The problems with `name` under this rule (empty when valid).
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
        }
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label_shape(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// Problems with `s` as an RFC 1123 label (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_label_shape(s) {
        errors.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// Problems with `s` as an RFC 1123 subdomain (empty when valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.is_empty() || !s.split('.').all(is_label_shape) {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
             or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
             regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_owned(),
        );
    }
    errors
}

/// Problems with `s` as an RFC 1035 label (empty when valid).
pub fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_label_shape(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        errors.push(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start \
             with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', \
             or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// Problems with `s` as an IANA service name, the form of named ports
/// (empty when valid).
pub fn iana_svc_name_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > IANA_SVC_NAME_MAX {
        errors.push(format!(
            "must be no more than {IANA_SVC_NAME_MAX} characters"
        ));
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errors.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if s.contains("--") {
        errors.push("must not contain consecutive hyphens".to_owned());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_owned());
    }
    errors
}

/// Checks a port number is in 1–65535.
fn check_port(field: &str, port: i32, errors: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&port) {
        errors.push(FieldError::invalid(
            field,
            port.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn check_protocol(field: &str, protocol: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(p) = protocol
        && !PROTOCOLS.contains(&p)
    {
        errors.push(FieldError::not_supported(field, p, PROTOCOLS));
    }
}

fn check_enum(field: &str, value: Option<&str>, allowed: &[&str], errors: &mut Vec<FieldError>) {
    if let Some(v) = value
        && !allowed.contains(&v)
    {
        errors.push(FieldError::not_supported(field, v, allowed));
    }
}

/// Checks a label map (`metadata.labels`, a Service selector, a nodeSelector).
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels {
        if let Err(e) = validate_label_key(key) {
            errors.push(FieldError::invalid(
                field,
                quote(key),
                format!("label key {e}"),
            ));
        }
        if let Err(e) = validate_label_value(value) {
            errors.push(FieldError::invalid(
                field,
                quote(value),
                format!("label value {e}"),
            ));
        }
    }
    errors
}

/// Checks annotation keys and the total size limit.
pub fn validate_annotations(
    field: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations {
        // Annotation keys have the same syntax as label keys, but lowercase
        // is not enforced on the name part, which validate_label_key allows.
        if let Err(e) = validate_label_key(key) {
            errors.push(FieldError::invalid(
                field,
                quote(key),
                format!("annotation key {e}"),
            ));
        }
        total += key.len() + value.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errors.push(FieldError::too_long(field, ANNOTATIONS_MAX_BYTES));
    }
    errors
}

/// Checks `metadata`: name by `rule`, namespace presence by scope, labels,
/// annotations. `generateName` must already have been resolved into a name.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => {
            for problem in rule.check(name) {
                errors.push(FieldError::invalid("metadata.name", quote(name), problem));
            }
        }
    }
    match (namespaced, meta.namespace.as_deref()) {
        (true, None | Some("")) => errors.push(FieldError::required("metadata.namespace", "")),
        (true, Some(ns)) => {
            for problem in dns1123_label_errors(ns) {
                errors.push(FieldError::invalid(
                    "metadata.namespace",
                    quote(ns),
                    problem,
                ));
            }
        }
        (false, Some(ns)) if !ns.is_empty() => errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        )),
        (false, _) => {}
    }
    if let Some(labels) = &meta.labels {
        errors.extend(validate_labels("metadata.labels", labels));
    }
    if let Some(annotations) = &meta.annotations {
        errors.extend(validate_annotations("metadata.annotations", annotations));
    }
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        // Finalizers are qualified names, the syntax of label keys.
        if let Err(e) = validate_label_key(finalizer) {
            errors.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                quote(finalizer),
                format!("name part {e}"),
            ));
        }
    }
    if let Some(generation) = meta.generation
        && generation < 0
    {
        errors.push(FieldError::invalid(
            "metadata.generation",
            generation.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errors
}

/// Checks that the namespace in a request body agrees with the one in the
/// URL. Returns the Kubernetes message when it does not (a `400 BadRequest`,
/// not a field error).
pub fn namespace_mismatch(path_namespace: &str, body_namespace: Option<&str>) -> Option<String> {
    match body_namespace {
        Some(ns) if !ns.is_empty() && ns != path_namespace => Some(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({path_namespace})"
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------- pods

/// Restart policies of a pod.
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
/// DNS policies of a pod.
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];

fn validate_container(
    path: &str,
    container: &Container,
    names: &mut BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let name_field = format!("{path}.name");
    if container.name.is_empty() {
        errors.push(FieldError::required(name_field, ""));
    } else {
        for problem in dns1123_label_errors(&container.name) {
            errors.push(FieldError::invalid(
                &name_field,
                quote(&container.name),
                problem,
            ));
        }
        if !names.insert(container.name.clone()) {
            errors.push(FieldError::duplicate(name_field, quote(&container.name)));
        }
    }
    if container
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let p = format!("{path}.ports[{i}]");
        check_port(&format!("{p}.containerPort"), port.container_port, errors);
        if let Some(host_port) = port.host_port
            && !(0..=65535).contains(&host_port)
        {
            errors.push(FieldError::invalid(
                format!("{p}.hostPort"),
                host_port.to_string(),
                "must be between 0 and 65535, inclusive",
            ));
        }
        check_protocol(&format!("{p}.protocol"), port.protocol.as_deref(), errors);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            for problem in iana_svc_name_errors(name) {
                errors.push(FieldError::invalid(
                    format!("{p}.name"),
                    quote(name),
                    problem,
                ));
            }
            if !port_names.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(format!("{p}.name"), quote(name)));
            }
        }
    }
    check_enum(
        &format!("{path}.imagePullPolicy"),
        container.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
        errors,
    );
}

/// Checks a pod spec found at `path` (`spec`, or `spec.template.spec`).
pub fn validate_pod_spec(path: &str, spec: &PodSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    if spec.containers.is_empty() {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(
            &format!("{path}.initContainers[{i}]"),
            c,
            &mut names,
            &mut errors,
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            &format!("{path}.containers[{i}]"),
            c,
            &mut names,
            &mut errors,
        );
    }
    check_enum(
        &format!("{path}.restartPolicy"),
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
        &mut errors,
    );
    check_enum(
        &format!("{path}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
        &mut errors,
    );
    if let Some(selector) = &spec.node_selector {
        errors.extend(validate_labels(&format!("{path}.nodeSelector"), selector));
    }
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        for problem in dns1123_subdomain_errors(node) {
            errors.push(FieldError::invalid(
                format!("{path}.nodeName"),
                quote(node),
                problem,
            ));
        }
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(deadline) = spec.active_deadline_seconds
        && deadline <= 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            deadline.to_string(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let mut volume_names = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        for problem in dns1123_label_errors(&volume.name) {
            errors.push(FieldError::invalid(&field, quote(&volume.name), problem));
        }
        if !volume_names.insert(volume.name.clone()) {
            errors.push(FieldError::duplicate(field, quote(&volume.name)));
        }
    }
    errors
}

/// Checks a Pod's spec (metadata is checked by [`validate_object_meta`]).
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    match &pod.spec {
        None => vec![FieldError::required("spec", "")],
        Some(spec) => validate_pod_spec("spec", spec),
    }
}

/// The spec fields a pod update may change, as Kubernetes words it.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than \
    `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
    `spec.tolerations` (only additions to existing tolerations),\
    `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Checks a Pod update: the spec is immutable except for container images,
/// `activeDeadlineSeconds` and added tolerations. Binding to a node goes
/// through the `binding` subresource, not an update.
pub fn validate_pod_update(old: &Pod, new: &Pod) -> Vec<FieldError> {
    let (Some(old_spec), Some(new_spec)) = (&old.spec, &new.spec) else {
        return validate_pod(new);
    };
    let mut errors = validate_pod_spec("spec", new_spec);
    // Make the mutable fields of the new spec equal to the old, then compare:
    // any remaining difference is a forbidden change.
    let mut normalized = new_spec.clone();
    for (new_c, old_c) in normalized.containers.iter_mut().zip(&old_spec.containers) {
        new_c.image.clone_from(&old_c.image);
    }
    if let (Some(new_init), Some(old_init)) = (
        normalized.init_containers.as_mut(),
        old_spec.init_containers.as_ref(),
    ) {
        for (new_c, old_c) in new_init.iter_mut().zip(old_init) {
            new_c.image.clone_from(&old_c.image);
        }
    }
    normalized.active_deadline_seconds = old_spec.active_deadline_seconds;
    let old_tolerations = old_spec.tolerations.clone().unwrap_or_default();
    let new_tolerations = new_spec.tolerations.clone().unwrap_or_default();
    if new_tolerations.starts_with(&old_tolerations) {
        normalized.tolerations.clone_from(&old_spec.tolerations);
    }
    if normalized != *old_spec {
        errors.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
    errors
}

// ---------------------------------------------------------------- services

fn is_headless(cluster_ip: Option<&str>) -> bool {
    cluster_ip == Some("None")
}

/// Checks a Service as submitted (before ClusterIP/NodePort allocation).
pub fn validate_service(service: &Service) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &service.spec else {
        return vec![FieldError::required("spec", "")];
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&type_) {
        errors.push(FieldError::not_supported("spec.type", type_, SERVICE_TYPES));
    }
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
    let headless = is_headless(cluster_ip);
    let external_name = type_ == "ExternalName";
    let node_ports_allowed = matches!(type_, "NodePort" | "LoadBalancer");

    if let Some(ip) = cluster_ip {
        if external_name {
            errors.push(FieldError::invalid(
                "spec.clusterIP",
                quote(ip),
                "may not be set for ExternalName services",
            ));
        } else if headless && node_ports_allowed {
            errors.push(FieldError::invalid(
                "spec.clusterIP",
                quote(ip),
                format!("may not be set to 'None' for {type_} services"),
            ));
        } else if !headless && ip.parse::<IpAddr>().is_err() {
            errors.push(FieldError::invalid(
                "spec.clusterIP",
                quote(ip),
                "must be a valid IP address or \"None\"",
            ));
        }
    }
    if let Some(ips) = &spec.cluster_ips
        && let Some(first) = ips.first()
        && cluster_ip.is_some_and(|ip| ip != first)
    {
        errors.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            quote(first),
            "must be same as `clusterIP`",
        ));
    }
    if external_name {
        match spec.external_name.as_deref().filter(|n| !n.is_empty()) {
            None => errors.push(FieldError::required("spec.externalName", "")),
            Some(name) => {
                let trimmed = name.strip_suffix('.').unwrap_or(name);
                for problem in dns1123_subdomain_errors(trimmed) {
                    errors.push(FieldError::invalid(
                        "spec.externalName",
                        quote(name),
                        problem,
                    ));
                }
            }
        }
    }

    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && !external_name {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut port_protocols = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errors.push(FieldError::required(format!("{p}.name"), "")),
            None => {}
            Some(name) => {
                for problem in dns1123_label_errors(name) {
                    errors.push(FieldError::invalid(
                        format!("{p}.name"),
                        quote(name),
                        problem,
                    ));
                }
                if !names.insert(name.to_owned()) {
                    errors.push(FieldError::duplicate(format!("{p}.name"), quote(name)));
                }
            }
        }
        check_port(&format!("{p}.port"), port.port, &mut errors);
        check_protocol(
            &format!("{p}.protocol"),
            port.protocol.as_deref(),
            &mut errors,
        );
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !port_protocols.insert((port.port, protocol.to_owned())) {
            errors.push(FieldError::duplicate(
                p.clone(),
                format!("{}/{protocol}", port.port),
            ));
        }
        match &port.target_port {
            Some(IntOrString::Int(target)) => {
                check_port(&format!("{p}.targetPort"), *target, &mut errors);
            }
            Some(IntOrString::String(name)) => {
                for problem in iana_svc_name_errors(name) {
                    errors.push(FieldError::invalid(
                        format!("{p}.targetPort"),
                        quote(name),
                        problem,
                    ));
                }
            }
            None => {}
        }
        if let Some(node_port) = port.node_port.filter(|np| *np != 0) {
            if node_ports_allowed {
                check_port(&format!("{p}.nodePort"), node_port, &mut errors);
            } else {
                errors.push(FieldError::forbidden(
                    format!("{p}.nodePort"),
                    format!("may not be used when `type` is '{type_}'"),
                ));
            }
        }
    }
    if let Some(selector) = &spec.selector {
        errors.extend(validate_labels("spec.selector", selector));
    }
    check_enum(
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
        &mut errors,
    );
    if let Some(policy) = spec.external_traffic_policy.as_deref() {
        if !node_ports_allowed {
            errors.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                quote(policy),
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else {
            check_enum(
                "spec.externalTrafficPolicy",
                Some(policy),
                &["Cluster", "Local"],
                &mut errors,
            );
        }
    }
    check_enum(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        &mut errors,
    );
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        check_enum(
            &format!("spec.ipFamilies[{i}]"),
            Some(family),
            &["IPv4", "IPv6"],
            &mut errors,
        );
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            errors.push(FieldError::invalid(
                format!("spec.externalIPs[{i}]"),
                quote(ip),
                "must be a valid IP address",
            ));
        }
    }
    errors
}

/// Checks a Service update: an allocated ClusterIP cannot change (except
/// when the type moves to or from ExternalName, which has none).
pub fn validate_service_update(old: &Service, new: &Service) -> Vec<FieldError> {
    let mut errors = validate_service(new);
    let old_spec = old.spec.clone().unwrap_or_default();
    let new_spec = new.spec.clone().unwrap_or_default();
    let involves_external_name = old_spec.type_.as_deref() == Some("ExternalName")
        || new_spec.type_.as_deref() == Some("ExternalName");
    let old_ip = old_spec.cluster_ip.unwrap_or_default();
    let new_ip = new_spec.cluster_ip.unwrap_or_default();
    if !involves_external_name && !old_ip.is_empty() && old_ip != new_ip {
        errors.push(FieldError::invalid(
            "spec.clusterIP",
            quote(&new_ip),
            "field is immutable",
        ));
    }
    errors
}

// ---------------------------------------------------------------- workloads

fn render_labels(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

/// Checks a workload's selector + template pair (Deployment, ReplicaSet and
/// later DaemonSet/StatefulSet/Job): selector non-empty and valid, template
/// labels matching it, template spec valid with `restartPolicy: Always`
/// unless `allowed_restart` says otherwise.
pub fn validate_selector_and_template(
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    allowed_restart: &[&str],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    let parsed = if empty {
        errors.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for this workload",
        ));
        None
    } else {
        match Selector::from_label_selector(selector) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    selector_repr(selector),
                    e.to_string(),
                ));
                None
            }
        }
    };
    let Some(template) = template else {
        errors.push(FieldError::required("spec.template", ""));
        return errors;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    errors.extend(validate_labels("spec.template.metadata.labels", &labels));
    if let Some(parsed) = parsed
        && !parsed.matches(&labels)
    {
        errors.push(FieldError::invalid(
            "spec.template.metadata.labels",
            render_labels(&labels),
            "`selector` does not match template `labels`",
        ));
    }
    match &template.spec {
        None => errors.push(FieldError::required("spec.template.spec", "")),
        Some(spec) => {
            errors.extend(validate_pod_spec("spec.template.spec", spec));
            let restart = spec.restart_policy.as_deref().unwrap_or("Always");
            if RESTART_POLICIES.contains(&restart) && !allowed_restart.contains(&restart) {
                errors.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    restart,
                    allowed_restart,
                ));
            }
        }
    }
    errors
}

fn selector_repr(selector: &LabelSelector) -> String {
    serde_json::to_string(selector).unwrap_or_else(|_| "<selector>".to_owned())
}

fn check_non_negative(field: &str, value: Option<i32>, errors: &mut Vec<FieldError>) {
    if let Some(v) = value
        && v < 0
    {
        errors.push(FieldError::invalid(
            field,
            v.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// Checks an int-or-percent value (`maxSurge`, `maxUnavailable`); returns
/// whether it is zero.
fn check_int_or_percent(field: &str, value: &IntOrString, errors: &mut Vec<FieldError>) -> bool {
    match value {
        IntOrString::Int(n) => {
            check_non_negative(field, Some(*n), errors);
            *n == 0
        }
        IntOrString::String(s) => match s.strip_suffix('%').map(str::parse::<i32>) {
            Some(Ok(n)) if (0..=100).contains(&n) => n == 0,
            Some(Ok(n)) => {
                errors.push(FieldError::invalid(
                    field,
                    quote(s),
                    "must not be greater than 100%",
                ));
                n == 0
            }
            _ => {
                errors.push(FieldError::invalid(
                    field,
                    quote(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')",
                ));
                false
            }
        },
    }
}

/// Checks a Deployment's spec.
pub fn validate_deployment(deployment: &Deployment) -> Vec<FieldError> {
    let spec = &deployment.spec;
    let mut errors =
        validate_selector_and_template(&spec.selector, Some(&spec.template), &["Always"]);
    check_non_negative("spec.replicas", spec.replicas, &mut errors);
    check_non_negative("spec.minReadySeconds", spec.min_ready_seconds, &mut errors);
    check_non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
        &mut errors,
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        check_non_negative("spec.progressDeadlineSeconds", Some(deadline), &mut errors);
        if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(strategy) = &spec.strategy {
        check_update_strategy(
            &UpdateStrategy {
                path: "spec.strategy",
                type_: strategy.type_.as_deref(),
                supported: &["Recreate", "RollingUpdate"],
                other: "Recreate",
                rolling: strategy
                    .rolling_update
                    .as_ref()
                    .map(|r| (r.max_surge.as_ref(), r.max_unavailable.as_ref())),
                // Deployments default both to 25%.
                absent_is_zero: false,
            },
            &mut errors,
        );
    }
    errors
}

/// A workload's update strategy, as [`check_update_strategy`] reads it.
struct UpdateStrategy<'a> {
    /// `spec.strategy` or `spec.updateStrategy`.
    path: &'a str,
    /// `type` as given (default RollingUpdate).
    type_: Option<&'a str>,
    /// The supported types, in the order the error message lists them.
    supported: &'a [&'a str],
    /// The type that forbids a `rollingUpdate` section.
    other: &'a str,
    /// `rollingUpdate`'s maxSurge and maxUnavailable, when given.
    rolling: Option<(Option<&'a IntOrString>, Option<&'a IntOrString>)>,
    /// How an absent surge/unavailable counts for the both-zero rule.
    absent_is_zero: bool,
}

/// Checks an update strategy: a supported type, no `rollingUpdate` with
/// the other type, and a usable surge/unavailable pair.
fn check_update_strategy(strategy: &UpdateStrategy<'_>, errors: &mut Vec<FieldError>) {
    let type_ = strategy.type_.unwrap_or("RollingUpdate");
    check_enum(
        &format!("{}.type", strategy.path),
        Some(type_),
        strategy.supported,
        errors,
    );
    match strategy.rolling {
        Some(_) if type_ == strategy.other => errors.push(FieldError::forbidden(
            format!("{}.rollingUpdate", strategy.path),
            format!(
                "may not be specified when strategy `type` is '{}'",
                strategy.other
            ),
        )),
        Some((surge, unavailable)) => check_surge_and_unavailable(
            &format!("{}.rollingUpdate", strategy.path),
            surge,
            unavailable,
            strategy.absent_is_zero,
            errors,
        ),
        None => {}
    }
}

/// Checks `maxSurge` and `maxUnavailable` of a rolling update under
/// `prefix`: each an int or percentage, not both zero. `absent_is_zero`
/// says how an absent value counts for the both-zero rule.
fn check_surge_and_unavailable(
    prefix: &str,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    absent_is_zero: bool,
    errors: &mut Vec<FieldError>,
) {
    let mut zero = |field: &str, value: Option<&IntOrString>| match value {
        Some(v) => check_int_or_percent(&format!("{prefix}.{field}"), v, errors),
        None => absent_is_zero,
    };
    let surge_zero = zero("maxSurge", max_surge);
    let unavailable_zero = zero("maxUnavailable", max_unavailable);
    if surge_zero && unavailable_zero {
        errors.push(FieldError::invalid(
            format!("{prefix}.maxUnavailable"),
            "0",
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn selector_immutable(old: &LabelSelector, new: &LabelSelector) -> Option<FieldError> {
    (old != new)
        .then(|| FieldError::invalid("spec.selector", selector_repr(new), "field is immutable"))
}

/// Checks a Deployment update: the selector is immutable in apps/v1.
pub fn validate_deployment_update(old: &Deployment, new: &Deployment) -> Vec<FieldError> {
    let mut errors = validate_deployment(new);
    errors.extend(selector_immutable(&old.spec.selector, &new.spec.selector));
    errors
}

/// Checks a ReplicaSet's spec.
pub fn validate_replica_set(replica_set: &ReplicaSet) -> Vec<FieldError> {
    let spec = &replica_set.spec;
    let mut errors =
        validate_selector_and_template(&spec.selector, spec.template.as_ref(), &["Always"]);
    check_non_negative("spec.replicas", spec.replicas, &mut errors);
    check_non_negative("spec.minReadySeconds", spec.min_ready_seconds, &mut errors);
    errors
}

/// Checks a ReplicaSet update: the selector is immutable in apps/v1.
pub fn validate_replica_set_update(old: &ReplicaSet, new: &ReplicaSet) -> Vec<FieldError> {
    let mut errors = validate_replica_set(new);
    errors.extend(selector_immutable(&old.spec.selector, &new.spec.selector));
    errors
}

/// `activeDeadlineSeconds` makes no sense for pods a controller keeps
/// running.
fn forbid_active_deadline(kind: &str, spec: &PodTemplateSpec, errors: &mut Vec<FieldError>) {
    if spec
        .spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        errors.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// Checks a DaemonSet's spec.
pub fn validate_daemon_set(daemon_set: &DaemonSet) -> Vec<FieldError> {
    let spec = &daemon_set.spec;
    let mut errors =
        validate_selector_and_template(&spec.selector, Some(&spec.template), &["Always"]);
    forbid_active_deadline("DaemonSet", &spec.template, &mut errors);
    check_non_negative("spec.minReadySeconds", spec.min_ready_seconds, &mut errors);
    check_non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
        &mut errors,
    );
    if let Some(strategy) = &spec.update_strategy {
        check_update_strategy(
            &UpdateStrategy {
                path: "spec.updateStrategy",
                type_: strategy.type_.as_deref(),
                supported: &["RollingUpdate", "OnDelete"],
                other: "OnDelete",
                rolling: strategy
                    .rolling_update
                    .as_ref()
                    .map(|r| (r.max_surge.as_ref(), r.max_unavailable.as_ref())),
                // DaemonSets default maxSurge to 0 (and maxUnavailable to 1,
                // but an absent one is counted as zero here as Kubernetes'
                // validation does).
                absent_is_zero: true,
            },
            &mut errors,
        );
    }
    errors
}

/// Checks a DaemonSet update: the selector is immutable in apps/v1.
pub fn validate_daemon_set_update(old: &DaemonSet, new: &DaemonSet) -> Vec<FieldError> {
    let mut errors = validate_daemon_set(new);
    errors.extend(selector_immutable(&old.spec.selector, &new.spec.selector));
    errors
}

/// Checks a StatefulSet's spec.
pub fn validate_stateful_set(stateful_set: &StatefulSet) -> Vec<FieldError> {
    let spec = &stateful_set.spec;
    let mut errors =
        validate_selector_and_template(&spec.selector, Some(&spec.template), &["Always"]);
    forbid_active_deadline("StatefulSet", &spec.template, &mut errors);
    check_non_negative("spec.replicas", spec.replicas, &mut errors);
    check_non_negative("spec.minReadySeconds", spec.min_ready_seconds, &mut errors);
    check_non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
        &mut errors,
    );
    check_enum(
        "spec.podManagementPolicy",
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
        &mut errors,
    );
    if let Some(service) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        for problem in dns1123_label_errors(service) {
            errors.push(FieldError::invalid(
                "spec.serviceName",
                quote(service),
                problem,
            ));
        }
    }
    if let Some(strategy) = &spec.update_strategy {
        let type_ = strategy.type_.as_deref().unwrap_or("RollingUpdate");
        check_enum(
            "spec.updateStrategy.type",
            Some(type_),
            &["RollingUpdate", "OnDelete"],
            &mut errors,
        );
        match (&strategy.rolling_update, type_) {
            (Some(_), "OnDelete") => errors.push(FieldError::forbidden(
                "spec.updateStrategy.rollingUpdate",
                "only allowed for updateStrategy 'RollingUpdate'",
            )),
            (Some(rolling), _) => {
                check_non_negative(
                    "spec.updateStrategy.rollingUpdate.partition",
                    rolling.partition,
                    &mut errors,
                );
                if let Some(max) = &rolling.max_unavailable
                    && check_int_or_percent(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        max,
                        &mut errors,
                    )
                {
                    errors.push(FieldError::invalid(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        "0",
                        "must be greater than 0",
                    ));
                }
            }
            (None, _) => {}
        }
    }
    if let Some(ordinals) = &spec.ordinals {
        check_non_negative("spec.ordinals.start", ordinals.start, &mut errors);
    }
    errors
}

/// The StatefulSet spec fields an update may change, as Kubernetes words it.
const STATEFUL_SET_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than \
    'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' \
    and 'minReadySeconds' are forbidden";

/// Checks a StatefulSet update: only replicas, ordinals, template, update
/// strategy, PVC retention, revision history and minReadySeconds change.
pub fn validate_stateful_set_update(old: &StatefulSet, new: &StatefulSet) -> Vec<FieldError> {
    let mut errors = validate_stateful_set(new);
    let mut normalized = new.spec.clone();
    normalized.replicas = old.spec.replicas;
    normalized.ordinals.clone_from(&old.spec.ordinals);
    normalized.template = old.spec.template.clone();
    normalized
        .update_strategy
        .clone_from(&old.spec.update_strategy);
    normalized
        .persistent_volume_claim_retention_policy
        .clone_from(&old.spec.persistent_volume_claim_retention_policy);
    normalized.min_ready_seconds = old.spec.min_ready_seconds;
    normalized.revision_history_limit = old.spec.revision_history_limit;
    if normalized != old.spec {
        errors.push(FieldError::forbidden("spec", STATEFUL_SET_UPDATE_FORBIDDEN));
    }
    errors
}

/// Checks a Job's spec (after its selector was generated, unless
/// `manualSelector`): counts, completion mode, restart policy Never or
/// OnFailure, selector matching the template, generated labels intact.
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let Some(spec) = &job.spec else {
        return vec![FieldError::required("spec", "")];
    };
    let mut errors = Vec::new();
    match &spec.selector {
        None => errors.push(FieldError::required("spec.selector", "")),
        Some(selector) => errors.extend(validate_selector_and_template(
            selector,
            Some(&spec.template),
            &["OnFailure", "Never"],
        )),
    }
    if spec.manual_selector != Some(true) {
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let label = crate::api::defaults::JOB_UID_LABELS[0];
        let template_uid = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(label));
        if template_uid.is_some_and(|v| v != uid) {
            errors.push(FieldError::invalid(
                format!("spec.template.metadata.labels[{label}]"),
                quote(template_uid.map(String::as_str).unwrap_or_default()),
                format!("must be '{uid}'"),
            ));
        }
        let selected = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get(label));
        if selected.is_some_and(|v| v != uid) {
            errors.push(FieldError::invalid(
                format!("spec.selector.matchLabels[{label}]"),
                quote(selected.map(String::as_str).unwrap_or_default()),
                format!("must be '{uid}'"),
            ));
        }
    }
    check_non_negative("spec.parallelism", spec.parallelism, &mut errors);
    check_non_negative("spec.completions", spec.completions, &mut errors);
    check_non_negative("spec.backoffLimit", spec.backoff_limit, &mut errors);
    check_non_negative(
        "spec.ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished,
        &mut errors,
    );
    if let Some(deadline) = spec.active_deadline_seconds
        && deadline < 0
    {
        errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            deadline.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    check_enum(
        "spec.completionMode",
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
        &mut errors,
    );
    check_enum(
        "spec.podReplacementPolicy",
        spec.pod_replacement_policy.as_deref(),
        &["TerminatingOrFailed", "Failed"],
        &mut errors,
    );
    if spec.completion_mode.as_deref() == Some("Indexed") {
        match spec.completions {
            None => errors.push(FieldError::required(
                "spec.completions",
                "when completion mode is Indexed",
            )),
            Some(n) if n > INDEXED_COMPLETIONS_MAX => errors.push(FieldError::invalid(
                "spec.completions",
                n.to_string(),
                format!("must be less than or equal to {INDEXED_COMPLETIONS_MAX} when completion mode is Indexed"),
            )),
            Some(_) => {}
        }
    }
    errors
}

/// Checks a Job update: selector, template, completions and completion
/// mode are immutable (parallelism, suspend, deadlines and TTL may change).
pub fn validate_job_update(old: &Job, new: &Job) -> Vec<FieldError> {
    let mut errors = validate_job(new);
    let (Some(old_spec), Some(new_spec)) = (&old.spec, &new.spec) else {
        return errors;
    };
    if old_spec.selector != new_spec.selector {
        errors.push(FieldError::invalid(
            "spec.selector",
            new_spec
                .selector
                .as_ref()
                .map(selector_repr)
                .unwrap_or_default(),
            "field is immutable",
        ));
    }
    if old_spec.template != new_spec.template {
        errors.push(FieldError::invalid(
            "spec.template",
            "",
            "field is immutable",
        ));
    }
    if old_spec.completions != new_spec.completions {
        errors.push(FieldError::invalid(
            "spec.completions",
            new_spec
                .completions
                .map(|c| c.to_string())
                .unwrap_or_default(),
            "field is immutable",
        ));
    }
    if old_spec.completion_mode != new_spec.completion_mode {
        errors.push(FieldError::invalid(
            "spec.completionMode",
            quote(new_spec.completion_mode.as_deref().unwrap_or_default()),
            "field is immutable",
        ));
    }
    errors
}

// ---------------------------------------------------------------- config

/// Problems of a ConfigMap or Secret data key (`IsConfigMapKey`).
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .to_owned(),
        );
    }
    if key.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if key == "." {
        errors.push("must not be '.'".to_owned());
    } else if key == ".." {
        errors.push("must not be '..'".to_owned());
    } else if key.starts_with("..") {
        errors.push("must not start with '..'".to_owned());
    }
    errors
}

fn check_config_keys<'a>(
    field: &str,
    keys: impl Iterator<Item = &'a String>,
    errors: &mut Vec<FieldError>,
) {
    for key in keys {
        for problem in config_key_errors(key) {
            errors.push(FieldError::invalid(
                format!("{field}[{key}]"),
                quote(key),
                problem,
            ));
        }
    }
}

/// Checks a ConfigMap: valid keys, no key in both `data` and
/// `binaryData`, at most 1 MiB in all.
pub fn validate_config_map(config_map: &ConfigMap) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = config_map.data.clone().unwrap_or_default();
    let binary = config_map.binary_data.clone().unwrap_or_default();
    check_config_keys("data", data.keys(), &mut errors);
    check_config_keys("binaryData", binary.keys(), &mut errors);
    for key in binary.keys().filter(|k| data.contains_key(*k)) {
        errors.push(FieldError::invalid(
            format!("data[{key}]"),
            quote(key),
            "duplicate of key present in binaryData",
        ));
    }
    let total: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + binary
            .iter()
            .map(|(k, v)| k.len() + v.0.len())
            .sum::<usize>();
    if total > DATA_MAX_BYTES {
        errors.push(FieldError::too_long("", DATA_MAX_BYTES));
    }
    errors
}

fn immutable_data(field: &str) -> FieldError {
    FieldError::forbidden(field, "field is immutable when `immutable` is set")
}

/// Checks a ConfigMap update: an immutable ConfigMap keeps its data and
/// stays immutable.
pub fn validate_config_map_update(old: &ConfigMap, new: &ConfigMap) -> Vec<FieldError> {
    let mut errors = validate_config_map(new);
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errors.push(immutable_data("immutable"));
        }
        if old.data != new.data {
            errors.push(immutable_data("data"));
        }
        if old.binary_data != new.binary_data {
            errors.push(immutable_data("binaryData"));
        }
    }
    errors
}

/// Keys a Secret of a well-known type must have.
fn required_secret_keys(type_: &str) -> &'static [&'static str] {
    match type_ {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

/// Checks a Secret: valid keys, at most 1 MiB, and what its type requires
/// (`tls.crt`/`tls.key` for TLS, `.dockerconfigjson` as JSON, a username
/// or password for basic-auth, the service account for a token).
pub fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = secret.data.clone().unwrap_or_default();
    check_config_keys("data", data.keys(), &mut errors);
    let total: usize = data.iter().map(|(k, v)| k.len() + v.0.len()).sum();
    if total > DATA_MAX_BYTES {
        errors.push(FieldError::too_long("data", DATA_MAX_BYTES));
    }
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    for key in required_secret_keys(type_) {
        if !data.contains_key(*key) {
            errors.push(FieldError::required(format!("data[{key}]"), ""));
        }
    }
    for key in [".dockercfg", ".dockerconfigjson"] {
        if required_secret_keys(type_).contains(&key)
            && let Some(value) = data.get(key)
            && serde_json::from_slice::<serde_json::Value>(&value.0).is_err()
        {
            errors.push(FieldError::invalid(
                format!("data[{key}]"),
                "<secret contents redacted>",
                "must be valid JSON",
            ));
        }
    }
    match type_ {
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errors.push(FieldError::required(
                "data[username]",
                "either username or password is required",
            ));
        }
        "kubernetes.io/service-account-token"
            if secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_none_or(String::is_empty) =>
        {
            errors.push(FieldError::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        _ => {}
    }
    errors
}

/// Checks a Secret update: the type never changes; an immutable Secret
/// keeps its data and stays immutable.
pub fn validate_secret_update(old: &Secret, new: &Secret) -> Vec<FieldError> {
    let mut errors = validate_secret(new);
    if old.type_ != new.type_ {
        errors.push(FieldError::invalid(
            "type",
            quote(new.type_.as_deref().unwrap_or_default()),
            "field is immutable",
        ));
    }
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errors.push(immutable_data("immutable"));
        }
        if old.data != new.data {
            errors.push(immutable_data("data"));
        }
    }
    errors
}

/// Checks a Lease: a positive duration, non-negative transitions, a
/// known strategy.
pub fn validate_lease(lease: &Lease) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &lease.spec else {
        return errors;
    };
    if let Some(duration) = spec.lease_duration_seconds
        && duration <= 0
    {
        errors.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            duration.to_string(),
            "must be greater than 0",
        ));
    }
    check_non_negative("spec.leaseTransitions", spec.lease_transitions, &mut errors);
    check_enum(
        "spec.strategy",
        spec.strategy.as_deref(),
        &["OldestEmulationVersion"],
        &mut errors,
    );
    errors
}

// ---------------------------------------------------------------- cluster

/// Checks a Node's spec: pod CIDRs and taints.
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &node.spec else {
        return errors;
    };
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty())
        && cidr.parse::<ipnetwork::IpNetwork>().is_err()
    {
        errors.push(FieldError::invalid(
            "spec.podCIDR",
            quote(cidr),
            "must be a valid CIDR",
        ));
    }
    for (i, cidr) in spec.pod_cidrs.iter().flatten().enumerate() {
        if cidr.parse::<ipnetwork::IpNetwork>().is_err() {
            errors.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(cidr),
                "must be a valid CIDR",
            ));
        }
    }
    if let (Some(first), Some(cidr)) = (
        spec.pod_cidrs.as_ref().and_then(|c| c.first()),
        spec.pod_cidr.as_deref().filter(|c| !c.is_empty()),
    ) && first != cidr
    {
        errors.push(FieldError::invalid(
            "spec.podCIDRs[0]",
            quote(first),
            "must match `spec.podCIDR`",
        ));
    }
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        if let Err(e) = validate_label_key(&taint.key) {
            errors.push(FieldError::invalid(
                format!("spec.taints[{i}].key"),
                quote(&taint.key),
                e.to_string(),
            ));
        }
        check_enum(
            &format!("spec.taints[{i}].effect"),
            Some(&taint.effect),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            &mut errors,
        );
    }
    errors
}

/// Checks a Node update: a pod CIDR, once set, cannot change.
pub fn validate_node_update(old: &Node, new: &Node) -> Vec<FieldError> {
    let mut errors = validate_node(new);
    let cidrs = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
    };
    let (old_cidrs, new_cidrs) = (cidrs(old), cidrs(new));
    if !old_cidrs.is_empty() && old_cidrs != new_cidrs {
        errors.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    errors
}

/// Checks a Namespace (everything beyond its name is free-form).
pub fn validate_namespace(namespace: &Namespace) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(phase) = namespace.status.as_ref().and_then(|s| s.phase.as_deref()) {
        check_enum(
            "status.phase",
            Some(phase),
            &["Active", "Terminating"],
            &mut errors,
        );
    }
    errors
}

/// Checks an EndpointSlice: address type, addresses of that type, ports.
pub fn validate_endpoint_slice(slice: &EndpointSlice) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let address_type = slice.address_type.as_str();
    check_enum(
        "addressType",
        Some(address_type),
        &["IPv4", "IPv6", "FQDN"],
        &mut errors,
    );
    let endpoints = slice.endpoints.as_deref().unwrap_or_default();
    if endpoints.len() > ENDPOINTS_PER_SLICE_MAX {
        errors.push(FieldError::too_many(
            "endpoints",
            endpoints.len(),
            ENDPOINTS_PER_SLICE_MAX,
        ));
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let field = format!("endpoints[{i}].addresses");
        if endpoint.addresses.is_empty() {
            errors.push(FieldError::required(
                &field,
                "must contain at least 1 address",
            ));
        }
        if endpoint.addresses.len() > ADDRESSES_PER_ENDPOINT_MAX {
            errors.push(FieldError::too_many(
                &field,
                endpoint.addresses.len(),
                ADDRESSES_PER_ENDPOINT_MAX,
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let ok = match address_type {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => dns1123_subdomain_errors(address).is_empty(),
                _ => true,
            };
            if !ok {
                errors.push(FieldError::invalid(
                    format!("{field}[{j}]"),
                    quote(address),
                    format!("must be a valid {address_type} address"),
                ));
            }
        }
        if let Some(hostname) = endpoint.hostname.as_deref() {
            for problem in dns1123_label_errors(hostname) {
                errors.push(FieldError::invalid(
                    format!("endpoints[{i}].hostname"),
                    quote(hostname),
                    problem,
                ));
            }
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > PORTS_PER_SLICE_MAX {
        errors.push(FieldError::too_many(
            "ports",
            ports.len(),
            PORTS_PER_SLICE_MAX,
        ));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port.name.clone().unwrap_or_default();
        if !name.is_empty() {
            for problem in dns1123_label_errors(&name) {
                errors.push(FieldError::invalid(
                    format!("ports[{i}].name"),
                    quote(&name),
                    problem,
                ));
            }
        }
        if !names.insert(name.clone()) {
            errors.push(FieldError::duplicate(
                format!("ports[{i}].name"),
                quote(&name),
            ));
        }
        if let Some(p) = port.port {
            check_port(&format!("ports[{i}].port"), p, &mut errors);
        }
        check_protocol(
            &format!("ports[{i}].protocol"),
            port.protocol.as_deref(),
            &mut errors,
        );
    }
    errors
}

/// Checks a core/v1 Event: the involved object must be named.
pub fn validate_event(event: &Event) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if event
        .involved_object
        .name
        .as_deref()
        .is_none_or(str::is_empty)
        && event.involved_object.kind.as_deref() != Some("Namespace")
    {
        errors.push(FieldError::required("involvedObject.name", ""));
    }
    check_enum(
        "type",
        event.type_.as_deref(),
        &["Normal", "Warning"],
        &mut errors,
    );
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{ContainerPort, NodeSpec, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: Some("busybox".to_owned()),
            ..Container::default()
        }
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn port(name: Option<&str>, port: i32) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            port,
            ..ServicePort::default()
        }
    }

    #[test]
    fn update_strategies_check_type_and_rolling_update() {
        let zero = IntOrString::Int(0);
        let check = |path, type_, supported: &[&str], other, rolling, absent| {
            let mut errors = Vec::new();
            check_update_strategy(
                &UpdateStrategy {
                    path,
                    type_,
                    supported,
                    other,
                    rolling,
                    absent_is_zero: absent,
                },
                &mut errors,
            );
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.detail))
                .collect::<Vec<_>>()
        };
        let deploy = ["Recreate", "RollingUpdate"];
        assert_eq!(
            check(
                "spec.strategy",
                Some("Recreate"),
                &deploy,
                "Recreate",
                Some((None, None)),
                false
            ),
            [
                "spec.strategy.rollingUpdate: may not be specified when strategy `type` is 'Recreate'"
            ]
        );
        assert!(
            check(
                "spec.strategy",
                None,
                &deploy,
                "Recreate",
                Some((None, None)),
                false
            )
            .is_empty()
        );
        let bad = check(
            "spec.strategy",
            Some("Blue"),
            &deploy,
            "Recreate",
            None,
            false,
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("spec.strategy.type"), "{bad:?}");
        let ds = ["RollingUpdate", "OnDelete"];
        assert_eq!(
            check(
                "spec.updateStrategy",
                Some("OnDelete"),
                &ds,
                "OnDelete",
                Some((None, None)),
                true
            ),
            [
                "spec.updateStrategy.rollingUpdate: may not be specified when strategy `type` is 'OnDelete'"
            ]
        );
        assert_eq!(
            check(
                "spec.updateStrategy",
                None,
                &ds,
                "OnDelete",
                Some((Some(&zero), None)),
                true
            ),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable: may not be 0 when `maxSurge` is 0"]
        );
    }

    #[test]
    fn rolling_update_cannot_have_zero_surge_and_zero_unavailable() {
        let int = |n| IntOrString::Int(n);
        let pct = |p: &str| IntOrString::String(p.to_owned());
        let check = |surge: Option<IntOrString>, unavailable: Option<IntOrString>, absent| {
            let mut errors = Vec::new();
            check_surge_and_unavailable(
                "spec.x",
                surge.as_ref(),
                unavailable.as_ref(),
                absent,
                &mut errors,
            );
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.detail))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            check(Some(int(0)), Some(pct("0%")), false),
            ["spec.x.maxUnavailable: may not be 0 when `maxSurge` is 0"]
        );
        assert!(check(Some(int(1)), Some(int(0)), false).is_empty());
        // Deployment: absent means 25%; DaemonSet: absent counts as 0.
        assert!(check(None, Some(int(0)), false).is_empty());
        assert_eq!(check(None, Some(int(0)), true).len(), 1);
        assert_eq!(check(None, None, true).len(), 1);
        let bad = check(Some(int(-1)), Some(int(1)), false);
        assert!(
            bad.iter().any(|e| e.starts_with("spec.x.maxSurge")),
            "{bad:?}"
        );
    }

    #[test]
    fn dns_names() {
        assert!(dns1123_label_errors("web-1").is_empty());
        assert!(!dns1123_label_errors("Web").is_empty());
        assert!(!dns1123_label_errors("-web").is_empty());
        assert!(!dns1123_label_errors("a.b").is_empty());
        assert!(!dns1123_label_errors(&"a".repeat(64)).is_empty());
        assert!(dns1123_subdomain_errors("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain_errors("a..b").is_empty());
        assert!(!dns1123_subdomain_errors("").is_empty());
        assert!(!dns1123_subdomain_errors(&"a".repeat(254)).is_empty());
        assert!(dns1035_label_errors("web").is_empty());
        assert!(!dns1035_label_errors("1web").is_empty());
    }

    #[test]
    fn iana_names() {
        assert!(iana_svc_name_errors("http").is_empty());
        assert!(iana_svc_name_errors("http-alt2").is_empty());
        assert!(!iana_svc_name_errors("8080").is_empty());
        assert!(!iana_svc_name_errors("a--b").is_empty());
        assert!(!iana_svc_name_errors("-a").is_empty());
        assert!(!iana_svc_name_errors("averyveryverylongname").is_empty());
    }

    #[test]
    fn service_port_out_of_range_message_matches_kubernetes() {
        let errors = validate_service(&service(vec![port(None, 70000)]));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(errors[0].reason(), "FieldValueInvalid");
    }

    #[test]
    fn service_ports_need_names_when_several_and_unique_pairs() {
        let errors = validate_service(&service(vec![port(Some("a"), 80), port(None, 81)]));
        assert_eq!(fields(&errors), ["spec.ports[1].name"]);
        let errors = validate_service(&service(vec![port(Some("a"), 80), port(Some("a"), 80)]));
        assert_eq!(fields(&errors), ["spec.ports[1].name", "spec.ports[1]"]);
    }

    #[test]
    fn service_type_protocol_and_node_port_rules() {
        let mut svc = service(vec![ServicePort {
            protocol: Some("ICMP".into()),
            node_port: Some(30001),
            ..port(None, 80)
        }]);
        let errors = validate_service(&svc);
        assert_eq!(
            fields(&errors),
            ["spec.ports[0].protocol", "spec.ports[0].nodePort"]
        );
        assert_eq!(
            errors[0].to_string(),
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\""
        );
        if let Some(s) = svc.spec.as_mut() {
            s.type_ = Some("Magic".into());
        }
        assert!(fields(&validate_service(&svc)).contains(&"spec.type"));
        let nodeport = Service {
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                cluster_ip: Some("None".into()),
                ports: Some(vec![port(None, 80)]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(fields(&validate_service(&nodeport)), ["spec.clusterIP"]);
    }

    #[test]
    fn headless_and_external_name_services() {
        let headless = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert!(validate_service(&headless).is_empty());
        let mut external = Service {
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(fields(&validate_service(&external)), ["spec.externalName"]);
        if let Some(s) = external.spec.as_mut() {
            s.external_name = Some("db.example.com".into());
        }
        assert!(validate_service(&external).is_empty());
        if let Some(s) = external.spec.as_mut() {
            s.cluster_ip = Some("10.96.0.5".into());
        }
        assert_eq!(fields(&validate_service(&external)), ["spec.clusterIP"]);
    }

    #[test]
    fn service_cluster_ip_is_immutable() {
        let mut old = service(vec![port(None, 80)]);
        if let Some(s) = old.spec.as_mut() {
            s.cluster_ip = Some("10.96.0.10".into());
        }
        let mut new = old.clone();
        assert!(validate_service_update(&old, &new).is_empty());
        if let Some(s) = new.spec.as_mut() {
            s.cluster_ip = Some("10.96.0.11".into());
        }
        let errors = validate_service_update(&old, &new);
        assert_eq!(
            errors[0].to_string(),
            "spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"
        );
    }

    #[test]
    fn pod_containers_required_named_and_unique() {
        let pod = Pod {
            spec: Some(PodSpec::default()),
            ..Pod::default()
        };
        assert_eq!(
            validate_pod(&pod)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["spec.containers: Required value"]
        );
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("a"), container("a"), Container::default()],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let errors = validate_pod(&pod);
        assert_eq!(
            fields(&errors),
            [
                "spec.containers[1].name",
                "spec.containers[2].name",
                "spec.containers[2].image"
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            "spec.containers[1].name: Duplicate value: \"a\""
        );
    }

    #[test]
    fn pod_container_ports() {
        let mut c = container("a");
        c.ports = Some(vec![
            ContainerPort {
                container_port: 0,
                ..ContainerPort::default()
            },
            ContainerPort {
                container_port: 80,
                name: Some("HTTP".into()),
                protocol: Some("tcp".into()),
                ..ContainerPort::default()
            },
        ]);
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![c],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            fields(&validate_pod(&pod)),
            [
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[0].ports[1].name",
                "spec.containers[0].ports[1].name"
            ]
        );
    }

    #[test]
    fn pod_update_allows_image_only() {
        let old = Pod {
            spec: Some(PodSpec {
                containers: vec![container("a")],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let mut new = old.clone();
        if let Some(s) = new.spec.as_mut() {
            s.containers[0].image = Some("nginx".into());
        }
        assert!(validate_pod_update(&old, &new).is_empty());
        if let Some(s) = new.spec.as_mut() {
            s.node_name = Some("node-1".into());
        }
        let errors = validate_pod_update(&old, &new);
        assert_eq!(fields(&errors), ["spec"]);
        assert_eq!(errors[0].error_type, ErrorType::Forbidden);
    }

    fn deployment(selector: &[(&str, &str)], template: &[(&str, &str)]) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(labels(selector)),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(template)),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container("a")],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    }

    #[test]
    fn deployment_selector_must_match_template() {
        assert!(
            validate_deployment(&deployment(
                &[("app", "web")],
                &[("app", "web"), ("x", "y")]
            ))
            .is_empty()
        );
        let errors = validate_deployment(&deployment(&[("app", "web")], &[("app", "db")]));
        assert_eq!(
            errors[0].to_string(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
        );
        assert_eq!(
            fields(&validate_deployment(&deployment(&[], &[("app", "db")]))),
            ["spec.selector"]
        );
    }

    #[test]
    fn deployment_strategy_and_counts() {
        let mut d = deployment(&[("app", "web")], &[("app", "web")]);
        {
            let s = &mut d.spec;
            s.replicas = Some(-1);
            s.strategy = Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::String("0%".into())),
                }),
            });
            if let Some(p) = s.template.spec.as_mut() {
                p.restart_policy = Some("Never".into());
            }
        }
        assert_eq!(
            fields(&validate_deployment(&d)),
            [
                "spec.template.spec.restartPolicy",
                "spec.replicas",
                "spec.strategy.rollingUpdate.maxUnavailable"
            ]
        );
    }

    #[test]
    fn deployment_selector_is_immutable() {
        let old = deployment(&[("app", "web")], &[("app", "web"), ("v", "2")]);
        let new = deployment(&[("app", "web"), ("v", "2")], &[("app", "web"), ("v", "2")]);
        assert_eq!(
            fields(&validate_deployment_update(&old, &new)),
            ["spec.selector"]
        );
    }

    #[test]
    fn replica_set_requires_template() {
        let rs = ReplicaSet {
            spec: k8s_openapi::api::apps::v1::ReplicaSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels(&[("a", "b")])),
                    ..LabelSelector::default()
                },
                ..Default::default()
            },
            ..ReplicaSet::default()
        };
        assert_eq!(fields(&validate_replica_set(&rs)), ["spec.template"]);
    }

    #[test]
    fn object_meta_rules() {
        let meta = ObjectMeta {
            name: Some("Web".into()),
            namespace: Some("default".into()),
            labels: Some(labels(&[("app", "bad value")])),
            annotations: Some(labels(&[("ok/key", &"x".repeat(ANNOTATIONS_MAX_BYTES))])),
            ..ObjectMeta::default()
        };
        assert_eq!(
            fields(&validate_object_meta(&meta, true, NameRule::Dns1035Label)),
            ["metadata.name", "metadata.labels", "metadata.annotations"]
        );
        let meta = ObjectMeta::default();
        assert_eq!(
            validate_object_meta(&meta, true, NameRule::Dns1123Subdomain)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value"
            ]
        );
        let meta = ObjectMeta {
            name: Some("n1".into()),
            namespace: Some("x".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            fields(&validate_object_meta(
                &meta,
                false,
                NameRule::Dns1123Subdomain
            )),
            ["metadata.namespace"]
        );
    }

    #[test]
    fn namespace_mismatch_message() {
        assert_eq!(namespace_mismatch("a", None), None);
        assert_eq!(namespace_mismatch("a", Some("a")), None);
        assert!(
            namespace_mismatch("a", Some("b"))
                .is_some_and(|m| m.contains("(b)") && m.contains("(a)"))
        );
    }

    #[test]
    fn node_cidrs_and_taints() {
        let node = Node {
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.1.0/24".into()),
                pod_cidrs: Some(vec!["10.244.2.0/24".into(), "bogus".into()]),
                taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                    key: "k".into(),
                    effect: "Sometimes".into(),
                    ..Default::default()
                }]),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        assert_eq!(
            fields(&validate_node(&node)),
            [
                "spec.podCIDRs[1]",
                "spec.podCIDRs[0]",
                "spec.taints[0].effect"
            ]
        );
        let old = Node {
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["10.244.1.0/24".into()]),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        let new = Node {
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["10.244.9.0/24".into()]),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        assert_eq!(fields(&validate_node_update(&old, &new)), ["spec.podCIDRs"]);
        assert!(validate_node_update(&Node::default(), &new).is_empty());
    }

    #[test]
    fn endpoint_slice_addresses_follow_type() {
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                Endpoint {
                    addresses: vec!["10.0.0.1".into(), "fe80::1".into()],
                    ..Endpoint::default()
                },
                Endpoint::default(),
            ]),
            ports: Some(vec![
                EndpointPort {
                    port: Some(0),
                    ..EndpointPort::default()
                },
                EndpointPort::default(),
            ]),
            ..EndpointSlice::default()
        };
        assert_eq!(
            fields(&validate_endpoint_slice(&slice)),
            [
                "endpoints[0].addresses[1]",
                "endpoints[1].addresses",
                "ports[0].port",
                "ports[1].name"
            ]
        );
    }

    #[test]
    fn joined_messages() {
        let a = FieldError::required("spec.a", "");
        let b = FieldError::forbidden("spec.b", "no");
        assert_eq!(
            join_errors(std::slice::from_ref(&a)),
            "spec.a: Required value"
        );
        assert_eq!(
            join_errors(&[a, b]),
            "[spec.a: Required value, spec.b: Forbidden: no]"
        );
    }
}

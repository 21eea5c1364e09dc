//! The registry of object kinds the API serves.
//!
//! Each [`KindInfo`] says where a kind lives in the REST API (group, version,
//! plural, scope), how discovery describes it (singular, short names,
//! subresources), where its objects are kept in the store, and how a body is
//! decoded, defaulted and validated, through the k8s-openapi type of the
//! kind. The API handlers are written once against this registry; adding a
//! kind (DaemonSet, Job, StatefulSet, ...) is one [`Kinds::builtin`] entry:
//!
//! ```ignore
//! KindInfo::builder::<DaemonSet>()
//!     .short_names(&["ds"])
//!     .status_subresource()
//!     .validate(validation::validate_daemon_set)
//!     .build(),
//! ```
//!
//! Objects are stored as the JSON of their typed form (unknown fields
//! pruned, as Kubernetes does) under `/registry/{plural}/{namespace}/{name}`
//! or, for cluster-scoped kinds, `/registry/{plural}/{name}`. The
//! `resourceVersion` is not stored: it is the key's mod revision, filled in
//! on every read.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, NamespaceResourceScope, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::defaults;
use crate::api::deletion::Propagation;
use crate::validation::{self, FieldError, NameRule};

/// Key prefix under which all API objects are stored.
pub const REGISTRY_PREFIX: &str = "/registry";

/// A body that does not decode into the kind's typed schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} in version {version:?} cannot be handled as a {kind}: {path}{message}")]
pub struct DecodeError {
    /// The kind being decoded.
    pub kind: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Path of the offending field followed by ": " (empty at the top level).
    pub path: String,
    /// What the decoder said.
    pub message: String,
}

/// A decoded body: the object in its canonical (typed, defaulted) JSON form.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The canonical JSON of the object.
    pub value: Value,
    /// Paths of fields the typed schema does not know (they were dropped).
    pub unknown_fields: Vec<String>,
}

/// Per-kind operations that need the typed form. Implemented once,
/// generically, by [`Typed`].
trait KindOps: Send + Sync {
    fn decode(&self, kind: &KindInfo, value: Value) -> Result<Decoded, DecodeError>;
    fn prepare_create(&self, kind: &KindInfo, value: Value) -> Result<Value, DecodeError>;
    fn validate(&self, kind: &KindInfo, value: &Value) -> Vec<FieldError>;
    fn validate_update(&self, kind: &KindInfo, old: &Value, new: &Value) -> Vec<FieldError>;
}

type ValidateFn<K> = fn(&K) -> Vec<FieldError>;
type PrepareFn<K> = fn(&mut K);
type ValidateUpdateFn<K> = fn(&K, &K) -> Vec<FieldError>;

struct Typed<K> {
    default: fn(&mut K),
    prepare_create: Option<PrepareFn<K>>,
    validate: ValidateFn<K>,
    validate_update: Option<ValidateUpdateFn<K>>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Typed<K>
where
    K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize,
{
    fn typed(&self, kind: &KindInfo, value: &Value) -> Result<K, DecodeError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            DecodeError {
                kind: kind.kind,
                version: kind.version,
                path: if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    fn to_value(&self, kind: &KindInfo, object: &K) -> Result<Value, DecodeError> {
        serde_json::to_value(object).map_err(|e| DecodeError {
            kind: kind.kind,
            version: kind.version,
            path: String::new(),
            message: e.to_string(),
        })
    }
}

impl<K> KindOps for Typed<K>
where
    K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize,
{
    fn decode(&self, kind: &KindInfo, value: Value) -> Result<Decoded, DecodeError> {
        let mut object = self.typed(kind, &value)?;
        (self.default)(&mut object);
        let canonical = self.to_value(kind, &object)?;
        let mut unknown_fields = Vec::new();
        find_dropped_fields(&value, &canonical, "", &mut unknown_fields);
        Ok(Decoded {
            value: canonical,
            unknown_fields,
        })
    }

    fn prepare_create(&self, kind: &KindInfo, value: Value) -> Result<Value, DecodeError> {
        let Some(prepare) = self.prepare_create else {
            return Ok(value);
        };
        let mut object = self.typed(kind, &value)?;
        prepare(&mut object);
        self.to_value(kind, &object)
    }

    fn validate(&self, kind: &KindInfo, value: &Value) -> Vec<FieldError> {
        match self.typed(kind, value) {
            Ok(object) => {
                let mut errors = validation::validate_object_meta(
                    object.metadata(),
                    kind.namespaced,
                    kind.name_rule,
                );
                errors.extend((self.validate)(&object));
                errors
            }
            Err(e) => vec![FieldError::invalid("", "", e.to_string())],
        }
    }

    fn validate_update(&self, kind: &KindInfo, old: &Value, new: &Value) -> Vec<FieldError> {
        let Some(validate_update) = self.validate_update else {
            return self.validate(kind, new);
        };
        match (self.typed(kind, old), self.typed(kind, new)) {
            (Ok(old), Ok(new)) => {
                let mut errors = validation::validate_object_meta(
                    new.metadata(),
                    kind.namespaced,
                    kind.name_rule,
                );
                errors.extend(validate_update(&old, &new));
                errors
            }
            (Err(e), _) | (_, Err(e)) => vec![FieldError::invalid("", "", e.to_string())],
        }
    }
}

/// Collects paths present (non-null) in `original` but missing from
/// `canonical`: the fields the typed schema did not know.
fn find_dropped_fields(original: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
    match (original, canonical) {
        (Value::Object(o), Value::Object(c)) => {
            for (key, value) in o {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match c.get(key) {
                    Some(cv) => find_dropped_fields(value, cv, &child, out),
                    None if !value.is_null() => out.push(child),
                    None => {}
                }
            }
        }
        (Value::Array(o), Value::Array(c)) => {
            for (i, (ov, cv)) in o.iter().zip(c).enumerate() {
                find_dropped_fields(ov, cv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// What happens to `.status` when an object is created.
#[derive(Clone, Debug, PartialEq)]
pub enum StatusOnCreate {
    /// Keep what the client sent (Node: the agent registers with a status).
    Keep,
    /// Replace it with this value (Pod: `{"phase":"Pending"}`).
    Reset(Value),
    /// The kind has no status.
    None,
}

/// Everything the API needs to know about one kind.
pub struct KindInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Resource name in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// Lowercase singular, e.g. `deployment`.
    pub singular: String,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` include it).
    pub categories: &'static [&'static str],
    /// Rule for `metadata.name`.
    pub name_rule: NameRule,
    /// Whether `{plural}/status` exists; then a main-resource update keeps
    /// the stored status and the status subresource changes only status.
    pub status_subresource: bool,
    /// Whether `{plural}/scale` exists (`spec.replicas`, `status.replicas`,
    /// `spec.selector`).
    pub scale_subresource: bool,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub extra_field_selectors: &'static [&'static str],
    /// Status handling on create.
    pub status_on_create: StatusOnCreate,
    /// Propagation of a DELETE that names none (Background, except batch/v1
    /// Jobs: Orphan, as in Kubernetes).
    pub default_propagation: Propagation,
    ops: Box<dyn KindOps>,
}

impl fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .field("namespaced", &self.namespaced)
            .finish_non_exhaustive()
    }
}

/// Two entries are the same kind when group, version and kind agree.
impl PartialEq for KindInfo {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.version == other.version && self.kind == other.kind
    }
}

impl KindInfo {
    /// Starts an entry for the k8s-openapi type `K`: group, version, kind,
    /// plural and scope come from the type.
    pub fn builder<K>() -> KindBuilder<K>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize + 'static,
        K::Scope: 'static,
    {
        KindBuilder {
            short_names: &[],
            categories: &[],
            name_rule: NameRule::Dns1123Subdomain,
            status_subresource: false,
            scale_subresource: false,
            extra_field_selectors: &[],
            status_on_create: StatusOnCreate::None,
            default_propagation: Propagation::Background,
            default: |_| {},
            prepare_create: None,
            validate: |_| Vec::new(),
            validate_update: None,
            _kind: PhantomData,
        }
    }

    /// `apiVersion` of the kind: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of the list type, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural` or `plural.group`, as Kubernetes names a resource in
    /// messages (`deployments.apps "web" not found`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Store key of one object. `namespace` is ignored for cluster-scoped
    /// kinds.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{REGISTRY_PREFIX}/{}/{ns}/{name}", self.plural),
            _ => format!("{REGISTRY_PREFIX}/{}/{name}", self.plural),
        }
    }

    /// Store key prefix of a collection: one namespace's objects or (with
    /// `None`, or for cluster-scoped kinds) all of them. Ends with `/` so
    /// that `default` does not also match `default-2`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{REGISTRY_PREFIX}/{}/{ns}/", self.plural),
            _ => format!("{REGISTRY_PREFIX}/{}/", self.plural),
        }
    }

    /// Whether this entry describes the k8s-openapi type `K`.
    pub fn is<K: Resource>(&self) -> bool {
        self.group == K::GROUP && self.kind == K::KIND
    }

    /// Field selectors this kind supports.
    pub fn field_selectors(&self) -> impl Iterator<Item = &'static str> + '_ {
        ["metadata.name", "metadata.namespace"]
            .into_iter()
            .chain(self.extra_field_selectors.iter().copied())
    }

    /// Decodes `value` through the typed schema and applies defaults.
    ///
    /// # Errors
    /// [`DecodeError`] names the field that does not fit the schema.
    pub fn decode(&self, value: Value) -> Result<Decoded, DecodeError> {
        self.ops.decode(self, value)
    }

    /// The kind's own preparation of a new object, after the server set its
    /// metadata (uid, creationTimestamp) and before validation (Jobs:
    /// the generated selector).
    ///
    /// # Errors
    /// [`DecodeError`] if the object does not fit the typed schema.
    pub fn prepare_create(&self, value: Value) -> Result<Value, DecodeError> {
        self.ops.prepare_create(self, value)
    }

    /// Validates a (decoded) object for create.
    pub fn validate(&self, value: &Value) -> Vec<FieldError> {
        self.ops.validate(self, value)
    }

    /// Validates a (decoded) object replacing `old`.
    pub fn validate_update(&self, old: &Value, new: &Value) -> Vec<FieldError> {
        self.ops.validate_update(self, old, new)
    }
}

/// Builds a [`KindInfo`] for the k8s-openapi type `K`.
pub struct KindBuilder<K> {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    name_rule: NameRule,
    status_subresource: bool,
    scale_subresource: bool,
    extra_field_selectors: &'static [&'static str],
    status_on_create: StatusOnCreate,
    default_propagation: Propagation,
    default: fn(&mut K),
    prepare_create: Option<PrepareFn<K>>,
    validate: ValidateFn<K>,
    validate_update: Option<ValidateUpdateFn<K>>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> KindBuilder<K>
where
    K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize + 'static,
    K::Scope: 'static,
{
    /// kubectl short names.
    pub fn short_names(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    /// Discovery categories.
    pub fn categories(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }

    /// The `metadata.name` rule (default: DNS-1123 subdomain).
    pub fn name_rule(mut self, rule: NameRule) -> Self {
        self.name_rule = rule;
        self
    }

    /// Serves `{plural}/status`; `on_create` says what create does to status.
    pub fn status_subresource(mut self, on_create: StatusOnCreate) -> Self {
        self.status_subresource = true;
        self.status_on_create = on_create;
        self
    }

    /// Serves `{plural}/scale`.
    pub fn scale_subresource(mut self) -> Self {
        self.scale_subresource = true;
        self
    }

    /// Field selectors beyond name and namespace.
    pub fn field_selectors(mut self, fields: &'static [&'static str]) -> Self {
        self.extra_field_selectors = fields;
        self
    }

    /// Propagation of a DELETE that names none (default: Background).
    pub fn default_propagation(mut self, policy: Propagation) -> Self {
        self.default_propagation = policy;
        self
    }

    /// Defaulting applied on every decode (create, update, patch).
    pub fn default(mut self, default: fn(&mut K)) -> Self {
        self.default = default;
        self
    }

    /// Preparation of a new object once the server set its metadata
    /// (runs on create only, before validation).
    pub fn prepare_create(mut self, prepare: PrepareFn<K>) -> Self {
        self.prepare_create = Some(prepare);
        self
    }

    /// Kind-specific validation (metadata is always validated).
    pub fn validate(mut self, validate: ValidateFn<K>) -> Self {
        self.validate = validate;
        self
    }

    /// Kind-specific update validation (defaults to create validation).
    pub fn validate_update(mut self, validate_update: ValidateUpdateFn<K>) -> Self {
        self.validate_update = Some(validate_update);
        self
    }

    /// The finished entry.
    pub fn build(self) -> KindInfo {
        KindInfo {
            group: K::GROUP,
            version: K::VERSION,
            kind: K::KIND,
            plural: K::URL_PATH_SEGMENT,
            singular: K::KIND.to_ascii_lowercase(),
            namespaced: is_namespaced::<K>(),
            short_names: self.short_names,
            categories: self.categories,
            name_rule: self.name_rule,
            status_subresource: self.status_subresource,
            scale_subresource: self.scale_subresource,
            extra_field_selectors: self.extra_field_selectors,
            status_on_create: self.status_on_create,
            default_propagation: self.default_propagation,
            ops: Box::new(Typed {
                default: self.default,
                prepare_create: self.prepare_create,
                validate: self.validate,
                validate_update: self.validate_update,
                _kind: PhantomData,
            }),
        }
    }
}

fn is_namespaced<K: Resource>() -> bool
where
    K::Scope: 'static,
{
    std::any::TypeId::of::<K::Scope>() == std::any::TypeId::of::<NamespaceResourceScope>()
}

/// The set of kinds the API serves.
#[derive(Clone, Debug)]
pub struct Kinds {
    all: Vec<Arc<KindInfo>>,
}

/// One API group/version and the kinds in it, for discovery.
#[derive(Clone, Debug)]
pub struct GroupVersion<'a> {
    /// Group name; empty for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kinds served in it.
    pub kinds: Vec<&'a Arc<KindInfo>>,
}

impl Kinds {
    /// The kinds Skiff serves: Namespace, Node, Pod, Service, Event,
    /// ConfigMap, Secret (core/v1), EndpointSlice (discovery.k8s.io/v1),
    /// ReplicaSet, Deployment, DaemonSet, StatefulSet (apps/v1), Job
    /// (batch/v1) and Lease (coordination.k8s.io/v1).
    pub fn builtin() -> Self {
        Kinds::new(vec![
            KindInfo::builder::<Namespace>()
                .short_names(&["ns"])
                .name_rule(NameRule::Dns1123Label)
                .status_subresource(StatusOnCreate::Reset(
                    serde_json::json!({"phase": "Active"}),
                ))
                .field_selectors(&["status.phase"])
                .validate(validation::validate_namespace)
                .build(),
            KindInfo::builder::<Node>()
                .short_names(&["no"])
                .status_subresource(StatusOnCreate::Keep)
                .field_selectors(&["spec.unschedulable"])
                .validate(validation::validate_node)
                .validate_update(validation::validate_node_update)
                .build(),
            KindInfo::builder::<Pod>()
                .short_names(&["po"])
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(
                    serde_json::json!({"phase": "Pending"}),
                ))
                .field_selectors(&[
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "status.phase",
                    "status.podIP",
                ])
                .default(defaults::default_pod)
                .validate(validation::validate_pod)
                .validate_update(validation::validate_pod_update)
                .build(),
            KindInfo::builder::<Service>()
                .short_names(&["svc"])
                .categories(&["all"])
                .name_rule(NameRule::Dns1035Label)
                .status_subresource(StatusOnCreate::Reset(
                    serde_json::json!({"loadBalancer": {}}),
                ))
                .field_selectors(&["spec.clusterIP", "spec.type"])
                .default(defaults::default_service)
                .validate(validation::validate_service)
                .validate_update(validation::validate_service_update)
                .build(),
            KindInfo::builder::<Event>()
                .short_names(&["ev"])
                .field_selectors(&[
                    "involvedObject.kind",
                    "involvedObject.namespace",
                    "involvedObject.name",
                    "involvedObject.uid",
                    "reason",
                    "type",
                ])
                .validate(validation::validate_event)
                .build(),
            KindInfo::builder::<ConfigMap>()
                .short_names(&["cm"])
                .validate(validation::validate_config_map)
                .validate_update(validation::validate_config_map_update)
                .build(),
            KindInfo::builder::<Secret>()
                .field_selectors(&["type"])
                .default(defaults::default_secret)
                .validate(validation::validate_secret)
                .validate_update(validation::validate_secret_update)
                .build(),
            KindInfo::builder::<EndpointSlice>()
                .default(defaults::default_endpoint_slice)
                .validate(validation::validate_endpoint_slice)
                .build(),
            KindInfo::builder::<ReplicaSet>()
                .short_names(&["rs"])
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(serde_json::json!({"replicas": 0})))
                .scale_subresource()
                .default(defaults::default_replica_set)
                .validate(validation::validate_replica_set)
                .validate_update(validation::validate_replica_set_update)
                .build(),
            KindInfo::builder::<Deployment>()
                .short_names(&["deploy"])
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(serde_json::json!({})))
                .scale_subresource()
                .default(defaults::default_deployment)
                .validate(validation::validate_deployment)
                .validate_update(validation::validate_deployment_update)
                .build(),
            KindInfo::builder::<DaemonSet>()
                .short_names(&["ds"])
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(serde_json::json!({
                    "currentNumberScheduled": 0,
                    "desiredNumberScheduled": 0,
                    "numberMisscheduled": 0,
                    "numberReady": 0,
                })))
                .default(defaults::default_daemon_set)
                .validate(validation::validate_daemon_set)
                .validate_update(validation::validate_daemon_set_update)
                .build(),
            KindInfo::builder::<StatefulSet>()
                .short_names(&["sts"])
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(serde_json::json!({"replicas": 0})))
                .scale_subresource()
                .default(defaults::default_stateful_set)
                .validate(validation::validate_stateful_set)
                .validate_update(validation::validate_stateful_set_update)
                .build(),
            KindInfo::builder::<Job>()
                .categories(&["all"])
                .status_subresource(StatusOnCreate::Reset(serde_json::json!({})))
                .field_selectors(&["status.successful"])
                .default_propagation(Propagation::Orphan)
                .default(defaults::default_job)
                .prepare_create(defaults::generate_job_selector)
                .validate(validation::validate_job)
                .validate_update(validation::validate_job_update)
                .build(),
            KindInfo::builder::<Lease>()
                .validate(validation::validate_lease)
                .build(),
        ])
    }

    /// A registry of exactly these kinds.
    pub fn new(kinds: Vec<KindInfo>) -> Self {
        Kinds {
            all: kinds.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every kind, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<KindInfo>> {
        self.all.iter()
    }

    /// The kind served at `/{group}/{version}/{plural}`.
    pub fn by_resource(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<KindInfo>> {
        self.all
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// The kind with this group and kind name.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&Arc<KindInfo>> {
        self.all.iter().find(|k| k.group == group && k.kind == kind)
    }

    /// The registry entry of the k8s-openapi type `K`.
    pub fn of<K: Resource>(&self) -> Option<&Arc<KindInfo>> {
        self.by_kind(K::GROUP, K::KIND)
    }

    /// Group/versions served, core first, then named groups by name.
    pub fn group_versions(&self) -> Vec<GroupVersion<'_>> {
        let keys: BTreeSet<(bool, &'static str, &'static str)> = self
            .all
            .iter()
            .map(|k| (!k.group.is_empty(), k.group, k.version))
            .collect();
        keys.into_iter()
            .map(|(_, group, version)| GroupVersion {
                group,
                version,
                kinds: self
                    .all
                    .iter()
                    .filter(|k| k.group == group && k.version == version)
                    .collect(),
            })
            .collect()
    }

    /// Whether any kind is served in `group`/`version`.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.all
            .iter()
            .any(|k| k.group == group && k.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_kinds_have_kubernetes_coordinates() {
        let kinds = Kinds::builtin();
        let deploy = kinds
            .by_resource("apps", "v1", "deployments")
            .expect("deployments");
        assert_eq!(deploy.kind, "Deployment");
        assert_eq!(deploy.api_version(), "apps/v1");
        assert!(deploy.namespaced && deploy.scale_subresource && deploy.status_subresource);
        assert_eq!(deploy.short_names, ["deploy"]);
        let node = kinds.of::<Node>().expect("nodes");
        assert!(!node.namespaced);
        assert_eq!(node.key(Some("ignored"), "n1"), "/registry/nodes/n1");
        let slices = kinds
            .by_resource("discovery.k8s.io", "v1", "endpointslices")
            .expect("slices");
        assert_eq!(
            slices.qualified_resource(),
            "endpointslices.discovery.k8s.io"
        );
        let pods = kinds.of::<Pod>().expect("pods");
        assert_eq!(pods.key(Some("default"), "p"), "/registry/pods/default/p");
        assert_eq!(pods.prefix(Some("default")), "/registry/pods/default/");
        assert_eq!(pods.prefix(None), "/registry/pods/");
        assert_eq!(pods.list_kind(), "PodList");
        assert!(pods.field_selectors().any(|f| f == "spec.nodeName"));
        assert!(pods.is::<Pod>() && !pods.is::<Service>());
    }

    #[test]
    fn group_versions_core_first() {
        let kinds = Kinds::builtin();
        let gvs: Vec<(&str, &str)> = kinds
            .group_versions()
            .iter()
            .map(|g| (g.group, g.version))
            .collect();
        assert_eq!(
            gvs,
            [
                ("", "v1"),
                ("apps", "v1"),
                ("batch", "v1"),
                ("coordination.k8s.io", "v1"),
                ("discovery.k8s.io", "v1")
            ]
        );
        assert!(kinds.serves("batch", "v1") && !kinds.serves("batch", "v2"));
    }

    #[test]
    fn decode_reports_path_of_type_errors() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let err = pods
            .decode(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}
            }))
            .expect_err("string port must fail");
        assert_eq!(err.path, "spec.containers[0].ports[0].containerPort: ");
        assert!(
            err.to_string()
                .starts_with("Pod in version \"v1\" cannot be handled as a Pod: spec.containers")
        );
    }

    #[test]
    fn decode_prunes_and_reports_unknown_fields_and_applies_defaults() {
        let kinds = Kinds::builtin();
        let services = kinds.of::<Service>().expect("services");
        let decoded = services
            .decode(json!({
                "metadata": {"name": "web", "bogus": 1},
                "spec": {"ports": [{"port": 80}], "magic": true, "nothing": null}
            }))
            .expect("decodes");
        assert_eq!(decoded.unknown_fields, ["metadata.bogus", "spec.magic"]);
        assert_eq!(decoded.value["spec"].get("magic"), None);
        assert_eq!(decoded.value["apiVersion"], "v1");
        assert_eq!(decoded.value["kind"], "Service");
        assert_eq!(decoded.value["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(decoded.value["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(decoded.value["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn validation_runs_meta_and_kind_rules() {
        let kinds = Kinds::builtin();
        let services = kinds.of::<Service>().expect("services");
        let value = services
            .decode(json!({
                "metadata": {"name": "Web", "namespace": "default"},
                "spec": {"ports": [{"port": 70000}]}
            }))
            .expect("decodes")
            .value;
        let fields: Vec<String> = services
            .validate(&value)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.ports[0].port",
                "spec.ports[0].targetPort"
            ]
        );
    }
}

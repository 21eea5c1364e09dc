//! The object layer between HTTP and the store: get, list, create, update,
//! patch, delete (with namespace cascade), the status, scale and binding
//! subresources, written once for every kind in the registry.
//!
//! Writes are read-modify-write loops over conditional store writes (what
//! Kubernetes calls GuaranteedUpdate): a write based on a stale read is
//! retried from a fresh read unless the client pinned a resourceVersion,
//! in which case it gets `409 Conflict`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use serde_json::{Value, json};

use super::allocation::{
    AllocationError, Allocations, Change, Held, carry_service_allocations, node_holdings,
    service_holdings,
};
use super::error::ApiError;
use super::meta::{self, CreateStamp};
use super::patch::{self, PatchKind};
use super::query::{FieldValidation, ObjectFilter};
use super::watch::object_of;
use crate::kinds::{KindInfo, Kinds};
use crate::selector::Selector;
use crate::store::{KeyValue, Revision, Store, StoreError};
use crate::validation::{self, FieldError};

/// Attempts of one read-modify-write before reporting a conflict.
const MAX_UPDATE_ATTEMPTS: usize = 16;
/// Attempts to find a free `generateName` name.
const MAX_GENERATE_ATTEMPTS: usize = 8;
/// Passes over a terminating namespace's contents before giving up.
const MAX_NAMESPACE_PASSES: usize = 5;
/// Namespaces that always exist and may not be deleted.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself (status kept for kinds with a status subresource).
    Main,
    /// `/status`: only `.status` changes.
    Status,
    /// `/scale`: only `spec.replicas` changes.
    Scale,
    /// `/binding` (pods): only `spec.nodeName` is set.
    Binding,
}

/// Options of a write request.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// How unknown fields are treated.
    pub field_validation: FieldValidation,
}

/// The result of a write.
#[derive(Clone, Debug)]
pub struct Written {
    /// The object as stored, with its resourceVersion.
    pub object: Value,
    /// Warnings for the client (`Warning` headers), e.g. unknown fields.
    pub warnings: Vec<String>,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The object must have this uid.
    pub uid: Option<String>,
    /// The object must be at this resourceVersion.
    pub resource_version: Option<Revision>,
}

/// The object layer. Cheap to share behind an `Arc`.
pub struct Resources {
    store: Arc<dyn Store>,
    kinds: Kinds,
    allocations: Allocations,
}

fn decode_kv(kind: &KindInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    object_of(kv).map_err(|e| {
        ApiError::Internal(format!(
            "stored {} at {} is not valid JSON: {e}",
            kind.kind, kv.key
        ))
    })
}

fn to_bytes(object: &Value) -> Result<Vec<u8>, ApiError> {
    let mut stored = object.clone();
    meta::clear_resource_version(&mut stored);
    serde_json::to_vec(&stored)
        .map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))
}

fn typed<T: serde::de::DeserializeOwned>(object: &Value) -> Result<T, ApiError> {
    serde_json::from_value(object.clone())
        .map_err(|e| ApiError::Internal(format!("decoded object does not fit its type: {e}")))
}

fn untyped<T: serde::Serialize>(object: &T) -> Result<Value, ApiError> {
    serde_json::to_value(object)
        .map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn unknown_field_warnings(
    kind: &KindInfo,
    unknown: &[String],
    validation: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match validation {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect()),
        FieldValidation::Strict => {
            let listed: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                kind.kind,
                kind.version,
                kind.kind,
                listed.join(", ")
            )))
        }
    }
}

impl Resources {
    /// The object layer over `store` serving `kinds`.
    pub fn new(store: Arc<dyn Store>, kinds: Kinds, allocations: Allocations) -> Self {
        Resources {
            store,
            kinds,
            allocations,
        }
    }

    /// The kinds served.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The allocator state.
    pub fn allocations(&self) -> &Allocations {
        &self.allocations
    }

    fn namespace_kind(&self) -> Result<&Arc<KindInfo>, ApiError> {
        self.kinds
            .of::<Namespace>()
            .ok_or_else(|| ApiError::Internal("the Namespace kind is not registered".to_owned()))
    }

    /// Reads one object.
    ///
    /// # Errors
    /// 404 if absent.
    pub async fn get(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (kv, _) = self.store.get(&kind.key(namespace, name)).await?;
        match kv {
            Some(kv) => decode_kv(kind, &kv),
            None => Err(ApiError::not_found(kind, name)),
        }
    }

    /// Lists objects (one namespace, or all) passing `filter`, with the
    /// store revision the list was read at.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        filter: &ObjectFilter,
    ) -> Result<(Vec<Value>, Revision), ApiError> {
        let (kvs, revision) = self.store.list(&kind.prefix(namespace)).await?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let object = decode_kv(kind, kv)?;
            if filter.matches(&object) {
                items.push(object);
            }
        }
        Ok((items, revision))
    }

    async fn check_namespace_open(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let ns_kind = self.namespace_kind()?;
        let ns = self.get(ns_kind, None, namespace).await?;
        if ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(ApiError::Forbidden {
                message: format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    kind.qualified_resource()
                ),
                subject: Some(super::error::Subject::resource(kind, name)),
            });
        }
        Ok(())
    }

    /// Allocation for Services and Nodes; nothing for other kinds.
    async fn allocate(
        &self,
        kind: &KindInfo,
        name: &str,
        old: Option<&Value>,
        new: Value,
    ) -> Result<(Value, Change), ApiError> {
        let invalid = |e: AllocationError| match e {
            AllocationError::Invalid(errors) => ApiError::invalid(kind, name, errors),
            other => ApiError::from(other),
        };
        if kind.is::<Service>() {
            let old: Option<Service> = old.map(typed).transpose()?;
            let (service, change) = self
                .allocations
                .allocate_service(old.as_ref(), &typed(&new)?)
                .await
                .map_err(invalid)?;
            Ok((untyped(&service)?, change))
        } else if kind.is::<Node>() {
            let old: Option<Node> = old.map(typed).transpose()?;
            let (node, change) = self
                .allocations
                .allocate_node(old.as_ref(), &typed(&new)?)
                .await
                .map_err(invalid)?;
            Ok((untyped(&node)?, change))
        } else {
            Ok((new, Change::default()))
        }
    }

    fn holdings(&self, kind: &KindInfo, object: &Value) -> Held {
        if kind.is::<Service>() {
            serde_json::from_value::<Service>(object.clone())
                .map(|s| service_holdings(&s))
                .unwrap_or_default()
        } else if kind.is::<Node>() {
            serde_json::from_value::<Node>(object.clone())
                .map(|n| node_holdings(&n))
                .unwrap_or_default()
        } else {
            Held::default()
        }
    }

    /// Creates an object from a request body.
    ///
    /// # Errors
    /// 400 (malformed, namespace mismatch), 404 (namespace missing), 403
    /// (namespace terminating), 409 (exists), 422 (invalid).
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, namespace))]
    pub async fn create(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        mut body: Value,
        options: WriteOptions,
    ) -> Result<Written, ApiError> {
        meta::apply_type_meta(kind, &mut body).map_err(ApiError::BadRequest)?;
        if kind.namespaced {
            let Some(ns) = namespace else {
                return Err(ApiError::MethodNotAllowed);
            };
            if let Some(message) = validation::namespace_mismatch(ns, meta::namespace_of(&body)) {
                return Err(ApiError::BadRequest(message));
            }
            meta::metadata_mut(&mut body).insert("namespace".into(), Value::from(ns));
        }
        if meta::meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate = meta::name_of(&body)
            .is_empty()
            .then(|| meta::meta_str(&body, "generateName").map(str::to_owned))
            .flatten()
            .filter(|prefix| !prefix.is_empty());
        let attempts = if generate.is_some() {
            MAX_GENERATE_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let mut candidate = body.clone();
            if let Some(prefix) = &generate {
                let name = meta::generated_name(prefix, uuid::Uuid::new_v4().as_bytes());
                meta::metadata_mut(&mut candidate).insert("name".into(), Value::from(name));
            }
            match self.create_once(kind, namespace, candidate, options).await {
                Err(e @ ApiError::AlreadyExists { .. }) if generate.is_some() => {
                    last_error = Some(e)
                }
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| ApiError::Internal("name generation failed".to_owned())))
    }

    async fn create_once(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        body: Value,
        options: WriteOptions,
    ) -> Result<Written, ApiError> {
        let name = meta::name_of(&body).to_owned();
        let decoded = kind
            .decode(body)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let warnings =
            unknown_field_warnings(kind, &decoded.unknown_fields, options.field_validation)?;
        let mut object = decoded.value;
        meta::prepare_create(
            kind,
            &mut object,
            &CreateStamp {
                uid: uuid::Uuid::new_v4().to_string(),
                timestamp: now_rfc3339(),
            },
        );
        let errors = kind.validate(&object);
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, &name, errors));
        }
        if let (true, Some(ns)) = (kind.namespaced, namespace) {
            self.check_namespace_open(kind, ns, &name).await?;
        }
        let (object, change) = self.allocate(kind, &name, None, object).await?;
        let key = kind.key(namespace, &name);
        let bytes = to_bytes(&object)?;
        match self.store.create(&key, bytes).await {
            Ok(revision) => {
                self.allocations.commit(change).await;
                let mut object = object;
                meta::set_resource_version(&mut object, revision);
                tracing::debug!(
                    kind = kind.kind,
                    namespace,
                    name = name.as_str(),
                    revision,
                    "created"
                );
                Ok(Written { object, warnings })
            }
            Err(error) => {
                self.allocations.abort(change).await;
                Err(ApiError::from_store(kind, &name, error))
            }
        }
    }

    /// Replaces an object (PUT), or its status (`Subresource::Status`).
    ///
    /// # Errors
    /// 404, 409 (stale resourceVersion), 400, 422.
    pub async fn update(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        subresource: Subresource,
        options: WriteOptions,
    ) -> Result<Written, ApiError> {
        self.guaranteed_update(kind, namespace, name, subresource, options, |_| {
            Ok(body.clone())
        })
        .await
    }

    /// Patches an object or its status.
    ///
    /// # Errors
    /// As [`update`](Self::update); 400 when the patch does not apply.
    pub async fn patch(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        request: &PatchRequest,
        subresource: Subresource,
        options: WriteOptions,
    ) -> Result<Written, ApiError> {
        self.guaranteed_update(kind, namespace, name, subresource, options, |current| {
            patch::apply(request.kind, current, &request.body)
        })
        .await
    }

    /// The read-modify-write loop behind every update. `mutate` gets the
    /// current object (with its resourceVersion) and returns the desired
    /// one; a resourceVersion in the desired object is a precondition.
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, namespace, name, ?subresource))]
    async fn guaranteed_update(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: Subresource,
        options: WriteOptions,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let key = kind.key(namespace, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found(kind, name));
            };
            let current = decode_kv(kind, &kv)?;
            let desired = mutate(&current)?;
            match meta::requested_resource_version(&desired) {
                Ok(Some(rv)) if rv != kv.mod_revision => {
                    return Err(ApiError::conflict(kind, name));
                }
                Ok(_) => {}
                Err(bad) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid resourceVersion {bad:?}: must be an integer"
                    )));
                }
            }
            let (new, warnings) = self.prepare_replacement(
                kind,
                namespace,
                name,
                &current,
                desired,
                subresource,
                options,
            )?;
            let (mut new, change) = if subresource == Subresource::Main {
                self.allocate(kind, name, Some(&current), new).await?
            } else {
                (new, Change::default())
            };
            if meta::same_object(&current, &new) {
                // Kubernetes writes nothing for a no-op update, so the
                // resourceVersion does not move and watchers see nothing.
                self.allocations.abort(change).await;
                return Ok(Written {
                    object: current,
                    warnings,
                });
            }
            match self
                .store
                .update(&key, to_bytes(&new)?, Some(kv.mod_revision))
                .await
            {
                Ok(revision) => {
                    self.allocations.commit(change).await;
                    meta::set_resource_version(&mut new, revision);
                    tracing::debug!(
                        kind = kind.kind,
                        namespace,
                        name,
                        revision,
                        ?subresource,
                        "updated"
                    );
                    return Ok(Written {
                        object: new,
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    self.allocations.abort(change).await;
                    tracing::debug!(kind = kind.kind, name, "stale read; retrying update");
                }
                Err(error) => {
                    self.allocations.abort(change).await;
                    return Err(ApiError::from_store(kind, name, error));
                }
            }
        }
        Err(ApiError::conflict(kind, name))
    }

    /// Turns a desired object into the one to store: type and identity
    /// checked, decoded and defaulted, server fields carried over,
    /// subresource rules applied, validated.
    #[expect(
        clippy::too_many_arguments,
        reason = "one internal step of the update loop"
    )]
    fn prepare_replacement(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        current: &Value,
        mut desired: Value,
        subresource: Subresource,
        options: WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        meta::apply_type_meta(kind, &mut desired).map_err(ApiError::BadRequest)?;
        match meta::name_of(&desired) {
            "" => {
                meta::metadata_mut(&mut desired).insert("name".into(), Value::from(name));
            }
            body_name if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if let (true, Some(ns)) = (kind.namespaced, namespace) {
            if let Some(message) = validation::namespace_mismatch(ns, meta::namespace_of(&desired))
            {
                return Err(ApiError::BadRequest(message));
            }
            meta::metadata_mut(&mut desired).insert("namespace".into(), Value::from(ns));
        }
        let decoded = kind
            .decode(desired)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let warnings =
            unknown_field_warnings(kind, &decoded.unknown_fields, options.field_validation)?;
        let mut desired = decoded.value;
        if kind.is::<Service>() && subresource == Subresource::Main {
            // Before the generation is computed: carried values are no change.
            let old: Service = typed(current)?;
            let mut service: Service = typed(&desired)?;
            carry_service_allocations(&old, &mut service);
            desired = untyped(&service)?;
        }
        let mut new = match subresource {
            Subresource::Status => meta::prepare_status_update(current, &desired),
            Subresource::Main | Subresource::Scale | Subresource::Binding => {
                let mut new = desired;
                meta::prepare_update(kind, current, &mut new);
                new
            }
        };
        if subresource == Subresource::Status {
            // Status writes keep the generation; carry nothing else.
            meta::clear_resource_version(&mut new);
        }
        let errors = match subresource {
            // Binding sets spec.nodeName, which a pod update may not change.
            Subresource::Binding => kind.validate(&new),
            _ => kind.validate_update(current, &new),
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, name, errors));
        }
        Ok((new, warnings))
    }

    /// Deletes an object; deleting a Namespace deletes its contents first.
    /// Returns the object as it was last stored.
    ///
    /// # Errors
    /// 404, 409 (failed precondition), 403 (protected namespace).
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, namespace, name))]
    pub async fn delete(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, ApiError> {
        if kind.is::<Namespace>() {
            return self.delete_namespace(name, preconditions).await;
        }
        self.delete_object(kind, namespace, name, preconditions)
            .await
    }

    async fn delete_object(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, ApiError> {
        let key = kind.key(namespace, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self.get(kind, namespace, name).await?;
            let current_rv = meta::requested_resource_version(&current)
                .ok()
                .flatten()
                .unwrap_or_default();
            check_preconditions(kind, name, &current, current_rv, preconditions)?;
            match self.store.delete(&key, Some(current_rv)).await {
                Ok((kv, revision)) => {
                    let object = decode_kv(kind, &kv)?;
                    if let Err(error) = self
                        .allocations
                        .release(&self.holdings(kind, &object))
                        .await
                    {
                        tracing::warn!(%error, kind = kind.kind, name, "allocations of deleted object not released");
                    }
                    tracing::debug!(kind = kind.kind, namespace, name, revision, "deleted");
                    return Ok(object);
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(ApiError::from_store(kind, name, error)),
            }
        }
        Err(ApiError::conflict(kind, name))
    }

    /// Deletes the objects of a collection passing `filter`; returns them.
    ///
    /// # Errors
    /// Store failures; objects deleted concurrently are skipped.
    pub async fn delete_collection(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        filter: &ObjectFilter,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, _) = self.list(kind, namespace, filter).await?;
        let mut deleted = Vec::with_capacity(items.len());
        for item in items {
            let ns = meta::namespace_of(&item).map(str::to_owned);
            // Namespaces are not namespaced, so a collection delete inside a
            // namespace never recurses into the namespace cascade.
            let deleted_one = if kind.is::<Namespace>() {
                Box::pin(self.delete(
                    kind,
                    ns.as_deref(),
                    meta::name_of(&item),
                    &Preconditions::default(),
                ))
                .await
            } else {
                self.delete_object(
                    kind,
                    ns.as_deref(),
                    meta::name_of(&item),
                    &Preconditions::default(),
                )
                .await
            };
            match deleted_one {
                Ok(object) => deleted.push(object),
                Err(ApiError::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(deleted)
    }

    async fn delete_namespace(
        &self,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, ApiError> {
        let ns_kind = self.namespace_kind()?.clone();
        if PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden {
                message: format!(
                    "namespaces {name:?} is forbidden: this namespace may not be deleted"
                ),
                subject: Some(super::error::Subject::resource(&ns_kind, name)),
            });
        }
        let current = self.get(&ns_kind, None, name).await?;
        let current_rv = meta::requested_resource_version(&current)
            .ok()
            .flatten()
            .unwrap_or_default();
        check_preconditions(&ns_kind, name, &current, current_rv, preconditions)?;
        let terminating = self.mark_terminating(&ns_kind, name).await?;
        self.finalize_namespace(&ns_kind, name).await?;
        Ok(terminating)
    }

    /// Sets `status.phase: Terminating` and `deletionTimestamp` (once).
    async fn mark_terminating(&self, ns_kind: &KindInfo, name: &str) -> Result<Value, ApiError> {
        let key = ns_kind.key(None, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found(ns_kind, name));
            };
            let mut object = decode_kv(ns_kind, &kv)?;
            if object.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
                return Ok(object);
            }
            object["status"] = json!({"phase": "Terminating"});
            meta::metadata_mut(&mut object)
                .insert("deletionTimestamp".into(), Value::from(now_rfc3339()));
            match self
                .store
                .update(&key, to_bytes(&object)?, Some(kv.mod_revision))
                .await
            {
                Ok(revision) => {
                    meta::set_resource_version(&mut object, revision);
                    tracing::info!(namespace = name, "namespace terminating");
                    return Ok(object);
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(ApiError::from_store(ns_kind, name, error)),
            }
        }
        Err(ApiError::conflict(ns_kind, name))
    }

    /// Deletes everything in a terminating namespace, then the namespace.
    #[tracing::instrument(level = "debug", skip(self, ns_kind))]
    async fn finalize_namespace(&self, ns_kind: &KindInfo, name: &str) -> Result<(), ApiError> {
        for _ in 0..MAX_NAMESPACE_PASSES {
            let mut found = 0usize;
            for kind in self.kinds.iter().filter(|k| k.namespaced) {
                let deleted = self
                    .delete_collection(kind, Some(name), &ObjectFilter::default())
                    .await?;
                found += deleted.len();
            }
            if found == 0 {
                break;
            }
            tracing::debug!(
                namespace = name,
                deleted = found,
                "namespace contents deleted"
            );
        }
        match self.store.delete(&ns_kind.key(None, name), None).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                tracing::info!(namespace = name, "namespace deleted");
                Ok(())
            }
            Err(error) => Err(ApiError::from_store(ns_kind, name, error)),
        }
    }

    /// The autoscaling/v1 Scale of a scalable object.
    ///
    /// # Errors
    /// 404; 500 if the object has an unparsable selector.
    pub async fn get_scale(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let object = self.get(kind, namespace, name).await?;
        Ok(scale_of(&object))
    }

    /// Writes a Scale (PUT body, or a patch applied to the current Scale).
    ///
    /// # Errors
    /// As [`update`](Self::update).
    pub async fn update_scale(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
    ) -> Result<Value, ApiError> {
        let written = self
            .guaranteed_update(
                kind,
                namespace,
                name,
                Subresource::Scale,
                WriteOptions::default(),
                |current| {
                    let scale = scale_of(current);
                    let desired = match &change {
                        ScaleChange::Replace(body) => body.clone(),
                        ScaleChange::Patch(kind, body) => patch::apply(*kind, &scale, body)?,
                    };
                    let replicas = desired
                        .pointer("/spec/replicas")
                        .map(|r| {
                            r.as_i64().ok_or_else(|| {
                                ApiError::bad_request("spec.replicas of a Scale must be an integer")
                            })
                        })
                        .transpose()?
                        .unwrap_or(0);
                    if replicas < 0 {
                        return Err(ApiError::Invalid {
                            kind: "Scale".to_owned(),
                            group: "autoscaling".to_owned(),
                            name: name.to_owned(),
                            errors: vec![FieldError::invalid(
                                "spec.replicas",
                                replicas.to_string(),
                                "must be greater than or equal to 0",
                            )],
                        });
                    }
                    let mut object = current.clone();
                    if let Some(rv) =
                        meta::meta_str(&desired, "resourceVersion").filter(|rv| !rv.is_empty())
                    {
                        meta::metadata_mut(&mut object)
                            .insert("resourceVersion".into(), Value::from(rv));
                    }
                    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("replicas".into(), Value::from(replicas));
                    }
                    Ok(object)
                },
            )
            .await?;
        Ok(scale_of(&written.object))
    }

    /// Binds a pod to a node (`pods/{name}/binding`); 409 if it is bound.
    ///
    /// # Errors
    /// 400 (no target), 404, 409.
    pub async fn bind(&self, namespace: &str, name: &str, binding: &Value) -> Result<(), ApiError> {
        let kind = self
            .kinds
            .of::<Pod>()
            .ok_or_else(|| ApiError::Internal("the Pod kind is not registered".to_owned()))?
            .clone();
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("a Binding must name its target node in target.name")
            })?
            .to_owned();
        self.guaranteed_update(
            &kind,
            Some(namespace),
            name,
            Subresource::Binding,
            WriteOptions::default(),
            |current| match current.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(bound) if !bound.is_empty() => Err(ApiError::conflict_because(
                    &kind,
                    name,
                    &format!("pod {name} is already assigned to node {bound:?}"),
                )),
                _ => {
                    let mut object = current.clone();
                    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("nodeName".into(), Value::from(node.clone()));
                    }
                    Ok(object)
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Startup: creates the protected namespaces if missing, finishes the
    /// deletion of namespaces left Terminating by a crash, and rebuilds the
    /// allocator state from Services and Nodes.
    ///
    /// # Errors
    /// Store failures.
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        let ns_kind = self.namespace_kind()?.clone();
        for name in PROTECTED_NAMESPACES {
            let body = json!({"metadata": {"name": name}});
            match self
                .create(&ns_kind, None, body, WriteOptions::default())
                .await
            {
                Ok(_) => tracing::info!(namespace = name, "namespace created"),
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        let (namespaces, _) = self.list(&ns_kind, None, &ObjectFilter::default()).await?;
        for ns in namespaces {
            // Only the server sets deletionTimestamp (clients cannot), so a
            // client writing `phase: Terminating` into status cannot get a
            // namespace deleted here.
            let terminating =
                ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
            if terminating && meta::meta_str(&ns, "deletionTimestamp").is_some() {
                let name = meta::name_of(&ns).to_owned();
                tracing::info!(namespace = name.as_str(), "resuming namespace deletion");
                self.finalize_namespace(&ns_kind, &name).await?;
            }
        }
        let services = self.typed_list::<Service>().await?;
        let nodes = self.typed_list::<Node>().await?;
        self.allocations.rebuild(&services, &nodes).await?;
        Ok(())
    }

    async fn typed_list<K: k8s_openapi::Resource + serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Vec<K>, ApiError> {
        let Some(kind) = self.kinds.of::<K>() else {
            return Ok(Vec::new());
        };
        let (items, _) = self.list(kind, None, &ObjectFilter::default()).await?;
        items.iter().map(typed).collect()
    }
}

/// A PATCH: its kind (from the Content-Type) and body.
#[derive(Clone, Debug)]
pub struct PatchRequest {
    /// How to apply it.
    pub kind: PatchKind,
    /// The patch document.
    pub body: Value,
}

/// A write to the scale subresource.
#[derive(Clone, Debug)]
pub enum ScaleChange {
    /// PUT of a whole Scale.
    Replace(Value),
    /// PATCH of the Scale.
    Patch(PatchKind, Value),
}

fn check_preconditions(
    kind: &KindInfo,
    name: &str,
    current: &Value,
    current_rv: Revision,
    preconditions: &Preconditions,
) -> Result<(), ApiError> {
    if let Some(uid) = &preconditions.uid {
        let actual = meta::meta_str(current, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict_because(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = preconditions.resource_version
        && rv != current_rv
    {
        return Err(ApiError::conflict_because(
            kind,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current_rv}"
            ),
        ));
    }
    Ok(())
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .and_then(|s| Selector::from_label_selector(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let metadata = object.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(Value::from(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(Value::from(0)),
            "selector": selector,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view() {
        let deploy = json!({
            "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}
        });
        let scale = scale_of(&deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn preconditions() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let obj = json!({"metadata": {"uid": "u1"}});
        assert!(check_preconditions(pods, "p", &obj, 5, &Preconditions::default()).is_ok());
        let uid = Preconditions {
            uid: Some("u2".into()),
            ..Preconditions::default()
        };
        assert!(matches!(
            check_preconditions(pods, "p", &obj, 5, &uid),
            Err(ApiError::Conflict { .. })
        ));
        let rv = Preconditions {
            resource_version: Some(4),
            ..Preconditions::default()
        };
        assert!(matches!(
            check_preconditions(pods, "p", &obj, 5, &rv),
            Err(ApiError::Conflict { .. })
        ));
    }
}

//! The object layer between HTTP and the store: get, list (paged), create,
//! update, patch, delete (graceful pod deletion, finalizers, propagation
//! policies, namespace cascade; the rules are in [`super::deletion`]), the
//! status, scale and binding subresources, written once for every kind in
//! the registry; and the `kubernetes` Service kept at startup.
//!
//! A namespace whose contents cannot all go at once (pods stopping on
//! their nodes, objects waiting for finalizers) stays Terminating;
//! [`Resources::run_namespace_finisher`] removes it once they are gone.
//!
//! Writes are read-modify-write loops over conditional store writes (what
//! Kubernetes calls GuaranteedUpdate): a write based on a stale read is
//! retried from a fresh read unless the client pinned a resourceVersion,
//! in which case it gets `409 Conflict`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use serde_json::{Value, json};

use super::allocation::{
    AllocationError, Allocations, Change, Held, carry_service_allocations, node_holdings,
    service_holdings,
};
use super::deletion::{self, DeleteContext, DeleteOptions, DeletePlan, Propagation};
use super::error::ApiError;
use super::meta::{self, CreateStamp};
use super::pagination;
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
/// Passes over a terminating namespace's contents in one attempt.
const MAX_NAMESPACE_PASSES: usize = 5;
/// How often namespaces still Terminating (waiting for pods to stop or
/// finalizers to go) are looked at again, besides when something in them
/// is removed.
const NAMESPACE_RETRY: Duration = Duration::from_secs(1);
/// Namespaces that always exist and may not be deleted (`kube-node-lease`
/// holds the agents' heartbeat Leases, as in Kubernetes).
pub const PROTECTED_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

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
    /// Namespaces marked Terminating whose contents are not all gone yet.
    terminating_namespaces: Mutex<BTreeSet<String>>,
    /// Wakes [`Resources::run_namespace_finisher`].
    namespace_work: tokio::sync::Notify,
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
            terminating_namespaces: Mutex::new(BTreeSet::new()),
            namespace_work: tokio::sync::Notify::new(),
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

    /// One page of a list: at most `limit` items after the `continue`
    /// token's position (see [`super::pagination`]).
    ///
    /// # Errors
    /// 400 for a token that is not ours or not for this collection, 410
    /// when its revision has been compacted, store failures.
    pub async fn list_page(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        filter: &ObjectFilter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let prefix = kind.prefix(namespace);
        let token = continue_token
            .map(|t| {
                pagination::ContinueToken::decode(t)
                    .filter(|t| t.start.starts_with(&prefix))
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
            })
            .transpose()?;
        if let Some(token) = &token
            && token.rv < self.store.compacted_revision().await?
        {
            return Err(ApiError::ContinueExpired);
        }
        let (items, revision) = self.list(kind, namespace, filter).await?;
        let page = pagination::page(
            items,
            |item| kind.key(meta::namespace_of(item), meta::name_of(item)),
            token.as_ref().map(|t| t.start.as_str()),
            limit,
        );
        // Every page reports the first page's revision.
        let revision = token.as_ref().map_or(revision, |t| t.rv);
        Ok(ListPage {
            continue_token: page
                .next_after
                .map(|key| pagination::ContinueToken::new(revision, key).encode()),
            remaining: page.remaining,
            items: page.items,
            revision,
        })
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
        let object = kind
            .prepare_create(object)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
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
            if deletion::removed_by_update(&current, &new) && !kind.is::<Namespace>() {
                // The last finalizer of an object being deleted is gone:
                // the update is its removal.
                self.allocations.abort(change).await;
                match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok((_, revision)) => {
                        self.removed(kind, namespace, name, &current).await;
                        meta::set_resource_version(&mut new, revision);
                        return Ok(Written {
                            object: new,
                            warnings,
                        });
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(error) => return Err(ApiError::from_store(kind, name, error)),
                }
            }
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
                    if kind.is::<Namespace>() && deletion::is_terminating(&new) {
                        // Its finalizers may just have been removed.
                        self.finish_namespace_later(name);
                    }
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
        let mut errors = match subresource {
            // Binding sets spec.nodeName, which a pod update may not change.
            Subresource::Binding => kind.validate(&new),
            _ => kind.validate_update(current, &new),
        };
        errors.extend(deletion::check_finalizers_update(current, &new));
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, name, errors));
        }
        Ok((new, warnings))
    }

    /// Deletes an object as Kubernetes does (see [`deletion`]): at once, or
    /// by marking it terminating (a bound pod's grace period, finalizers,
    /// foreground propagation). Deleting a Namespace deletes its contents
    /// first. Returns the object as last stored (the terminating form if it
    /// stays) and warnings for the client.
    ///
    /// # Errors
    /// 404, 409 (failed precondition), 403 (protected namespace), 400
    /// (dry run).
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, namespace, name))]
    pub async fn delete(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Written, ApiError> {
        if options.dry_run {
            return Err(ApiError::bad_request(
                "dryRun is not supported by this server",
            ));
        }
        if kind.is::<Namespace>() {
            let object = self.delete_namespace(name, &options.preconditions).await?;
            return Ok(Written {
                object,
                warnings: Vec::new(),
            });
        }
        self.delete_object(kind, namespace, name, options).await
    }

    async fn delete_object(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Written, ApiError> {
        let key = kind.key(namespace, name);
        let mut warnings = Vec::new();
        if kind.is::<Job>() && options.propagation.is_none() {
            warnings.push(deletion::JOB_ORPHAN_WARNING.to_owned());
        }
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found(kind, name));
            };
            let current = decode_kv(kind, &kv)?;
            check_preconditions(
                kind,
                name,
                &current,
                kv.mod_revision,
                &options.preconditions,
            )?;
            let uid = meta::meta_str(&current, "uid")
                .unwrap_or_default()
                .to_owned();
            let propagation = deletion::effective_propagation(
                &current,
                options.propagation,
                kind.default_propagation,
            );
            let has_dependents = propagation == Propagation::Foreground
                && !self.dependents(kind, namespace, &uid).await?.is_empty();
            let ctx = DeleteContext {
                now: chrono::Utc::now(),
                graceful_kind: kind.is::<Pod>(),
                node_exists: self.pod_node_exists(kind, &current).await?,
                propagation,
                has_dependents,
            };
            let decision = deletion::decide(&current, options, &ctx);
            if decision.orphan_dependents {
                self.orphan_dependents(kind, namespace, &uid).await?;
            }
            match decision.plan {
                DeletePlan::Unchanged => {
                    return Ok(Written {
                        object: current,
                        warnings,
                    });
                }
                DeletePlan::Update(mut object) => {
                    match self
                        .store
                        .update(&key, to_bytes(&object)?, Some(kv.mod_revision))
                        .await
                    {
                        Ok(revision) => {
                            meta::set_resource_version(&mut object, revision);
                            let grace = object
                                .pointer("/metadata/deletionGracePeriodSeconds")
                                .and_then(Value::as_i64);
                            tracing::debug!(
                                kind = kind.kind,
                                namespace,
                                name,
                                revision,
                                grace,
                                finalizers = ?deletion::finalizers_of(&object),
                                "terminating"
                            );
                            return Ok(Written { object, warnings });
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(error) => return Err(ApiError::from_store(kind, name, error)),
                    }
                }
                DeletePlan::Remove => match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok((kv, revision)) => {
                        let object = decode_kv(kind, &kv)?;
                        self.removed(kind, namespace, name, &object).await;
                        tracing::debug!(kind = kind.kind, namespace, name, revision, "deleted");
                        return Ok(Written { object, warnings });
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(error) => return Err(ApiError::from_store(kind, name, error)),
                },
            }
        }
        Err(ApiError::conflict(kind, name))
    }

    /// Bookkeeping after an object left the store: its allocations are
    /// released and a namespace waiting for it to go is looked at again.
    async fn removed(&self, kind: &KindInfo, namespace: Option<&str>, name: &str, object: &Value) {
        if let Err(error) = self.allocations.release(&self.holdings(kind, object)).await {
            tracing::warn!(%error, kind = kind.kind, name, "allocations of deleted object not released");
        }
        if let Some(ns) = namespace
            && self
                .terminating_namespaces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(ns)
        {
            self.namespace_work.notify_one();
        }
    }

    /// Whether a bound pod's node exists (`true` for anything else): a pod
    /// whose node is gone has nobody to stop it gracefully.
    async fn pod_node_exists(&self, kind: &KindInfo, object: &Value) -> Result<bool, ApiError> {
        let node = object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        match (kind.is::<Pod>(), node, self.kinds.of::<Node>()) {
            (true, Some(node), Some(nodes)) => {
                let (kv, _) = self.store.get(&nodes.key(None, node)).await?;
                Ok(kv.is_some())
            }
            _ => Ok(true),
        }
    }

    /// The objects naming `owner_uid` in their ownerReferences: in the
    /// owner's namespace for a namespaced owner, anywhere for a
    /// cluster-scoped one.
    async fn dependents(
        &self,
        owner_kind: &KindInfo,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<(Arc<KindInfo>, Value)>, ApiError> {
        let mut found = Vec::new();
        if owner_uid.is_empty() {
            return Ok(found);
        }
        for kind in self.kinds.iter() {
            let scope = if owner_kind.namespaced {
                if !kind.namespaced {
                    continue;
                }
                namespace
            } else {
                None
            };
            let (items, _) = self.list(kind, scope, &ObjectFilter::default()).await?;
            found.extend(
                items
                    .into_iter()
                    .filter(|item| deletion::is_owned_by(item, owner_uid))
                    .map(|item| (kind.clone(), item)),
            );
        }
        Ok(found)
    }

    /// `Orphan` propagation: removes every dependent's ownerReferences to
    /// the owner.
    async fn orphan_dependents(
        &self,
        owner_kind: &KindInfo,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<(), ApiError> {
        for (kind, dependent) in self.dependents(owner_kind, namespace, owner_uid).await? {
            let name = meta::name_of(&dependent).to_owned();
            let result = self
                .guaranteed_update(
                    &kind,
                    meta::namespace_of(&dependent),
                    &name,
                    Subresource::Main,
                    WriteOptions::default(),
                    |current| Ok(deletion::without_owner(current, owner_uid)),
                )
                .await;
            match result {
                Ok(_) | Err(ApiError::NotFound { .. }) => {
                    tracing::debug!(kind = kind.kind, name, owner_uid, "orphaned");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Deletes the objects of a collection passing `filter` (each with
    /// `options`, without preconditions); returns them as they were left
    /// (removed, or terminating).
    ///
    /// # Errors
    /// Store failures; objects deleted concurrently are skipped.
    pub async fn delete_collection(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        filter: &ObjectFilter,
        options: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        if options.dry_run {
            return Err(ApiError::bad_request(
                "dryRun is not supported by this server",
            ));
        }
        let options = DeleteOptions {
            preconditions: Preconditions::default(),
            ..options.clone()
        };
        let (items, _) = self.list(kind, namespace, filter).await?;
        let mut deleted = Vec::with_capacity(items.len());
        for item in items {
            let ns = meta::namespace_of(&item).map(str::to_owned);
            // Namespaces are not namespaced, so a collection delete inside a
            // namespace never recurses into the namespace cascade.
            let deleted_one = if kind.is::<Namespace>() {
                Box::pin(self.delete(kind, ns.as_deref(), meta::name_of(&item), &options)).await
            } else {
                self.delete_object(kind, ns.as_deref(), meta::name_of(&item), &options)
                    .await
            };
            match deleted_one {
                Ok(written) => deleted.push(written.object),
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
        let (kv, _) = self.store.get(&ns_kind.key(None, name)).await?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(&ns_kind, name));
        };
        let current = decode_kv(&ns_kind, &kv)?;
        check_preconditions(&ns_kind, name, &current, kv.mod_revision, preconditions)?;
        let terminating = self.mark_terminating(&ns_kind, name).await?;
        if !self.finalize_namespace(&ns_kind, name).await? {
            self.finish_namespace_later(name);
        }
        Ok(terminating)
    }

    fn finish_namespace_later(&self, name: &str) {
        self.terminating_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        self.namespace_work.notify_one();
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

    /// Deletes everything in a terminating namespace, then (once nothing is
    /// left and it has no finalizers) the namespace. Returns whether the
    /// namespace is gone; it stays while pods are stopping or objects wait
    /// for finalizers.
    #[tracing::instrument(level = "debug", skip(self, ns_kind))]
    async fn finalize_namespace(&self, ns_kind: &KindInfo, name: &str) -> Result<bool, ApiError> {
        let mut remaining = 0usize;
        for _ in 0..MAX_NAMESPACE_PASSES {
            let mut before = 0usize;
            remaining = 0;
            for kind in self.kinds.iter().filter(|k| k.namespaced) {
                let touched = self
                    .delete_collection(
                        kind,
                        Some(name),
                        &ObjectFilter::default(),
                        &DeleteOptions::background(),
                    )
                    .await?;
                before += touched.len();
                let (left, _) = self
                    .list(kind, Some(name), &ObjectFilter::default())
                    .await?;
                remaining += left.len();
            }
            // Another pass only helps when this one removed something (and
            // so may have raced with a controller adding more).
            if remaining == 0 || remaining == before {
                break;
            }
        }
        if remaining > 0 {
            tracing::debug!(
                namespace = name,
                remaining,
                "namespace waits for its contents to go"
            );
            return Ok(false);
        }
        let key = ns_kind.key(None, name);
        let (kv, _) = self.store.get(&key).await?;
        let Some(kv) = kv else {
            return Ok(true);
        };
        let namespace = decode_kv(ns_kind, &kv)?;
        if !deletion::finalizers_of(&namespace).is_empty() {
            tracing::debug!(namespace = name, "namespace waits for its finalizers");
            return Ok(false);
        }
        match self.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                tracing::info!(namespace = name, "namespace deleted");
                Ok(true)
            }
            // Changed meanwhile (e.g. a finalizer added): look again later.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(error) => Err(ApiError::from_store(ns_kind, name, error)),
        }
    }

    /// Finishes the deletion of namespaces whose contents were still going
    /// when they were deleted: looks at them again whenever something in
    /// them is removed, and every second. Runs until the task
    /// is aborted (the server does so at shutdown).
    pub async fn run_namespace_finisher(self: Arc<Self>) {
        let Ok(ns_kind) = self.namespace_kind().cloned() else {
            return;
        };
        loop {
            let pending: Vec<String> = self
                .terminating_namespaces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect();
            for name in &pending {
                let done = match self.finalize_namespace(&ns_kind, name).await {
                    Ok(done) => done,
                    Err(error) => {
                        tracing::warn!(%error, namespace = name.as_str(), "namespace deletion not finished; retrying");
                        false
                    }
                };
                if done {
                    self.terminating_namespaces
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(name);
                }
            }
            let idle = self
                .terminating_namespaces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            if idle {
                self.namespace_work.notified().await;
            } else {
                let _ = tokio::time::timeout(NAMESPACE_RETRY, self.namespace_work.notified()).await;
            }
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
                _ if deletion::is_terminating(current) => Err(ApiError::conflict_because(
                    &kind,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                )),
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
                if !self.finalize_namespace(&ns_kind, &name).await? {
                    self.finish_namespace_later(&name);
                }
            }
        }
        let services = self.typed_list::<Service>().await?;
        let nodes = self.typed_list::<Node>().await?;
        self.allocations.rebuild(&services, &nodes).await?;
        Ok(())
    }

    /// Creates the `kubernetes` Service in `default` if it is missing (its
    /// ClusterIP the first of the service CIDR), points its port 443 at
    /// `target_port`, and keeps its EndpointSlice at `endpoint` (removed
    /// when there is no reachable address). A ClusterIP already taken by
    /// another Service is logged and left alone, as is a Service the user
    /// changed in other ways.
    ///
    /// # Errors
    /// Store failures.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn ensure_kubernetes_service(
        &self,
        target_port: u16,
        endpoint: Option<std::net::IpAddr>,
    ) -> Result<(), ApiError> {
        use super::apiserver_service::{self as apiserver, NAME, NAMESPACE};
        let (Some(services), Some(slices)) = (
            self.kinds.of::<Service>().cloned(),
            self.kinds
                .of::<k8s_openapi::api::discovery::v1::EndpointSlice>()
                .cloned(),
        ) else {
            return Ok(());
        };
        let Some(cluster_ip) = apiserver::first_address(self.allocations.config().service_cidr)
        else {
            tracing::warn!("the service CIDR has no first address; no kubernetes Service");
            return Ok(());
        };
        let desired = apiserver::service(cluster_ip, target_port);
        // Looked up first: creating it again would fail on its own ClusterIP
        // before it could fail as already existing.
        match self.get(&services, Some(NAMESPACE), NAME).await {
            Ok(current) => {
                if !apiserver::up_to_date(&current, &desired, &["/spec/ports"]) {
                    let mut updated = current;
                    updated["spec"]["ports"] = desired["spec"]["ports"].clone();
                    self.update(
                        &services,
                        Some(NAMESPACE),
                        NAME,
                        updated,
                        Subresource::Main,
                        WriteOptions::default(),
                    )
                    .await?;
                    tracing::info!(target_port, "kubernetes service port updated");
                }
            }
            Err(ApiError::NotFound { .. }) => match self
                .create(&services, Some(NAMESPACE), desired, WriteOptions::default())
                .await
            {
                Ok(_) => tracing::info!(%cluster_ip, target_port, "kubernetes service created"),
                Err(ApiError::Invalid { errors, .. }) => {
                    tracing::warn!(%cluster_ip, errors = %validation::join_errors(&errors), "kubernetes service not created");
                    return Ok(());
                }
                Err(other) => return Err(other),
            },
            Err(other) => return Err(other),
        }
        let Some(address) = endpoint else {
            match self
                .delete(&slices, Some(NAMESPACE), NAME, &DeleteOptions::background())
                .await
            {
                Ok(_) => tracing::info!("stale kubernetes endpoint slice removed"),
                Err(ApiError::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
            return Ok(());
        };
        let desired = apiserver::endpoint_slice(address, target_port);
        match self
            .create(
                &slices,
                Some(NAMESPACE),
                desired.clone(),
                WriteOptions::default(),
            )
            .await
        {
            Ok(_) => tracing::info!(%address, target_port, "kubernetes endpoint slice created"),
            Err(ApiError::AlreadyExists { .. }) => {
                let current = self.get(&slices, Some(NAMESPACE), NAME).await?;
                let owned = ["/addressType", "/endpoints", "/ports", "/metadata/labels"];
                if !apiserver::up_to_date(&current, &desired, &owned) {
                    self.update(
                        &slices,
                        Some(NAMESPACE),
                        NAME,
                        desired,
                        Subresource::Main,
                        WriteOptions::default(),
                    )
                    .await?;
                    tracing::info!(%address, target_port, "kubernetes endpoint slice updated");
                }
            }
            Err(other) => return Err(other),
        }
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

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Value>,
    /// The list's resourceVersion (the first page's, on later pages).
    pub revision: Revision,
    /// Token for the next page, if more follow.
    pub continue_token: Option<String>,
    /// How many matching objects follow this page.
    pub remaining: usize,
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

//! Garbage collection by ownerReferences, as Kubernetes' garbage collector
//! in background mode: an object all of whose owners are gone (by uid) is
//! deleted; its own dependents follow when their turn comes (a cascade
//! one level per pass). An object that lost only some owners has the
//! dangling references removed.
//!
//! The collector watches every kind it is configured with (by default all
//! the kinds the API server serves) as untyped objects. Before acting on
//! an owner that is missing from its caches it asks the API server
//! directly (a live GET, by name, checking the uid): caches of different
//! kinds lag each other, and a dependent seen before its brand-new owner
//! must not be deleted.
//!
//! `propagationPolicy: Foreground`: the API server marks the owner with
//! the `foregroundDeletion` finalizer; the collector deletes its
//! dependents (in the foreground too) and removes the finalizer once no
//! dependent with `blockOwnerDeletion` is left ([`foreground_work`]).
//! `Orphan` is carried out by the API server itself. Namespaces are not
//! collected here either: the API server deletes a namespace's content.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::kinds::Kinds;

/// A kind the collector watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcResource {
    /// Group, version, kind, plural.
    pub api: ApiResource,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

/// Garbage collector settings.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Kinds to collect (and whose objects may be owners).
    pub resources: Vec<GcResource>,
    /// Full sweep at least this often, besides the sweep after deletions.
    pub resync: Duration,
}

impl Default for GcConfig {
    /// Every kind of [`Kinds::builtin`] except Namespace.
    fn default() -> Self {
        let resources = Kinds::builtin()
            .iter()
            .filter(|k| k.kind != "Namespace")
            .map(|k| GcResource {
                api: ApiResource {
                    group: k.group.to_owned(),
                    version: k.version.to_owned(),
                    api_version: k.api_version(),
                    kind: k.kind.to_owned(),
                    plural: k.plural.to_owned(),
                },
                namespaced: k.namespaced,
            })
            .collect();
        GcConfig {
            resources,
            resync: Duration::from_secs(30),
        }
    }
}

/// An object with at least one owner none of the cached objects has.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index into [`GcConfig::resources`].
    pub resource: usize,
    /// Namespace (namespaced kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// uid (delete precondition).
    pub uid: String,
    /// Owner references not found in the caches.
    pub dangling: Vec<OwnerReference>,
    /// Whether every owner is missing (delete) or only some (patch).
    pub all_dangling: bool,
}

/// Finds objects whose owners are missing from `live_uids`. Objects being
/// deleted are skipped.
pub fn find_candidates<'a>(
    objects: impl IntoIterator<Item = (usize, &'a ObjectMeta)>,
    live_uids: &HashSet<&str>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (resource, meta) in objects {
        let refs = meta.owner_references.as_deref().unwrap_or_default();
        if refs.is_empty() || meta.deletion_timestamp.is_some() {
            continue;
        }
        let dangling: Vec<OwnerReference> = refs
            .iter()
            .filter(|r| !live_uids.contains(r.uid.as_str()))
            .cloned()
            .collect();
        if dangling.is_empty() {
            continue;
        }
        out.push(Candidate {
            resource,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            all_dangling: dangling.len() == refs.len(),
            dangling,
        });
    }
    out.sort_by(|a, b| {
        (a.resource, &a.namespace, &a.name).cmp(&(b.resource, &b.namespace, &b.name))
    });
    out
}

/// The resource an owner reference points at (by apiVersion and kind).
pub fn owner_resource<'a>(
    resources: &'a [GcResource],
    owner: &OwnerReference,
) -> Option<&'a GcResource> {
    resources
        .iter()
        .find(|r| r.api.api_version == owner.api_version && r.api.kind == owner.kind)
}

/// What a verified candidate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every owner is confirmed gone: delete.
    Delete,
    /// These owner uids are confirmed gone, others live: remove them.
    RemoveOwners(Vec<String>),
    /// An owner exists after all (the cache lagged), or could not be
    /// checked: leave it.
    Keep,
}

/// Combines the live checks of a candidate's dangling owners
/// (`Some(true)`: gone, `Some(false)`: exists, `None`: unknown kind or
/// lookup failed).
pub fn verdict(candidate: &Candidate, gone: &[Option<bool>]) -> Verdict {
    if gone.iter().any(Option::is_none) {
        return Verdict::Keep;
    }
    let confirmed: Vec<String> = candidate
        .dangling
        .iter()
        .zip(gone)
        .filter(|(_, g)| **g == Some(true))
        .map(|(r, _)| r.uid.clone())
        .collect();
    if confirmed.is_empty() {
        Verdict::Keep
    } else if candidate.all_dangling && confirmed.len() == candidate.dangling.len() {
        Verdict::Delete
    } else {
        Verdict::RemoveOwners(confirmed)
    }
}

/// Finalizer the API server puts on an object deleted with
/// `propagationPolicy: Foreground` that still has dependents.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// One object of the caches, by resource index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    /// Index into [`GcConfig::resources`].
    pub resource: usize,
    /// Namespace (namespaced kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
}

fn key_of(resource: usize, meta: &ObjectMeta) -> ObjectKey {
    ObjectKey {
        resource,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    }
}

/// Work for an owner being deleted in the foreground.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForegroundWork {
    /// The owner (it has `deletionTimestamp` and [`FOREGROUND_FINALIZER`]).
    pub owner: ObjectKey,
    /// No blocking dependent is left: remove the finalizer, and the API
    /// server removes the owner.
    pub remove_finalizer: bool,
    /// Dependents to delete (in the foreground too, so the cascade
    /// completes bottom-up, as Kubernetes does).
    pub delete: Vec<ObjectKey>,
    /// Dependents that have other, live owners: drop only the reference.
    pub unlink: Vec<ObjectKey>,
}

/// Kubernetes' foreground deletion: for every owner waiting for its
/// dependents, delete those not already being deleted, and once no
/// dependent with `blockOwnerDeletion: true` exists, release the owner.
pub fn foreground_work<'a>(
    objects: impl IntoIterator<Item = (usize, &'a ObjectMeta)> + Clone,
) -> Vec<ForegroundWork> {
    let waiting = |m: &ObjectMeta| {
        m.deletion_timestamp.is_some()
            && m.finalizers
                .iter()
                .flatten()
                .any(|f| f == FOREGROUND_FINALIZER)
    };
    // uids of objects that exist and are not being deleted.
    let steady: HashSet<String> = objects
        .clone()
        .into_iter()
        .filter(|(_, m)| m.deletion_timestamp.is_none())
        .filter_map(|(_, m)| m.uid.clone())
        .collect();
    let mut out = Vec::new();
    for (resource, owner) in objects.clone() {
        if !waiting(owner) {
            continue;
        }
        let Some(owner_uid) = owner.uid.as_deref() else {
            continue;
        };
        let mut work = ForegroundWork {
            owner: key_of(resource, owner),
            remove_finalizer: true,
            delete: Vec::new(),
            unlink: Vec::new(),
        };
        for (dep_resource, dep) in objects.clone() {
            let refs = dep.owner_references.as_deref().unwrap_or_default();
            let Some(reference) = refs.iter().find(|r| r.uid == owner_uid) else {
                continue;
            };
            if reference.block_owner_deletion == Some(true) {
                work.remove_finalizer = false;
            }
            if dep.deletion_timestamp.is_some() {
                continue;
            }
            let other_live_owner = refs
                .iter()
                .any(|r| r.uid != owner_uid && steady.contains(&r.uid));
            if other_live_owner {
                work.unlink.push(key_of(dep_resource, dep));
            } else {
                work.delete.push(key_of(dep_resource, dep));
            }
        }
        out.push(work);
    }
    out
}

/// Errors of the garbage collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list of a configured kind.
    #[error("garbage collector: cannot list {kind}")]
    Preflight {
        /// The kind.
        kind: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

struct Collector {
    client: Client,
    config: GcConfig,
    stores: Vec<Store<DynamicObject>>,
}

/// Runs the garbage collector until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when a configured kind cannot be listed.
pub async fn run(
    client: Client,
    config: GcConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    for r in &config.resources {
        Api::<DynamicObject>::all_with(client.clone(), &r.api)
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|source| Error::Preflight {
                kind: r.api.kind.clone(),
                source,
            })?;
    }
    let wake = Arc::new(Notify::new());
    let mut stores = Vec::new();
    let mut streams: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    for r in &config.resources {
        let writer = reflector::store::Writer::<DynamicObject>::new(r.api.clone());
        let reader = writer.as_reader();
        stores.push(reader);
        let wake = wake.clone();
        let kind = r.api.kind.clone();
        let s = watcher::watcher(
            Api::<DynamicObject>::all_with(client.clone(), &r.api),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .for_each(move |event| {
            match event {
                // Deletions can orphan dependents; a (re)list may
                // reveal anything. New owned objects need no sweep.
                Ok(Event::Delete(_) | Event::InitDone) => wake.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, kind = %kind, "garbage collector watch failed; retrying")
                }
            }
            future::ready(())
        });
        streams.push(Box::pin(s));
    }
    let collector = Arc::new(Collector {
        client,
        config,
        stores,
    });
    info!("garbage collector starting");
    let watchers = future::join_all(streams);
    let sweeper = sweep_loop(collector, wake);
    tokio::select! {
        _ = watchers => {}
        () = sweeper => {}
        () = shutdown => {}
    }
    info!("garbage collector stopped");
    Ok(())
}

async fn sweep_loop(collector: Arc<Collector>, wake: Arc<Notify>) {
    for store in &collector.stores {
        // A store whose writer is gone never becomes ready; then we stop.
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    loop {
        // Coalesce bursts of deletions into one sweep.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let deleted = collector.sweep().await;
        if deleted > 0 {
            // Our deletions may have orphaned the next level: sweep again.
            continue;
        }
        let _ = tokio::time::timeout(collector.config.resync, wake.notified()).await;
    }
}

impl Collector {
    /// One pass; returns how many objects were deleted.
    async fn sweep(&self) -> usize {
        // Decide on a snapshot first; no borrow of it lives across an await.
        let (foreground, candidates) = {
            let snapshots: Vec<Vec<Arc<DynamicObject>>> =
                self.stores.iter().map(Store::state).collect();
            let live: HashSet<&str> = snapshots
                .iter()
                .flatten()
                .filter_map(|o| o.metadata.uid.as_deref())
                .collect();
            let objects: Vec<(usize, &ObjectMeta)> = snapshots
                .iter()
                .enumerate()
                .flat_map(|(i, objs)| objs.iter().map(move |o| (i, &o.metadata)))
                .collect();
            (
                foreground_work(objects.iter().copied()),
                find_candidates(objects.iter().copied(), &live),
            )
        };
        let mut deleted = 0;
        for work in &foreground {
            deleted += self.foreground(work).await;
        }
        if !candidates.is_empty() {
            debug!(by_kind = ?candidates_by_kind(&self.config.resources, &candidates), "objects with missing owners");
        }
        for candidate in candidates {
            let mut gone = Vec::new();
            for owner in &candidate.dangling {
                gone.push(self.owner_gone(&candidate, owner).await);
            }
            match verdict(&candidate, &gone) {
                Verdict::Keep => {}
                Verdict::Delete => {
                    if self.delete(&candidate).await {
                        deleted += 1;
                    }
                }
                Verdict::RemoveOwners(uids) => self.remove_owners(&candidate, &uids).await,
            }
        }
        deleted
    }

    /// Carries out foreground deletion work; returns how many deletes
    /// were issued.
    async fn foreground(&self, work: &ForegroundWork) -> usize {
        let mut issued = 0;
        for dep in &work.delete {
            let candidate = Candidate {
                resource: dep.resource,
                namespace: dep.namespace.clone(),
                name: dep.name.clone(),
                uid: dep.uid.clone(),
                dangling: Vec::new(),
                all_dangling: true,
            };
            if self
                .delete_with(&candidate, PropagationPolicy::Foreground)
                .await
            {
                issued += 1;
            }
        }
        for dep in &work.unlink {
            let candidate = Candidate {
                resource: dep.resource,
                namespace: dep.namespace.clone(),
                name: dep.name.clone(),
                uid: dep.uid.clone(),
                dangling: Vec::new(),
                all_dangling: false,
            };
            self.remove_owners(&candidate, std::slice::from_ref(&work.owner.uid))
                .await;
        }
        if work.remove_finalizer {
            let owner = Candidate {
                resource: work.owner.resource,
                namespace: work.owner.namespace.clone(),
                name: work.owner.name.clone(),
                uid: work.owner.uid.clone(),
                dangling: Vec::new(),
                all_dangling: true,
            };
            let Some(api) = self.api(&owner) else {
                return issued;
            };
            let Ok(Some(current)) = api.get_opt(&owner.name).await else {
                return issued;
            };
            if current.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                return issued;
            }
            let kept: Vec<&String> = current
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FOREGROUND_FINALIZER)
                .collect();
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "finalizers": kept,
            }});
            match api
                .patch(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(namespace = ?owner.namespace, name = %owner.name, "dependents gone; foreground deletion finished")
                }
                Err(error) => {
                    debug!(%error, name = %owner.name, "removing the foreground finalizer failed; next sweep retries")
                }
            }
        }
        issued
    }

    /// `Some(true)` if the owner does not exist (404, or a different uid
    /// under that name), `Some(false)` if it does, `None` if unknown.
    async fn owner_gone(&self, candidate: &Candidate, owner: &OwnerReference) -> Option<bool> {
        let Some(resource) = owner_resource(&self.config.resources, owner) else {
            debug!(kind = %owner.kind, api_version = %owner.api_version, "owner of an unwatched kind; not collecting");
            return None;
        };
        let api = match (&candidate.namespace, resource.namespaced) {
            (Some(ns), true) => {
                Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &resource.api)
            }
            (None, true) => return Some(true), // a cluster object cannot have a namespaced owner
            (_, false) => Api::<DynamicObject>::all_with(self.client.clone(), &resource.api),
        };
        match api.get_opt(&owner.name).await {
            Ok(Some(found)) => Some(found.metadata.uid.as_deref() != Some(owner.uid.as_str())),
            Ok(None) => Some(true),
            Err(error) => {
                warn!(%error, owner = %owner.name, "garbage collector: owner lookup failed");
                None
            }
        }
    }

    fn api(&self, candidate: &Candidate) -> Option<Api<DynamicObject>> {
        let resource = self.config.resources.get(candidate.resource)?;
        Some(match &candidate.namespace {
            Some(ns) if resource.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &resource.api)
            }
            _ => Api::all_with(self.client.clone(), &resource.api),
        })
    }

    async fn delete(&self, candidate: &Candidate) -> bool {
        self.delete_with(candidate, PropagationPolicy::Background)
            .await
    }

    async fn delete_with(&self, candidate: &Candidate, policy: PropagationPolicy) -> bool {
        let Some(api) = self.api(candidate) else {
            return false;
        };
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(candidate.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let kind = &self.config.resources[candidate.resource].api.kind;
        match api.delete(&candidate.name, &dp).await {
            Ok(_) => {
                info!(kind = %kind, namespace = ?candidate.namespace, name = %candidate.name, "garbage collected: owners are gone");
                true
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => false,
            Err(error) => {
                warn!(%error, kind = %kind, name = %candidate.name, "garbage collection delete failed");
                false
            }
        }
    }

    async fn remove_owners(&self, candidate: &Candidate, uids: &[String]) {
        let Some(api) = self.api(candidate) else {
            return;
        };
        let Ok(Some(current)) = api.get_opt(&candidate.name).await else {
            return;
        };
        let kept: Vec<&OwnerReference> = current
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| !uids.contains(&r.uid))
            .collect();
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "ownerReferences": kept,
        }});
        if let Err(error) = api
            .patch(
                &candidate.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            debug!(%error, name = %candidate.name, "removing dangling owner references failed; next sweep retries");
        } else {
            info!(namespace = ?candidate.namespace, name = %candidate.name, removed = ?uids, "removed dangling owner references");
        }
    }
}

/// Counts of candidates per kind, for logs and tests.
pub fn candidates_by_kind(
    resources: &[GcResource],
    candidates: &[Candidate],
) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in candidates {
        if let Some(r) = resources.get(c.resource) {
            *m.entry(r.api.kind.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn meta(name: &str, owners: &[&str]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            owner_references: (!owners.is_empty())
                .then(|| owners.iter().map(|u| owner(u)).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn objects_with_all_owners_gone_are_candidates_for_deletion() {
        let pods = [
            meta("a", &["rs1"]),
            meta("b", &["rs2"]),
            meta("c", &[]),
            meta("d", &["rs1", "rs2"]),
        ];
        let live: HashSet<&str> = ["rs1"].into();
        let c = find_candidates(pods.iter().map(|m| (0, m)), &live);
        assert_eq!(
            c.iter()
                .map(|c| (c.name.as_str(), c.all_dangling))
                .collect::<Vec<_>>(),
            [("b", true), ("d", false)]
        );
        assert_eq!(
            c[1].dangling
                .iter()
                .map(|r| r.uid.as_str())
                .collect::<Vec<_>>(),
            ["rs2"]
        );
    }

    #[test]
    fn objects_being_deleted_are_skipped() {
        let mut m = meta("a", &["gone"]);
        m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(find_candidates([(0, &m)], &HashSet::new()).is_empty());
    }

    #[test]
    fn verdict_requires_live_confirmation() {
        let live: HashSet<&str> = HashSet::new();
        let m = meta("a", &["rs1"]);
        let c = &find_candidates([(0, &m)], &live)[0];
        assert_eq!(verdict(c, &[Some(true)]), Verdict::Delete);
        assert_eq!(
            verdict(c, &[Some(false)]),
            Verdict::Keep,
            "owner exists: the cache lagged"
        );
        assert_eq!(verdict(c, &[None]), Verdict::Keep, "unknown: never delete");
        let m = meta("b", &["rs1", "rs2"]);
        let c = &find_candidates([(0, &m)], &live)[0];
        assert_eq!(verdict(c, &[Some(true), Some(true)]), Verdict::Delete);
        assert_eq!(
            verdict(c, &[Some(true), Some(false)]),
            Verdict::RemoveOwners(vec!["rs1".into()])
        );
        let m = meta("c", &["rs1", "live"]);
        let live: HashSet<&str> = ["live"].into();
        let c = &find_candidates([(0, &m)], &live)[0];
        assert_eq!(
            verdict(c, &[Some(true)]),
            Verdict::RemoveOwners(vec!["rs1".into()])
        );
    }

    #[test]
    fn foreground_owner_waits_for_blocking_dependents() {
        let mut owner = meta("rs", &[]);
        owner.uid = Some("rs1".into());
        owner.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        owner.finalizers = Some(vec![FOREGROUND_FINALIZER.into()]);
        let a = meta("a", &["rs1"]);
        let mut b = meta("b", &["rs1"]);
        b.deletion_timestamp = owner.deletion_timestamp.clone();
        let shared = meta("shared", &["rs1", "other"]);
        let mut other = meta("other-owner", &[]);
        other.uid = Some("other".into());
        let objects = [
            (1usize, &owner),
            (0, &a),
            (0, &b),
            (0, &shared),
            (2, &other),
        ];
        let work = foreground_work(objects.iter().map(|(i, m)| (*i, *m)));
        assert_eq!(work.len(), 1);
        let w = &work[0];
        assert_eq!(w.owner.name, "rs");
        assert!(!w.remove_finalizer, "dependents still exist");
        assert_eq!(
            w.delete.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["a"],
            "b is already terminating"
        );
        assert_eq!(
            w.unlink.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["shared"]
        );
        // Only the owner left (and a non-blocking dependent): finalize.
        let mut loose = meta("loose", &["rs1"]);
        if let Some(r) = loose.owner_references.as_mut() {
            r[0].block_owner_deletion = Some(false);
        }
        let work = foreground_work([(1usize, &owner), (0, &loose)]);
        assert!(work[0].remove_finalizer);
        assert_eq!(work[0].delete.len(), 1);
        // Owners deleted without the finalizer are not foreground work.
        let mut background = owner.clone();
        background.finalizers = None;
        assert!(foreground_work([(1usize, &background), (0, &a)]).is_empty());
    }

    #[test]
    fn default_config_covers_served_kinds_but_not_namespaces() {
        let cfg = GcConfig::default();
        let kinds: Vec<&str> = cfg.resources.iter().map(|r| r.api.kind.as_str()).collect();
        for k in [
            "Pod",
            "ReplicaSet",
            "Deployment",
            "Service",
            "EndpointSlice",
        ] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        assert!(!kinds.contains(&"Namespace"));
        let rs_owner = owner("x");
        let found = owner_resource(&cfg.resources, &rs_owner).expect("replica sets are watched");
        assert_eq!(found.api.plural, "replicasets");
        assert!(found.namespaced);
        let unknown = OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            ..owner("y")
        };
        assert!(owner_resource(&cfg.resources, &unknown).is_none());
    }

    #[test]
    fn counts_by_kind() {
        let cfg = GcConfig::default();
        let pod_idx = cfg
            .resources
            .iter()
            .position(|r| r.api.kind == "Pod")
            .expect("pods");
        let m = meta("a", &["gone"]);
        let c = find_candidates([(pod_idx, &m)], &HashSet::new());
        assert_eq!(
            candidates_by_kind(&cfg.resources, &c),
            BTreeMap::from([("Pod".to_owned(), 1)])
        );
    }
}

//! What every controller's `run` shares around kube-runtime's
//! `Controller`: the start-up check that a kind can be listed, the watch-fed
//! caches, mapping a pod to its controlling owner, driving the reconcile
//! stream with logging, and tolerating objects that are already gone.

use std::fmt::Debug;
use std::time::Duration;

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::owner::controller_of;

/// Lists one object of kind `K` cluster-wide: fails when the API server
/// does not serve the kind (or is unreachable), before a controller starts
/// waiting on a watch that can never work.
///
/// # Errors
/// The API error.
pub async fn can_list<K>(client: &Client) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map(drop)
}

/// A cache of every `K`, kept by a watch with back-off, and the stream of
/// the objects each watch event touched (poll it, e.g. as a controller's
/// `watches_stream`, or the cache never fills).
pub fn cache<K>(
    client: &Client,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let touched = watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (reader, touched)
}

/// The object of kind `K` that controls `pod` (its controller owner
/// reference), as a queue key.
pub fn controlling<K>(pod: &Pod) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    controller_of(&pod.metadata)
        .filter(|o| o.kind == K::kind(&()))
        .map(|o| ObjectRef::<K>::new(&o.name).within(&namespace))
}

/// Runs a controller's reconcile stream to its end (graceful shutdown),
/// logging what happens: reconciles at debug, queue errors as warnings.
/// Failed reconciles were logged by the controller's error policy, and
/// triggers for objects that are gone are normal, so both stay quiet.
pub async fn drive<K, S, RE, QE>(name: &'static str, results: S)
where
    K: Resource,
    K::DynamicType: Debug,
    S: Stream<Item = Result<(ObjectRef<K>, Action), controller::Error<RE, QE>>>,
    RE: std::error::Error + 'static,
    QE: std::error::Error + 'static,
{
    info!(controller = name, "controller starting");
    results
        .for_each(|result| {
            match result {
                Ok((object, _)) => debug!(controller = name, ?object, "reconciled"),
                Err(
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(..),
                ) => {}
                Err(error) => warn!(controller = name, %error, "controller queue error"),
            }
            future::ready(())
        })
        .await;
    info!(controller = name, "controller stopped");
}

/// The action after a reconcile that wants to look again at `recheck_at`
/// (a deadline its plan computed), if any: just after it (50 ms late, so
/// the deadline has surely passed), else when something changes.
pub fn requeue_at(recheck_at: Option<Timestamp>, now: Timestamp) -> Action {
    match recheck_at {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(50),
        ),
        None => Action::await_change(),
    }
}

/// `Ok(None)` for an API 404: the object was deleted meanwhile, which a
/// level-triggered reconcile treats as done.
///
/// # Errors
/// Any other API error.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owned_pod(kind: &str, controller: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "web-1".into(),
            uid: "u".into(),
            controller: Some(controller),
            ..Default::default()
        }]);
        pod
    }

    #[test]
    fn controlling_owner_of_the_right_kind_only() {
        let key = controlling::<ReplicaSet>(&owned_pod("ReplicaSet", true)).expect("owned");
        assert_eq!(key, ObjectRef::<ReplicaSet>::new("web-1").within("ns"));
        assert!(controlling::<ReplicaSet>(&owned_pod("Job", true)).is_none());
        assert!(controlling::<ReplicaSet>(&owned_pod("ReplicaSet", false)).is_none());
        assert!(controlling::<ReplicaSet>(&Pod::default()).is_none());
    }

    #[test]
    fn requeue_just_after_the_deadline_or_on_change() {
        let now = Timestamp::from_second(1_000).expect("time");
        let at = Timestamp::from_second(1_003).expect("time");
        assert_eq!(
            requeue_at(Some(at), now),
            Action::requeue(Duration::from_millis(3_050))
        );
        // A deadline already past: at once (plus the margin).
        assert_eq!(
            requeue_at(Some(now), at),
            Action::requeue(Duration::from_millis(50))
        );
        assert_eq!(requeue_at(None, now), Action::await_change());
    }

    #[test]
    fn not_found_is_none_other_errors_stay() {
        let gone = kube::Error::Api(
            kube::core::Status::failure("gone", "NotFound")
                .with_code(404)
                .boxed(),
        );
        assert!(matches!(ignore_not_found::<()>(Err(gone)), Ok(None)));
        assert!(matches!(ignore_not_found(Ok(3)), Ok(Some(3))));
        let conflict = kube::Error::Api(
            kube::core::Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        assert!(ignore_not_found::<()>(Err(conflict)).is_err());
    }
}

//! `skiff scale` and `skiff rollout status | undo | history` — the library
//! functions the CLI calls — against the real API server, in process, with
//! the controllers, the scheduler, simulated nodes and the fake kubelet;
//! and the scheduler's FailedScheduling Events on the way.

mod controllers_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controllers_support::{Cluster, DEADLINE, deployment, image_of, is_ready, is_terminating};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_control::cli::CliError;
use skiff_control::cli::rollout::{
    self, HistoryOptions, RollbackPlan, RolloutState, StatusOptions, UndoOptions,
};
use skiff_control::cli::scale::{ScaleOptions, scale};
use skiff_control::controllers::deployment::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("utf-8 output")
}

/// `skiff rollout status deploy/NAME --timeout=...`: the state and what
/// it printed.
async fn status(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
) -> (Result<RolloutState, CliError>, String) {
    let opts = StatusOptions {
        resources: vec![format!("deploy/{name}")],
        timeout: Some(timeout),
        ..StatusOptions::default()
    };
    let mut out = Vec::new();
    let result = rollout::status(cluster.client.clone(), &opts, &mut out).await;
    (result, text(out))
}

async fn rolled_out(cluster: &Cluster, name: &str) -> String {
    let (result, out) = status(cluster, name, DEADLINE).await;
    let state = result.unwrap_or_else(|e| panic!("rollout of {name}: {e}; printed:\n{out}"));
    assert_eq!(
        state,
        RolloutState::Done {
            message: format!("deployment \"{name}\" successfully rolled out")
        }
    );
    assert!(
        out.ends_with(&format!("deployment \"{name}\" successfully rolled out\n")),
        "{out}"
    );
    out
}

async fn scale_to(
    cluster: &Cluster,
    resource: &str,
    replicas: i32,
    current: Option<i32>,
) -> Result<String, CliError> {
    let opts = ScaleOptions {
        resources: vec![resource.to_owned()],
        replicas,
        current_replicas: current,
        ..ScaleOptions::default()
    };
    let mut out = Vec::new();
    scale(cluster.client.clone(), &opts, &mut out).await?;
    Ok(text(out))
}

/// Live (not terminating) pods of `app`, by image, once all are ready.
async fn live_pods(cluster: &Cluster, app: &str, want: &[(&str, usize)]) {
    let want: BTreeMap<String, usize> = want.iter().map(|(i, n)| ((*i).to_owned(), *n)).collect();
    cluster
        .eventually(&format!("{app} pods {want:?}"), || async {
            let pods: Vec<_> = cluster
                .pods(app)
                .await
                .into_iter()
                .filter(|p| !is_terminating(p))
                .collect();
            let mut by_image: BTreeMap<String, usize> = BTreeMap::new();
            for p in &pods {
                *by_image.entry(image_of(p)).or_default() += 1;
            }
            if by_image == want && pods.iter().all(is_ready) {
                Ok(())
            } else {
                Err(format!(
                    "{by_image:?}, {} ready",
                    pods.iter().filter(|p| is_ready(p)).count()
                ))
            }
        })
        .await;
}

/// The replicas of the Deployment's ReplicaSets, by image.
async fn replica_sets(cluster: &Cluster) -> BTreeMap<String, i32> {
    Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list replica sets")
        .items
        .into_iter()
        .map(|rs| {
            let image = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            (image, rs.spec.replicas.unwrap_or(0))
        })
        .collect()
}

fn set_image(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {"spec": {"containers": [{
        "name": "main",
        "image": image,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_moves_replica_sets_and_pods_and_honours_the_precondition() {
    let cluster = Cluster::with_nodes(2).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 3, "web:1", json!(1), json!(0)))
        .await;
    rolled_out(&cluster, "web").await;
    live_pods(&cluster, "web", &[("web:1", 3)]).await;

    let out = scale_to(&cluster, "deploy/web", 5, None)
        .await
        .expect("scale to 5");
    assert_eq!(out, "deployment.apps/web scaled\n");
    let d = deployments.get("web").await.expect("get");
    assert_eq!(d.spec.replicas, Some(5));
    rolled_out(&cluster, "web").await;
    live_pods(&cluster, "web", &[("web:1", 5)]).await;
    assert_eq!(
        replica_sets(&cluster).await,
        [("web:1".to_owned(), 5)].into()
    );

    // A precondition that does not hold changes nothing.
    let err = scale_to(&cluster, "deployment", 2, Some(3))
        .await
        .expect_err("no name");
    assert!(matches!(err, CliError::Usage(_)), "{err}");
    let err = scale_to(&cluster, "deploy/web", 2, Some(3))
        .await
        .expect_err("precondition");
    assert_eq!(err.to_string(), "Expected replicas to be 3, was 5");
    assert_eq!(
        deployments.get("web").await.expect("get").spec.replicas,
        Some(5)
    );

    let out = scale_to(&cluster, "deployments.apps/web", 2, Some(5))
        .await
        .expect("scale to 2");
    assert_eq!(out, "deployment.apps/web scaled\n");
    rolled_out(&cluster, "web").await;
    live_pods(&cluster, "web", &[("web:1", 2)]).await;
    assert_eq!(
        replica_sets(&cluster).await,
        [("web:1".to_owned(), 2)].into()
    );

    // StatefulSets scale through the same subresource (Skiff runs no
    // StatefulSet controller: only the spec changes).
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "main", "image": "db:1"}]}}
        }
    }))
    .expect("statefulset");
    let sts_api = Api::<StatefulSet>::namespaced(cluster.client.clone(), "default");
    sts_api
        .create(&PostParams::default(), &sts)
        .await
        .expect("create statefulset");
    let out = scale_to(&cluster, "sts/db", 4, Some(1))
        .await
        .expect("scale sts");
    assert_eq!(out, "statefulset.apps/db scaled\n");
    assert_eq!(sts_api.get("db").await.expect("get").spec.replicas, Some(4));
    // A missing object is the API's 404.
    let err = scale_to(&cluster, "deploy/nope", 1, None)
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, CliError::Api(kube::Error::Api(s)) if s.is_not_found()),
        "{err:?}"
    );
    cluster.stop().await;
}

async fn undo(cluster: &Cluster, to: Option<i64>) -> (Result<RollbackPlan, CliError>, String) {
    let opts = UndoOptions {
        resources: vec!["deploy/web".into()],
        to_revision: to,
        ..UndoOptions::default()
    };
    let mut out = Vec::new();
    let result = rollout::undo(cluster.client.clone(), &opts, &mut out).await;
    (result, text(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_restores_the_previous_or_the_named_revision() {
    let cluster = Cluster::with_nodes(2).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 2, "web:1", json!(1), json!(0)))
        .await;
    rolled_out(&cluster, "web").await;
    for image in ["web:2", "web:3"] {
        deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(&set_image(image)),
            )
            .await
            .expect("update template");
        let out = rolled_out(&cluster, "web").await;
        assert!(
            out.starts_with("Waiting for deployment") || out.starts_with("deployment"),
            "{out}"
        );
        live_pods(&cluster, "web", &[(image, 2)]).await;
    }
    let mut out = Vec::new();
    let opts = HistoryOptions {
        resources: vec!["deployment".into(), "web".into()],
        ..HistoryOptions::default()
    };
    rollout::history(cluster.client.clone(), &opts, &mut out)
        .await
        .expect("history");
    assert_eq!(
        text(out),
        "deployment.apps/web\nREVISION   CHANGE-CAUSE\n1          <none>\n2          <none>\n3          <none>\n"
    );

    let revision = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned()
    };
    let template_image = |d: &Deployment| {
        d.spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
    };

    // Plain undo: back to revision 2, which becomes revision 4.
    let (plan, out) = undo(&cluster, None).await;
    assert!(
        matches!(plan, Ok(RollbackPlan::Restore { revision: 2, .. })),
        "{plan:?}"
    );
    assert_eq!(out, "deployment.apps/web rolled back\n");
    let d = deployments.get("web").await.expect("get");
    assert_eq!(template_image(&d).as_deref(), Some("web:2"));
    let labels = d
        .spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert!(
        !labels.contains_key(POD_TEMPLATE_HASH_LABEL),
        "the hash label was copied back: {labels:?}"
    );
    rolled_out(&cluster, "web").await;
    live_pods(&cluster, "web", &[("web:2", 2)]).await;
    assert_eq!(
        revision(&deployments.get("web").await.expect("get")).as_deref(),
        Some("4")
    );
    assert_eq!(
        replica_sets(&cluster).await,
        [
            ("web:1".to_owned(), 0),
            ("web:2".to_owned(), 2),
            ("web:3".to_owned(), 0)
        ]
        .into(),
        "the old ReplicaSet is reused"
    );

    // --to-revision picks the named one.
    let (plan, out) = undo(&cluster, Some(1)).await;
    assert!(
        matches!(plan, Ok(RollbackPlan::Restore { revision: 1, .. })),
        "{plan:?}"
    );
    assert_eq!(out, "deployment.apps/web rolled back\n");
    rolled_out(&cluster, "web").await;
    live_pods(&cluster, "web", &[("web:1", 2)]).await;
    assert_eq!(
        revision(&deployments.get("web").await.expect("get")).as_deref(),
        Some("5")
    );

    // Revision 2 was renumbered 4 and 1 became 5: 2 is gone from history.
    let (plan, out) = undo(&cluster, Some(2)).await;
    let err = plan.expect_err("revision 2 no longer exists");
    assert_eq!(
        err.to_string(),
        "unable to find specified revision 2 in history"
    );
    assert_eq!(out, "");
    let (plan, _) = undo(&cluster, Some(7)).await;
    assert!(
        matches!(plan, Err(CliError::RevisionNotFound(7))),
        "{plan:?}"
    );

    // The current revision: nothing to do, nothing changes.
    let before = deployments.get("web").await.expect("get");
    let (plan, out) = undo(&cluster, Some(5)).await;
    assert_eq!(plan.expect("skip"), RollbackPlan::Skip { revision: 5 });
    assert_eq!(
        out,
        "deployment.apps/web skipped rollback (current template already matches revision 5)\n"
    );
    let after = deployments.get("web").await.expect("get");
    assert_eq!(before.metadata.generation, after.metadata.generation);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_times_out_while_pods_are_pending_and_succeeds_once_ready() {
    // No nodes yet: pods stay Pending.
    let mut cluster = Cluster::start().await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 2, "web:1", json!(1), json!(0)))
        .await;
    let mut stuck = deployment("stuck", 1, "stuck:1", json!(1), json!(0));
    stuck.spec.progress_deadline_seconds = Some(1);
    deployments
        .create(&PostParams::default(), &stuck)
        .await
        .expect("create stuck deployment");
    // Let the controller report on the current spec first, so what the
    // timeout says is deterministic.
    cluster
        .eventually("web status observed", || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            if s.observed_generation == d.metadata.generation && s.updated_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;

    // The scheduler explains itself with a FailedScheduling Event per
    // pending pod, saying what the pod's PodScheduled condition says.
    let events = Api::<Event>::namespaced(cluster.client.clone(), "default");
    cluster
        .eventually("FailedScheduling events for the web pods", || async {
            let listed = events
                .list(&ListParams::default().fields("reason=FailedScheduling"))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let pods = cluster.pods("web").await;
            let explained = pods
                .iter()
                .filter(|p| {
                    let condition = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                    listed.iter().any(|e| {
                        e.involved_object.uid == p.metadata.uid
                            && e.involved_object.kind.as_deref() == Some("Pod")
                            && e.type_.as_deref() == Some("Warning")
                            && condition.is_some_and(|c| c.message == e.message)
                    })
                })
                .count();
            if pods.len() == 2 && explained == 2 {
                Ok(())
            } else {
                Err(format!(
                    "{explained} of {} pods explained by {listed:?}",
                    pods.len()
                ))
            }
        })
        .await;

    let waiting = "Waiting for deployment \"web\" rollout to finish: 0 of 2 updated replicas are available...";
    let (result, out) = status(&cluster, "web", Duration::from_secs(2)).await;
    let err = result.expect_err("pods are not ready: must time out");
    assert!(matches!(err, CliError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "timed out after 2s waiting for deployment \"web\" rollout to finish \
         (last: 0 of 2 updated replicas are available)"
    );
    assert_eq!(out, format!("{waiting}\n"));

    // --watch=false: one look, no waiting, no error.
    let opts = StatusOptions {
        resources: vec!["deploy".into(), "web".into()],
        watch: false,
        ..StatusOptions::default()
    };
    let mut out = Vec::new();
    let state = rollout::status(cluster.client.clone(), &opts, &mut out)
        .await
        .expect("status once");
    assert!(matches!(state, RolloutState::Waiting { .. }), "{state:?}");
    assert_eq!(text(out), format!("{waiting}\n"));

    // The controller's progress deadline (1s) ends the wait with an error
    // long before the timeout.
    let (result, _) = status(&cluster, "stuck", DEADLINE).await;
    let err = result.expect_err("deadline exceeded");
    assert!(
        matches!(&err, CliError::ProgressDeadlineExceeded(n) if n == "stuck"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "deployment \"stuck\" exceeded its progress deadline"
    );

    // A node arrives: the waiting status call sees the rollout finish.
    let client = cluster.client.clone();
    let watching = tokio::spawn(async move {
        let opts = StatusOptions {
            resources: vec!["deploy/web".into()],
            timeout: Some(DEADLINE),
            ..StatusOptions::default()
        };
        let mut out = Vec::new();
        let result = rollout::status(client, &opts, &mut out).await;
        (result, text(out))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.add_node("node-1", "4", "8Gi").await;
    let (result, out) = watching.await.expect("status task");
    let state = result.unwrap_or_else(|e| panic!("{e}; printed:\n{out}"));
    assert!(matches!(state, RolloutState::Done { .. }), "{state:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some(waiting), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    live_pods(&cluster, "web", &[("web:1", 2)]).await;

    // A missing Deployment is the API's 404, at once.
    let (result, _) = status(&cluster, "nope", DEADLINE).await;
    assert!(
        matches!(&result, Err(CliError::Api(kube::Error::Api(s))) if s.is_not_found()),
        "{result:?}"
    );
    cluster.stop().await;
}

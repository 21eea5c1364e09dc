//! Reading container logs for `skiff logs POD [-c CONTAINER]` on the node
//! that runs the pod.

use std::path::Path;

use crate::error::{AgentError, Result};
use crate::state::StateStore;

/// The log of `container` (or the pod's only container) of pod
/// `namespace/pod`, as stored in `<data_dir>/pods/<uid>/<container>.log`.
/// `tail` keeps only the last N lines.
///
/// Fails with [`AgentError::NotFound`] if this node runs no such pod, or
/// the pod has several containers and none was named (the message lists
/// them, as kubectl does).
pub async fn logs(
    data_dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    tail: Option<usize>,
) -> Result<String> {
    let state = StateStore::open(data_dir)?.snapshot();
    let record = state
        .pods
        .values()
        .find(|r| r.namespace == namespace && r.name == pod)
        .ok_or_else(|| {
            AgentError::NotFound(format!("pod {namespace}/{pod} is not running on this node"))
        })?;
    let pod_dir = data_dir.join("pods").join(&record.uid);
    let mut names: Vec<String> = std::fs::read_dir(&pod_dir)
        .map_err(|e| AgentError::io(format!("read {}", pod_dir.display()), e))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .into_string()
                .ok()?
                .strip_suffix(".log")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    let name = match container {
        Some(c) if names.iter().any(|n| n == c) => c.to_owned(),
        Some(c) => {
            return Err(AgentError::NotFound(format!(
                "container {c} is not valid for pod {pod}: choose one of: [{}]",
                names.join(" ")
            )));
        }
        None if names.len() == 1 => names.remove(0),
        None => {
            return Err(AgentError::NotFound(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let path = pod_dir.join(format!("{name}.log"));
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| AgentError::io(format!("read {}", path.display()), e))?;
    Ok(match tail {
        Some(n) => last_lines(&text, n).to_owned(),
        None => text,
    })
}

/// The last `n` lines of `text` (a trailing newline does not count as a line).
pub fn last_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PodRecord;
    use std::collections::BTreeMap;

    #[test]
    fn tails_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 1), "c");
        assert_eq!(last_lines("a\n", 5), "a\n");
        assert_eq!(last_lines("a\n", 0), "");
    }

    #[tokio::test]
    async fn finds_logs_by_pod_and_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("state");
        store
            .update(|s| {
                s.pods.insert(
                    "u1".into(),
                    PodRecord {
                        uid: "u1".into(),
                        namespace: "shop".into(),
                        name: "web".into(),
                        netns: String::new(),
                        veth: String::new(),
                        ip: None,
                        containers: BTreeMap::new(),
                        restart_counts: BTreeMap::new(),
                    },
                )
            })
            .expect("update");
        let pod_dir = dir.path().join("pods/u1");
        std::fs::create_dir_all(&pod_dir).expect("mkdir");
        std::fs::write(pod_dir.join("app.log"), "one\ntwo\n").expect("write");
        assert_eq!(
            logs(dir.path(), "shop", "web", None, None)
                .await
                .expect("only container"),
            "one\ntwo\n"
        );
        assert_eq!(
            logs(dir.path(), "shop", "web", Some("app"), Some(1))
                .await
                .expect("tail"),
            "two\n"
        );
        std::fs::write(pod_dir.join("side.log"), "").expect("write");
        let err = logs(dir.path(), "shop", "web", None, None)
            .await
            .expect_err("ambiguous");
        assert!(
            err.to_string().contains("choose one of: [app side]"),
            "{err}"
        );
        assert!(matches!(
            logs(dir.path(), "shop", "nope", None, None).await,
            Err(AgentError::NotFound(_))
        ));
        assert!(matches!(
            logs(dir.path(), "shop", "web", Some("x"), None).await,
            Err(AgentError::NotFound(_))
        ));
    }
}

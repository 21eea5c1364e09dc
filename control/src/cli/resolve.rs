//! Resolving what the user typed (`po`, `pods`, `pod`, `Pod`,
//! `deployments.apps`) or a manifest's apiVersion/kind to an API resource,
//! through the server's discovery documents.

use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

use super::CliError;

/// kubectl's short names for the kinds Skiff serves (discovery in kube-rs
/// does not carry shortNames).
const SHORT_NAMES: &[(&str, &str)] = &[
    ("po", "pods"),
    ("svc", "services"),
    ("deploy", "deployments"),
    ("rs", "replicasets"),
    ("ns", "namespaces"),
    ("no", "nodes"),
    ("ds", "daemonsets"),
    ("sts", "statefulsets"),
    ("ev", "events"),
];

/// The resource plural a short name stands for, or the input unchanged
/// (pure; lower-cased).
pub fn expand_short_name(input: &str) -> String {
    let lower = input.to_ascii_lowercase();
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == lower)
        .map_or(lower, |(_, plural)| (*plural).to_owned())
}

/// A resolved resource.
#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// The server's resources, discovered once per command.
pub struct Resolver {
    discovery: Discovery,
}

impl Resolver {
    pub async fn new(client: kube::Client) -> Result<Self, CliError> {
        Ok(Self {
            discovery: Discovery::new(client).run().await?,
        })
    }

    fn wrap(found: (ApiResource, ApiCapabilities)) -> Resource {
        Resource {
            namespaced: found.1.scope == Scope::Namespaced,
            api: found.0,
        }
    }

    /// A kind as typed on the command line.
    pub fn by_name(&self, input: &str) -> Result<Resource, CliError> {
        let wanted = expand_short_name(input);
        let (name, group) = match wanted.split_once('.') {
            Some((n, g)) => (n.to_owned(), Some(g.to_owned())),
            None => (wanted.clone(), None),
        };
        for g in self.discovery.groups() {
            if group.as_deref().is_some_and(|want| want != g.name()) {
                continue;
            }
            for (ar, caps) in g.recommended_resources() {
                let kind = ar.kind.to_ascii_lowercase();
                if ar.plural == name || kind == name {
                    return Ok(Self::wrap((ar, caps)));
                }
            }
        }
        Err(CliError::UnknownKind(input.to_owned()))
    }

    /// The resource of a manifest's `apiVersion` + `kind`.
    pub fn by_gvk(&self, api_version: &str, kind: &str) -> Result<Resource, CliError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        self.discovery
            .resolve_gvk(&gvk)
            .map(Self::wrap)
            .ok_or_else(|| CliError::UnknownKind(format!("{kind} in {api_version}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_and_others_lower_case() {
        assert_eq!(expand_short_name("po"), "pods");
        assert_eq!(expand_short_name("SVC"), "services");
        assert_eq!(expand_short_name("Deployment"), "deployment");
        assert_eq!(expand_short_name("endpointslices"), "endpointslices");
    }
}

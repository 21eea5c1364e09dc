//! `limit` / `continue` paging of lists (pure).
//!
//! The continue token is opaque to clients: base64url of
//! `{"v":"meta.k8s.io/v1","rv":<revision of the first page>,"start":"<last key returned>"}`,
//! the shape kube-apiserver uses. Every page reports the first page's
//! resourceVersion, so a client that watches from it after the last page
//! misses nothing. The store cannot read an old revision, so later pages
//! show objects as they are now (each at its own resourceVersion), not as
//! they were at that revision; a token whose revision has been compacted
//! away is refused with 410 Expired, as Kubernetes does.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::store::Revision;

/// Version tag of tokens, as Kubernetes writes it.
const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// A decoded continue token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// Format version.
    pub v: String,
    /// Revision of the first page.
    pub rv: Revision,
    /// The last key returned; the next page starts after it.
    pub start: String,
}

impl ContinueToken {
    /// A token continuing after `start` for a list first read at `rv`.
    pub fn new(rv: Revision, start: impl Into<String>) -> Self {
        ContinueToken {
            v: TOKEN_VERSION.to_owned(),
            rv,
            start: start.into(),
        }
    }

    /// The opaque form.
    pub fn encode(&self) -> String {
        // A struct of a string and an integer always serializes.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses the opaque form; `None` if it is not one of ours.
    pub fn decode(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        let token: ContinueToken = serde_json::from_slice(&bytes).ok()?;
        (token.v == TOKEN_VERSION && token.rv > 0).then_some(token)
    }
}

/// One page of a key-ordered list.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Key of the last item when more follow.
    pub next_after: Option<String>,
    /// How many items follow this page.
    pub remaining: usize,
}

/// Takes the page after `start` (exclusive) of at most `limit` items (no
/// limit when `None` or 0) from items sorted by key.
pub fn page<T>(
    items: Vec<T>,
    key_of: impl Fn(&T) -> String,
    start: Option<&str>,
    limit: Option<usize>,
) -> Page<T> {
    let mut items: Vec<T> = match start {
        Some(start) => items
            .into_iter()
            .filter(|item| key_of(item).as_str() > start)
            .collect(),
        None => items,
    };
    match limit.filter(|l| *l > 0) {
        Some(limit) if items.len() > limit => {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let next_after = items.last().map(&key_of);
            Page {
                items,
                next_after,
                remaining,
            }
        }
        _ => Page {
            items,
            next_after: None,
            remaining: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken::new(42, "/registry/pods/default/web-2");
        let encoded = token.encode();
        assert!(!encoded.contains('/') && !encoded.contains('+'));
        assert_eq!(ContinueToken::decode(&encoded), Some(token));
        assert_eq!(ContinueToken::decode("not a token"), None);
        let foreign = URL_SAFE_NO_PAD.encode(br#"{"v":"other","rv":1,"start":"x"}"#);
        assert_eq!(ContinueToken::decode(&foreign), None);
    }

    #[test]
    fn pages_follow_keys() {
        let keys: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        let first = page(keys.clone(), Clone::clone, None, Some(2));
        assert_eq!(first.items, ["a", "b"]);
        assert_eq!(first.next_after.as_deref(), Some("b"));
        assert_eq!(first.remaining, 3);
        let second = page(keys.clone(), Clone::clone, Some("b"), Some(2));
        assert_eq!(second.items, ["c", "d"]);
        let last = page(keys.clone(), Clone::clone, Some("d"), Some(2));
        assert_eq!((last.items.len(), last.next_after), (1, None));
        let all = page(keys.clone(), Clone::clone, None, Some(0));
        assert_eq!((all.items.len(), all.next_after), (5, None));
        let exact = page(keys, Clone::clone, None, Some(5));
        assert_eq!(exact.next_after, None, "no token when nothing follows");
    }
}

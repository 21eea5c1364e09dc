//! Names of everything a pod sandbox creates, derived only from the pod uid
//! (and the node name for cgroups), so that a restarted agent and
//! `skiff agent cleanup` find the same objects again.

/// Prefix of every pod network namespace (`ip netns list | grep skiff-pod-`).
pub const POD_NETNS_PREFIX: &str = "skiff-pod-";
/// Prefix of the node-side end of every pod veth.
pub const POD_VETH_PREFIX: &str = "skv";
/// Interface name of the pod's end of its veth.
pub const POD_IFNAME: &str = "eth0";

/// A short, stable, interface-name-safe id for a pod uid: the first 12 hex
/// digits of a UUID uid (so operators can match it by eye), otherwise 12 hex
/// digits of an FNV-1a hash of the uid.
pub fn pod_id(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if uid.len() == 36 && hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return hex[..12].to_owned();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")[..12].to_owned()
}

/// `skiff-pod-<id>`.
pub fn netns_name(uid: &str) -> String {
    format!("{POD_NETNS_PREFIX}{}", pod_id(uid))
}

/// `skv<id>`: 15 bytes, the kernel's limit.
pub fn veth_name(uid: &str) -> String {
    format!("{POD_VETH_PREFIX}{}", pod_id(uid))
}

/// The directory name of a pod's cgroup: `pod-<uid>` with anything but
/// ASCII alphanumerics, `-` and `_` replaced, so no uid can escape the
/// node's cgroup subtree.
pub fn pod_cgroup_name(uid: &str) -> String {
    format!("pod-{}", sanitize(uid))
}

/// A container name is a DNS label already; sanitised anyway for paths.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_uids_keep_their_prefix() {
        let uid = "3F2A9C10-7b6e-4c1d-9a8b-0123456789ab";
        assert_eq!(pod_id(uid), "3f2a9c107b6e");
        assert_eq!(netns_name(uid), "skiff-pod-3f2a9c107b6e");
        assert_eq!(veth_name(uid), "skv3f2a9c107b6e");
        assert_eq!(veth_name(uid).len(), 15);
    }

    #[test]
    fn other_uids_hash_to_distinct_safe_ids() {
        let a = pod_id("aaaaaaaaaaaaaaaaaaaa-1");
        let b = pod_id("aaaaaaaaaaaaaaaaaaaa-2");
        assert_ne!(a, b);
        for id in [a, b, pod_id("../../etc"), pod_id("")] {
            assert_eq!(id.len(), 12);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(pod_cgroup_name("../x y"), "pod-___x_y");
    }
}

//! Finding and removing namespaces left behind by test processes that died
//! before their [`crate::Netns`] guards could drop (SIGKILL, abort, a
//! crashed CI runner).
//!
//! A namespace is swept only when its name follows [`crate::netns_name`]'s
//! `skiff-<prefix>-<pid>-<n>` scheme and no process with that PID exists.
//! Anything else with the `skiff-` prefix is listed but never touched, and
//! a recycled PID only makes the sweep keep a namespace, never remove one
//! in use. Processes still inside a swept namespace are not signalled (we
//! did not start them); deleting the name just unlinks it.

use std::io::ErrorKind;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::command;
use crate::error::{Error, Result};
use crate::netns::{NETNS_PREFIX, NETNS_RUN_DIR};

/// A `skiff-` namespace found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its name under `/var/run/netns`.
    pub name: String,
    /// The PID encoded in the name, if the name follows our scheme.
    pub owner_pid: Option<u32>,
    /// Whether a process with that PID exists now (false when there is no PID).
    pub owner_alive: bool,
}

/// What [`sweep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Namespaces deleted because their creator is gone.
    pub removed: Vec<String>,
    /// Namespaces left alone (creator alive, or name without a PID).
    pub kept: Vec<Leftover>,
}

/// The creating PID encoded in a `skiff-<prefix>-<pid>-<n>` name; `None` for
/// any other name. Parsed from the right, so prefixes may contain `-`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    let prefix = parts.next()?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if prefix.is_empty() || !all_digits(n) || !all_digits(pid) {
        return None;
    }
    n.parse::<u32>().ok()?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Lists every namespace under `/var/run/netns` whose name starts with
/// `skiff-`, sorted by name. No directory means no namespaces.
pub fn list() -> Result<Vec<Leftover>> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                what: format!("read {NETNS_RUN_DIR}"),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            what: format!("read {NETNS_RUN_DIR}"),
            source,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(NETNS_PREFIX) {
            continue;
        }
        let owner_pid = owner_pid(&name);
        found.push(Leftover {
            owner_alive: owner_pid.is_some_and(pid_alive),
            owner_pid,
            name,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Deletes every `skiff-` namespace whose creating process no longer
/// exists. Stops at the first `ip netns delete` that fails.
pub fn sweep() -> Result<Sweep> {
    let mut report = Sweep::default();
    for leftover in list()? {
        if leftover.owner_pid.is_some() && !leftover.owner_alive {
            command::ip(["netns", "delete", leftover.name.as_str()])?;
            tracing::info!(netns = %leftover.name, owner_pid = leftover.owner_pid, "swept leftover network namespace");
            report.removed.push(leftover.name);
        } else {
            report.kept.push(leftover);
        }
    }
    Ok(report)
}

/// Whether a process with `pid` exists (signal 0 probe; EPERM still means it
/// exists).
fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pid_from_our_names() {
        assert_eq!(owner_pid("skiff-ul-1234-0"), Some(1234));
        assert_eq!(owner_pid("skiff-node0-99-17"), Some(99));
        assert_eq!(owner_pid("skiff-a-b-c-7-3"), Some(7));
    }

    #[test]
    fn rejects_names_outside_the_scheme() {
        for name in [
            "ul-1234-0",
            "skiff-",
            "skiff-1234-0",
            "skiff--1234-0",
            "skiff-ul-1234",
            "skiff-ul-abc-0",
            "skiff-ul-12x-0",
            "skiff-ul-1234-",
            "skiff-ul--0",
            "skiff-ul-0-0",
            "skiff-ul-+12-0",
            "skiff-ul-99999999999-0",
            "other-ul-1234-0",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn own_pid_is_alive_and_reaped_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        // A reaped PID is free until the kernel cycles through pid_max.
        assert!(!pid_alive(pid));
    }
}

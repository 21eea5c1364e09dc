//! Mount bookkeeping: which paths are mount points (from
//! `/proc/self/mountinfo`), the private directory that holds persistent
//! namespace files, and detaching them.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{AgentError, Result};

/// Mount points listed in mountinfo text (field 5, octal escapes undone).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Current mount points of this process's mount namespace.
pub fn current_mount_points() -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| AgentError::io("read /proc/self/mountinfo", e))?;
    Ok(mount_points(&text))
}

/// True if `path` is a mount point.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(current_mount_points()?.iter().any(|p| p == path))
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = current_mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Makes `dir` a private bind mount of itself (once), as persistent mount
/// namespace files require: a bind of a mount namespace file may not sit
/// on a shared mount that would propagate into that namespace.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AgentError::io(format!("create {}", dir.display()), e))?;
    if !is_mount_point(dir)? {
        nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| AgentError::sys(format!("bind-mount {} onto itself", dir.display()), e))?;
    }
    nix::mount::mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| AgentError::sys(format!("make {} a private mount", dir.display()), e))
}

/// Lazily unmounts `path` (no error if it is not mounted or absent).
pub fn detach(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(AgentError::sys(format!("unmount {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points_with_escapes() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    90 27 0:4 nsfs /var/lib/skiff/ns/ab\\040c/mnt rw - nsfs nsfs rw\n";
        assert_eq!(
            mount_points(text),
            [
                PathBuf::from("/proc"),
                PathBuf::from("/var/lib/skiff/ns/ab c/mnt")
            ]
        );
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).expect("mountinfo"));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_mount_point(dir.path()).expect("mountinfo"));
        assert!(mounts_under(dir.path()).expect("mountinfo").is_empty());
    }
}

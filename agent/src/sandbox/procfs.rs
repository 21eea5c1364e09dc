//! Process identity: `/proc/<pid>/stat` start times (so a recorded pid is
//! only trusted while it still names the same process) and pidfds (so
//! signals never reach a recycled pid).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

use crate::error::{AgentError, Result};

/// Start time (field 22, clock ticks since boot) and state (field 3) from
/// the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: skip 18 more.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of `pid`, or `None` if it does not exist (or is a zombie,
/// which for our purposes has exited).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match parse_stat(&stat)? {
        ('Z' | 'X', _) => None,
        (_, start) => Some(start),
    }
}

/// True if `pid` exists, is not a zombie, and started at `ticks`.
pub fn is_same_process(pid: i32, ticks: u64) -> bool {
    pid > 0 && start_ticks(pid) == Some(ticks)
}

/// A pidfd: names one process for good, readable once it exits.
#[derive(Debug)]
pub struct PidFd {
    pid: i32,
    fd: OwnedFd,
}

impl PidFd {
    /// Opens a pidfd for `pid`. To be sure it names the expected process,
    /// check [`is_same_process`] *after* opening.
    pub fn open(pid: i32) -> Result<Self> {
        // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(AgentError::io(
                format!("pidfd_open({pid})"),
                std::io::Error::last_os_error(),
            ));
        }
        let fd = i32::try_from(fd).map_err(|_| {
            AgentError::io(
                format!("pidfd_open({pid})"),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })?;
        // SAFETY: the kernel just returned this fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { pid, fd })
    }

    /// Opens a pidfd for `pid` only if it is still the process that started
    /// at `ticks`.
    pub fn open_verified(pid: i32, ticks: u64) -> Option<Self> {
        let fd = Self::open(pid).ok()?;
        is_same_process(pid, ticks).then_some(fd)
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True once the process has exited (zombie or reaped).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc == 1 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// Reaps the process if it is our child and has exited; a no-op for
    /// processes we did not fork (their new parent reaps them).
    pub fn reap_if_child(&self) {
        // SAFETY: zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pidfd and pointer; WNOHANG never blocks.
        let _ = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
    }

    /// Sends `signal` to exactly this process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(AgentError::io(
            format!("signal {signal} to pid {}", self.pid),
            err,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_command_names() {
        let stat = "1234 (we ird) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987_654)));
        assert_eq!(parse_stat("1 (init) Z"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_identified_and_dead_child_is_not() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let ticks = start_ticks(me).expect("own stat");
        assert!(is_same_process(me, ticks));
        assert!(!is_same_process(me, ticks + 1));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = i32::try_from(child.id()).expect("pid");
        let fd = PidFd::open(pid).expect("pidfd");
        child.wait().expect("wait");
        assert!(fd.has_exited());
        assert!(start_ticks(pid).is_none());
    }
}

//! Processes a [`crate::Netns`] started, held by pidfd so that teardown can
//! signal them without ever hitting a recycled PID.
//!
//! The caller owns the `std::process::Child` and may reap it at any time;
//! after that its PID number may belong to someone else. A pidfd keeps
//! naming the original process, and `waitid(P_PIDFD, WNOWAIT)` tells
//! whether that process is still ours (alive, or a zombie nobody reaped —
//! either way its PID, and so its process group id, cannot be reused).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// One spawned process: its PID (also its process group id, since we spawn
/// with `process_group(0)`) and a pidfd for it.
#[derive(Debug)]
pub(crate) struct Spawned {
    pid: i32,
    pidfd: OwnedFd,
}

impl Spawned {
    /// Opens a pidfd for a child just spawned (not yet reaped, so `pid` is
    /// certainly it).
    pub(crate) fn track(pid: u32) -> Result<Self> {
        let pid = i32::try_from(pid).map_err(|_| Error::Io {
            what: format!("pid {pid} out of range"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::Io {
                what: format!("pidfd_open({pid})"),
                source: std::io::Error::last_os_error(),
            });
        }
        let fd = i32::try_from(fd).map_err(|_| Error::Io {
            what: format!("pidfd_open({pid}) returned an impossible fd"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?;
        // SAFETY: the syscall just returned this fd and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { pid, pidfd })
    }

    /// True while the process is alive or an unreaped zombie: then its PID
    /// (and process group id) still names it and may be signalled.
    fn is_ours(&self) -> bool {
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pidfd, valid pointer; WNOWAIT leaves the zombie in place
        // for the owner of the Child to reap.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        rc == 0
    }

    /// True once the process has exited (pidfds poll readable on exit).
    fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc == 1 && pfd.revents & libc::POLLIN != 0
    }

    /// Sends `signal` to the process and to its process group (children it
    /// started), but only while [`Self::is_ours`] holds.
    fn signal(&self, signal: Signal) {
        if !self.is_ours() {
            return;
        }
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0) signals exactly the
        // process the pidfd names.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            tracing::trace!(pid = self.pid, ?signal, error = %std::io::Error::last_os_error(), "pidfd_send_signal");
        }
        // The group may be gone if the command moved itself to another one.
        match killpg(Pid::from_raw(self.pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(pid = self.pid, ?signal, %error, "killpg failed"),
        }
    }
}

/// Stops `procs`: SIGTERM, up to `grace` for them to exit, then SIGKILL, then
/// up to two seconds for the kills to land. Bounded; never blocks longer.
pub(crate) fn terminate_all(procs: &[Spawned], grace: Duration) {
    if procs.is_empty() {
        return;
    }
    for p in procs {
        p.signal(Signal::SIGTERM);
    }
    wait_exited(procs, grace);
    for p in procs {
        // Also hits grandchildren that ignored SIGTERM after their leader left.
        p.signal(Signal::SIGKILL);
    }
    if !wait_exited(procs, Duration::from_secs(2)) {
        for p in procs.iter().filter(|p| !p.has_exited()) {
            tracing::error!(pid = p.pid, "spawned process survived SIGKILL");
        }
    }
}

/// Polls until every process has exited or `limit` passes; true if all exited.
fn wait_exited(procs: &[Spawned], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if procs.iter().all(Spawned::has_exited) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

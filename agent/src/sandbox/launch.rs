//! Starting a container process inside a pod's namespaces, detached from
//! the agent, with a tiny shim that records its exit status.
//!
//! ```text
//! agent ──fork──► shim (setsid, signals blocked) ──fork──► container
//!                  │ writes <name>.pid                      │ setpgid(0,0), joins its cgroup,
//!                  │ closes every fd                        │ setns net/ipc/uts/mnt,
//!                  │ waitpid(container)                     │ unshare(mnt) + volume binds,
//!                  └ writes <name>.exit, _exit(0)           └ chdir, exec(command)
//! ```
//!
//! Why a shim: the container must outlive the agent (an agent restart
//! adopts it), so it cannot be the agent's child for its exit status; the
//! shim is its parent, and writes the status to a file any later agent can
//! read. Both are started by `std::process::Command` with a `pre_exec`
//! hook: the hook runs in the forked shim, forks again, and the grandchild
//! returns from the hook so `std` execs the command there (keeping std's
//! exec-error reporting: a failed exec fails `spawn`). The shim never
//! returns from the hook; it closes every descriptor (including std's
//! error pipe, so `spawn` returns once the container has exec'd) and only
//! makes async-signal-safe system calls, as required after `fork` in a
//! multi-threaded process.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{AgentError, Result};

/// The namespaces a container joins, as open nsfs files.
#[derive(Debug)]
pub struct Namespaces {
    /// Network namespace (`/var/run/netns/<name>`).
    pub net: File,
    /// IPC namespace file.
    pub ipc: File,
    /// UTS namespace file.
    pub uts: File,
    /// Mount namespace file.
    pub mnt: File,
}

/// One bind mount done in the container's own mount namespace.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Source path (in the pod's mount namespace, which sees the node's
    /// filesystem).
    pub source: PathBuf,
    /// Target path.
    pub target: PathBuf,
    /// Remount read-only after binding.
    pub read_only: bool,
}

/// Everything needed for one start.
#[derive(Debug)]
pub struct LaunchSpec<'a> {
    /// Program and arguments.
    pub program: &'a str,
    /// Arguments.
    pub args: &'a [String],
    /// Full environment.
    pub env: &'a [(String, String)],
    /// Working directory inside the container.
    pub working_dir: &'a Path,
    /// Namespaces to join.
    pub namespaces: &'a Namespaces,
    /// Bind mounts.
    pub binds: &'a [Bind],
    /// The container's cgroup directory, if any.
    pub cgroup: Option<&'a Path>,
    /// Log file (stdout and stderr, appended).
    pub log: &'a Path,
    /// Where the shim writes the container's pid.
    pub pid_file: &'a Path,
    /// Where the shim writes the exit status.
    pub exit_file: &'a Path,
}

/// A started container: its pid (read from the shim's pid file) and the
/// shim as the agent's child.
#[derive(Debug)]
pub struct Launched {
    /// The container process (its own process group leader).
    pub pid: i32,
    /// The shim, the agent's child: reap it with `try_wait`.
    pub shim: Child,
}

/// How the shim recorded the container's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl ExitStatus {
    /// Kubernetes-style exit code: the code, or 128 + signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }

    /// The signal, if one ended the process.
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal(s) => Some(s),
        }
    }
}

/// Parses the shim's exit file: `code N` or `signal N`.
pub fn parse_exit_file(text: &str) -> Option<ExitStatus> {
    let (kind, n) = text.trim().split_once(' ')?;
    let n: i32 = n.trim().parse().ok()?;
    match kind {
        "code" => Some(ExitStatus::Code(n)),
        "signal" => Some(ExitStatus::Signal(n)),
        _ => None,
    }
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| AgentError::Config(format!("path {} contains a NUL byte", p.display())))
}

/// Everything the forked processes touch, prepared before the fork so the
/// hook allocates nothing.
struct Prepared {
    ns: [(RawFd, libc::c_int); 4],
    binds: Vec<(CString, CString, bool)>,
    cgroup_procs: Option<CString>,
    working_dir: CString,
}

/// The shim's two files.
struct ShimFiles {
    pid_file: CString,
    exit_file: CString,
}

impl Prepared {
    fn new(
        namespaces: &Namespaces,
        binds: &[Bind],
        cgroup: Option<&Path>,
        working_dir: &Path,
    ) -> Result<Self> {
        Ok(Self {
            ns: [
                (namespaces.net.as_raw_fd(), libc::CLONE_NEWNET),
                (namespaces.ipc.as_raw_fd(), libc::CLONE_NEWIPC),
                (namespaces.uts.as_raw_fd(), libc::CLONE_NEWUTS),
                // Mount last: after it, paths resolve in the pod's view.
                (namespaces.mnt.as_raw_fd(), libc::CLONE_NEWNS),
            ],
            binds: binds
                .iter()
                .map(|b| Ok((cstring(&b.source)?, cstring(&b.target)?, b.read_only)))
                .collect::<Result<_>>()?,
            cgroup_procs: cgroup
                .map(|c| cstring(&c.join("cgroup.procs")))
                .transpose()?,
            working_dir: cstring(working_dir)?,
        })
    }
}

/// A command that runs `program args` in the container's namespaces,
/// cgroup and volume mounts as a direct child of the caller, in its own
/// process group (for exec probes, which the agent waits for itself).
pub fn command_in(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    working_dir: &Path,
    namespaces: &Namespaces,
    binds: &[Bind],
    cgroup: Option<&Path>,
) -> Result<Command> {
    let prepared = Prepared::new(namespaces, binds, cgroup, working_dir)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    // SAFETY: as in `launch`: only raw system calls on prepared data.
    unsafe {
        cmd.pre_exec(move || enter_container(&prepared));
    }
    Ok(cmd)
}

/// Starts the container described by `spec`. Returns once it has exec'd;
/// fails if any step before exec fails (the error says which) or the exec
/// itself fails (e.g. no such program).
pub fn launch(spec: &LaunchSpec<'_>) -> Result<Launched> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log)
        .map_err(|e| AgentError::io(format!("open log {}", spec.log.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| AgentError::io(format!("dup log {}", spec.log.display()), e))?;
    for stale in [spec.pid_file, spec.exit_file] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io(format!("remove {}", stale.display()), e)),
        }
    }
    let prepared = Prepared::new(spec.namespaces, spec.binds, spec.cgroup, spec.working_dir)?;
    let files = ShimFiles {
        pid_file: cstring(spec.pid_file)?,
        exit_file: cstring(spec.exit_file)?,
    };

    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // SAFETY: the hook runs in the forked child of a multi-threaded process
    // and so may only make async-signal-safe calls: it uses raw libc system
    // calls on data prepared above, never allocates, locks or panics.
    unsafe {
        cmd.pre_exec(move || shim_then_container(&prepared, &files));
    }
    let shim = cmd.spawn().map_err(|source| AgentError::Spawn {
        command: crate::command::render(spec.program, spec.args),
        source,
    })?;
    // The shim wrote the pid file before closing std's error pipe, which
    // `spawn` waited for, so the file is complete here.
    let text = std::fs::read_to_string(spec.pid_file)
        .map_err(|e| AgentError::io(format!("read {}", spec.pid_file.display()), e))?;
    let pid = text.trim().parse().map_err(|_| {
        AgentError::io(
            format!("parse pid {text:?} from {}", spec.pid_file.display()),
            io::Error::from(io::ErrorKind::InvalidData),
        )
    })?;
    Ok(Launched { pid, shim })
}

/// Runs in the forked shim. Returns only in the container grandchild.
fn shim_then_container(p: &Prepared, files: &ShimFiles) -> io::Result<()> {
    // SAFETY (whole function): raw system calls on valid, pre-built
    // pointers; see `launch`.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let child = libc::fork();
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child > 0 {
            run_shim(files, child);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        enter_container(p)
    }
}

/// The shim: record the pid, let go of every descriptor, wait, record the
/// status, exit. Never returns.
unsafe fn run_shim(p: &ShimFiles, child: libc::pid_t) -> ! {
    let mut buf = [0u8; 32];
    // SAFETY: see `shim_then_container`.
    unsafe {
        let n = format_i64(&mut buf, i64::from(child));
        write_file(&p.pid_file, &buf[..n], None);
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        let mut status: libc::c_int = 0;
        let recorded = loop {
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                break true;
            }
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break false;
        };
        if recorded {
            let (prefix, n): (&[u8], i64) = if libc::WIFSIGNALED(status) {
                (b"signal ", i64::from(libc::WTERMSIG(status)))
            } else {
                (b"code ", i64::from(libc::WEXITSTATUS(status)))
            };
            let len = format_i64(&mut buf, n);
            write_file(&p.exit_file, &buf[..len], Some(prefix));
        }
        libc::_exit(0);
    }
}

/// The container side, before std execs the command.
unsafe fn enter_container(p: &Prepared) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: see `shim_then_container`.
    unsafe {
        check(libc::setpgid(0, 0))?;
        if let Some(procs) = &p.cgroup_procs {
            // Join before entering the mount namespace: the cgroup fs is
            // the node's.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd)?;
            let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (fd, kind) in p.ns {
            check(libc::setns(fd, kind))?;
        }
        // A private mount namespace per container: its volume binds are
        // seen by it alone and vanish with it.
        check(libc::unshare(libc::CLONE_NEWNS))?;
        for (src, dst, ro) in &p.binds {
            check(libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if *ro {
                check(libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
        check(libc::chdir(p.working_dir.as_ptr()))?;
    }
    Ok(())
}

/// Writes `prefix` + `data` + newline to `path` (created, truncated).
unsafe fn write_file(path: &CString, data: &[u8], prefix: Option<&[u8]>) {
    // SAFETY: valid NUL-terminated path and in-bounds buffers.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return;
        }
        if let Some(prefix) = prefix {
            libc::write(fd, prefix.as_ptr().cast(), prefix.len());
        }
        libc::write(fd, data.as_ptr().cast(), data.len());
        libc::write(fd, b"\n".as_ptr().cast(), 1);
        libc::fsync(fd);
        libc::close(fd);
    }
}

/// Formats `n` in decimal into `buf` without allocating; returns the length.
fn format_i64(buf: &mut [u8; 32], n: i64) -> usize {
    let mut digits = [0u8; 20];
    let mut v = n.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut out = 0;
    if n < 0 {
        buf[0] = b'-';
        out = 1;
    }
    for i in (0..len).rev() {
        buf[out] = digits[i];
        out += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_integers_without_allocating() {
        let mut buf = [0u8; 32];
        for n in [0i64, 7, 42, -13, 4_194_304, i64::MIN, i64::MAX] {
            let len = format_i64(&mut buf, n);
            assert_eq!(
                std::str::from_utf8(&buf[..len]).expect("ascii"),
                n.to_string()
            );
        }
    }

    #[test]
    fn exit_files_parse() {
        assert_eq!(parse_exit_file("code 3\n"), Some(ExitStatus::Code(3)));
        assert_eq!(parse_exit_file("signal 15\n"), Some(ExitStatus::Signal(15)));
        assert_eq!(ExitStatus::Signal(15).exit_code(), 143);
        assert_eq!(parse_exit_file("garbage"), None);
        assert_eq!(parse_exit_file(""), None);
    }
}

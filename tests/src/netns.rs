//! [`Netns`]: a named network namespace that is deleted, with every process
//! started in it, when the guard drops — also when the test panics.
//!
//! Setup goes through `ip` (iproute2) rather than rtnetlink: test topologies
//! are a handful of one-shot operations, `ip` is on every machine that runs
//! these tests, its errors are readable, and the command line in an error
//! can be pasted into a shell to reproduce by hand. Entering a namespace is
//! done with `setns(2)` (nix) instead, because it has to happen inside our
//! own threads and children.
//!
//! Names are `skiff-<prefix>-<pid>-<n>`: the creating PID lets
//! [`crate::leftovers`] sweep namespaces left by a process that was killed
//! before its guards could drop.

use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ipnetwork::IpNetwork;
use nix::sched::CloneFlags;

use crate::command::{self, render_command};
use crate::error::{Error, Result};
use crate::spawned::{self, Spawned};

/// Prefix of every namespace this library creates.
pub const NETNS_PREFIX: &str = "skiff-";

/// Where iproute2 keeps named namespaces (bind mounts of `/proc/<pid>/ns/net`).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// How long processes get between SIGTERM and SIGKILL at teardown.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Builds the namespace name for `prefix`, creating PID `pid` and sequence `n`.
///
/// Fails if `prefix` is empty, longer than 32 bytes, or holds anything but
/// ASCII letters, digits, `_` and `-`.
pub fn netns_name(prefix: &str, pid: u32, n: u32) -> Result<String> {
    let invalid = |reason| Error::InvalidName {
        name: prefix.to_owned(),
        reason,
    };
    if prefix.is_empty() {
        return Err(invalid("namespace prefix is empty"));
    }
    if prefix.len() > 32 {
        return Err(invalid("namespace prefix is longer than 32 bytes"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "namespace prefix may hold only ASCII letters, digits, '_' and '-'",
        ));
    }
    Ok(format!("{NETNS_PREFIX}{prefix}-{pid}-{n}"))
}

/// Checks an interface name the way the kernel will (length, no `/`,
/// no whitespace, not `.`/`..`), so the error names the bad name instead of
/// an opaque netlink failure.
pub fn validate_ifname(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("interface name is empty"));
    }
    if name.len() > IFNAME_MAX {
        return Err(invalid("interface name is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("interface name may not be '.' or '..'"));
    }
    if name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(invalid(
            "interface name may not contain '/', ':' or whitespace",
        ));
    }
    Ok(())
}

/// A named network namespace owned by this guard.
///
/// Dropping it stops every process started with [`Netns::spawn`] (SIGTERM
/// to the process and its process group, SIGKILL after a short grace) and
/// then deletes the namespace, which destroys its interfaces (and both ends
/// of any veth with an end in it). Teardown failures are logged, not raised.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    spawned: Mutex<Vec<Spawned>>,
}

impl Netns {
    /// Creates `skiff-<prefix>-<pid>-<n>` with loopback up.
    ///
    /// Fails on an invalid prefix, or if `ip netns add` or bringing `lo` up fails
    /// (the namespace is deleted again then). Needs root (CAP_SYS_ADMIN).
    pub fn new(prefix: &str) -> Result<Self> {
        let name = netns_name(
            prefix,
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
        )?;
        command::ip(["netns", "add", name.as_str()])?;
        let ns = Self {
            path: Path::new(NETNS_RUN_DIR).join(&name),
            name,
            spawned: Mutex::new(Vec::new()),
        };
        ns.set_up("lo")?;
        tracing::debug!(netns = %ns.name, "created network namespace");
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file under [`NETNS_RUN_DIR`]; opening it yields an fd
    /// usable with `setns(2)`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `cmd args` inside the namespace (`ip netns exec`, which also
    /// remounts `/sys` for it) and returns its output, whatever its exit
    /// status. Fails only if the command could not be started.
    pub fn exec<I, S>(&self, cmd: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> = vec![
            "netns".into(),
            "exec".into(),
            self.name.clone().into(),
            cmd.into(),
        ];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        command::output("ip", &full)
    }

    /// Runs `ip -n <name> args` and returns its stdout; a non-zero exit is
    /// [`Error::Command`] naming the command line and its stderr.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        command::ip(&full)
    }

    /// Starts `cmd` inside the namespace and remembers it, so that dropping
    /// the guard stops it.
    ///
    /// The child calls `setns(2)` between fork and exec (no extra `ip`
    /// process, and the PID returned is the command itself). Unlike
    /// [`Netns::exec`], `/sys` is not remounted: a program that reads
    /// `/sys/class/net` sees the root namespace's view there. The child runs
    /// in its own process group so teardown can also stop what it starts;
    /// a command that leaves that group (`setsid`) is on its own.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        enter_netns_on_spawn(cmd, &self.path)?;
        cmd.process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: render_command(&program, cmd.get_args()),
            source,
        })?;
        match Spawned::track(child.id()) {
            Ok(tracked) => {
                tracing::debug!(netns = %self.name, pid = child.id(), program, "spawned");
                self.spawned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(tracked);
                Ok(child)
            }
            Err(e) => {
                // Untracked children would outlive the guard; the Child is
                // still unreaped here, so killing it by PID is safe.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Runs `f` on a fresh thread that has entered the namespace and returns
    /// its result; a panic in `f` is resumed on the caller's thread.
    ///
    /// Sockets opened by `f` stay in the namespace after the thread ends, so
    /// `ns.run_in(|| TcpListener::bind(addr))` yields a listener that any
    /// thread can use. Fails if the namespace cannot be entered.
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        run_in_netns(&self.path, f)
    }

    /// Brings interface `ifname` up.
    pub fn set_up(&self, ifname: &str) -> Result<()> {
        validate_ifname(ifname)?;
        self.ip(["link", "set", "dev", ifname, "up"]).map(drop)
    }

    /// Adds address `addr` (with its prefix length) to `ifname`.
    pub fn add_addr(&self, ifname: &str, addr: IpNetwork) -> Result<()> {
        validate_ifname(ifname)?;
        self.ip(["addr", "add", &addr.to_string(), "dev", ifname])
            .map(drop)
    }

    /// Adds a route to `dest` via gateway `via`.
    pub fn add_route(&self, dest: IpNetwork, via: IpAddr) -> Result<()> {
        self.ip(["route", "add", &dest.to_string(), "via", &via.to_string()])
            .map(drop)
    }

    /// Adds a route to `dest` directly out of interface `ifname` (on-link).
    pub fn add_dev_route(&self, dest: IpNetwork, ifname: &str) -> Result<()> {
        validate_ifname(ifname)?;
        self.ip(["route", "add", &dest.to_string(), "dev", ifname])
            .map(drop)
    }

    /// Sets the namespace's sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`)
    /// to `value`. Only `net.*` keys are per namespace; others are refused
    /// because writing them would change the whole machine.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        let what = format!("write {value:?} to {} in {}", path.display(), self.name);
        self.run_in(|| std::fs::write(&path, value))?
            .map_err(|source| Error::Io { what, source })
    }

    /// Reads the namespace's sysctl `key` (dotted, `net.*` only), trimmed.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        let what = format!("read {} in {}", path.display(), self.name);
        self.run_in(|| std::fs::read_to_string(&path))?
            .map(|s| s.trim().to_owned())
            .map_err(|source| Error::Io { what, source })
    }

    /// Names of the interfaces in the namespace.
    pub fn link_names(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Link {
            ifname: String,
        }
        let json = self.ip(["-j", "link", "show"])?;
        let links: Vec<Link> = serde_json::from_str(&json).map_err(|source| Error::Parse {
            command: format!("ip -n {} -j link show", self.name),
            source,
        })?;
        Ok(links.into_iter().map(|l| l.ifname).collect())
    }
}

/// Makes `cmd` enter the network namespace at `path` (any namespace file)
/// between fork and exec: setns(2) only, so unlike `ip netns exec` the
/// command keeps this process's mount namespace (what it mounts, e.g.
/// under /var/run/netns, stays visible to everyone). The namespace file
/// stays open (close-on-exec) as long as `cmd` lives.
pub fn enter_netns_on_spawn(cmd: &mut Command, path: &Path) -> Result<()> {
    let ns_file = File::open(path).map_err(|source| Error::Io {
        what: format!("open {}", path.display()),
        source,
    })?;
    // SAFETY: the closure only calls setns(2), which is async-signal-safe,
    // on an fd opened before the fork and owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered the network namespace at
/// `path` (any namespace file: `/var/run/netns/<name>`, `/proc/<pid>/ns/net`)
/// and returns its result; a panic in `f` is resumed on the caller's thread.
/// For namespaces this process did not create; see [`Netns::run_in`].
pub fn run_in_netns<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns_file = File::open(path).map_err(|source| Error::Io {
        what: format!("open {}", path.display()),
        source,
    })?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            nix::sched::setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                Error::Setns {
                    netns: path.display().to_string(),
                    source,
                }
            })?;
            drop(ns_file);
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        let procs =
            std::mem::take(&mut *self.spawned.lock().unwrap_or_else(PoisonError::into_inner));
        spawned::terminate_all(&procs, TERM_GRACE);
        match command::ip(["netns", "delete", self.name.as_str()]) {
            Ok(_) => tracing::debug!(netns = %self.name, "deleted network namespace"),
            Err(error) => {
                tracing::error!(netns = %self.name, %error, "could not delete network namespace");
            }
        }
    }
}

/// Maps a dotted `net.*` sysctl key to its `/proc/sys` path.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    let invalid = |reason| Error::InvalidName {
        name: key.to_owned(),
        reason,
    };
    if !key.starts_with("net.") {
        return Err(invalid("only net.* sysctls are per network namespace"));
    }
    if key
        .split('.')
        .any(|part| part.is_empty() || part == ".." || part.contains('/'))
    {
        return Err(invalid("malformed sysctl key"));
    }
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}

/// Creates a veth pair with `if_a` in `a` and `if_b` in `b`, both up.
///
/// The pair is created directly inside `a` with its peer placed in `b`, so
/// it never appears in the root namespace (no name clash with other runs,
/// no window where the machine's own namespace holds a test interface).
pub fn link_veth(a: &Netns, if_a: &str, b: &Netns, if_b: &str) -> Result<()> {
    validate_ifname(if_a)?;
    validate_ifname(if_b)?;
    a.ip([
        "link",
        "add",
        if_a,
        "type",
        "veth",
        "peer",
        "name",
        if_b,
        "netns",
        b.name(),
    ])?;
    a.set_up(if_a)?;
    b.set_up(if_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_prefix_pid_and_sequence() {
        assert_eq!(netns_name("ul", 4242, 7).expect("valid"), "skiff-ul-4242-7");
        assert_eq!(
            netns_name("node-0", 1, 0).expect("valid"),
            "skiff-node-0-1-0"
        );
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(33)] {
            assert!(
                matches!(netns_name(bad, 1, 0), Err(Error::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn generated_names_parse_back_to_their_pid() {
        for prefix in ["ul", "node0", "a-b-c", "x_y"] {
            let name = netns_name(prefix, 31337, 12).expect("valid");
            assert_eq!(crate::leftovers::owner_pid(&name), Some(31337), "{name}");
        }
    }

    #[test]
    fn ifnames_follow_kernel_rules() {
        for good in ["lo", "skiff-ul", "skiff-n99999", &"x".repeat(15)] {
            validate_ifname(good).expect(good);
        }
        for bad in ["", ".", "..", "a/b", "a b", "a:b", &"x".repeat(16)] {
            assert!(validate_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_net_sysctls_map_to_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").expect("valid"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in ["kernel.pid_max", "net..x", "net.a/b", "net.ipv4."] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Root tests of the topology library: they create real namespaces, veths
//! and sockets. Run one at a time by `cargo xtask test --kernel`, or by hand:
//! `cargo test -p skiff-tests -- --ignored --test-threads=1`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use skiff_tests::{Cluster, ClusterSpec, Error, Netns, leftovers, link_veth};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn listed(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Every namespace this test process created carries `-<pid>-` in its name.
fn ours_listed() -> Vec<String> {
    let mark = format!("-{}-", std::process::id());
    netns_list()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("skiff-") && n.contains(&mark))
        .map(str::to_owned)
        .collect()
}

fn root_link_names() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip link");
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    links
        .iter()
        .map(|l| l["ifname"].as_str().expect("ifname").to_owned())
        .collect()
}

/// Waits (bounded) for a child to be ended by `signal`.
fn wait_killed(child: &mut Child, what: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status
                .signal()
                .unwrap_or_else(|| panic!("{what} exited normally: {status}"));
        }
        assert!(Instant::now() < deadline, "{what} still running after drop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts one connection and echoes what it reads, on a plain thread
/// (the socket already lives in its namespace).
fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).expect("read");
        conn.write_all(&buf[..n]).expect("write");
    })
}

fn listen(ns: &Netns, addr: SocketAddr) -> TcpListener {
    ns.run_in(|| TcpListener::bind(addr))
        .expect("setns")
        .expect("bind")
}

fn round_trip(ns: &Netns, addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    ns.run_in(|| {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(msg)?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf)?;
        Ok::<_, std::io::Error>(buf)
    })
    .expect("setns")
    .unwrap_or_else(|e| panic!("{} -> {addr}: {e}", ns.name()))
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn netns_create_and_drop_leaves_nothing() {
    let before = ours_listed();
    let ns = Netns::new("t").expect("create");
    let name = ns.name().to_owned();
    assert!(
        name.starts_with(&format!("skiff-t-{}-", std::process::id())),
        "{name}"
    );
    assert!(listed(&name), "{name} not in ip netns list");
    let lo = ns.ip(["-j", "link", "show", "lo"]).expect("ip link");
    assert!(lo.contains("\"UP\""), "lo not up: {lo}");
    assert_eq!(ns.link_names().expect("links"), ["lo"]);
    drop(ns);
    assert!(!listed(&name), "{name} still listed");
    assert!(!Path::new("/var/run/netns").join(&name).exists());
    assert_eq!(ours_listed(), before);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn drop_destroys_the_namespace_not_just_its_name() {
    // A veth end in a surviving namespace disappears only if its peer's
    // namespace was really destroyed — even with a process running in it.
    let keep = Netns::new("keep").expect("create");
    let gone = Netns::new("gone").expect("create");
    link_veth(&keep, "skiff-k", &gone, "skiff-g").expect("veth");
    assert!(
        keep.link_names()
            .expect("links")
            .contains(&"skiff-k".to_owned())
    );
    let mut sleeper = gone.spawn(Command::new("sleep").arg("300")).expect("spawn");
    drop(gone);
    wait_killed(&mut sleeper, "sleep");
    let deadline = Instant::now() + Duration::from_secs(5);
    while keep
        .link_names()
        .expect("links")
        .contains(&"skiff-k".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "peer veth survived: namespace not destroyed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn panic_inside_a_test_still_cleans_up() {
    let before = ours_listed();
    let names = std::sync::Mutex::new(Vec::new());
    let pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let cluster = Cluster::build(ClusterSpec::default()).expect("build");
        names
            .lock()
            .expect("lock")
            .extend(cluster.namespaces().map(|n| n.name().to_owned()));
        let child = cluster.nodes()[0]
            .netns()
            .spawn(Command::new("sleep").arg("300"))
            .expect("spawn");
        *pid.lock().expect("lock") = Some(child);
        panic!("deliberate");
    });
    assert!(result.is_err(), "closure must have panicked");
    let names = names.into_inner().expect("lock");
    assert_eq!(names.len(), 4, "underlay + 2 nodes + outside: {names:?}");
    for name in &names {
        assert!(!listed(name), "{name} survived the panic");
    }
    let mut child = pid
        .into_inner()
        .expect("lock")
        .expect("spawned before panic");
    wait_killed(&mut child, "sleep in panicked test");
    assert_eq!(ours_listed(), before);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn nodes_reach_each_other_by_underlay_address() {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        ..Default::default()
    })
    .expect("build");
    let (a, b) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    assert_eq!(a.addr(), Ipv4Addr::new(192, 168, 250, 1));
    assert_eq!(b.addr(), Ipv4Addr::new(192, 168, 250, 2));
    assert_eq!(cluster.node(1).map(|n| n.name()), Some("node1"));
    assert!(cluster.node(2).is_none());

    let addr = SocketAddr::from((a.addr(), 7000));
    let server = echo_once(listen(a.netns(), addr));
    assert_eq!(round_trip(b.netns(), addr, b"hello node0"), b"hello node0");
    server.join().expect("server");

    // The listener's address exists only in node0's namespace.
    let bind_elsewhere = b.netns().run_in(|| TcpListener::bind(addr)).expect("setns");
    assert_eq!(
        bind_elsewhere
            .expect_err("node1 must not own node0's address")
            .kind(),
        ErrorKind::AddrNotAvailable
    );
    for node in cluster.nodes() {
        assert_eq!(
            node.netns().sysctl("net.ipv4.ip_forward").expect("sysctl"),
            "1"
        );
    }
    // Forwarding is per namespace: the outside client keeps the default.
    assert_eq!(
        cluster
            .outside()
            .netns()
            .sysctl("net.ipv4.ip_forward")
            .expect("sysctl"),
        "0"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn outside_client_reaches_every_node() {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 3,
        ..Default::default()
    })
    .expect("build");
    assert_eq!(cluster.outside().addr(), Ipv4Addr::new(192, 168, 250, 254));
    for node in cluster.nodes() {
        let addr = SocketAddr::from((node.addr(), 7001));
        let server = echo_once(listen(node.netns(), addr));
        let msg = format!("hi {}", node.name());
        assert_eq!(
            round_trip(cluster.outside().netns(), addr, msg.as_bytes()),
            msg.as_bytes()
        );
        server.join().expect("server");
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn cluster_has_no_way_out_and_root_has_no_way_in() {
    let cluster = Cluster::build(ClusterSpec::default()).expect("build");
    cluster.check_isolation().expect("isolated");

    // Inside: off-underlay destinations are unreachable at once (no route,
    // nothing sent). 198.51.100.1 is TEST-NET-2.
    let far = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 80));
    for ns in cluster.namespaces() {
        let err = ns
            .run_in(|| TcpStream::connect_timeout(&far, IO_TIMEOUT))
            .expect("setns")
            .expect_err("must have no route out");
        assert_eq!(
            err.kind(),
            ErrorKind::NetworkUnreachable,
            "{}: {err}",
            ns.name()
        );
    }

    // Root namespace: no skiff interface, and the route lookup for a node
    // address (a lookup only, nothing sent) does not use one.
    let root_links = root_link_names();
    assert!(
        root_links.iter().all(|l| !l.starts_with("skiff-")),
        "root namespace holds skiff interfaces: {root_links:?}"
    );
    for node in cluster.nodes() {
        let out = Command::new("ip")
            .args(["-j", "route", "get", &node.addr().to_string()])
            .output()
            .expect("ip route get");
        let routes: Vec<serde_json::Value> = if out.status.success() {
            serde_json::from_slice(&out.stdout).expect("json")
        } else {
            Vec::new() // unreachable from root: fine
        };
        for route in routes {
            let dev = route["dev"].as_str().unwrap_or_default();
            assert!(
                !dev.starts_with("skiff-"),
                "root routes {} via {dev}",
                node.addr()
            );
            assert!(root_links.iter().any(|l| l == dev) || dev.is_empty());
        }
    }

    // A veth from a node into the root namespace (ours) must fail the check.
    // Its root end stays down and lives only until the next line but one; if
    // the test dies first, deleting the node namespace destroys the pair.
    let node = cluster.nodes()[0].netns();
    let me = std::process::id().to_string();
    node.ip([
        "link",
        "add",
        "skiff-leak",
        "type",
        "veth",
        "peer",
        "name",
        "skiff-leakp",
        "netns",
        &me,
    ])
    .expect("veth into root");
    let err = cluster
        .check_isolation()
        .expect_err("leak must be detected");
    assert!(matches!(err, Error::Isolation { .. }), "{err:?}");
    node.ip(["link", "del", "skiff-leak"]).expect("remove leak");
    assert!(!root_link_names().iter().any(|l| l == "skiff-leakp"));
    cluster.check_isolation().expect("isolated again");

    // So must a default route.
    node.ip(["route", "add", "default", "via", "192.168.250.254"])
        .expect("route");
    let err = cluster
        .check_isolation()
        .expect_err("default route must be detected");
    assert!(err.to_string().contains("default route"), "{err}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn spawned_processes_run_inside_and_are_killed_on_drop() {
    let ns = Netns::new("spawn").expect("create");
    let ns_ino = std::fs::metadata(ns.path()).expect("stat netns").ino();
    let mut polite = ns.spawn(Command::new("sleep").arg("300")).expect("spawn");
    // Ignores SIGTERM (inherited by its sleep child): needs the SIGKILL.
    let mut stubborn = ns
        .spawn(Command::new("sh").args(["-c", "trap '' TERM; sleep 300; exit 0"]))
        .expect("spawn");
    for child in [&polite, &stubborn] {
        let link = std::fs::metadata(format!("/proc/{}/ns/net", child.id())).expect("proc ns");
        assert_eq!(link.ino(), ns_ino, "child not in the namespace");
    }
    // The stubborn shell's own child is in its process group: find it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let grandchild = loop {
        let out = Command::new("pgrep")
            .args(["-P", &stubborn.id().to_string()])
            .output()
            .expect("pgrep");
        if let Some(pid) = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
        {
            break pid.parse::<i32>().expect("pid");
        }
        assert!(Instant::now() < deadline, "shell never started its sleep");
        std::thread::sleep(Duration::from_millis(20));
    };
    let started = Instant::now();
    drop(ns);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "teardown too slow"
    );
    assert_eq!(wait_killed(&mut polite, "sleep"), libc::SIGTERM);
    assert_eq!(
        wait_killed(&mut stubborn, "sh ignoring TERM"),
        libc::SIGKILL
    );
    // The grandchild (reparented, not ours to reap) is gone or a zombie.
    let status = std::fs::read_to_string(format!("/proc/{grandchild}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "grandchild {grandchild} survived: {status}"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn exec_and_helpers_work_and_errors_name_the_command() {
    let a = Netns::new("ha").expect("create");
    let b = Netns::new("hb").expect("create");
    link_veth(&a, "skiff-a", &b, "skiff-b").expect("veth");
    a.add_addr("skiff-a", "10.77.0.1/30".parse().expect("net"))
        .expect("addr");
    b.add_addr("skiff-b", "10.77.0.2/30".parse().expect("net"))
        .expect("addr");
    b.add_addr("lo", "10.78.0.1/32".parse().expect("net"))
        .expect("addr");
    a.add_route(
        "10.78.0.0/24".parse().expect("net"),
        "10.77.0.2".parse().expect("ip"),
    )
    .expect("route");
    let out = a
        .exec("ip", ["-4", "route", "get", "10.78.0.1"])
        .expect("exec");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("via 10.77.0.2 dev skiff-a"), "{text}");

    let listener = listen(&b, SocketAddr::from((Ipv4Addr::new(10, 78, 0, 1), 7002)));
    let server = echo_once(listener);
    assert_eq!(
        round_trip(
            &a,
            SocketAddr::from((Ipv4Addr::new(10, 78, 0, 1), 7002)),
            b"routed"
        ),
        b"routed"
    );
    server.join().expect("server");

    let failed = a.exec("sh", ["-c", "exit 4"]).expect("exec runs");
    assert_eq!(failed.status.code(), Some(4));

    let err = a.set_up("skiff-nope").expect_err("no such device");
    let Error::Command {
        command, stderr, ..
    } = &err
    else {
        panic!("wrong variant: {err:?}");
    };
    assert_eq!(
        command,
        &format!("ip -n {} link set dev skiff-nope up", a.name())
    );
    assert!(stderr.contains("skiff-nope"), "{stderr}");

    assert!(matches!(
        link_veth(&a, "skiff-much-too-long", &b, "x"),
        Err(Error::InvalidName { .. })
    ));
    assert!(
        a.set_sysctl("kernel.hostname", "x").is_err(),
        "non-net sysctl must be refused"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn run_in_resumes_panics_on_the_caller() {
    let ns = Netns::new("panic").expect("create");
    let netns_ino = || {
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("stat")
            .ino()
    };
    let before = netns_ino();
    let inside = ns.run_in(netns_ino).expect("setns");
    assert_eq!(inside, std::fs::metadata(ns.path()).expect("stat").ino());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ns.run_in(|| panic!("inside")).expect("setns");
    }));
    let payload = caught.expect_err("panic must propagate");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside"));
    // The caller's thread never left its namespace.
    assert_eq!(netns_ino(), before);
    assert_ne!(before, inside);
}

/// Deletes a hand-made namespace on drop (the sweep test creates names
/// outside the `Netns` scheme on purpose).
struct HandMade(String);

impl HandMade {
    fn add(name: String) -> Self {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "{out:?}");
        Self(name)
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        if listed(&self.0) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn sweep_removes_namespaces_of_dead_creators_only() {
    let mut dead = Command::new("true").spawn().expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().expect("wait");
    let orphan_guard = HandMade::add(format!("skiff-sweep-{dead_pid}-0"));
    let orphan = orphan_guard.0.clone();
    let foreign_guard = HandMade::add("skiff-sweep-notapid".to_owned());
    let foreign = foreign_guard.0.as_str();
    let alive = Netns::new("sweep").expect("create");

    let found = leftovers::list().expect("list");
    let entry = |n: &str| found.iter().find(|l| l.name == n).cloned();
    let o = entry(&orphan).expect("orphan listed");
    assert_eq!((o.owner_pid, o.owner_alive), (Some(dead_pid), false));
    let a = entry(alive.name()).expect("alive listed");
    assert_eq!(
        (a.owner_pid, a.owner_alive),
        (Some(std::process::id()), true)
    );
    let f = entry(foreign).expect("foreign listed");
    assert_eq!((f.owner_pid, f.owner_alive), (None, false));

    let report = leftovers::sweep().expect("sweep");
    assert!(report.removed.contains(&orphan), "{report:?}");
    assert!(!listed(&orphan));
    assert!(listed(alive.name()), "live namespace swept");
    assert!(report.kept.iter().any(|l| l.name == alive.name()));
    assert!(report.kept.iter().any(|l| l.name == foreign), "{report:?}");
    assert!(listed(foreign), "foreign-named namespace swept");
}

//! Root tests of the sandbox layer without an API server: a real pod
//! network namespace, veth, bridge, UTS/IPC/mount namespaces, cgroup and
//! container processes, driven through `LinuxRuntime` directly.
//! Run by `cargo xtask test --kernel`, or by hand:
//! `cargo test -p skiff-agent --test sandbox_root -- --ignored --test-threads=1`.

mod support;

use std::time::Duration;

use ipnetwork::Ipv4Network;
use nix::sys::signal::Signal;
use skiff_agent::container::{BindMount, ContainerLaunch, DEFAULT_PATH};
use skiff_agent::lifecycle::ProbeAction;
use skiff_agent::network::NodeNetwork;
use skiff_agent::sandbox::cgroup::{Cgroups, Limits};
use skiff_agent::sandbox::linux::LinuxRuntime;
use skiff_agent::sandbox::{ExitStatus, PodRuntime, ProcessState, SandboxSpec, resolv};
use skiff_tests::Netns;
use support::*;

fn launch(name: &str, program: &str, args: &[&str], mounts: Vec<BindMount>) -> ContainerLaunch {
    ContainerLaunch {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("GREETING".into(), "hello".into()),
        ],
        working_dir: "/".into(),
        mounts,
        limits: Limits::default(),
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn sandbox_runs_containers_in_pod_namespaces_and_cleans_up() {
    init_tracing();
    let node = Netns::new("agt-sbx").expect("node netns");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let shared_mp = mount_point(tmp.path(), "shared");
    let node_name = format!("sbx-{}", std::process::id());
    let cg_root = cgroup_root();
    let node_cg = cg_root.join("skiff").join(&node_name);
    let uid = "0badc0de-1111-4222-8333-444455556666".to_owned();
    let pod_ip = ip(7, 2);

    let (pids, cgroup_dir) = block_on_in(node.path(), || async {
        let net = NodeNetwork {
            bridge: "skiff0".into(),
            pod_cidr: Ipv4Network::new(ip(7, 0), 24).expect("cidr"),
            cluster_cidr: Ipv4Network::new(ip(0, 0), 16).expect("cidr"),
        };
        net.ensure().await.expect("node network");
        let cgroups = Cgroups::prepare(&cg_root, &node_cg).expect("cgroups");
        let rt = LinuxRuntime::new(&data_dir, "skiff0", cgroups.clone()).expect("runtime");
        let spec = SandboxSpec {
            uid: uid.clone(),
            namespace: "shop".into(),
            name: "web".into(),
            hostname: "web-host".into(),
            ip: pod_ip,
            prefix_len: 24,
            gateway: net.gateway(),
            resolv_conf: resolv::render(
                std::net::Ipv4Addr::new(192, 168, 250, 1),
                "shop",
                "cluster.local",
            ),
            empty_dirs: vec!["scratch".into()],
        };
        let sandbox = rt.create_sandbox(&spec).await.expect("sandbox");
        // Idempotent: a second call (agent retry) changes nothing.
        let again = rt.create_sandbox(&spec).await.expect("sandbox again");
        assert_eq!(sandbox, again);
        let scratch = sandbox.pod_dir.join("volumes/scratch");
        let mount = BindMount {
            source: scratch.clone(),
            target: shared_mp.clone(),
            read_only: false,
            host_path_type: None,
        };

        let server = launch(
            "server",
            TESTPOD,
            &["serve", "8080", "pod-web"],
            vec![mount.clone()],
        );
        let server_rec = rt
            .start_container(&sandbox, &server)
            .await
            .expect("start server");
        let script = format!(
            "hostname > {d}/host; cat /etc/resolv.conf > {d}/resolv; echo $GREETING > {d}/env; \
             until {t} get 127.0.0.1:8080 > {d}/fetched; do sleep 0.1; done; exec sleep 60",
            d = shared_mp.display(),
            t = TESTPOD
        );
        let helper = launch("helper", "sh", &["-c", &script], vec![mount.clone()]);
        let helper_rec = rt
            .start_container(&sandbox, &helper)
            .await
            .expect("start helper");

        // The node reaches the pod over the bridge (HTTP probe path).
        let http = ProbeAction::Http {
            scheme: "HTTP".into(),
            host: None,
            port: 8080,
            path: "/".into(),
            headers: vec![],
        };
        wait_for_async("http probe", Duration::from_secs(10), || async {
            rt.probe(&sandbox, &server, &http, Duration::from_secs(1))
                .await
                .ok()
        })
        .await;
        let body = std::fs::read_to_string(scratch.join("fetched"));
        let fetched = wait_for_async(
            "helper fetched over localhost",
            Duration::from_secs(10),
            || async {
                std::fs::read_to_string(scratch.join("fetched"))
                    .ok()
                    .filter(|s| !s.is_empty())
            },
        )
        .await;
        drop(body);
        assert_eq!(fetched, "pod-web", "containers share the pod's loopback");
        assert_eq!(
            std::fs::read_to_string(scratch.join("host"))
                .expect("host")
                .trim(),
            "web-host"
        );
        let resolv = std::fs::read_to_string(scratch.join("resolv")).expect("resolv");
        assert!(
            resolv.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
            "{resolv}"
        );
        assert!(resolv.contains("options ndots:5"), "{resolv}");
        assert_eq!(
            std::fs::read_to_string(scratch.join("env"))
                .expect("env")
                .trim(),
            "hello"
        );
        // The volume was bound only inside the containers' mount namespaces.
        assert!(
            std::fs::read_dir(&shared_mp)
                .expect("read")
                .next()
                .is_none(),
            "node's mount point stays empty"
        );
        // The node's own hostname and resolv.conf are untouched.
        assert_ne!(
            nix::unistd::gethostname()
                .expect("hostname")
                .to_string_lossy(),
            "web-host"
        );
        assert!(
            !std::fs::read_to_string("/etc/resolv.conf")
                .unwrap_or_default()
                .contains("shop.svc")
        );

        // Exec probe runs inside the container's view (sees the volume).
        let exec_ok = ProbeAction::Exec(vec![
            "test".into(),
            "-s".into(),
            format!("{}/fetched", shared_mp.display()),
        ]);
        rt.probe(&sandbox, &helper, &exec_ok, Duration::from_secs(2))
            .await
            .expect("exec probe passes");
        let exec_bad = ProbeAction::Exec(vec!["sh".into(), "-c".into(), "exit 4".into()]);
        let err = rt
            .probe(&sandbox, &helper, &exec_bad, Duration::from_secs(2))
            .await
            .expect_err("exit 4 fails");
        assert!(err.contains("exit status: 4"), "{err}");
        let exec_slow = ProbeAction::Exec(vec!["sleep".into(), "5".into()]);
        let err = rt
            .probe(&sandbox, &helper, &exec_slow, Duration::from_millis(300))
            .await
            .expect_err("times out");
        assert!(err.contains("timed out"), "{err}");
        let tcp_closed = ProbeAction::Tcp {
            host: None,
            port: 9,
        };
        assert!(
            rt.probe(&sandbox, &server, &tcp_closed, Duration::from_millis(500))
                .await
                .is_err()
        );

        // Both containers share the pod's net, IPC and UTS namespaces, none
        // of which is ours; each has a mount namespace of its own.
        let ns = |pid: i32, kind: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
        };
        for kind in ["net", "ipc", "uts"] {
            assert_eq!(
                ns(server_rec.pid, kind),
                ns(helper_rec.pid, kind),
                "{kind} shared"
            );
            assert_ne!(
                ns(server_rec.pid, kind),
                std::fs::read_link(format!("/proc/self/ns/{kind}")).expect("own"),
                "{kind} is the pod's"
            );
        }
        assert_ne!(
            ns(server_rec.pid, "mnt"),
            ns(helper_rec.pid, "mnt"),
            "per-container mount namespaces"
        );
        // Processes: detached from us, each in its own process group and cgroup.
        for rec in [&server_rec, &helper_rec] {
            assert!(alive(rec.pid));
            assert_eq!(
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(rec.pid)))
                    .expect("pgid")
                    .as_raw(),
                rec.pid
            );
        }
        let server_cg = cgroups.container_dir(&uid, "server");
        let procs = std::fs::read_to_string(server_cg.join("cgroup.procs")).expect("procs");
        assert!(
            procs
                .lines()
                .any(|l| l.trim() == server_rec.pid.to_string()),
            "server in its cgroup: {procs}"
        );
        assert_eq!(
            rt.poll(&sandbox, "server", &server_rec),
            ProcessState::Running
        );

        // SIGTERM ends the server; the shim records the signal.
        rt.signal(&sandbox, "server", &server_rec, Signal::SIGTERM)
            .expect("term");
        let st = wait_for_async("server exit", Duration::from_secs(5), || async {
            match rt.poll(&sandbox, "server", &server_rec) {
                ProcessState::Running => None,
                s => Some(s),
            }
        })
        .await;
        assert_eq!(st, ProcessState::Exited(Some(ExitStatus::Signal(15))));

        // A failing program: exit code recorded; a missing one fails to start.
        let crash = launch("crash", "sh", &["-c", "echo oops >&2; exit 3"], vec![]);
        let crash_rec = rt
            .start_container(&sandbox, &crash)
            .await
            .expect("start crash");
        let st = wait_for_async("crash exit", Duration::from_secs(5), || async {
            match rt.poll(&sandbox, "crash", &crash_rec) {
                ProcessState::Running => None,
                s => Some(s),
            }
        })
        .await;
        assert_eq!(st, ProcessState::Exited(Some(ExitStatus::Code(3))));
        let log = std::fs::read_to_string(sandbox.pod_dir.join("crash.log")).expect("log");
        assert_eq!(log, "oops\n");
        let missing = launch("missing", "/nonexistent/program", &[], vec![]);
        let err = rt
            .start_container(&sandbox, &missing)
            .await
            .expect_err("no such program");
        assert!(err.to_string().contains("CreateContainerError"), "{err}");
        let bad_mount = launch(
            "badmount",
            "true",
            &[],
            vec![BindMount {
                target: "/nonexistent-skiff-mp".into(),
                ..mount.clone()
            }],
        );
        let err = rt
            .start_container(&sandbox, &bad_mount)
            .await
            .expect_err("missing mount point");
        assert!(
            err.to_string().contains("does not exist on the node"),
            "{err}"
        );

        let pids = vec![
            server_rec.pid,
            server_rec.shim_pid,
            helper_rec.pid,
            helper_rec.shim_pid,
        ];
        rt.remove_sandbox(&uid).await.expect("remove");
        rt.remove_sandbox(&uid).await.expect("remove is idempotent");
        assert!(!crate_link_exists(&sandbox.veth).await, "veth removed");
        (pids, cgroups.pod_dir(&uid))
    });

    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the sandbox");
    }
    assert!(!cgroup_dir.exists(), "pod cgroup left behind");
    assert_pod_gone(&data_dir, &uid);
    std::fs::remove_dir(&node_cg).expect("remove node cgroup");
    // Shared parent: only goes when no other node uses it.
    let _ = std::fs::remove_dir(cg_root.join("skiff"));
    skiff_agent::sandbox::mounts::detach(&data_dir.join("ns")).expect("detach ns dir");
    assert_no_mounts_under(tmp.path());
}

async fn crate_link_exists(name: &str) -> bool {
    tokio::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

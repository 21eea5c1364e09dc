//! Restarting an agent (its proxy included) does not break an established
//! TCP connection through a ClusterIP.

use std::io::{BufRead, BufReader, Write};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::Duration;

use crate::cluster::{client_pod, cluster_ip, web_pods};
use crate::harness::{Dataplane, Options, Up, stop_group};
use crate::traffic::{Answer, parse_answer, until_answered_by};

/// Holds one connection (bash /dev/tcp) and relays lines: each stdin line
/// goes to the echo server, its answer (or BROKEN) comes back on stdout.
fn hold_script(ip: std::net::Ipv4Addr) -> String {
    format!(
        "exec 3<>/dev/tcp/{ip}/80 || exit 1; \
         while read -r line; do echo \"$line\" >&3; \
         if read -r -t 5 reply <&3; then echo \"$reply\"; else echo BROKEN; fi; done"
    )
}

fn lines_of(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn ask(stdin: &mut impl Write, rx: &mpsc::Receiver<String>, what: &str) -> Answer {
    writeln!(stdin, "{what}").expect("writing to the held connection");
    stdin.flush().expect("flush");
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an answer on the held connection");
    parse_answer(&line).unwrap_or_else(|| panic!("held connection: {line}"))
}

pub fn agent_restart_keeps_connections(dataplane: Dataplane) {
    let mut up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    let nodes = up.node_names();
    client_pod(&up, "client", &nodes[0]);
    let names: Vec<String> = web.iter().map(|p| p.name.clone()).collect();
    let vip = cluster_ip(&up, "web");
    until_answered_by(
        &up,
        "client",
        "http://web/",
        &names,
        6,
        Duration::from_secs(60),
    );

    let mut held = up.spawn_in("client", &hold_script(vip));
    let mut stdin = held.stdin.take().expect("stdin");
    let rx = lines_of(held.stdout.take().expect("stdout"));
    let first = ask(&mut stdin, &rx, "before");
    let backend_node = web
        .iter()
        .find(|p| p.name == first.name)
        .map(|p| p.node.clone())
        .expect("answered by a web pod");

    // Crash-restart the client's agent (the proxy that translated the
    // ClusterIP), and the backend's if that is another node.
    let mut restart = vec![nodes[0].clone()];
    if backend_node != nodes[0] {
        restart.push(backend_node);
    }
    for node in &restart {
        let (argv, env) = up.kill_agent(node);
        up.restart_agent(node, &argv, &env);
    }
    // New connections work again once the restarted proxies have synced...
    until_answered_by(
        &up,
        "client",
        "http://web/",
        &names,
        6,
        Duration::from_secs(60),
    );
    // ...and the old one never noticed.
    let second = ask(&mut stdin, &rx, "after");
    assert_eq!(second, first, "the held connection changed or broke");

    drop(stdin);
    stop_group(&mut held);
    up.shutdown();
}

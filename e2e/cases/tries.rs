//! What `skiff up` prints under "Try:" works when pasted into a shell.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{cluster_ip, web_pods};
use crate::harness::{Dataplane, Options, Up};

/// The command lines between "Try:" and "Press Ctrl-C" (pure).
pub fn tries(output: &[String]) -> Vec<String> {
    output
        .iter()
        .skip_while(|l| l.trim() != "Try:")
        .skip(1)
        .take_while(|l| !l.starts_with("Press Ctrl-C"))
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs a printed line with bash; retried for a few seconds (a user reads
/// the hints first, so the proxies have synced by the time they paste).
fn run(line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("bash")
            .args(["-c", line])
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !stdout.trim().is_empty() {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "printed try failed: {line}\n{}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn printed_tries_work(dataplane: Dataplane) {
    let up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    let lines = tries(&up.output());
    assert!(lines.len() >= 7, "too few tries printed: {lines:?}");
    let vip = cluster_ip(&up, "web").to_string();
    for line in &lines {
        let out = run(line);
        if line.contains("curl") {
            assert!(out.starts_with("name=web-"), "{line}: {out}");
        }
        if line.contains("getent hosts web.") {
            assert!(out.starts_with(&vip), "{line}: {out}");
        }
        if line.contains("web-headless") {
            for p in &web {
                let ip = p.ip.expect("pod ip").to_string();
                assert!(out.lines().any(|l| l == ip), "{line}: {out} lacks {ip}");
            }
        }
        if line.contains(" get pods") {
            assert!(out.contains("Running"), "{line}: {out}");
        }
    }
    up.shutdown();
}

#[cfg(test)]
mod tests {
    #[test]
    fn tries_are_the_lines_under_try() {
        let out: Vec<String> = [
            "skiff up: cluster is ready",
            "Try:",
            "  skiff get nodes",
            "  ip netns exec x curl -s http://1.2.3.4:30080/     # NodePort",
            "Press Ctrl-C to tear the cluster down.",
            "tearing down...",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            super::tries(&out),
            [
                "skiff get nodes",
                "ip netns exec x curl -s http://1.2.3.4:30080/     # NodePort"
            ]
        );
    }
}

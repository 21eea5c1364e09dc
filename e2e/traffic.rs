//! Client traffic: curl loops inside a pod (through `skiff exec`, so the
//! pod's cgroup, network namespace and resolv.conf apply) or in the outside
//! namespace, and the echo server's answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::Up;

/// One answer of `skiff echo-server`: `name=<pod> peer=<client addr>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub peer: SocketAddr,
}

/// Parses an answer line (pure).
pub fn parse_answer(line: &str) -> Option<Answer> {
    let mut name = None;
    let mut peer = None;
    for field in line.split_whitespace() {
        if let Some(v) = field.strip_prefix("name=") {
            name = Some(v.to_owned());
        } else if let Some(v) = field.strip_prefix("peer=") {
            peer = v.parse().ok();
        }
    }
    Some(Answer {
        name: name?,
        peer: peer?,
    })
}

/// A bash loop of `n` sequential requests with a fresh connection each,
/// printing the answer or `FAIL <curl exit code>` per request.
fn curl_script(url: &str, n: usize) -> String {
    format!(
        "for i in $(seq {n}); do r=$(curl -s --max-time 3 {url}) && echo \"$r\" || echo \"FAIL $?\"; done"
    )
}

/// Parses a curl loop's output: one result per request.
pub fn parse_results(out: &str) -> Vec<Result<Answer, String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_answer(l).ok_or_else(|| l.to_owned()))
        .collect()
}

/// `n` requests to `url` from inside `pod`.
pub fn curl_in(up: &Up, pod: &str, url: &str, n: usize) -> Vec<Result<Answer, String>> {
    parse_results(&up.bash_in(pod, &curl_script(url, n)))
}

/// `n` requests to `url` from the outside namespace.
pub fn curl_outside(up: &Up, url: &str, n: usize) -> Vec<Result<Answer, String>> {
    parse_results(&up.bash_outside(&curl_script(url, n)))
}

/// Answers per replica name; panics on any failed request.
pub fn count_names(results: &[Result<Answer, String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        match r {
            Ok(a) => *counts.entry(a.name.clone()).or_default() += 1,
            Err(e) => panic!("a request failed: {e}; all results: {results:#?}"),
        }
    }
    counts
}

/// Repeats rounds of `round` requests from `pod` until one round is all
/// successes answered by exactly `names`, each equally often when `round`
/// is a multiple of their number (the proxies have caught up: a round
/// that straddles an endpoint change is uneven); returns that round's
/// counts.
pub fn until_answered_by(
    up: &Up,
    pod: &str,
    url: &str,
    names: &[String],
    round: usize,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + timeout;
    let mut want: Vec<String> = names.to_vec();
    want.sort();
    loop {
        let results = curl_in(up, pod, url, round);
        let ok = results.iter().all(Result::is_ok);
        if ok {
            let counts = count_names(&results);
            let even = !round.is_multiple_of(want.len())
                || counts.values().all(|c| *c == round / want.len());
            if counts.keys().cloned().collect::<Vec<_>>() == want && even {
                return counts;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} from {pod}: never answered by exactly {want:?} within {} s; last round: {results:#?}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_failures_parse() {
        let out =
            "name=web-a peer=10.244.0.5:4242\n\nFAIL 7\nname=web-b peer=192.168.250.254:5000\n";
        let r = parse_results(out);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            Ok(Answer {
                name: "web-a".into(),
                peer: "10.244.0.5:4242".parse().expect("addr")
            })
        );
        assert_eq!(r[1], Err("FAIL 7".into()));
        assert_eq!(r[2].as_ref().map(|a| a.name.as_str()), Ok("web-b"));
    }
}

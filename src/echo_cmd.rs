//! `skiff echo-server`: the small backend the examples and end-to-end tests
//! run in pods. Answers every connection with who it is and who asked, so a
//! client can tell which replica served it and whether its source address
//! survived (NodePort `externalTrafficPolicy: Local`). HTTP GETs get an HTTP
//! response; anything else gets one line back. UDP datagrams are answered
//! the same way on the same port.
//!
//! A non-HTTP connection stays open: every line gets an answer line, so a
//! test can hold one connection across a proxy restart and check it still
//! reaches the same replica. On SIGTERM/SIGINT the server keeps serving for
//! `--drain-seconds` before it exits, like a preStop hook: the endpoint is
//! removed from every proxy meanwhile, so clients never meet a closed port.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct EchoArgs {
    /// Address for TCP and UDP.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Name to report (default: the host name, i.e. the pod name).
    #[arg(long)]
    name: Option<String>,
    /// Seconds to keep serving after SIGTERM or SIGINT.
    #[arg(long, default_value_t = 2)]
    drain_seconds: u64,
}

/// How long a held line-mode connection may stay idle.
const LINE_IDLE: Duration = Duration::from_secs(600);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The answer line (pure).
pub fn answer(name: &str, peer: SocketAddr) -> String {
    format!("name={name} peer={peer}\n")
}

fn serve_tcp(mut conn: TcpStream, name: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let peer = conn.peer_addr()?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let body = answer(name, peer);
    if first.starts_with("GET ") || first.starts_with("HEAD ") {
        // Drain the headers so the client sees a clean response.
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return conn.flush();
    }
    if first.is_empty() {
        return Ok(());
    }
    // Line mode: answer this line and every later one until EOF.
    conn.set_read_timeout(Some(LINE_IDLE))?;
    let mut line = first;
    loop {
        conn.write_all(body.as_bytes())?;
        conn.flush()?;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread
/// spawned later) and starts a thread that waits for one, keeps the
/// process serving for `drain`, then exits 0.
fn drain_on_signal(drain: Duration) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("blocking SIGTERM/SIGINT")?;
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            tracing::info!(?signal, drain_seconds = drain.as_secs(), "draining");
            std::thread::sleep(drain);
            std::process::exit(0);
        }
    });
    Ok(())
}

pub fn run(args: EchoArgs) -> Result<()> {
    drain_on_signal(Duration::from_secs(args.drain_seconds))?;
    let name = args.name.unwrap_or_else(hostname);
    let tcp =
        TcpListener::bind(args.listen).with_context(|| format!("binding TCP {}", args.listen))?;
    let udp =
        UdpSocket::bind(args.listen).with_context(|| format!("binding UDP {}", args.listen))?;
    tracing::info!(listen = %args.listen, %name, "echo server ready");
    let udp_name = name.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(answer(&udp_name, from).as_bytes(), from);
        }
    });
    for conn in tcp.incoming() {
        let conn = conn.context("accepting")?;
        let name = name.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_tcp(conn, &name) {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Serves one accepted loopback connection on a thread.
    fn serve_one() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            serve_tcp(conn, "pod-a").expect("serve");
        });
        (addr, handle)
    }

    #[test]
    fn line_mode_answers_every_line_on_one_connection() {
        let (addr, server) = serve_one();
        let conn = TcpStream::connect(addr).expect("connect");
        let me = conn.local_addr().expect("local");
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut w = conn;
        for _ in 0..3 {
            w.write_all(b"ping\n").expect("write");
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            assert_eq!(line, answer("pod-a", me));
        }
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        server.join().expect("server thread");
    }

    #[test]
    fn http_get_gets_one_response_and_close() {
        let (addr, server) = serve_one();
        let mut conn = TcpStream::connect(addr).expect("connect");
        let me = conn.local_addr().expect("local");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut all = String::new();
        conn.read_to_string(&mut all).expect("read to EOF");
        assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
        assert!(all.contains("Connection: close"));
        assert!(all.ends_with(&answer("pod-a", me)), "{all}");
        server.join().expect("server thread");
    }
}

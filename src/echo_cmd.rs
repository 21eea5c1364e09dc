//! `skiff echo-server`: the small backend the examples and end-to-end tests
//! run in pods. Answers every connection with who it is and who asked, so a
//! client can tell which replica served it and whether its source address
//! survived (NodePort `externalTrafficPolicy: Local`). HTTP GETs get an HTTP
//! response; anything else gets one line back. UDP datagrams are answered
//! the same way on the same port.

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
}

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
    } else {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

pub fn run(args: EchoArgs) -> Result<()> {
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

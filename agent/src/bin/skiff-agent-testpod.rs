//! A tiny HTTP server and client for the agent's root tests: what a pod
//! runs when there are no images. Only std and nix, no runtime.
//!
//! - `serve PORT [BODY] [--on-term FILE]`: answers every request with
//!   `200 OK` and BODY (default: the hostname). With `--on-term`, SIGTERM
//!   makes it write `TERM` to FILE and exit 0 (graceful shutdown).
//! - `get HOST:PORT [PATH]`: one GET; prints the body; exit 0 on 200.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("get") => get(&args[1..]),
        _ => {
            eprintln!(
                "usage: skiff-agent-testpod serve PORT [BODY] [--on-term FILE] | get HOST:PORT [PATH]"
            );
            2
        }
    };
    std::process::exit(code);
}

fn serve(args: &[String]) -> i32 {
    let mut positional = Vec::new();
    let mut on_term = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--on-term" {
            on_term = it.next().cloned();
        } else {
            positional.push(a.clone());
        }
    }
    let Some(port) = positional.first().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("serve: bad port");
        return 2;
    };
    let body = positional.get(1).cloned().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if let Some(file) = on_term {
        // Block SIGTERM before any thread exists, then wait for it on one.
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        if set.thread_block().is_err() {
            return 1;
        }
        std::thread::spawn(move || {
            if set.wait().is_ok() {
                let _ = std::fs::write(&file, "TERM\n");
                println!("got SIGTERM, exiting");
                std::process::exit(0);
            }
        });
    }
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind {port}: {e}");
            return 1;
        }
    };
    println!("serving on {port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        });
    }
    0
}

fn get(args: &[String]) -> i32 {
    let Some(addr) = args.first() else {
        eprintln!("get: need HOST:PORT");
        return 2;
    };
    let path = args.get(1).map_or("/", String::as_str);
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("get: bad address {addr}");
        return 2;
    };
    let mut conn = match TcpStream::connect_timeout(&sock, Duration::from_secs(2)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            return 1;
        }
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return 1;
    }
    let mut resp = Vec::new();
    let _ = conn.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        eprintln!("get: malformed response");
        return 1;
    };
    print!("{body}");
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        0
    } else {
        1
    }
}

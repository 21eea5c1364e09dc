//! The client side: netperf TCP_CRR-style transactions (connect, one-byte
//! request, one-byte response, close) run one at a time from inside the
//! client namespace.
//!
//! The client closes with `SO_LINGER {on, 0}` (an RST), so neither side
//! keeps TIME_WAIT sockets: tens of thousands of connections from one
//! address would otherwise exhaust ephemeral ports part-way through a run
//! and make later rounds slower than earlier ones. Both sides of every
//! comparison run the very same code.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{setsockopt, sockopt::Linger};
use skiff_tests::Netns;

/// Connect and read timeout of one transaction (bounds every wait).
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Times of one transaction.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// From connect() to the response byte.
    pub response: Duration,
    /// From connect() to the end of close().
    pub total: Duration,
}

/// One transaction.
pub fn exchange(addr: SocketAddrV4) -> std::io::Result<Exchange> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr.into(), IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"q")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let response = start.elapsed();
    setsockopt(
        &stream,
        Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    drop(stream);
    Ok(Exchange {
        response,
        total: start.elapsed(),
    })
}

/// How much one measurement may do: whichever limit comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_conns: usize,
    pub max_time: Duration,
}

/// Connections completed, the wall time they took, and the time of each
/// (connect to end of close).
#[derive(Clone, Debug)]
pub struct Rate {
    pub conns: usize,
    pub elapsed: Duration,
    pub each: Vec<Duration>,
}

impl Rate {
    /// Throughput: connections per second of wall time.
    pub fn per_sec(&self) -> f64 {
        self.conns as f64 / self.elapsed.as_secs_f64()
    }
}

/// Back-to-back transactions from `client` to `targets` in turn, within
/// `budget`. Any failed transaction fails the measurement.
pub fn rate(client: &Netns, targets: &[SocketAddrV4], budget: Budget) -> Result<Rate> {
    if targets.is_empty() {
        bail!("no targets");
    }
    client.run_in(|| {
        let start = Instant::now();
        let mut each = Vec::with_capacity(budget.max_conns.min(100_000));
        while each.len() < budget.max_conns && start.elapsed() < budget.max_time {
            let target = targets[each.len() % targets.len()];
            let x = exchange(target)
                .with_context(|| format!("connection {} to {target}", each.len()))?;
            each.push(x.total);
        }
        Ok(Rate {
            conns: each.len(),
            elapsed: start.elapsed(),
            each,
        })
    })?
}

/// `count` transactions to `targets` in turn, each timed; stops early
/// (with what it has) once `max_time` has passed.
pub fn latencies(
    client: &Netns,
    targets: &[SocketAddrV4],
    count: usize,
    max_time: Duration,
) -> Result<Vec<Duration>> {
    if targets.is_empty() {
        bail!("no targets");
    }
    client.run_in(|| {
        let start = Instant::now();
        let mut samples = Vec::with_capacity(count);
        while samples.len() < count && start.elapsed() < max_time {
            let target = targets[samples.len() % targets.len()];
            let x = exchange(target)
                .with_context(|| format!("connection {} to {target}", samples.len()))?;
            samples.push(x.response);
        }
        Ok(samples)
    })?
}

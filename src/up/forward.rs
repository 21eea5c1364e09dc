//! The API forwarder of `skiff up`: a TCP listener inside the underlay
//! namespace whose connections are relayed to the API server on loopback
//! in the root namespace. The agents in the node namespaces have no route
//! to the root namespace (by design), and the root namespace must not send
//! to any non-loopback address, so this relay is the only bridge.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Relays every connection accepted on `listener` (a socket that may live
/// in another network namespace) to `target` until `stop` fires; open
/// connections are closed then too. Must be called inside a tokio runtime.
pub fn spawn(
    listener: std::net::TcpListener,
    target: SocketAddr,
    stop: CancellationToken,
) -> Result<JoinHandle<()>> {
    listener
        .set_nonblocking(true)
        .context("making the forwarder socket non-blocking")?;
    let listener = TcpListener::from_std(listener).context("registering the forwarder socket")?;
    let local = listener.local_addr().context("forwarder address")?;
    tracing::debug!(%local, %target, "API forwarder listening");
    Ok(tokio::spawn(async move {
        loop {
            let (inbound, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "forwarder accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(error) = relay(inbound, target, stop).await {
                    tracing::debug!(%peer, %error, "forwarded connection ended with an error");
                }
            });
        }
    }))
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, stop: CancellationToken) -> Result<()> {
    let mut outbound = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    tokio::select! {
        () = stop.cancelled() => Ok(()),
        r = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => r.map(drop).context("relaying"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn relays_both_ways_and_stops() {
        // An upper-casing echo server stands in for the API server.
        let upstream = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let target = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let up = buf[..n].to_ascii_uppercase();
                        if c.write_all(&up).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").expect("bind front");
        let front_addr = front.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = spawn(front, target, stop.clone()).expect("spawn");

        for word in ["hello", "again"] {
            let mut c = TcpStream::connect(front_addr).await.expect("connect");
            c.write_all(word.as_bytes()).await.expect("write");
            let mut buf = vec![0u8; word.len()];
            c.read_exact(&mut buf).await.expect("read");
            assert_eq!(buf, word.to_ascii_uppercase().as_bytes());
        }

        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("forwarder stops")
            .expect("no panic");
        // The listener is closed with the task.
        assert!(TcpStream::connect(front_addr).await.is_err());
    }
}

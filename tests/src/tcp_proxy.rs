//! A loopback TCP proxy that can be cut: stands between a service and its database, so a
//! test can make the database unreachable for that service only (the shared test cluster
//! keeps running for everyone else).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy to one upstream address.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: CancellationToken,
}

impl TcpProxy {
    /// Forwards connections on a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let cut = CancellationToken::new();
        tokio::spawn(accept(listener, upstream, cut.clone()));
        Ok(Self { addr, cut })
    }

    /// Closes every forwarded connection and the listening port: connecting is refused
    /// from now on, as when the database host goes away.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cut: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cut.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                () = cut.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}

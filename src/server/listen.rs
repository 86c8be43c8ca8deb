//! Accepting connections: a deadline for each request's headers, a bound on open connections
//! and on those of one source address, and a graceful shutdown that lets requests in flight
//! finish.
//!
//! `axum::serve` has neither a header deadline nor a connection bound: a client that sends one
//! header line a second held its connection (and a file descriptor) for ever, and 800 of them
//! held 821 descriptors. hyper's HTTP/1 connection has the deadline once it is given a timer.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How patient the server is with its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this; an idle keep-alive connection is closed
    /// after it too (hyper waits for the next request's headers under the same deadline).
    pub header_timeout: Duration,
    /// A request's body must arrive within this, or the answer is 408.
    pub body_timeout: Duration,
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections open at once from one address; past it, a new one from there is closed at
    /// once, so one source cannot take every slot (1,100 half-sent requests once held all
    /// 1,024 and made everyone else wait for the header deadline).
    pub max_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_per_source: 256,
        }
    }
}

/// The connections open from each source address, and what the log says of the bounds.
struct Sources {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    /// Connections refused for their source's bound.
    refused: Throttled,
    /// Times every connection slot was found taken.
    full: Throttled,
}

/// How often a bound being hit is mentioned in the log while it goes on.
const SAY_AGAIN: Duration = Duration::from_secs(10);

/// Something the log mentions at most every [`SAY_AGAIN`], with how often it happened between:
/// a flood is one line, not one per connection.
#[derive(Default)]
struct Throttled(Mutex<(u64, Option<Instant>)>);

impl Throttled {
    /// Counts one occurrence; when the log may speak again, how many there were since it last
    /// did.
    fn due(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        state.1.is_none_or(|said| said.elapsed() >= SAY_AGAIN).then(|| {
            let happened = state.0;
            *state = (0, Some(Instant::now()));
            happened
        })
    }
}

impl Sources {
    /// Counts a connection from `ip`, or `None` when that source is at its bound.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            drop(open);
            self.refused(ip);
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: Arc::clone(self),
            ip,
        })
    }

    /// Every connection slot is taken: new connections wait in the kernel's backlog.
    fn full(&self, max: usize) {
        if self.full.due().is_some() {
            tracing::warn!(
                "all {max} connections are open (--max-connections): new ones wait until one closes"
            );
        }
    }

    fn refused(&self, ip: IpAddr) {
        if let Some(closed) = self.refused.due() {
            tracing::warn!(
                "{ip} has {} connections open, the most one address may (--max-connections-per-source): closed {closed} new connection(s) at once",
                self.max
            );
        }
    }
}

/// One open connection of a source, given back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then waits for the
/// requests in flight. The peer address reaches the handlers as `ConnectInfo<SocketAddr>`.
/// Connections from `trusted_proxies` carry many clients: the per-source bound spares them.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ConnectionLimits,
    trusted_proxies: Vec<ipnet::IpNet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::http::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let sources = Arc::new(Sources {
        open: Mutex::default(),
        max: limits.max_per_source.max(1),
        refused: Throttled::default(),
        full: Throttled::default(),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        if permits.available_permits() == 0 {
            sources.full(limits.max_connections);
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // Never closed; but if it were, accepting is over.
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // not the server's end. Pause briefly so a persistent error does not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let proxied = trusted_proxies.iter().any(|net| net.contains(&peer.ip()));
        let slot = if proxied {
            None
        } else {
            match sources.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => continue, // Dropping the stream closes it; its permit goes back.
            }
        };
        // Answers are small and written whole: sending them at once saves a delayed-ACK wait.
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol is its own business.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

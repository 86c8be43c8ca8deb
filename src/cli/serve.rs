//! `serve`: the HTTP server over the store, until Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use super::Status;
use crate::counting::{Counting, RedisCounters, RedisOptions, WindowClock};
use crate::replica::{Replica, ReplicaOptions};
use crate::server::{self, AppState};

/// Where `serve` listens unless told (and where `health` asks).
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "VALHALLA_BIND", default_value = DEFAULT_BIND, hide_env_values = true)]
    bind: SocketAddr,

    /// This replica's name in rate-limit snapshots [default: host:pid].
    #[arg(long, env = "VALHALLA_REPLICA", hide_env_values = true, value_name = "NAME")]
    replica: Option<String>,

    /// How often rate-limit counters are written to `rate_limit_snapshots`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    snapshot_interval: std::time::Duration,

    /// Share rate-limit counters between replicas in this Redis (`redis://host:6379/0`, or
    /// `rediss://` for TLS); without it each replica counts in its own memory.
    #[arg(long, env = "VALHALLA_COUNTERS", hide_env_values = true, value_name = "URL")]
    counters: Option<String>,

    /// Put before every key in that Redis: give each deployment sharing one Redis its own.
    #[arg(long, env = "VALHALLA_COUNTERS_PREFIX", hide_env_values = true, default_value = crate::counting::DEFAULT_PREFIX, value_name = "PREFIX", requires = "counters")]
    counters_prefix: String,

    /// How long a request waits for Redis before the rules' on_outage policies decide.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration, value_name = "DURATION", requires = "counters")]
    counters_timeout: std::time::Duration,

    /// The most rate-limit counters held in memory (about 100 bytes each); idle ones are
    /// evicted first, then the least recently used.
    #[arg(long, default_value_t = crate::limit::DEFAULT_CAPACITY, value_name = "N")]
    max_counters: usize,

    /// A proxy (address or network, repeatable) whose `X-Forwarded-For` names the client for
    /// `ip` rules; without one, the peer address is the client's.
    #[arg(long = "trusted-proxy", env = "VALHALLA_TRUSTED_PROXIES", hide_env_values = true, value_delimiter = ',', value_name = "CIDR", value_parser = parse_net)]
    trusted_proxies: Vec<ipnet::IpNet>,

    /// A request's headers must arrive within this (an idle keep-alive connection is closed
    /// after it too); a slower client is disconnected.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    header_timeout: std::time::Duration,

    /// How long before an override expires the people on call are reminded of it (an
    /// `override.expiring` event); 0 for no reminders.
    #[arg(long, env = "VALHALLA_EXPIRY_REMINDER", hide_env_values = true, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    expiry_reminder: std::time::Duration,

    /// Where people reach this deployment (`https://ops.example.com`): each notification links
    /// to its status page there [default: http://<bind>].
    #[arg(long, env = "VALHALLA_PUBLIC_URL", hide_env_values = true, value_name = "URL", value_parser = parse_public_url)]
    public_url: Option<url::Url>,

    /// A request's body must arrive within this, or the answer is 408.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    body_timeout: std::time::Duration,

    /// The most connections open at once; further ones wait to be accepted.
    #[arg(long, env = "VALHALLA_MAX_CONNECTIONS", hide_env_values = true, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// The most connections open at once from one address (a trusted proxy's are not bounded);
    /// a further one from there is closed at once, and the log says so.
    #[arg(long, env = "VALHALLA_MAX_CONNECTIONS_PER_SOURCE", hide_env_values = true, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_source: u32,

    /// Also serve Envoy's rate limit service (RLS v3) over gRPC on this address, for the
    /// gateways: the same rules, counters and freeze as HTTP.
    #[arg(long, env = "VALHALLA_GRPC", hide_env_values = true, value_name = "ADDR")]
    grpc: Option<SocketAddr>,

    /// The rate limit domain the gateways name (Envoy's `domain`); calls for another domain
    /// are answered OK, with no rule applied.
    #[arg(long, env = "VALHALLA_GRPC_DOMAIN", hide_env_values = true, default_value = crate::grpc::DEFAULT_DOMAIN, value_name = "DOMAIN", requires = "grpc")]
    grpc_domain: String,

    /// Serve gRPC over TLS with this certificate (PEM; with --grpc-tls-key).
    #[arg(long, env = "VALHALLA_GRPC_TLS_CERT", hide_env_values = true, value_name = "FILE", requires_all = ["grpc", "grpc_tls_key"])]
    grpc_tls_cert: Option<std::path::PathBuf>,

    /// The private key of --grpc-tls-cert (PEM).
    #[arg(
        long,
        env = "VALHALLA_GRPC_TLS_KEY",
        hide_env_values = true,
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_tls_key: Option<std::path::PathBuf>,

    /// Require a client certificate signed by this CA (PEM) from every gateway: mTLS, which then
    /// authenticates the gateway in place of an API key.
    #[arg(
        long,
        env = "VALHALLA_GRPC_TLS_CLIENT_CA",
        hide_env_values = true,
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_tls_client_ca: Option<std::path::PathBuf>,

    #[command(flatten)]
    watch: super::WatchArgs,
}

/// An http or https address without credentials, path or query.
pub(super) fn parse_public_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("use http:// or https:// and a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("write only the scheme, host, port and path".into());
    }
    Ok(url)
}

/// An address (a one-address network) or a network.
fn parse_net(raw: &str) -> Result<ipnet::IpNet, String> {
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}` is neither an address nor a network (10.0.0.0/8)"))
}

/// The hook a gateway's decision goes through, as the HTTP limiter's do: metrics and the status
/// page's most refused subjects.
fn observer(state: &Arc<AppState>) -> crate::enforce::Observer {
    let state = Arc::clone(state);
    Box::new(move |decision, subject| state.rate_limited(decision, subject))
}

impl Args {
    /// The gRPC listener and server, set up before serving so that a taken port or a bad
    /// certificate stops the start.
    async fn grpc_listener(
        &self,
        at: SocketAddr,
    ) -> anyhow::Result<(tokio::net::TcpListener, tonic::transport::Server)> {
        let tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::grpc::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.grpc_tls_client_ca.clone(),
                }
                .config()?,
            ),
            _ => None,
        };
        let server = crate::grpc::server(tls)?;
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen for gRPC on {at}"))?;
        Ok((listener, server))
    }

    /// The counter store: memory, or the shared counters of `--counters`, which need not
    /// answer yet (the replica starts degraded and counts in Redis once it answers).
    async fn counting(&self, capacity: usize) -> anyhow::Result<Counting> {
        let Some(url) = &self.counters else {
            return Ok(Counting::memory(capacity));
        };
        let redis = RedisCounters::new(&RedisOptions {
            url: url.clone(),
            prefix: self.counters_prefix.clone(),
            timeout: self.counters_timeout.max(std::time::Duration::from_millis(1)),
            clock: WindowClock::Redis,
        })?;
        let counting = Counting::shared(capacity, redis);
        counting.connect().await;
        Ok(counting)
    }

    /// Serves until a shutdown signal; in-flight requests finish first.
    pub async fn run(
        self,
        state_dir: &crate::desired::StateDir,
        store: &super::StoreConfig,
    ) -> anyhow::Result<Status> {
        // Handlers first: a SIGTERM that arrives while starting stops the server cleanly.
        let signal = crate::shutdown::signal();
        let db = super::open(store).await?;
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .with_context(|| format!("cannot listen on {}", self.bind))?;
        let addr = listener.local_addr()?;
        let grpc = match self.grpc {
            Some(at) => Some(self.grpc_listener(at).await?),
            None => None,
        };
        let counting = self.counting(self.max_counters.max(1)).await?;
        // Said whatever the log level: an operator needs to know where the server is.
        let counted_in = match counting.shown_url() {
            Some(url) => format!("counters in {url}"),
            None => "counters in memory".to_owned(),
        };
        // One write: stderr is unbuffered, and a line written piece by piece can be read
        // half-written by whatever follows the log.
        let line = format!(
            "valhalla-ops: serving http://{addr} ({} store, {counted_in})\n",
            db.backend()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some((listener, _)) = &grpc {
            let line = format!(
                "valhalla-ops: serving Envoy's rate limit service at grpc://{} (domain {})\n",
                listener.local_addr()?,
                crate::text::shown(&self.grpc_domain)
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        let defaults = ReplicaOptions::default();
        let options = ReplicaOptions {
            name: self.replica.unwrap_or(defaults.name),
            counters: self.max_counters.max(1),
            snapshot_interval: self.snapshot_interval.max(std::time::Duration::from_millis(100)),
            ..defaults
        };
        let clock = crate::clock::system();
        let shown = crate::text::path(&state_dir.path);
        if self.watch.watch && !state_dir.path.is_dir() {
            anyhow::bail!("cannot watch {shown}: not a directory");
        }
        let state = Arc::new(AppState {
            state_dir: Some(state_dir.clone()),
            trusted_proxies: self.trusted_proxies,
            limits: server::ConnectionLimits {
                header_timeout: self.header_timeout.max(std::time::Duration::from_millis(100)),
                body_timeout: self.body_timeout.max(std::time::Duration::from_millis(100)),
                max_connections: self.max_connections as usize,
                max_per_source: self.max_connections_per_source as usize,
            },
            ..AppState::over(Replica::with_counting(db.clone(), clock, options, counting), db)
        });
        // Fail at start, not on the first request, if the state cannot be read.
        state
            .replica
            .view()
            .await
            .context("cannot load the state to serve")?;
        let tasks = state.replica.spawn();
        let public = match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let delivering = crate::outbox::Delivering {
            status_url: format!("{public}/status"),
            metrics: state.metrics.notify.clone(),
        };
        let notices = crate::outbox::spawn(Arc::clone(&state.replica), self.expiry_reminder, delivering);
        // One signal stops both the server and the watch loop.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let watcher = self.watch.watch.then(|| {
            let options = self.watch.options("serve:watch".into(), false, false);
            tokio::spawn(crate::watch::run(
                state.db.clone(),
                state_dir.clone(),
                options,
                state.metrics.watch.clone(),
                state.replica.clock.clone(),
                until_stopped(stopped.clone()),
            ))
        });
        let gateways = grpc.map(|(listener, server)| {
            let limiter = crate::grpc::RateLimiter {
                replica: Arc::clone(&state.replica),
                domain: self.grpc_domain.clone(),
                mtls: self.grpc_tls_client_ca.is_some(),
                observe: Some(observer(&state)),
                metrics: state.metrics.grpc.clone(),
            };
            tokio::spawn(crate::grpc::serve(
                listener,
                server,
                limiter,
                until_stopped(stopped.clone()),
            ))
        });
        let served = server::serve(listener, Arc::clone(&state), until_stopped(stopped)).await;
        if let Some(gateways) = gateways {
            match gateways.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("{e}"),
                Err(e) => tracing::error!("the gRPC server failed: {e}"),
            }
        }
        if let Some(watcher) = watcher {
            // A pass in progress finishes (commits or rolls back whole) before the process ends.
            match watcher.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("cannot watch {shown}: {e}"),
                Err(e) => tracing::error!("the watch loop failed: {e}"),
            }
        }
        drop((tasks, notices));
        // The last counts since the previous snapshot are not lost on a clean shutdown.
        if let Err(e) = state.replica.flush().await {
            tracing::warn!(error = %e, "cannot write the last rate-limit snapshots");
        }
        served.context("the HTTP server failed")?;
        Ok(Status::Ok)
    }
}

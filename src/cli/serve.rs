//! `serve`: the HTTP server over the store, until Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use super::Status;
use crate::counting::{Counting, RedisCounters, RedisOptions, WindowClock};
use crate::replica::{Replica, ReplicaOptions};
use crate::server::{self, AppState};

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "VALHALLA_BIND",
        default_value = "127.0.0.1:8080",
        hide_env_values = true
    )]
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

    #[command(flatten)]
    watch: super::WatchArgs,
}

/// An address (a one-address network) or a network.
fn parse_net(raw: &str) -> Result<ipnet::IpNet, String> {
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}` is neither an address nor a network (10.0.0.0/8)"))
}

impl Args {
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
        let served = server::serve(listener, Arc::clone(&state), until_stopped(stopped)).await;
        if let Some(watcher) = watcher {
            // A pass in progress finishes (commits or rolls back whole) before the process ends.
            match watcher.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("cannot watch {shown}: {e}"),
                Err(e) => tracing::error!("the watch loop failed: {e}"),
            }
        }
        drop(tasks);
        // The last counts since the previous snapshot are not lost on a clean shutdown.
        if let Err(e) = state.replica.flush().await {
            tracing::warn!(error = %e, "cannot write the last rate-limit snapshots");
        }
        served.context("the HTTP server failed")?;
        Ok(Status::Ok)
    }
}

//! gRPC benchmark: `ShouldRateLimit` at 64 concurrent streams on loopback, driven by h2load
//! (nghttp2's HTTP/2 load generator, Debian's `nghttp2-client`, not ours), against the rate limit
//! service counting in memory and in Redis (when one answers at `VALHALLA_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379/0`), and, as the reference, a bare tonic service of the same
//! protocol in the same process that answers OK without deciding. Rounds interleaved; medians.
//! Each decided call is checked against the service's own count of OK answers. Prints figures;
//! asserts nothing.
//!
//! `cargo bench --bench grpc` (`-- --seconds N` per scenario and round).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use prost::Message as _;
use valhalla_ops::counting::{Counting, DEFAULT_TIMEOUT, RedisCounters, RedisOptions, WindowClock};
use valhalla_ops::desired::Loader;
use valhalla_ops::domain::KeySha256;
use valhalla_ops::grpc::{GrpcMetrics, Outcome, RateLimiter};
use valhalla_ops::limit::DEFAULT_CAPACITY;
use valhalla_ops::reconcile::{Request, reconcile};
use valhalla_ops::replica::{Replica, ReplicaOptions};
use valhalla_ops::store::Db;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "vk_bench_gateway_000000000000000000000000000000";
const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// 64 streams: 4 connections of 16 concurrent streams each, as a gateway's pool would hold.
const CONNECTIONS: u32 = 4;
const STREAMS: u32 = 16;
const ROUNDS: usize = 3;

fn state_yaml() -> String {
    format!(
        "clients:\n  - name: envoy\n    type: gateway\n    role: reader\n    key_sha256: {}\nrate_limits:\n  - scope: global\n    max_requests: 2000000000\n    window_seconds: 86400\n  - scope: ip\n    key: 10.0.0.0/8\n    max_requests: 2000000000\n    window_seconds: 86400\n  - scope: user\n    key: user-1\n    max_requests: 2000000000\n    window_seconds: 86400\n",
        KeySha256::of_key(KEY).as_str()
    )
}

/// The call every stream makes: one descriptor per rule scope, as examples/envoy/ sends them.
fn call() -> Vec<u8> {
    let entry = |key: &str, value: &str| Entry {
        key: key.into(),
        value: value.into(),
    };
    let request = RateLimitRequest {
        domain: "valhalla".into(),
        descriptors: vec![
            RateLimitDescriptor {
                entries: vec![
                    entry("remote_address", "10.1.2.3"),
                    entry("request_method", "GET"),
                ],
                ..Default::default()
            },
            RateLimitDescriptor {
                entries: vec![entry("user", "user-1")],
                ..Default::default()
            },
        ],
        hits_addend: 0,
    };
    // A gRPC message: uncompressed, its length, then the protobuf.
    let message = request.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The reference: the same protocol, answered OK without looking at the call.
struct Bare;

#[tonic::async_trait]
impl RateLimitService for Bare {
    async fn should_rate_limit(
        &self,
        _: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        }))
    }
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn bare() -> SocketAddr {
    let (listener, addr) = listener().await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(Bare))
            .serve_with_incoming(incoming),
    );
    addr
}

/// The rate limit service over `db`, counting in `counting`; its metrics, to check the answers.
async fn service(db: Db, counting: Counting) -> (SocketAddr, GrpcMetrics, valhalla_ops::shutdown::TaskGuard) {
    let replica = Arc::new(Replica::with_counting(
        db,
        valhalla_ops::clock::system(),
        ReplicaOptions::default(),
        counting,
    ));
    replica.view().await.expect("state loads");
    let tasks = replica.spawn();
    let metrics = GrpcMetrics::default();
    let limiter = RateLimiter {
        replica,
        domain: "valhalla".into(),
        mtls: false,
        observe: None,
        metrics: metrics.clone(),
    };
    let (listener, addr) = listener().await;
    let server = valhalla_ops::grpc::server(None).expect("no TLS to set up");
    tokio::spawn(valhalla_ops::grpc::serve(
        listener,
        server,
        limiter,
        std::future::pending(),
    ));
    (addr, metrics, tasks)
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    done: u64,
    p50: Duration,
    p99: Duration,
}

/// h2load against `addr` for `seconds`: the rate it reports, and the latency percentiles of
/// the requests it logged.
fn load(addr: SocketAddr, body: &std::path::Path, seconds: u64) -> Figures {
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("h2load")
        .args([
            "-D",
            &seconds.to_string(),
            "-c",
            &CONNECTIONS.to_string(),
            "-m",
            &STREAMS.to_string(),
            "-t",
            "1",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {KEY}")])
        .arg("-d")
        .arg(body)
        .arg("--log-file")
        .arg(log.path())
        .arg(format!("http://{addr}{PATH}"))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.strip_suffix(" req/s"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in h2load's output:\n{text}"));
    // Each line: start (µs since the epoch), HTTP status, time for the request (µs).
    let mut latencies: Vec<u64> = std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.parse().ok())
        .collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        Duration::from_micros(latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)])
    };
    Figures {
        rate,
        done: latencies.len() as u64,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64);
    // The log filter `serve` runs with: without a subscriber, every span h2 opens would also
    // go through the `log` crate, a cost the binary does not pay.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "valhalla_ops=info,sqlx=error,warn",
        ))
        .with_writer(std::io::stderr)
        .init();
    if Command::new("h2load").arg("--version").output().is_err() {
        println!("h2load is not installed (Debian's nghttp2-client): nothing measured");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("call.bin");
    std::fs::write(&body, call()).unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let redis_url =
        std::env::var("VALHALLA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("vops-bench-grpc-{}", std::process::id());
    let (targets, _tasks) = runtime.block_on(async {
        let db = Db::open(&url).await.expect("store");
        let mut loader = Loader::new(Utc::now());
        loader.add_file(std::path::Path::new("bench.yaml"), &state_yaml());
        let desired = loader.finish().expect("valid bench state").state;
        reconcile(&db, &desired, &Request::default(), Utc::now())
            .await
            .expect("seeded");
        let mut targets = vec![(
            "bare tonic service, answers OK without deciding",
            bare().await,
            None,
        )];
        let mut tasks = Vec::new();
        let (addr, metrics, t) = service(db.clone(), Counting::memory(DEFAULT_CAPACITY)).await;
        targets.push(("ShouldRateLimit, counters in memory", addr, Some(metrics)));
        tasks.push(t);
        let reachable = redis::Client::open(redis_url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .is_ok();
        if reachable {
            let redis = RedisCounters::new(&RedisOptions {
                url: redis_url.clone(),
                prefix: prefix.clone(),
                timeout: DEFAULT_TIMEOUT,
                clock: WindowClock::Redis,
            })
            .expect("Redis URL");
            let counting = Counting::shared(DEFAULT_CAPACITY, redis);
            counting.connect().await;
            let (addr, metrics, t) = service(db, counting).await;
            targets.push(("ShouldRateLimit, counters in Redis", addr, Some(metrics)));
            tasks.push(t);
        } else {
            println!("no Redis at {redis_url}: the Redis scenario is not measured");
        }
        (targets, tasks)
    });
    // A first pass warms every server (connections, the view, the counters) before timing.
    for (_, addr, _) in &targets {
        load(*addr, &body, 1);
    }
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
    for _ in 0..ROUNDS {
        for (i, (_, addr, metrics)) in targets.iter().enumerate() {
            let before = metrics.as_ref().map(|m| m.calls(Outcome::Ok));
            let figures = load(*addr, &body, seconds);
            if let (Some(before), Some(metrics)) = (before, metrics) {
                let decided = metrics.calls(Outcome::Ok) - before;
                if decided < figures.done {
                    println!("  warning: {} of {} calls were decided OK", decided, figures.done);
                }
            }
            runs[i].push(figures);
        }
    }
    println!(
        "ShouldRateLimit over loopback: h2load, {CONNECTIONS} connections × {STREAMS} streams, {ROUNDS} interleaved rounds of {seconds} s, medians"
    );
    println!("| scenario | calls/s | of bare | p50 | p99 | target |");
    println!("|---|---|---|---|---|---|");
    let bare_rate = median(runs[0].iter().map(|f| f.rate).collect());
    let memory_rate = runs.get(1).map(|r| median(r.iter().map(|f| f.rate).collect()));
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let rate = median(runs[i].iter().map(|f| f.rate).collect());
        let p50 = Duration::from_secs_f64(median(runs[i].iter().map(|f| f.p50.as_secs_f64()).collect()));
        let p99 = Duration::from_secs_f64(median(runs[i].iter().map(|f| f.p99.as_secs_f64()).collect()));
        let (share, target) = match i {
            0 => ("100%".to_owned(), "reference"),
            1 => (
                format!("{:.0}%", rate / bare_rate * 100.0),
                "≥ 60% of bare, p99 < 2 ms",
            ),
            _ => (
                format!(
                    "{:.0}% ({:.0}% of memory)",
                    rate / bare_rate * 100.0,
                    rate / memory_rate.unwrap_or(rate) * 100.0
                ),
                "≥ 40% of bare, p99 < 5 ms",
            ),
        };
        println!(
            "| {name} | {rate:.0} | {share} | {} | {} | {target} |",
            ms(p50),
            ms(p99)
        );
    }
    let rates = |i: usize| {
        runs[i]
            .iter()
            .map(|f| format!("{:.0}", f.rate))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, (name, _, _)) in targets.iter().enumerate() {
        println!("  {name}: rounds {}", rates(i));
    }
    if targets.len() > 2 {
        let _ = redis::Client::open(redis_url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut c)?;
                if keys.is_empty() {
                    return Ok(());
                }
                redis::cmd("DEL").arg(keys).query::<()>(&mut c)
            });
    }
}

//! Serving benchmark: requests/s and p50/p99 latency at 64 keep-alive connections on loopback
//! for (a) `GET /system/maintenance/state` with every layer on, (b) an authenticated
//! `GET /system/ratelimits/rules/{id}`, (c) `POST /system/ratelimits/check`, and (d) a bare route
//! with no layers in the same process as the reference; (b) and (c) again on a second server
//! whose counters are in Redis (when one answers at `VALHALLA_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/0`), with the Redis calls per request; then, when Postgres is reachable, how
//! long an override written through one replica takes to be enforced by another; and the time
//! from saving a state file to the change being visible over HTTP with the watch loop running.
//! Prints figures; asserts nothing.
//!
//! `cargo bench --bench serve` (`-- --seconds N` per scenario and round; `-- --only '(c)'` for
//! that scenario beside the bare route and nothing else, `-- --only propagation` for the
//! override's propagation alone; Postgres from
//! `VALHALLA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use chrono::Utc;
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower::Layer as _;
use valhalla_ops::counting::{Counting, RedisCounters, RedisOptions, WindowClock};
use valhalla_ops::desired::Loader;
use valhalla_ops::domain::KeySha256;
use valhalla_ops::limit::DEFAULT_CAPACITY;
use valhalla_ops::mirror::Mirror;
use valhalla_ops::reconcile::{Request, reconcile};
use valhalla_ops::replica::{Replica, ReplicaOptions};
use valhalla_ops::server::{self, AppState};
use valhalla_ops::store::{Db, StoreOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "vk_bench_reader_000000000000000000000000000000";
const OPERATOR: &str = "vk_bench_operator_0000000000000000000000000000";
const CONNECTIONS: usize = 64;
const ROUNDS: usize = 3;

fn state_yaml() -> String {
    format!(
        "clients:\n  - name: bench\n    type: script\n    role: reader\n    key_sha256: {}\n  - name: tyr\n    type: tyr\n    role: operator\n    key_sha256: {}\nmaintenance:\n  mode: normal\nrate_limits:\n  - scope: global\n    max_requests: 100000000\n  - scope: ip\n    key: 127.0.0.0/8\n    max_requests: 100000000\n  - scope: api_key\n    key: bench\n    max_requests: 100000000\n  - scope: user\n    key: user-1\n    max_requests: 1000\n",
        KeySha256::of_key(KEY).as_str(),
        KeySha256::of_key(OPERATOR).as_str()
    )
}

async fn seed(db: &Db) {
    let mut loader = Loader::new(Utc::now());
    loader.add_file(std::path::Path::new("bench.yaml"), &state_yaml());
    let desired = loader.finish().expect("valid bench state").state;
    reconcile(db, &desired, &Request::default(), Utc::now())
        .await
        .expect("seeded");
}

/// A server over `db` counting in `counting`, with the bare reference route beside the real ones.
async fn start(
    db: Db,
    counting: Counting,
) -> (SocketAddr, Arc<AppState>, valhalla_ops::shutdown::TaskGuard, App) {
    let clock = valhalla_ops::clock::system();
    let replica = Replica::with_counting(db.clone(), clock, ReplicaOptions::default(), counting);
    let state = Arc::new(AppState::over(replica, db));
    state.replica.view().await.expect("state loads");
    let tasks = state.replica.spawn();
    let app = Router::new()
        .route("/bare", axum::routing::get(|| async { "ok" }))
        .merge(server::router(Arc::clone(&state)));
    let app = tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The production accept loop (header deadline, connection bound), the bare route included.
    let limits = state.limits;
    tokio::spawn(server::listen::serve(
        listener,
        app.clone(),
        limits,
        Vec::new(),
        std::future::pending(),
    ));
    (addr, state, tasks, app)
}

/// The served application: the router behind path normalisation.
type App = tower_http::normalize_path::NormalizePath<Router>;

/// The application's own CPU time per request, without the network: `request` through `app`
/// `n` times on this thread, its answer read whole, as hyper would.
async fn in_process(app: &App, raw: &[u8], n: u32) -> Duration {
    use tower::ServiceExt as _;
    let peer = axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000)));
    let start = Instant::now();
    for _ in 0..n {
        let mut request = request_of(raw);
        request.extensions_mut().insert(peer);
        let response = app.clone().oneshot(request).await.unwrap();
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
    }
    start.elapsed() / n
}

/// One of this benchmark's raw requests, in its parts.
struct Parts<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

impl Parts<'_> {
    fn of(raw: &[u8]) -> Parts<'_> {
        let text = std::str::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap().split(' ');
        Parts {
            method: first.next().unwrap(),
            path: first.next().unwrap(),
            headers: lines.map(|line| line.split_once(": ").unwrap()).collect(),
            body,
        }
    }
}

/// One of this benchmark's raw requests as a request value.
fn request_of(raw: &[u8]) -> axum::http::Request<axum::body::Body> {
    let parts = Parts::of(raw);
    let mut builder = axum::http::Request::builder()
        .method(parts.method)
        .uri(parts.path);
    for (name, value) in parts.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(axum::body::Body::from(parts.body.to_owned()))
        .unwrap()
}

/// One keep-alive HTTP/1.1 connection that sends a request and reads its whole response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request`; returns the body as text.
    async fn body_of(&mut self, request: &[u8]) -> String {
        self.send(request).await;
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        String::from_utf8_lossy(&self.buf[end + 4..]).into_owned()
    }

    /// Sends `request`; returns the status.
    async fn send(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).unwrap();
                let status = head[9..12].parse().unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill().await;
                }
                return status;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// What one load generator measured in one run of one scenario.
struct Figures {
    /// Requests answered (the warm-up included, for the own generator).
    sent: u64,
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Answers that were not 2xx, and socket errors.
    failed: u64,
    /// The server threads' CPU time per request (user, system), in µs: steadier than the
    /// rates, which move with whatever else the two cores run.
    cpu_us: (f64, f64),
}

/// The CPU time the server runtime's threads have used (user, system), in clock ticks.
fn server_cpu() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: utime and stime are the 12th and 13th fields after the comm.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(server") {
            continue;
        }
        let fields: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        if let [user, system] = fields[..] {
            total.0 += user;
            total.1 += system;
        }
    }
    total
}

/// Clock ticks per second, as /proc counts them.
const TICKS: f64 = 100.0;

/// Who sends the load.
#[derive(Clone, Copy, PartialEq)]
enum Generator {
    /// wrk, in a process of its own: one thread, 64 connections (Debian's `wrk`).
    Wrk,
    /// This benchmark's own client, in the server's process: two threads of its own.
    Own,
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Generator::Wrk => "wrk (-t1 -c64, its own process)",
            Generator::Own => "the benchmark's own client (2 threads in the server's process)",
        }
    }
}

/// `request` sent by `generator` to `addr` for `seconds`, with the server threads' CPU time.
fn measure(
    generator: Generator,
    client: &tokio::runtime::Runtime,
    addr: SocketAddr,
    request: &[u8],
    seconds: u64,
    scripts: &std::path::Path,
) -> Figures {
    let cpu_before = server_cpu();
    let mut figures = match generator {
        Generator::Wrk => wrk(addr, request, seconds, scripts),
        Generator::Own => client.block_on(load(addr, request.to_vec(), seconds)),
    };
    let cpu_after = server_cpu();
    let per_request = |ticks: u64| ticks as f64 / TICKS * 1e6 / figures.sent.max(1) as f64;
    figures.cpu_us = (
        per_request(cpu_after.0 - cpu_before.0),
        per_request(cpu_after.1 - cpu_before.1),
    );
    figures
}

/// Runs `request` on 64 connections for `seconds` after a one-second warm-up.
async fn load(addr: SocketAddr, request: Vec<u8>, seconds: u64) -> Figures {
    let request = Arc::new(request);
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let request = Arc::clone(&request);
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                let mut latencies = Vec::with_capacity(100_000);
                let mut failed = 0;
                let mut sent = 0;
                loop {
                    let start = Instant::now();
                    let status = conn.send(&request).await;
                    sent += 1;
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if start >= warm {
                        latencies.push(now - start);
                        failed += u64::from(!(200..300).contains(&status));
                    }
                }
                (latencies, failed, sent)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    let mut sent = 0;
    for task in tasks {
        let (latencies, f, n) = task.await.unwrap();
        all.extend(latencies);
        failed += f;
        sent += n;
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        sent,
        rps: all.len() as f64 / seconds as f64,
        p50: at(0.50),
        p99: at(0.99),
        failed,
        cpu_us: (0.0, 0.0),
    }
}

/// wrk's Lua script that sends `request` (its method, headers but Host, and body).
fn wrk_script(request: &[u8]) -> (String, String) {
    let parts = Parts::of(request);
    let mut script = format!("wrk.method = \"{}\"\n", parts.method);
    for (name, value) in parts.headers {
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-length") {
            script.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
        }
    }
    if !parts.body.is_empty() {
        script.push_str(&format!("wrk.body = [==[{}]==]\n", parts.body));
    }
    (parts.path.to_owned(), script)
}

/// wrk against `addr` for `seconds`: the rate, percentiles and errors it reports.
fn wrk(addr: SocketAddr, request: &[u8], seconds: u64, scripts: &std::path::Path) -> Figures {
    let (path, script) = wrk_script(request);
    let file = scripts.join("request.lua");
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&file)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(str::trim))
    };
    let fail = || -> ! {
        panic!(
            "wrk's output is not as expected:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let rps: f64 = after("Requests/sec:")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| fail());
    let sent: u64 = text
        .lines()
        .find_map(|l| {
            l.trim_start()
                .split_once(" requests in ")
                .and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or_else(|| fail());
    let latency = |q: &str| after(q).and_then(wrk_time).unwrap_or_else(|| fail());
    let non_2xx: u64 = after("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // `Socket errors: connect 0, read 0, write 0, timeout 0`
    let socket_errors: u64 = after("Socket errors:")
        .map(|e| {
            e.split(", ")
                .filter_map(|p| p.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Figures {
        sent,
        rps,
        p50: latency("50%"),
        p99: latency("99%"),
        failed: non_2xx + socket_errors,
        cpu_us: (0.0, 0.0),
    }
}

/// One of wrk's times: `538.00us`, `1.23ms`, `2.00s`.
fn wrk_time(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn get(path: &str, key: Option<&str>) -> Vec<u8> {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").into_bytes()
}

fn post(path: &str, key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A throwaway Postgres database, or none when the server is unreachable.
async fn postgres_db() -> Option<(String, String)> {
    let admin = std::env::var("VALHALLA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("vops_bench_serve_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .ok()?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return None,
    };
    Some((admin, url))
}

async fn drop_db(admin: &str, url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Median and p95 of the time from an override written through replica A to replica B refusing.
async fn propagation(url: &str) -> (Duration, Duration, usize) {
    // As `serve` opens its store: with its warm connections.
    let db_a = Db::open_with(url, StoreOptions::serving()).await.unwrap();
    seed(&db_a).await;
    let db_b = Db::open_with(url, StoreOptions::serving()).await.unwrap();
    let (a, _, _a_tasks, _) = start(db_a, Counting::memory(DEFAULT_CAPACITY)).await;
    let (b, _, _b_tasks, _) = start(db_b, Counting::memory(DEFAULT_CAPACITY)).await;
    let mut on_a = Conn::open(a).await;
    let mut on_b = Conn::open(b).await;
    // A route the freeze refuses (the overrides routes are the way out, always served).
    let probe = get("/system/maintenance/windows", Some(KEY));
    let mut times = Vec::new();
    // Two changes first, untimed: the servers' first requests and writes, as after any start.
    for i in 0..42 {
        let (mode, want) = if i % 2 == 0 {
            ("maintenance", 503)
        } else {
            ("normal", 200)
        };
        let body = format!(r#"{{"reason": "bench {i}"}}"#);
        let request = post(&format!("/system/maintenance/state/{mode}"), OPERATOR, &body);
        let start = Instant::now();
        assert_eq!(on_a.send(&request).await, 200);
        while on_b.send(&probe).await != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "B never answered {want}"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if i >= 2 {
            times.push(start.elapsed());
        }
    }
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() * 95 / 100], times.len())
}

/// Median and p95 of the time from saving a state file to the change being visible through
/// `GET /system/ratelimits/rules/{id}` of a server running the watch loop (`serve --watch`).
async fn save_to_visible(edits: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let rule =
        |max: usize| format!("rate_limits:\n  - scope: ip\n    key: 198.51.100.7\n    max_requests: {max}\n");
    std::fs::write(state.join("clients.yaml"), state_yaml()).unwrap();
    std::fs::write(state.join("watched.yaml"), rule(1)).unwrap();
    let db = Db::open(&format!("sqlite://{}", dir.path().join("watch.db").display()))
        .await
        .unwrap();
    let (addr, app, _tasks, _) = start(db.clone(), Counting::memory(DEFAULT_CAPACITY)).await;
    let clock = Arc::clone(&app.replica.clock);
    let metrics = app.metrics.watch.clone();
    let options = valhalla_ops::watch::WatchOptions::default();
    let watched = state.clone();
    tokio::spawn(async move {
        valhalla_ops::watch::run(
            db,
            valhalla_ops::desired::StateDir::new(watched),
            options,
            metrics,
            clock,
            std::future::pending(),
        )
        .await
    });
    let mut conn = Conn::open(addr).await;
    // The rule's id, once the first pass has created it.
    let id = loop {
        let view = app.replica.view().await.unwrap();
        if let Some(r) = view
            .mirror
            .rule_map()
            .values()
            .find(|r| r.rule.key.as_str() == "198.51.100.7")
        {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let probe = get(&format!("/system/ratelimits/rules/{id}"), Some(KEY));
    let mut times = Vec::new();
    for edit in 0..edits {
        let max = edit + 2;
        let want = format!("\"max_requests\":{max}");
        // An editor's save: write a temporary file, rename it over the old one.
        let tmp = state.join(".watched.yaml.tmp");
        std::fs::write(&tmp, rule(max)).unwrap();
        let saved = Instant::now();
        std::fs::rename(&tmp, state.join("watched.yaml")).unwrap();
        while !conn.body_of(&probe).await.contains(&want) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(saved.elapsed());
        // Edits a person makes are seconds apart, not back to back.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

/// The reference: a bare axum route served by `axum::serve`, no layers, no state.
async fn bare() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let arg = |name: &str| {
        let mut args = std::env::args().skip_while(|a| a != name);
        args.nth(1)
    };
    let seconds = arg("--seconds").and_then(|n| n.parse().ok()).unwrap_or(3);
    // `--only '(c)'`: that scenario and the bare route alone, nothing after them (for a profiler).
    let only = arg("--only");
    // Named, so that a profile tells the server's threads from the load generator's.
    let server = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server")
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if only.as_deref() == Some("propagation") {
        propagate(&server);
        return;
    }
    let mut generators = vec![Generator::Wrk, Generator::Own];
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "wrk is not installed (Debian's wrk; scripts/bench installs it): measuring with the benchmark's own client only"
        );
        generators.retain(|g| *g != Generator::Wrk);
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let redis_url =
        std::env::var("VALHALLA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("vops-bench-{}", std::process::id());
    let (bare_addr, addr, rule_id, shared, app) = server.block_on(async {
        let db = Db::open(&url).await.unwrap();
        seed(&db).await;
        let rule_id = *Mirror::load(&db).await.unwrap().rule_map().keys().min().unwrap();
        let (addr, _, _tasks, app) = start(db.clone(), Counting::memory(DEFAULT_CAPACITY)).await;
        let redis = RedisCounters::new(&RedisOptions {
            url: redis_url.clone(),
            prefix: prefix.clone(),
            timeout: valhalla_ops::counting::DEFAULT_TIMEOUT,
            clock: WindowClock::Redis,
        })
        .unwrap();
        let counting = Counting::shared(DEFAULT_CAPACITY, redis);
        counting.connect().await;
        let shared = if counting.health().reachable {
            let (addr, state, _tasks, _) = start(db, counting).await;
            Some((addr, state))
        } else {
            None
        };
        (bare().await, addr, rule_id, shared, app)
    });
    println!(
        "valhalla-ops serving benchmark: {CONNECTIONS} connections, {ROUNDS} interleaved rounds of {seconds} s per scenario and load generator, medians; SQLite store, 2 server threads, on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rule = get(&format!("/system/ratelimits/rules/{rule_id}"), Some(KEY));
    // An operator's checks count (a reader's only ask): the path a gateway's question takes.
    let check = post(
        "/system/ratelimits/check",
        OPERATOR,
        r#"{"ip": "192.0.2.7", "client": "bench", "user": "user-2"}"#,
    );
    let mut scenarios = vec![
        ("(d) bare axum route (axum::serve)", bare_addr, get("/", None)),
        (
            "(a) GET /system/maintenance/state",
            addr,
            get("/system/maintenance/state", None),
        ),
        ("(b) GET /system/ratelimits/rules/{id}", addr, rule.clone()),
        ("(c) POST /system/ratelimits/check", addr, check.clone()),
    ];
    if let Some((shared_addr, _)) = &shared {
        scenarios.push(("(b) with Redis counters", *shared_addr, rule));
        scenarios.push(("(c) with Redis counters", *shared_addr, check));
    } else {
        println!("Redis counters: skipped (no Redis answers at {redis_url})");
    }
    if let Some(only) = &only {
        scenarios.retain(|(name, _, _)| name.starts_with("(d)") || name.contains(only.as_str()));
    }
    // (decisions, script calls) the shared counters have had so far.
    let redis_calls = || {
        shared.as_ref().map_or((0, 0), |(_, state)| {
            let metrics = &state.replica.counting.metrics;
            (metrics.calls(), metrics.script_calls.get())
        })
    };
    for generator in generators {
        // A first pass warms every server (connections, the view, the counters) before timing.
        if generator == Generator::Wrk {
            for (_, addr, request) in &scenarios {
                wrk(*addr, request, 1, dir.path());
            }
        }
        // Rounds interleave the scenarios, so a slow moment of the machine hits them all alike;
        // each figure is the median over the rounds, each ratio the median of the per-round ratios.
        let mut results: Vec<Vec<Figures>> = scenarios.iter().map(|_| Vec::new()).collect();
        let mut calls: Vec<(u64, u64, u64)> = scenarios.iter().map(|_| (0, 0, 0)).collect();
        for _ in 0..ROUNDS {
            for (i, (_, addr, request)) in scenarios.iter().enumerate() {
                let before = redis_calls();
                let figures = measure(generator, &client, *addr, request, seconds, dir.path());
                let after = redis_calls();
                calls[i].0 += after.0 - before.0;
                calls[i].1 += after.1 - before.1;
                calls[i].2 += figures.sent;
                results[i].push(figures);
            }
        }
        println!();
        println!("Load from {}:", generator.name());
        for (i, (name, _, _)) in scenarios.iter().enumerate() {
            let runs = &results[i];
            let ratio = median((0..ROUNDS).map(|r| runs[r].rps / results[0][r].rps).collect());
            let rps = median(runs.iter().map(|f| f.rps).collect());
            let p50 = median(runs.iter().map(|f| f.p50.as_secs_f64()).collect());
            let p99 = median(runs.iter().map(|f| f.p99.as_secs_f64()).collect());
            let failed: u64 = runs.iter().map(|f| f.failed).sum();
            let user = median(runs.iter().map(|f| f.cpu_us.0).collect());
            let system = median(runs.iter().map(|f| f.cpu_us.1).collect());
            let rounds = runs
                .iter()
                .map(|f| format!("{:.0}", f.rps))
                .collect::<Vec<_>>()
                .join(", ");
            let redis = if name.contains("Redis") {
                let requests = calls[i].2.max(1) as f64;
                format!(
                    "  Redis: {:.2} decisions and {:.3} script calls per request",
                    calls[i].0 as f64 / requests,
                    calls[i].1 as f64 / requests
                )
            } else {
                String::new()
            };
            println!(
                "{name:<40} {rps:>9.0} req/s  {:>5.0}% of bare  p50 {:>8}  p99 {:>8}  server CPU {:>5.1} µs/request ({user:.1} user)  not 2xx {failed}  rounds {rounds}{redis}",
                ratio * 100.0,
                ms(Duration::from_secs_f64(p50)),
                ms(Duration::from_secs_f64(p99)),
                user + system,
            );
        }
        if shared.is_some() && only.is_none() {
            // Redis-backed against in-process, round by round.
            for (redis, memory) in [(4, 2), (5, 3)] {
                let ratio = median(
                    (0..ROUNDS)
                        .map(|r| results[redis][r].rps / results[memory][r].rps)
                        .collect(),
                );
                println!(
                    "{:<40} {:>5.0}% of in-process counters",
                    scenarios[redis].0,
                    ratio * 100.0
                );
            }
        }
    }
    // The same requests without the network, one at a time on one thread: the layers' and
    // the handlers' own cost, steadier than the rates. The reference is the bare route inside
    // the same router.
    println!();
    let in_router: Vec<(&str, Vec<u8>)> =
        std::iter::once(("(d) bare route in the router", get("/bare", None)))
            .chain(
                scenarios
                    .iter()
                    .filter(|(name, ..)| !name.contains("Redis") && !name.starts_with("(d)"))
                    .map(|(name, _, request)| (*name, request.clone())),
            )
            .collect();
    let mut bare_cost = None;
    for (name, request) in &in_router {
        let cost = server.block_on(async {
            in_process(&app, request, 20_000).await;
            in_process(&app, request, 200_000).await
        });
        let bare = *bare_cost.get_or_insert(cost);
        println!(
            "{name:<40} in process, no network: {:>5.2} µs/request, {:.2} µs more than the bare route",
            cost.as_secs_f64() * 1e6,
            (cost.as_secs_f64() - bare.as_secs_f64()) * 1e6
        );
    }
    if only.is_some() {
        return;
    }
    if shared.is_some() {
        server.block_on(async {
            let client = ::redis::Client::open(redis_url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = ::redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        });
    }
    let (median, p95) = server.block_on(save_to_visible(20));
    println!(
        "serve --watch: file save → visible over HTTP, 20 edits: median {}, p95 {} (debounce {} ms)",
        ms(median),
        ms(p95),
        valhalla_ops::watch::WatchOptions::default().debounce.as_millis()
    );
    propagate(&server);
}

/// How long an override written through one replica takes to be enforced by another.
fn propagate(server: &tokio::runtime::Runtime) {
    let pg = server.block_on(postgres_db());
    match pg {
        Some((admin, url)) => {
            let (median, p95, n) = server.block_on(propagation(&url));
            println!(
                "override propagation A → B (Postgres LISTEN/NOTIFY), {n} changes: median {}, p95 {}",
                ms(median),
                ms(p95)
            );
            server.block_on(drop_db(&admin, &url));
        }
        None => println!("override propagation: skipped (Postgres not reachable)"),
    }
}

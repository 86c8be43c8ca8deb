//! Notifications benchmark: overrides set over HTTP at 200 a second for 30 s against a real
//! `serve` (the release binary), once with no sink and once with a webhook sink whose receiver
//! answers in 50 ms; for each, the p50 and p99 of the override's answer and the age of the
//! oldest undelivered event, sampled every 100 ms from the store. On SQLite, and on Postgres
//! when one answers. Prints figures; asserts nothing.
//!
//! `cargo bench --bench notify` (`-- --seconds N` per run, `-- --rate N` per second; Postgres
//! from `VALHALLA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::Connection as _;
use valhalla_ops::desired::Loader;
use valhalla_ops::domain::KeySha256;
use valhalla_ops::reconcile::{Request, reconcile};
use valhalla_ops::store::Db;

const OPERATOR: &str = "vk_bench_operator_0000000000000000000000000000";
const RECEIVER_DELAY: Duration = Duration::from_millis(50);

/// The operator, `rules` user rules in git for the overrides to hold, and the sink.
fn state_yaml(sink: bool, rules: usize) -> String {
    let mut yaml = format!(
        "clients:\n  - name: tyr\n    type: tyr\n    role: operator\n    key_sha256: {}\nrate_limits:\n",
        KeySha256::of_key(OPERATOR).as_str()
    );
    for n in 0..rules {
        yaml.push_str(&format!(
            "  - scope: user\n    key: bench-{n}\n    max_requests: 100\n"
        ));
    }
    if sink {
        yaml.push_str(
            "notifications:\n  - name: oncall\n    type: webhook\n    url_env: BENCH_HOOK_URL\n    secret_env: BENCH_HOOK_SECRET\n",
        );
    }
    yaml
}

/// A receiver that answers every call in [`RECEIVER_DELAY`]; its address and its count.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        let seen = Arc::clone(&seen);
        async move {
            tokio::time::sleep(RECEIVER_DELAY).await;
            seen.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

/// The release `serve` over `url`, and its address once it says it serves.
fn serve(url: &str, hook: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_valhalla-ops"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .env("VALHALLA_STATE", "/nonexistent")
        .env("BENCH_HOOK_URL", hook)
        .env("BENCH_HOOK_SECRET", "whsec_bench")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("run valhalla-ops serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines.next().expect("serve said nothing").expect("a line");
        if let Some(at) = line.find("serving http://") {
            let rest = &line[at + "serving ".len()..];
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    };
    // Keep reading, so that the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    failed: usize,
    oldest: i64,
    delivered: usize,
    drained: Duration,
}

/// One run: overrides at `rate` a second for `seconds` against a fresh store at `url`.
async fn run(url: &str, sink: bool, rate: u32, seconds: u64) -> Figures {
    let db = Db::open(url).await.expect("the store");
    let mut loader = Loader::new(Utc::now());
    let total = rate as usize * seconds as usize;
    loader.add_file(std::path::Path::new("bench.yaml"), &state_yaml(sink, total));
    let desired = loader.finish().expect("valid bench state").state;
    reconcile(&db, &desired, &Request::default(), Utc::now())
        .await
        .expect("seeded");
    let (hook, delivered) = receiver().await;
    let (mut child, base) = serve(url, &hook);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("a client");
    // Open loop: one override every 1/rate s, whatever the answers take.
    let every = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sampling = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut oldest = 0i64;
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(seconds + 1) {
                if let Ok(backlog) = db.delivery_backlog().await {
                    let age = backlog
                        .oldest
                        .map_or(0, |at| (Utc::now() - at).num_milliseconds());
                    oldest = oldest.max(age);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            oldest
        })
    };
    let mut calls = Vec::with_capacity(total);
    for n in 0..total {
        ticks.tick().await;
        let (client, base) = (client.clone(), base.clone());
        calls.push(tokio::spawn(async move {
            let body = serde_json::json!({
                "scope": "user", "key": format!("bench-{n}"), "max_requests": 1,
                "reason": "benchmark", "ttl_seconds": 3600,
            });
            let started = Instant::now();
            let answer = client
                .post(format!("{base}/system/ratelimits/rules"))
                .bearer_auth(OPERATOR)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            let ok = answer.is_ok_and(|a| a.status().is_success());
            (started.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    for call in calls {
        let (took, ok) = call.await.expect("a call");
        latencies.push(took);
        failed += usize::from(!ok);
    }
    let oldest = sampling.await.expect("sampled");
    // How long the receiver takes to have everything once the load stops.
    let stopped = Instant::now();
    // An override.set for each call, and the seeding reconcile's event.
    let expected = if sink { total + 1 } else { 0 };
    while delivered.load(Ordering::Relaxed) < expected && stopped.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = stopped.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        failed,
        oldest,
        delivered: delivered.load(Ordering::Relaxed),
        drained,
    }
}

/// A store's URL for a database name.
type UrlOf = Box<dyn Fn(&str) -> String>;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // The benchmark's own client speaks plain HTTP, but reqwest wants a provider to be built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds = arg("--seconds", 30);
    let rate = u32::try_from(arg("--rate", 200)).unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut stores: Vec<(&str, UrlOf)> = vec![(
            "sqlite",
            Box::new(move |name| format!("sqlite://{}", dir.path().join(format!("{name}.db")).display())),
        )];
        let admin = std::env::var("VALHALLA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let postgres = sqlx::PgConnection::connect(&admin).await.ok();
        if postgres.is_some() {
            let admin = admin.clone();
            stores.push((
                "postgres",
                Box::new(move |name| {
                    let mut url = url::Url::parse(&admin).expect("a URL");
                    url.set_path(&format!("/{name}"));
                    url.to_string()
                }),
            ));
        } else {
            println!("Postgres does not answer at {admin}: SQLite only");
        }
        println!(
            "overrides over HTTP at {rate}/s for {seconds}s; a webhook receiver answering in {} ms",
            RECEIVER_DELAY.as_millis()
        );
        println!(
            "{:<9} {:<8} {:>9} {:>9} {:>7} {:>22} {:>10} {:>9}",
            "store", "sink", "p50 ms", "p99 ms", "failed", "oldest undelivered ms", "delivered", "drained"
        );
        let mut conn = postgres;
        for (backend, url_of) in &stores {
            let mut p99s = Vec::new();
            for sink in [false, true] {
                let name = format!("bench_notify_{}_{}", std::process::id(), u8::from(sink));
                if let Some(conn) = conn.as_mut().filter(|_| *backend == "postgres") {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut *conn)
                        .await;
                }
                let f = run(&url_of(&name), sink, rate, seconds).await;
                println!(
                    "{:<9} {:<8} {:>9.1} {:>9.1} {:>7} {:>22} {:>10} {:>8.1}s",
                    backend,
                    if sink { "webhook" } else { "none" },
                    f.p50.as_secs_f64() * 1e3,
                    f.p99.as_secs_f64() * 1e3,
                    f.failed,
                    if sink { f.oldest.to_string() } else { "-".into() },
                    f.delivered,
                    f.drained.as_secs_f64()
                );
                p99s.push(f.p99);
                if let Some(conn) = conn.as_mut().filter(|_| *backend == "postgres") {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut *conn)
                    .await;
                }
            }
            println!(
                "{backend}: p99 with the sink / without: {:.2}",
                p99s[1].as_secs_f64() / p99s[0].as_secs_f64()
            );
        }
    });
}

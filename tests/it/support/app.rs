//! A real server on a random port over a fresh, seeded database, with test keys and typed
//! request helpers, for every test file that calls the HTTP API.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::Value;
use valhalla_ops::counting::{Counting, RedisCounters, RedisOptions, WindowClock};
use valhalla_ops::desired::Loader;
use valhalla_ops::domain::KeySha256;
use valhalla_ops::reconcile::{Request, reconcile};
use valhalla_ops::replica::{Replica, ReplicaOptions};
use valhalla_ops::server::{self, AppState};
use valhalla_ops::store::Db;

use super::{Counters, TestDb};

pub const READER: &str = "vk_test_reader_0000000000000000000000000000";
pub const OPERATOR: &str = "vk_test_operator_00000000000000000000000000";
pub const ADMIN: &str = "vk_test_admin_000000000000000000000000000000";
pub const RETIRED: &str = "vk_test_retired_0000000000000000000000000000";

/// The clients the tests call with, and a state that declares them.
pub fn state_with(extra: &str) -> String {
    let client = |name: &str, role: &str, key: &str, active: bool| {
        format!(
            "  - name: {name}\n    type: script\n    role: {role}\n    key_sha256: {}\n    active: {active}\n",
            KeySha256::of_key(key).as_str()
        )
    };
    format!(
        "clients:\n{}{}{}{}{extra}",
        client("reader", "reader", READER, true),
        client("operator", "operator", OPERATOR, true),
        client("admin", "admin", ADMIN, true),
        client("retired", "admin", RETIRED, false),
    )
}

/// A server on a random port over a fresh, seeded database.
pub struct TestApp {
    pub base: String,
    pub state: Arc<AppState>,
    pub runtime: tokio::runtime::Runtime,
    /// A client that keeps no idle connections and reads error statuses as answers.
    pub agent: ureq::Agent,
    /// The backend and the counter store, for messages: `sqlite`, `postgres+redis`.
    pub backend: &'static str,
    _db: TestDb,
    _counters: Counters,
    /// The state the server's admin `reconcile` action loads.
    pub state_dir: crate::support::StateDir,
    /// Seconds the server's clock runs ahead of the real one.
    pub clock_offset: Arc<std::sync::atomic::AtomicI64>,
    /// The replica's background tasks, stopped with the app.
    _tasks: valhalla_ops::shutdown::TaskGuard,
}

impl TestApp {
    pub fn spawn(test_db: TestDb, state_yaml: &str) -> TestApp {
        TestApp::spawn_with(test_db, state_yaml, |_| {})
    }

    /// A server whose state `configure` adjusts before it starts.
    pub fn spawn_with(
        test_db: TestDb,
        state_yaml: &str,
        configure: impl FnOnce(&mut AppState) + Send,
    ) -> TestApp {
        TestApp::spawn_counting_with(test_db, Counters::Memory, state_yaml, configure)
    }

    /// A server that counts in `counters`: in Redis, with the server's (settable) clock.
    pub fn spawn_counting(test_db: TestDb, counters: Counters, state_yaml: &str) -> TestApp {
        TestApp::spawn_counting_with(test_db, counters, state_yaml, |_| {})
    }

    /// [`spawn_counting`](Self::spawn_counting), with the state adjusted by `configure`.
    pub fn spawn_counting_with(
        test_db: TestDb,
        counters: Counters,
        state_yaml: &str,
        configure: impl FnOnce(&mut AppState) + Send,
    ) -> TestApp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state_dir = crate::support::StateDir::new(&[("state.yaml", state_yaml)]);
        let clock_offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let (base, state, tasks) = runtime.block_on(async {
            let db = Db::open(&test_db.url).await.unwrap();
            apply(&db, state_yaml).await;
            // The server's clock runs `clock_offset` seconds ahead of the real one.
            let offset = Arc::clone(&clock_offset);
            let clock: valhalla_ops::clock::Clock = Arc::new(move || {
                Utc::now() + Duration::seconds(offset.load(std::sync::atomic::Ordering::Relaxed))
            });
            let options = ReplicaOptions::default();
            let counting = match &counters {
                Counters::Memory => Counting::memory(options.counters),
                Counters::Redis(redis) => {
                    let shared = RedisCounters::new(&RedisOptions {
                        url: redis.url.clone(),
                        prefix: redis.prefix.clone(),
                        // Generous: a loaded test machine is not an outage.
                        timeout: std::time::Duration::from_secs(2),
                        clock: WindowClock::Caller,
                    })
                    .unwrap();
                    Counting::shared(options.counters, shared)
                }
            };
            let replica = Replica::with_counting(db.clone(), clock, options, counting);
            let mut state = AppState {
                state_dir: Some(valhalla_ops::desired::StateDir::new(state_dir.path())),
                ..AppState::over(replica, db)
            };
            configure(&mut state);
            let state = Arc::new(state);
            let tasks = state.replica.spawn();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(server::serve(
                listener,
                Arc::clone(&state),
                std::future::pending(),
            ));
            (base, state, tasks)
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A server may close a connection after refusing a request whose body it did not read
            // (401 on a POST): a fresh connection per request keeps tests from racing that close.
            .max_idle_connections(0)
            .build()
            .into();
        TestApp {
            base,
            state,
            runtime,
            agent,
            backend: match counters {
                Counters::Memory => test_db.backend,
                Counters::Redis(_) if test_db.backend == "sqlite" => "sqlite+redis",
                Counters::Redis(_) => "postgres+redis",
            },
            _db: test_db,
            _counters: counters,
            state_dir,
            clock_offset,
            _tasks: tasks,
        }
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub fn call(&self, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = self.agent.run(request.body(()).unwrap()).unwrap();
        read(response)
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.call("GET", path, key)
    }
}

/// A response with its headers.
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl TestApp {
    /// Sends a request with extra headers and an optional JSON body; keeps the headers.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .agent
            .run(request.body(body.unwrap_or_default().to_owned()).unwrap())
            .unwrap();
        let headers = response.headers().clone();
        let (status, body) = read(response);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Polls `GET path` until it answers `want`; fails after `within`.
    pub fn wait_for_status(&self, path: &str, key: Option<&str>, want: u16, within: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.get(path, key).0 != want {
            assert!(start.elapsed() < within, "{path} never answered {want}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Moves the server's clock `seconds` further ahead.
    pub fn advance(&self, seconds: i64) {
        self.clock_offset
            .fetch_add(seconds, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub async fn apply(db: &Db, yaml: &str) {
    let mut loader = Loader::new(Utc::now());
    loader.add_file(std::path::Path::new("api.yaml"), yaml);
    let desired = loader.finish().expect("valid test state").state;
    let request = Request {
        actor: "test".into(),
        source: "test".into(),
        ..Request::default()
    };
    reconcile(db, &desired, &request, Utc::now()).await.unwrap();
}

impl TestApp {
    /// The URL of the server's database, for a second handle on it (another replica).
    pub fn db_url(&self) -> &str {
        &self._db.url
    }

    /// The id of the client named `name`, as the API lists it.
    pub fn client_id(&self, name: &str) -> i64 {
        // With the admin key: tests switch readers and operators off, never the admin until the end.
        let (_, clients) = self.get("/system/clients?limit=100", Some(ADMIN));
        let found = clients
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == name));
        let found = found.unwrap_or_else(|| panic!("{}: no client {name} in {clients}", self.backend));
        found["id"].as_i64().unwrap()
    }

    /// Sends `body` as JSON.
    pub fn send_json(&self, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
        let reply = self.exchange(method, path, key, &[], Some(body));
        (reply.status, reply.body)
    }

    /// The plan the reconciler would make now for `yaml`, as (kind, key, action).
    pub fn plan(&self, yaml: &str) -> Vec<(String, String, String)> {
        let mut loader = Loader::new(Utc::now());
        loader.add_file(std::path::Path::new("api.yaml"), yaml);
        let desired = loader.finish().unwrap().state;
        let request = Request {
            dry_run: true,
            ..Request::default()
        };
        let outcome = self
            .runtime
            .block_on(reconcile(&self.state.db, &desired, &request, Utc::now()))
            .unwrap();
        let value = serde_json::to_value(outcome.plan.changes()).unwrap();
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["kind"].as_str().unwrap().into(),
                    c["key"].as_str().unwrap().into(),
                    c["action"].as_str().unwrap().into(),
                )
            })
            .collect()
    }
}

//! Envoy's rate limit service over gRPC, called as a gateway calls it by a client nobody here
//! wrote (Python's grpcio, stubs generated from the Envoy protos envoy-types ships): descriptors,
//! hits, domains, who may call, shadow rules, the freeze, reflection, health and mTLS, on every
//! backend and counter store; exactness across replicas; and a real Envoy in front of a bare
//! upstream, configured by `examples/envoy/`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use valhalla_ops::domain::KeySha256;

use crate::support::app::{ADMIN, OPERATOR, READER, state_with};
use crate::support::{Counters, Process, StateDir, TestDb, all_backends, python_modules, redis, setups};

/// The key of the gateway client the tests declare.
const GATEWAY: &str = "vk_test_gateway_0000000000000000000000000000";

/// The client script and its generated stubs, or `None` when grpcio is not installed.
fn client() -> Option<&'static Path> {
    static STUBS: OnceLock<Option<PathBuf>> = OnceLock::new();
    STUBS
        .get_or_init(|| {
            let modules = [
                "grpc",
                "grpc_tools",
                "grpc_health.v1.health_pb2",
                "grpc_reflection",
            ];
            if !python_modules(
                &modules,
                "grpcio grpcio-tools grpcio-health-checking grpcio-reflection",
                "call over gRPC from Python",
            ) {
                return None;
            }
            let dir = tempfile::tempdir().expect("temp dir").keep();
            let mut stubs = Command::new("python3");
            stubs
                .arg(script())
                .args(["stubs", env!("VALHALLA_ENVOY_PROTOS")])
                .arg(&dir);
            succeeds(stubs);
            Some(dir)
        })
        .as_deref()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/rls.py")
}

/// Runs the client's `verb` with `args`, `input` on its stdin; its JSON answer.
fn py(stubs: &Path, verb: &str, args: &[&str], input: &Value) -> Value {
    let mut child = Command::new("python3")
        .arg(script())
        .arg(verb)
        .args(args)
        .env("RLS_STUBS", stubs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("finished");
    assert!(
        out.status.success(),
        "rls.py {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// One call: `descriptors` (each a list of entry pairs) with the gateway's key.
fn call(descriptors: &[&[(&str, &str)]]) -> Value {
    json!({ "key": GATEWAY, "descriptors": descriptors })
}

/// Runs `calls` in order; their answers.
fn calls(stubs: &Path, addr: &str, calls: &[Value]) -> Vec<Value> {
    let answers = py(stubs, "call", &[addr], &Value::from(calls.to_vec()));
    answers.as_array().expect("a list").clone()
}

fn one(stubs: &Path, addr: &str, c: Value) -> Value {
    calls(stubs, addr, &[c]).remove(0)
}

/// The gateway client, then `rules`.
fn state(rules: &str) -> String {
    let gateway = format!(
        "  - name: envoy\n    type: gateway\n    role: reader\n    key_sha256: {}\n",
        KeySha256::of_key(GATEWAY).as_str()
    );
    state_with(&format!("{gateway}rate_limits:\n{rules}"))
}

fn rule(scope: &str, key: &str, max: u32, window: u32, extra: &str) -> String {
    format!(
        "  - scope: {scope}\n    key: \"{key}\"\n    max_requests: {max}\n    window_seconds: {window}\n{extra}"
    )
}

/// A server over `db` counting in `counters`, with the rate limit service on; reconciled first.
fn serve(db: &TestDb, counters: &Counters, state: &StateDir, extra: &[&str]) -> Process {
    let applied = crate::support::run(db, state.path(), &["reconcile"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    Process::start(db, state, &[&SERVE[..], &counted_in(counters), extra].concat())
}

/// `serve` on free ports, the rate limit service on.
const SERVE: [&str; 5] = ["serve", "--bind", "127.0.0.1:0", "--grpc", "127.0.0.1:0"];

/// The options that count in `counters`. With Redis, a patient timeout: these tests are about
/// exact counts, and a call that outlived the default 50 ms on a loaded machine would fall back
/// to the rule's outage policy (which a test of its own covers).
fn counted_in(counters: &Counters) -> Vec<&str> {
    match counters {
        Counters::Memory => Vec::new(),
        Counters::Redis(redis) => vec![
            "--counters",
            &redis.url,
            "--counters-prefix",
            &redis.prefix,
            "--counters-timeout",
            "10s",
        ],
    }
}

fn headers(answer: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(answer["headers"].clone()).expect("headers")
}

/// Sends an HTTP GET as `user`, with the reader's key.
fn http_as(base: &str, user: &str) -> u16 {
    crate::support::agent()
        .get(format!("{base}/system/feature-flags"))
        .header("authorization", format!("Bearer {READER}"))
        .header("x-user-id", user)
        .call()
        .map(|r| r.status().as_u16())
        .expect("an answer")
}

fn metric(base: &str, line_start: &str) -> f64 {
    let text = crate::support::agent()
        .get(format!("{base}/metrics"))
        .header("authorization", format!("Bearer {READER}"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[test]
fn a_gateway_is_answered_as_the_http_layers_decide() {
    let Some(stubs) = client() else { return };
    for (db, counters) in setups() {
        let b = format!(
            "{}{}",
            db.backend,
            if matches!(counters, Counters::Redis(_)) {
                "+redis"
            } else {
                ""
            }
        );
        let rules = [
            rule("global", "*", 100_000, 86_400, ""),
            rule("user", "alice", 5, 86_400, ""),
            rule("user", "shared", 4, 86_400, ""),
            rule("user", "shadowy", 1, 86_400, "    shadow: true\n"),
            rule("user", "tens", 10, 10, ""),
            rule("api_key", "operator", 3, 86_400, ""),
            rule("ip", "10.1.0.0/16", 1_000, 3_600, ""),
        ]
        .concat();
        let state = StateDir::new(&[("state.yaml", &state(&rules))]);
        let server = serve(&db, &counters, &state, &[]);
        let (base, addr) = (server.base(), server.grpc());
        assert_eq!(
            py(
                stubs,
                "health",
                &[&addr, "envoy.service.ratelimit.v3.RateLimitService"],
                &json!(null)
            ),
            "SERVING",
            "{b}"
        );

        // Who may call: a key of a gateway client or of an operator; not a reader, not nobody.
        let alice: &[(&str, &str)] = &[("user", "alice")];
        let mut anonymous = call(&[alice]);
        anonymous["key"] = Value::Null;
        let mut reader = call(&[alice]);
        reader["key"] = READER.into();
        let mut operator = call(&[&[("user", "carol")]]);
        operator["key"] = OPERATOR.into();
        let answers = calls(stubs, &addr, &[anonymous, reader, operator]);
        assert_eq!(answers[0]["error"], "UNAUTHENTICATED", "{b}: {}", answers[0]);
        assert_eq!(answers[1]["error"], "PERMISSION_DENIED", "{b}: {}", answers[1]);
        assert!(
            answers[1]["details"].as_str().unwrap().contains("role reader"),
            "{b}"
        );
        assert_eq!(answers[2]["code"], "OK", "{b}: {}", answers[2]);

        // hits_addend: three at once; three more do not fit in the two left and count nothing,
        // so two still do; then nothing is left.
        let mut three = call(&[alice]);
        three["hits"] = 3.into();
        let mut two = call(&[alice]);
        two["hits"] = 2.into();
        let answers = calls(stubs, &addr, &[three.clone(), three, two, call(&[alice])]);
        let codes: Vec<&Value> = answers.iter().map(|a| &a["code"]).collect();
        assert_eq!(
            codes,
            ["OK", "OVER_LIMIT", "OK", "OVER_LIMIT"],
            "{b}: {answers:?}"
        );
        let status = &answers[0]["statuses"][0];
        assert_eq!(status["remaining"], 2, "{b}: {status}");
        assert_eq!(
            status["limit"],
            json!({"requests_per_unit": 5, "unit": "DAY", "name": "user:alice"}),
            "{b}"
        );
        assert_eq!(
            answers[1]["statuses"][0]["remaining"], 2,
            "{b}: refused, nothing counted"
        );
        let refused = &answers[3];
        let h = headers(refused);
        let retry: u64 = h["retry-after"].parse().expect("Retry-After in seconds");
        assert!(retry >= 1, "{b}: {h:?}");
        let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).expect("a problem body");
        assert_eq!(
            body["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "{b}"
        );
        assert_eq!(body["violated-policies"], json!(["user:alice"]), "{b}");
        // The headers are RFC 9651 structured fields, read by a parser.
        let policy = sfv::Parser::new(&h["ratelimit-policy"])
            .parse::<sfv::List>()
            .expect("RateLimit-Policy is a list");
        let state_ = sfv::Parser::new(&h["ratelimit"])
            .parse::<sfv::List>()
            .expect("RateLimit is a list");
        assert_eq!((policy.len(), state_.len()), (2, 2), "{b}: {h:?}");
        let sfv::ListEntry::Item(user) = &state_[1] else {
            panic!("an item")
        };
        assert_eq!(
            user.bare_item.as_string().map(|s| s.as_str()),
            Some("user:alice"),
            "{b}"
        );
        assert_eq!(
            user.params.get("r").and_then(|r| r.as_integer()).map(i64::from),
            Some(0),
            "{b}"
        );

        // One status per descriptor, each the rules its entries select; unknown entries are
        // ignored; a window of no Envoy unit is named, not rescaled.
        let answer = one(
            stubs,
            &addr,
            call(&[
                &[("remote_address", "10.1.2.3")],
                &[("generic_key", "orders"), ("user", "tens")],
                &[("api_key", OPERATOR)],
                &[("destination_cluster", "orders")],
            ]),
        );
        assert_eq!(answer["code"], "OK", "{b}: {answer}");
        let names: Vec<&Value> = answer["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["limit"]["name"])
            .collect();
        assert_eq!(
            names,
            ["ip:10.1.0.0/16", "user:tens;w=10", "api_key:operator", "global:*"],
            "{b}: {answer}"
        );
        assert_eq!(answer["statuses"][1]["limit"]["unit"], "UNKNOWN", "{b}");
        assert_eq!(answer["statuses"][0]["limit"]["unit"], "HOUR", "{b}");

        // Shadow rules answer OK and are counted and reported.
        let shadowy: &[(&str, &str)] = &[("user", "shadowy")];
        let answers = calls(
            stubs,
            &addr,
            &[call(&[shadowy]), call(&[shadowy]), call(&[shadowy])],
        );
        assert!(answers.iter().all(|a| a["code"] == "OK"), "{b}: {answers:?}");
        assert!(
            headers(&answers[2])["ratelimit"].contains("\"shadow:user:shadowy\";r=0"),
            "{b}: {}",
            answers[2]
        );

        // Another domain: no rule applies; counted apart.
        let mut elsewhere = call(&[alice]);
        elsewhere["domain"] = "other".into();
        let answer = one(stubs, &addr, elsewhere);
        assert_eq!(answer["code"], "OK", "{b}: {answer}");
        assert_eq!(answer["statuses"], json!([{"code": "OK", "remaining": 0}]), "{b}");

        // HTTP and gRPC calls for one subject share one count (4 a day).
        let shared: &[(&str, &str)] = &[("user", "shared")];
        assert_eq!(one(stubs, &addr, call(&[shared]))["code"], "OK", "{b}");
        assert_eq!(http_as(&base, "shared"), 200, "{b}");
        assert_eq!(one(stubs, &addr, call(&[shared]))["code"], "OK", "{b}");
        assert_eq!(http_as(&base, "shared"), 200, "{b}");
        assert_eq!(
            http_as(&base, "shared"),
            429,
            "{b}: HTTP sees the gateway's calls"
        );
        assert_eq!(
            one(stubs, &addr, call(&[shared]))["code"],
            "OVER_LIMIT",
            "{b}: and the other way"
        );

        // Two users in one call are a gateway's mistake, not two budgets.
        let answer = one(stubs, &addr, call(&[alice, &[("user", "bob")]]));
        assert_eq!(answer["error"], "INVALID_ARGUMENT", "{b}: {answer}");

        // A call of megabytes is refused before it is decoded; the next one is answered.
        let huge = "u".repeat(100 * 1024);
        let answers = calls(
            stubs,
            &addr,
            &[call(&[&[("generic_key", &huge)]]), call(&[&[("user", "carol")]])],
        );
        assert_eq!(
            answers[0]["error"], "OUT_OF_RANGE",
            "{b}: {}",
            answers[0]["details"]
        );
        assert_eq!(answers[1]["code"], "OK", "{b}");

        // Observed: calls by outcome, verdicts by rule scope, and the status page's refusals.
        assert_eq!(
            metric(
                &base,
                "valhalla_ops_grpc_ratelimit_calls_total{outcome=\"unknown_domain\"}"
            ),
            1.0,
            "{b}"
        );
        assert_eq!(
            metric(
                &base,
                "valhalla_ops_grpc_ratelimit_calls_total{outcome=\"permission_denied\"}"
            ),
            1.0,
            "{b}"
        );
        assert_eq!(
            metric(
                &base,
                "valhalla_ops_grpc_ratelimit_calls_total{outcome=\"over_limit\"}"
            ),
            3.0,
            "{b}"
        );
        assert!(
            metric(&base, "valhalla_ops_grpc_ratelimit_call_duration_seconds_count") >= 14.0,
            "{b}"
        );
        assert!(
            metric(
                &base,
                "valhalla_ops_ratelimit_decisions_total{scope=\"user\",shadow=\"true\",outcome=\"refused\"}"
            ) >= 2.0,
            "{b}"
        );
        let (_, snapshot) = crate::support::app::read(
            crate::support::agent()
                .get(format!("{base}/status/snapshot"))
                .header("authorization", format!("Bearer {READER}"))
                .call()
                .expect("snapshot"),
        );
        let refused = snapshot["limiter"]["refused"].to_string();
        assert!(
            refused.contains("\"alice\""),
            "{b}: the edge's refusals are on the page: {refused}"
        );
    }
}

#[test]
fn the_freeze_reaches_the_gateways() {
    let Some(stubs) = client() else { return };
    for db in all_backends() {
        let b = db.backend;
        let state = StateDir::new(&[("state.yaml", &state(&rule("global", "*", 100_000, 86_400, "")))]);
        let server = serve(&db, &Counters::Memory, &state, &[]);
        let (base, addr) = (server.base(), server.grpc());
        let method = |m: &'static str| call(&[&[("request_method", m)]]);
        let mut admin_write = call(&[&[("request_method", "POST"), ("api_key", ADMIN)]]);
        admin_write["key"] = GATEWAY.into();
        let freeze = |mode: &str| {
            let (status, body) = crate::support::app::read(
                crate::support::agent()
                    .post(format!("{base}/system/maintenance/state/{mode}"))
                    .header("authorization", format!("Bearer {OPERATOR}"))
                    .send_json(json!({"reason": "db failover", "ttl_seconds": 600}))
                    .expect("an answer"),
            );
            assert_eq!(status, 200, "{b}: {body}");
        };
        let codes = |answers: Vec<Value>| {
            answers
                .iter()
                .map(|a| a["code"].as_str().unwrap_or("error").to_owned())
                .collect::<Vec<_>>()
        };

        let all = [method("GET"), method("POST"), admin_write];
        assert_eq!(
            codes(calls(stubs, &addr, &all)),
            ["OK", "OK", "OK"],
            "{b}: normal"
        );
        freeze("read_only");
        // The replica hears of the override at once on its own store; give NOTIFY its moment.
        crate::support::wait_until(Duration::from_secs(2), || {
            one(stubs, &addr, method("POST"))["code"] == "OVER_LIMIT"
        });
        let answers = calls(stubs, &addr, &all);
        assert_eq!(
            codes(answers.clone()),
            ["OK", "OVER_LIMIT", "OK"],
            "{b}: read_only refuses writes but an admin's"
        );
        let refused = &answers[1];
        let retry: u64 = headers(refused)["retry-after"].parse().expect("Retry-After");
        assert!((590..=600).contains(&retry), "{b}: {refused}");
        let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).expect("a problem body");
        assert_eq!(
            body["type"], "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "{b}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("read-only: \"db failover\""),
            "{b}: {body}"
        );
        freeze("maintenance");
        crate::support::wait_until(Duration::from_secs(2), || {
            one(stubs, &addr, method("GET"))["code"] == "OVER_LIMIT"
        });
        assert_eq!(
            codes(calls(stubs, &addr, &all)),
            ["OVER_LIMIT", "OVER_LIMIT", "OVER_LIMIT"],
            "{b}: maintenance"
        );
        assert!(
            metric(
                &base,
                "valhalla_ops_grpc_ratelimit_calls_total{outcome=\"frozen\"}"
            ) >= 5.0,
            "{b}"
        );
    }
}

#[test]
fn reflection_alone_is_enough_to_call() {
    let Some(stubs) = client() else { return };
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state(&rule("user", "ada", 7, 60, "")))]);
    let server = serve(&db, &Counters::Memory, &state, &[]);
    let asked = json!({
        "key": GATEWAY,
        "request": {"domain": "valhalla", "hitsAddend": 2, "descriptors": [{"entries": [{"key": "user", "value": "ada"}]}]}
    });
    let answer = py(stubs, "reflect", &[&server.grpc()], &asked);
    let services = answer["services"].to_string();
    for service in [
        "envoy.service.ratelimit.v3.RateLimitService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(service), "{services}");
    }
    let status = &answer["response"]["statuses"][0];
    assert_eq!(status["limitRemaining"], 5, "{answer}");
    assert_eq!(status["currentLimit"]["unit"], "MINUTE", "{answer}");
}

#[test]
fn four_replicas_on_one_redis_admit_exactly_the_budget_over_grpc() {
    let Some(stubs) = client() else { return };
    for db in all_backends() {
        let Some(redis) = redis() else { return };
        let b = db.backend;
        let rules = [
            rule("global", "*", 100_000, 86_400, ""),
            rule("user", "u-edge", 100, 86_400, ""),
        ]
        .concat();
        let state = StateDir::new(&[("state.yaml", &state(&rules))]);
        let counters = Counters::Redis(redis);
        let first = serve(&db, &counters, &state, &[]);
        let mut servers = vec![first];
        for _ in 0..3 {
            servers.push(Process::start(
                &db,
                &state,
                &[&SERVE[..], &counted_in(&counters)].concat(),
            ));
        }
        let addrs: Vec<String> = servers.iter().map(Process::grpc).collect();
        let counts = py(
            stubs,
            "hammer",
            &[&addrs.join(","), "2000", "64"],
            &call(&[&[("user", "u-edge")]]),
        );
        assert_eq!(counts, json!({"OK": 100, "OVER_LIMIT": 1900}), "{b}");
        // The HTTP layers of every replica see the same count.
        for server in &servers {
            assert_eq!(http_as(&server.base(), "u-edge"), 429, "{b}");
        }
        let log = servers.iter().map(Process::log).collect::<String>();
        assert!(!log.contains("unreachable"), "{b}: {log}");
    }
}

/// A free port on the loopback (bound, then released for the program that will bind it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `examples/envoy/envoy.yaml` as shipped, pointed at this test's ports and key.
fn envoy_config(listener: u16, admin: u16, api: u16, grpc: &str) -> Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/envoy.yaml"))
            .unwrap();
    let mut config: Value = serde_yaml::from_str(&text).expect("the example is YAML");
    let at = |address: &str, port: u16| json!({"address": address, "port_value": port});
    config["admin"]["address"]["socket_address"] = at("127.0.0.1", admin);
    let resources = &mut config["static_resources"];
    resources["listeners"][0]["address"]["socket_address"] = at("127.0.0.1", listener);
    let (grpc_host, grpc_port) = grpc.rsplit_once(':').unwrap();
    for cluster in resources["clusters"].as_array_mut().unwrap() {
        let to = match cluster["name"].as_str() {
            Some("api") => at("127.0.0.1", api),
            _ => at(grpc_host, grpc_port.parse().unwrap()),
        };
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] =
            to;
    }
    let filters =
        &mut resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    let metadata =
        &mut filters[0]["typed_config"]["rate_limit_service"]["grpc_service"]["initial_metadata"][0];
    assert_eq!(
        metadata["value"], "Bearer vk_replace_me",
        "the example's placeholder"
    );
    metadata["value"] = format!("Bearer {GATEWAY}").into();
    config
}

#[test]
fn a_real_envoy_enforces_the_rules_in_git_with_the_shipped_example() {
    let Some(envoy) = crate::support::tool("envoy") else {
        return;
    };
    let Some(python) = crate::support::tool("python3") else {
        return;
    };
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state(&rule("user", "alice", 3, 86_400, "")))]);
    let server = serve(&db, &Counters::Memory, &state, &[]);
    let base = server.base();
    // A bare upstream: Python's file server, over an empty folder.
    let (api, listener, admin) = (free_port(), free_port(), free_port());
    let empty = tempfile::tempdir().unwrap();
    let _upstream = Child(
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &api.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(empty.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = empty.path().join("envoy.json");
    std::fs::write(
        &config,
        envoy_config(listener, admin, api, &server.grpc()).to_string(),
    )
    .unwrap();
    let log = empty.path().join("envoy.log");
    let _envoy = Child(
        Command::new(envoy)
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--log-level", "warning", "--log-path"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent = crate::support::agent();
    let get = |method: &str, user: &str| {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{listener}/"))
            .header("x-user-id", user)
            .body(())
            .unwrap();
        agent.run(request).ok()
    };
    // Envoy is up, and has found valhalla-ops healthy over gRPC health checking.
    crate::support::wait_until(Duration::from_secs(30), || {
        let clusters = agent
            .get(format!("http://127.0.0.1:{admin}/clusters"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        clusters.is_some_and(|c| c.contains("valhalla_ops::") && c.contains("health_flags::healthy"))
            && get("GET", "warmup").is_some()
    });
    let mut answers: Vec<_> = (0..4).map(|_| get("GET", "alice").expect("an answer")).collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let admitted = answers[0].headers();
    let state_ = admitted["ratelimit"].to_str().unwrap();
    assert!(
        state_.starts_with("\"user:alice\";r=2;t="),
        "the upstream's answer carries ours: {admitted:?}"
    );
    let refused = &mut answers[3];
    let h = refused.headers().clone();
    assert!(
        h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1,
        "{h:?}"
    );
    assert_eq!(h["content-type"], "application/problem+json", "{h:?}");
    sfv::Parser::new(h["ratelimit-policy"].as_bytes())
        .parse::<sfv::List>()
        .expect("RateLimit-Policy");
    let body: Value = refused.body_mut().read_json().expect("a problem body");
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );

    // The freeze at the edge: read_only refuses writes with 503 (the example's mapper), reads pass.
    let (status, body) = crate::support::app::read(
        crate::support::agent()
            .post(format!("{base}/system/maintenance/state/read_only"))
            .header("authorization", format!("Bearer {OPERATOR}"))
            .send_json(json!({"reason": "migration", "ttl_seconds": 300}))
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let mut frozen = get("POST", "bob").expect("an answer");
    assert_eq!(frozen.status(), 503);
    assert!(
        frozen.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 200
    );
    let body: Value = frozen.body_mut().read_json().expect("a problem body");
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    );
    assert_eq!(
        get("GET", "bob").expect("an answer").status(),
        200,
        "reads pass in read_only"
    );
}

/// Runs openssl with `args` in `dir`; a `req` makes a new P-256 key, unencrypted.
fn openssl(dir: &Path, args: &[&str]) {
    let mut openssl = Command::new("openssl");
    openssl.current_dir(dir).args(args);
    if args.first() == Some(&"req") {
        openssl.args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]);
    }
    succeeds(openssl);
}

/// Runs `command`, which must succeed.
fn succeeds(mut command: Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}-ca.pem`) and a certificate it signed (`{name}.pem`, `{name}.key`) for `usage`.
fn pki(dir: &Path, name: &str, usage: &str) {
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let subject = format!("/CN={name} test CA");
    openssl(
        dir,
        &[
            "req", "-x509", "-keyout", &ca_key, "-out", &ca, "-subj", &subject, "-days", "2",
        ],
    );
    let (key, csr, cert, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &["req", "-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

#[test]
fn mtls_authenticates_a_gateway_in_place_of_a_key() {
    let Some(stubs) = client() else { return };
    if crate::support::tool("openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "server", "serverAuth");
    pki(d, "gateway", "clientAuth");
    pki(d, "stranger", "clientAuth");
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state(&rule("user", "ada", 2, 60, "")))]);
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("gateway-ca.pem"));
    let server = serve(
        &db,
        &Counters::Memory,
        &state,
        &[
            "--grpc-tls-cert",
            &cert,
            "--grpc-tls-key",
            &key,
            "--grpc-tls-client-ca",
            &ca,
        ],
    );
    let addr = server.grpc();
    let as_ = |who: Option<&str>| {
        let mut c = call(&[&[("user", "ada")]]);
        c["key"] = Value::Null;
        c["tls"] = json!({"ca": path("server-ca.pem")});
        if let Some(who) = who {
            c["tls"]["cert"] = path(&format!("{who}.pem")).into();
            c["tls"]["key"] = path(&format!("{who}.key")).into();
        }
        c
    };
    let answers = calls(
        stubs,
        &addr,
        &[as_(Some("gateway")), as_(Some("stranger")), as_(None)],
    );
    assert_eq!(
        answers[0]["code"], "OK",
        "a certificate the client CA signed, no key: {}",
        answers[0]
    );
    assert_eq!(answers[0]["statuses"][0]["remaining"], 1, "and the call counted");
    // The handshake itself fails without a certificate of that CA: nothing reaches the service.
    for refused in &answers[1..] {
        assert_eq!(refused["error"], "UNAVAILABLE", "{refused}");
    }
    let mut plain = call(&[&[("user", "ada")]]);
    plain["key"] = Value::Null;
    assert_eq!(
        one(stubs, &addr, plain)["error"],
        "UNAVAILABLE",
        "no plaintext on a TLS port"
    );
}

#[test]
fn while_redis_is_down_each_rule_follows_its_outage_policy_at_the_edge() {
    let Some(stubs) = client() else { return };
    for db in all_backends() {
        let Some(mut redis) = crate::support::RedisServer::start() else {
            return;
        };
        let b = db.backend;
        let rules = [
            rule("user", "c-closed", 5, 86_400, "    on_outage: closed\n"),
            rule("user", "c-open", 5, 86_400, "    on_outage: open\n"),
            rule("user", "c-local", 2, 86_400, "    on_outage: local\n"),
        ]
        .concat();
        let state = StateDir::new(&[("state.yaml", &state(&rules))]);
        let applied = crate::support::run(&db, state.path(), &["reconcile"]);
        assert_eq!(applied.code, 0, "{}", applied.stderr);
        let url = redis.url();
        let private = ["--counters", &url, "--counters-timeout", "200ms"];
        let server = Process::start(&db, &state, &[&SERVE[..], &private].concat());
        let addr = server.grpc();
        let user = |u: &'static str| call(&[&[("user", u)]]);
        assert_eq!(
            one(stubs, &addr, user("c-local"))["code"],
            "OK",
            "{b}: counted in Redis"
        );

        redis.kill();
        crate::support::wait_until(Duration::from_secs(10), || {
            one(stubs, &addr, user("c-closed"))["code"] == "OVER_LIMIT"
        });
        let answers = calls(
            stubs,
            &addr,
            &[
                user("c-closed"),
                user("c-open"),
                user("c-open"),
                user("c-local"),
                user("c-local"),
                user("c-local"),
            ],
        );
        let codes: Vec<&Value> = answers.iter().map(|a| &a["code"]).collect();
        // closed refuses; open admits; local counts in this replica's memory (2 a day, afresh).
        assert_eq!(
            codes,
            ["OVER_LIMIT", "OK", "OK", "OK", "OK", "OVER_LIMIT"],
            "{b}: {answers:?}"
        );
        let body: Value = serde_json::from_str(answers[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body["type"], "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "{b}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("unreachable"),
            "{b}: {body}"
        );

        redis.restart();
        crate::support::wait_until(Duration::from_secs(10), || {
            one(stubs, &addr, user("c-closed"))["code"] == "OK"
        });
        assert!(server.log().contains("answer again"), "{b}: {}", server.log());
    }
}

/// A certificate or key that does not parse stops the start, with the reason, before anything
/// is served (it once surfaced only after HTTP was up, as "transport error", and HTTP served on).
#[test]
fn a_bad_certificate_stops_the_start() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state(&rule("user", "ada", 2, 60, "")))]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let bad = bad.to_str().unwrap();
    let mut server = Process::start(
        &db,
        &state,
        &[&SERVE[..], &["--grpc-tls-cert", bad, "--grpc-tls-key", bad]].concat(),
    );
    let status = server.exited(Duration::from_secs(10)).expect("the start stops");
    assert_eq!(status.code(), Some(1), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("cannot set up TLS: ") && log.contains("key"),
        "{log}"
    );
    assert!(!log.contains("serving http://"), "nothing is served: {log}");
}

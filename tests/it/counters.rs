//! Shared counters: Redis decides as memory does, N replicas admit exactly what one would, and
//! each rule's outage policy holds while Redis is down and lets go when it is back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::Value;
use valhalla_ops::counting::{Ask, Counting, RedisCounters, RedisOptions, WindowClock};
use valhalla_ops::domain::{OnOutage, RuleKey, Scope, WindowSeconds};
use valhalla_ops::limit::{Decision, RuleTable, Subject};
use valhalla_ops::model::RateLimitRule;

use crate::support::app::{OPERATOR, READER, state_with};
use crate::support::{Process, RedisServer, StateDir, TestDb, all_backends, redis};

fn rule(scope: Scope, key: &str, window: i64, max: u32, shadow: bool) -> RateLimitRule {
    RateLimitRule {
        scope,
        key: RuleKey::parse(scope, key).unwrap(),
        window_seconds: WindowSeconds::new(window).unwrap(),
        max_requests: valhalla_ops::domain::MaxRequests::new(max.into()).unwrap(),
        enabled: true,
        shadow,
        on_outage: OnOutage::DEFAULT,
        description: String::new(),
    }
}

/// What a decision says, in the terms both stores must agree on: the verdict, and for each
/// rule reported what it had left and when it comes back.
fn shape(d: &Decision) -> (bool, Vec<(i64, bool, u32, u64)>) {
    let verdicts = d
        .verdicts
        .iter()
        .map(|v| (v.rule.id, v.allowed, v.remaining, v.reset_ms))
        .collect();
    (d.allowed, verdicts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The same requests at the same instants get the same decisions from Redis as from
    /// memory: the script is the in-process algorithm, to the millisecond. A request refused
    /// from the replica's memory of a refusal reports only a rule that refuses it, with the
    /// figures the counters give.
    #[test]
    fn redis_decides_as_memory_does(
        windows in proptest::collection::vec(prop_oneof![Just(1i64), Just(2), Just(5), Just(60)], 4),
        limits in proptest::collection::vec(0u32..12, 4),
        steps in proptest::collection::vec((0u64..1_500, 0usize..6, prop_oneof![3 => Just(1u32), 1 => 2u32..6]), 1..150),
        start in 0u64..10_000_000,
    ) {
        let Some(test_redis) = redis() else {
            return Ok(());
        };
        let rules = [
            rule(Scope::Global, "*", windows[0], 20 + limits[0] * 4, false),
            rule(Scope::Ip, "10.0.0.0/24", windows[1], limits[1], false),
            rule(Scope::User, "ada", windows[2], limits[2], false),
            rule(Scope::User, "bob", windows[3], limits[3], true),
            rule(Scope::ApiKey, "blocked", 60, 0, false),
        ];
        let table = RuleTable::new(rules.iter().enumerate().map(|(i, r)| (i as i64 + 1, r)));
        let subjects = [
            Subject { global: true, ip: Some("10.0.0.7".parse().unwrap()), user: Some("ada"), client: None },
            Subject { global: true, ip: Some("10.0.0.8".parse().unwrap()), user: Some("bob"), client: None },
            Subject { global: true, ip: Some("192.0.2.1".parse().unwrap()), user: Some("ada"), client: None },
            Subject { global: true, ip: None, user: Some("bob"), client: Some("blocked") },
            Subject { global: false, ip: None, user: Some("ada"), client: None },
            Subject { global: true, ip: Some("10.0.0.7".parse().unwrap()), user: None, client: None },
        ];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let memory = Counting::memory(1_000);
        let shared = runtime.block_on(async {
            let redis = RedisCounters::new(&RedisOptions {
                url: test_redis.url.clone(),
                prefix: test_redis.prefix.clone(),
                timeout: Duration::from_secs(5),
                clock: WindowClock::Caller,
            })
            .unwrap();
            Counting::shared(1_000, redis)
        });
        let agree = |got: &Decision, expected: &Decision, step: String| -> Result<(), TestCaseError> {
            prop_assert!(got.verdicts.iter().all(|v| !v.outage), "{}: an outage: {:?}", step, got);
            let (got, expected) = (shape(got), shape(expected));
            if got.1.len() == expected.1.len() {
                prop_assert_eq!(&got, &expected, "{}", step);
            } else {
                // Refused from memory: one rule that refuses it, with the counters' figures.
                prop_assert!(!got.0 && !expected.0 && got.1.len() == 1, "{}: {:?} vs {:?}", step, got, expected);
                let refusing = |v: &&(i64, bool, u32, u64)| !v.1 && !rules[(v.0 - 1) as usize].shadow;
                prop_assert!(
                    expected.1.iter().filter(refusing).any(|v| *v == got.1[0]),
                    "{}: {:?} is not among the refusals of {:?}", step, got.1[0], expected
                );
            }
            Ok(())
        };
        let mut now = 1_800_000_000_000 + start;
        for (i, (gap, who, hits)) in steps.into_iter().enumerate() {
            now += gap;
            let matched = table.matching(&subjects[who]);
            // Asking first changes nothing either side; then the request is counted.
            let expected = memory.memory.peek_matched(&matched, now);
            let got = runtime.block_on(shared.peek(&matched, now));
            agree(&got, &expected, format!("peek at step {i} at {now} for subject {who}"))?;
            // A gateway's hits_addend: several at once, all counted or none.
            let hits = std::num::NonZeroU32::new(hits).unwrap();
            let expected = memory.memory.check_hits(&matched, now, hits);
            let got = runtime.block_on(shared.check_hits(&matched, now, hits));
            agree(&got, &expected, format!("step {i} at {now} for subject {who}, {hits} hits"))?;
        }
        drop(test_redis);
    }
}

/// Every counter under `prefix` on `redis` with what it holds and when it expires, the prefix
/// cut off.
fn stored_counters(url: &str, prefix: &str) -> BTreeMap<String, (Vec<Option<String>>, i64)> {
    let mut conn = ::redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|key| {
            let fields: Vec<Option<String>> = ::redis::cmd("HMGET")
                .arg(&key)
                .arg(&["s", "p", "c"][..])
                .query(&mut conn)
                .unwrap();
            let expires: i64 = ::redis::cmd("PEXPIRETIME").arg(&key).query(&mut conn).unwrap();
            (key[prefix.len()..].to_owned(), (fields, expires))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Decisions sent together in one script call (as the queue sends what waited for the call
    /// before) decide, count and leave the counters exactly as the same calls sent one by one:
    /// the same verdicts, figures and counts reported, and the same hashes and expiry in Redis.
    #[test]
    fn a_batch_decides_as_the_same_calls_one_by_one(
        windows in proptest::collection::vec(prop_oneof![Just(1i64), Just(2), Just(60)], 3),
        limits in proptest::collection::vec(0u32..8, 3),
        steps in proptest::collection::vec(
            (0u64..700, 0usize..5, prop_oneof![4 => Just(1u32), 1 => Just(0u32), 1 => 2u32..5]),
            1..120,
        ),
        cuts in proptest::collection::vec(1usize..40, 1..12),
        start in 0u64..10_000_000,
    ) {
        let Some(test_redis) = redis() else {
            return Ok(());
        };
        let rules = [
            rule(Scope::Global, "*", windows[0], 10 + limits[0] * 3, false),
            rule(Scope::Ip, "10.0.0.0/24", windows[1], limits[1], false),
            rule(Scope::User, "ada", windows[2], limits[2], false),
            rule(Scope::User, "bob", windows[2], limits[2], true),
        ];
        let table = RuleTable::new(rules.iter().enumerate().map(|(i, r)| (i as i64 + 1, r)));
        let subjects = [
            Subject { global: true, ip: Some("10.0.0.7".parse().unwrap()), user: Some("ada"), client: None },
            Subject { global: true, ip: Some("10.0.0.8".parse().unwrap()), user: Some("bob"), client: None },
            Subject { global: true, ip: Some("192.0.2.1".parse().unwrap()), user: Some("ada"), client: None },
            Subject { global: false, ip: None, user: Some("bob"), client: None },
            Subject { global: true, ip: Some("10.0.0.7".parse().unwrap()), user: None, client: None },
        ];
        let matched: Vec<_> = subjects.iter().map(|s| table.matching(s)).collect();
        let mut now = 1_800_000_000_000 + start;
        let asks: Vec<Ask<'_>> = steps
            .iter()
            .map(|&(gap, who, hits)| {
                now += gap;
                Ask { matched: &matched[who], now_ms: now, hits }
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let counters = |part: &str| {
            RedisCounters::new(&RedisOptions {
                url: test_redis.url.clone(),
                prefix: format!("{}:{part}", test_redis.prefix),
                timeout: Duration::from_secs(5),
                clock: WindowClock::Caller,
            })
            .unwrap()
        };
        // The connection is made in the runtime that uses it.
        let (together, alone) = runtime.block_on(async { (counters("together"), counters("alone")) });
        let mut batched = Vec::new();
        let mut rest = &asks[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, after) = rest.split_at((*cut).min(rest.len()));
            batched.extend(runtime.block_on(together.decide_together(batch)).unwrap());
            rest = after;
        }
        let mut one_by_one = Vec::new();
        for ask in &asks {
            one_by_one.extend(runtime.block_on(alone.decide_together(std::slice::from_ref(ask))).unwrap());
        }
        prop_assert_eq!(batched.len(), asks.len());
        for (i, (got, expected)) in batched.iter().zip(&one_by_one).enumerate() {
            prop_assert_eq!(shape(&got.decision), shape(&expected.decision), "decision {}", i);
            prop_assert_eq!(&got.counted, &expected.counted, "counts reported by decision {}", i);
        }
        prop_assert_eq!(
            stored_counters(&test_redis.url, &format!("{}:together", test_redis.prefix)),
            stored_counters(&test_redis.url, &format!("{}:alone", test_redis.prefix))
        );
    }
}

/// Sends `total` requests from `connections` concurrent keep-alive connections, each bound to
/// one of `bases` in turn, and counts the answers by status.
fn hammer(
    bases: &[String],
    total: usize,
    connections: usize,
    send: impl Fn(&ureq::Agent, &str) -> u16 + Sync,
) -> BTreeMap<u16, usize> {
    let left = AtomicUsize::new(total);
    let statuses = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for c in 0..connections {
            let base = &bases[c % bases.len()];
            let (left, statuses, send) = (&left, &statuses, &send);
            scope.spawn(move || {
                let agent = crate::support::agent();
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let status = send(&agent, base);
                    *statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                }
            });
        }
    });
    statuses.into_inner().unwrap()
}

/// A GET as `user`, with the reader key.
fn get_as(agent: &ureq::Agent, base: &str, path: &str, user: &str) -> (u16, String) {
    let request = ureq::http::Request::builder()
        .uri(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {READER}"))
        .header("X-User-Id", user)
        .body(())
        .unwrap();
    let mut response = agent.run(request).unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = response.body_mut().read_to_string();
    (status, retry)
}

/// A rate-limit check, with the operator key (a reader's checks count nothing).
fn check(agent: &ureq::Agent, base: &str, body: &str) -> Value {
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{base}/system/ratelimits/check"))
        .header("Authorization", format!("Bearer {OPERATOR}"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .unwrap();
    let mut response = agent.run(request).unwrap();
    assert_eq!(response.status(), 200);
    response.body_mut().read_json().unwrap()
}

/// Replicas of `serve` over `db`, counting in Redis at `url` under `prefix`.
fn replicas(
    db: &TestDb,
    state: &StateDir,
    n: usize,
    url: &str,
    prefix: &str,
    extra: &[&str],
) -> Vec<Process> {
    let applied = crate::support::run(db, state.path(), &["reconcile"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    (0..n)
        .map(|i| {
            let name = format!("replica-{i}");
            let mut args = vec![
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--replica",
                &name,
                "--counters",
                url,
                "--counters-prefix",
                prefix,
            ];
            args.extend_from_slice(extra);
            Process::start(db, state, &args)
        })
        .collect()
}

#[test]
fn four_replicas_sharing_redis_admit_exactly_the_budget() {
    for db in all_backends() {
        let Some(redis) = redis() else {
            return;
        };
        let b = db.backend;
        // A day's window: the test cannot straddle enough of an edge for the sliding window to
        // let one more in.
        let rules = "rate_limits:\n  - scope: global\n    max_requests: 100000\n    window_seconds: 86400\n  - scope: user\n    key: u-http\n    max_requests: 100\n    window_seconds: 86400\n  - scope: user\n    key: u-check\n    max_requests: 100\n    window_seconds: 86400\n";
        let state = StateDir::new(&[("state.yaml", &state_with(rules))]);
        // Exactness is what this test is about, with Redis answering: a call that outlives the
        // default 50 ms timeout on a loaded machine falls back to the rule's outage policy
        // (`local`, counted per replica), which the outage tests cover.
        let patient = ["--counters-timeout", "10s"];
        let servers = replicas(&db, &state, 4, &redis.url, &redis.prefix, &patient);
        let bases: Vec<String> = servers.iter().map(Process::base).collect();

        let http = hammer(&bases, 2_000, 64, |agent, base| {
            get_as(agent, base, "/system/feature-flags", "u-http").0
        });
        assert_eq!(
            http,
            BTreeMap::from([(200, 100), (429, 1_900)]),
            "{b}: through the rate-limit layer"
        );

        let checks = hammer(&bases, 2_000, 64, |agent, base| {
            match check(agent, base, r#"{"user": "u-check"}"#)["allowed"].as_bool() {
                Some(true) => 200,
                _ => 429,
            }
        });
        assert_eq!(
            checks,
            BTreeMap::from([(200, 100), (429, 1_900)]),
            "{b}: through the check endpoint"
        );

        // The global rule counted the 200 admitted requests and none of the 3,800 refused ones
        // (this question is the 201st).
        let global = check(&crate::support::agent(), &bases[3], r#"{"scope": "global"}"#);
        assert_eq!(global["remaining"], 100_000 - 201, "{b}: {global}");
        let log = servers.iter().map(Process::log).collect::<String>();
        assert!(!log.contains("unreachable"), "{b}: {log}");
    }
}

/// Sends `n` requests as `user`, alternating over `bases`; the statuses in order.
fn requests(bases: &[String], user: &str, n: usize) -> Vec<(u16, String)> {
    let agent = crate::support::agent();
    (0..n)
        .map(|i| get_as(&agent, &bases[i % bases.len()], "/system/feature-flags", user))
        .collect()
}

fn admitted(answers: &[(u16, String)]) -> usize {
    answers.iter().filter(|(s, _)| *s == 200).count()
}

/// What `/readyz` says of the counters on `base`.
fn readiness(base: &str) -> Value {
    let mut response = crate::support::agent()
        .get(format!("{base}/readyz"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200, "still serving");
    response.body_mut().read_json().unwrap()
}

#[test]
fn while_redis_is_down_each_rule_follows_its_policy_and_sharing_resumes_on_its_own() {
    for db in all_backends() {
        outage(db);
    }
}

fn outage(db: TestDb) {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let b = db.backend;
    let rule = |user: &str, policy: &str| {
        format!(
            "  - scope: user\n    key: {user}\n    max_requests: 5\n    window_seconds: 86400\n    on_outage: {policy}\n"
        )
    };
    let rules = format!(
        "rate_limits:\n{}{}{}{}{}{}",
        rule("u-shared", "closed"),
        rule("u-open", "open"),
        rule("u-closed", "closed"),
        rule("u-local", "local"),
        rule("u-after", "closed"),
        rule("u-frozen", "open"),
    );
    let state = StateDir::new(&[("state.yaml", &state_with(&rules))]);
    let servers = replicas(
        &db,
        &state,
        2,
        &server.url(),
        "outage",
        &["--counters-timeout", "100ms"],
    );
    let bases: Vec<String> = servers.iter().map(Process::base).collect();

    // Shared: two replicas, one budget.
    assert_eq!(admitted(&requests(&bases, "u-shared", 12)), 5, "{b}");
    assert_eq!(readiness(&bases[0])["status"], "ready");

    server.kill();
    let open = requests(&bases, "u-open", 12);
    assert_eq!(admitted(&open), 12, "{b}: open admits: {open:?}");
    let closed = requests(&bases, "u-closed", 6);
    assert!(
        closed.iter().all(|(s, retry)| *s == 503 && retry == "1"),
        "{b}: closed refuses with 503: {closed:?}"
    );
    // Local: each replica counts its own five.
    assert_eq!(
        admitted(&requests(&bases, "u-local", 20)),
        10,
        "local counts per replica"
    );
    for base in &bases {
        let ready = readiness(base);
        assert_eq!(ready["status"], "degraded", "{ready}");
        assert_eq!(ready["counters"]["reachable"], false, "{ready}");
        let metrics = crate::support::agent()
            .get(format!("{base}/metrics"))
            .header("Authorization", format!("Bearer {READER}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert!(metrics.contains("valhalla_ops_shared_counters_up 0"), "{metrics}");
        assert!(
            metrics.contains("valhalla_ops_shared_counters_outages_total 1"),
            "{metrics}"
        );
        assert!(metrics.contains(r#"valhalla_ops_ratelimit_outage_verdicts_total{policy="closed"}"#));
    }

    server.restart();
    let start = Instant::now();
    for base in &bases {
        while readiness(base)["status"] != "ready" {
            assert!(start.elapsed() < Duration::from_secs(10), "never shared again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Shared again, without a restart of either replica: one budget for both.
    assert_eq!(admitted(&requests(&bases, "u-after", 12)), 5, "{b}");

    // A Redis that hangs instead of refusing connections: each request waits no longer than
    // the timeout, then its rule's policy decides; the circuit opens, and closes once it answers.
    server.freeze(true);
    let started = Instant::now();
    let frozen = requests(&bases, "u-frozen", 12);
    let took = started.elapsed();
    assert_eq!(admitted(&frozen), 12, "{b}: {frozen:?}");
    assert!(
        took < Duration::from_secs(5),
        "{b}: 12 requests took {took:?} against a hung Redis"
    );
    for base in &bases {
        assert_eq!(readiness(base)["status"], "degraded", "{b}");
    }
    server.freeze(false);
    let start = Instant::now();
    for base in &bases {
        while readiness(base)["status"] != "ready" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{b}: never shared again"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for process in &servers {
        let log = process.log();
        assert_eq!(
            log.matches("are unreachable").count(),
            2,
            "said once per outage: {log}"
        );
        assert_eq!(log.matches("counting is shared again").count(), 2, "{log}");
    }
    // Told once per outage and once per recovery, whichever replica saw it first: not once per
    // replica.
    let told = || -> Vec<(String, String)> {
        let body: serde_json::Value = crate::support::agent()
            .get(format!("{}/system/notifications", bases[0]))
            .header("Authorization", format!("Bearer {READER}"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let mut told: Vec<(String, String)> = body
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("counters.")))
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        told.reverse();
        told
    };
    // Each event's id is made from its outage's number: the two ends of one outage share it.
    let shape = |told: &[(String, String)]| -> Vec<(String, String)> {
        told.iter()
            .map(|(t, id)| (t.clone(), id.rsplit(':').next().unwrap_or_default().to_owned()))
            .collect()
    };
    let start = Instant::now();
    while told().len() < 4 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let told = shape(&told());
    let types: Vec<&str> = told.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "counters.unreachable",
            "counters.reachable",
            "counters.unreachable",
            "counters.reachable"
        ],
        "{b}: {told:?}"
    );
    assert!(
        told[0].1 == told[1].1 && told[2].1 == told[3].1 && told[0].1 != told[2].1,
        "{b}: {told:?}"
    );
}

/// Waits until `/readyz` on `base` says `status`.
fn until_readiness(base: &str, status: &str, within: Duration) {
    let start = Instant::now();
    while readiness(base)["status"] != status {
        assert!(start.elapsed() < within, "{base} never became {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counters' health is probed with what requests need, not inferred from requests: a dead
/// Redis shows in `/readyz` with no request at all (it once said "reachable" until a request
/// failed), and a Redis that answers PING but refuses writes (a read-only replica after a
/// failover) is an outage that stays one, where the circuit once closed on every PING and
/// reopened on the next request, ten times a second.
#[test]
fn the_counters_health_is_probed_with_what_requests_need() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state_with(""))]);
    let servers = replicas(&db, &state, 1, &server.url(), "probed", &[]);
    let base = servers[0].base();
    assert_eq!(readiness(&base)["status"], "ready");

    server.kill();
    until_readiness(&base, "degraded", Duration::from_secs(5));
    server.restart();
    until_readiness(&base, "ready", Duration::from_secs(5));

    let command = |args: &[&str]| {
        let mut connection = redis::Client::open(server.url())
            .and_then(|c| c.get_connection())
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query::<()>(&mut connection).unwrap();
    };
    command(&["REPLICAOF", "127.0.0.1", "1"]);
    until_readiness(&base, "degraded", Duration::from_secs(5));
    // Long enough for the recovery probe to try ten times: it never closes the circuit.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(readiness(&base)["status"], "degraded");
    }
    command(&["REPLICAOF", "NO", "ONE"]);
    until_readiness(&base, "ready", Duration::from_secs(5));
    let log = servers[0].log();
    assert_eq!(log.matches("are unreachable").count(), 2, "one per outage: {log}");
    assert_eq!(log.matches("counting is shared again").count(), 2, "{log}");
    assert!(
        log.contains("refuses writes, as a read-only replica does"),
        "{log}"
    );
}

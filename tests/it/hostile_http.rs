//! Hostile and unlucky requests against the real server, on every backend: guessable keys,
//! ambiguous identity headers, the way out of a freeze.

use valhalla_ops::domain::KeySha256;

use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};

/// A client declared with the hash of `key`.
fn client(name: &str, role: &str, key: &str) -> String {
    format!(
        "  - name: {name}\n    type: script\n    role: {role}\n    key_sha256: {}\n",
        KeySha256::of_key(key).as_str()
    )
}

#[test]
fn a_key_too_short_to_carry_128_bits_is_refused_whatever_git_declares() {
    let short = "x";
    let just_short = "vk_".to_owned() + &"a".repeat(21);
    let long_enough = "b".repeat(22);
    for db in all_backends() {
        let declared = format!(
            "{}{}{}",
            client("guessable", "admin", short),
            client("almost", "admin", &just_short),
            client("brought", "operator", &long_enough),
        );
        let app = TestApp::spawn(
            db,
            &state_with("").replace("clients:\n", &format!("clients:\n{declared}")),
        );
        let b = app.backend;
        for key in [short, just_short.as_str()] {
            for headers in [vec![("X-API-Key", key)], vec![]] {
                let bearer = headers.is_empty().then_some(key);
                let reply = app.exchange("GET", "/system/overrides", bearer, &headers, None);
                assert_eq!(reply.status, 401, "{b} {key}: {}", reply.body);
                assert_eq!(
                    reply.body["error"]["message"], "unknown or inactive API key",
                    "{b}"
                );
            }
        }
        let reply = app.exchange("GET", "/system/overrides", Some(&long_enough), &[], None);
        assert_eq!(
            reply.status, 200,
            "{b}: a key brought from elsewhere works: {}",
            reply.body
        );
    }
}

#[test]
fn repeated_or_conflicting_identity_headers_are_a_400() {
    let rules = "rate_limits:\n  - scope: user\n    key: alice\n    max_requests: 1\n";
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(rules));
        let b = app.backend;
        let get = |key: Option<&str>, headers: &[(&str, &str)]| {
            app.exchange("GET", "/system/maintenance/windows", key, headers, None)
        };
        assert_eq!(get(Some(READER), &[("X-User-Id", "alice")]).status, 200, "{b}");
        assert_eq!(get(Some(READER), &[("X-User-Id", "alice")]).status, 429, "{b}");
        // A second X-User-Id once counted nowhere: every request got through.
        for headers in [
            vec![("X-User-Id", "alice"), ("X-User-Id", "bob")],
            vec![("X-User-Id", "bob"), ("X-User-Id", "alice")],
        ] {
            let reply = get(Some(READER), &headers);
            assert_eq!(reply.status, 400, "{b}: {}", reply.body);
            assert_eq!(reply.body["error"]["code"], "bad_request", "{b}");
            assert!(
                reply.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("x-user-id header is sent more than once"),
                "{b}: {}",
                reply.body
            );
        }
        for (key, headers) in [
            (Some(READER), vec![("X-API-Key", ADMIN)]),
            (None, vec![("X-API-Key", READER), ("X-API-Key", ADMIN)]),
            (
                None,
                vec![("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
            ),
        ] {
            let reply = app.exchange("GET", "/system/overrides", key, &headers, None);
            assert_eq!(reply.status, 400, "{b} {headers:?}: {}", reply.body);
            assert_eq!(reply.body["error"]["code"], "bad_request", "{b}");
        }
        // The same key twice over both headers is not ambiguous.
        let reply = app.exchange(
            "GET",
            "/system/overrides",
            Some(READER),
            &[("X-API-Key", READER)],
            None,
        );
        assert_eq!(reply.status, 200, "{b}: {}", reply.body);
    }
}

#[test]
fn the_freeze_never_blocks_the_way_out() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        for mode in ["maintenance", "read_only"] {
            let freeze = r#"{"reason": "incident", "ttl_seconds": 600}"#;
            let path = format!("/system/maintenance/state/{mode}");
            assert_eq!(
                app.send_json("POST", &path, Some(ADMIN), freeze).0,
                200,
                "{b} {mode}"
            );
            for key in [ADMIN, OPERATOR] {
                let (status, overrides) = app.get("/system/overrides", Some(key));
                assert_eq!(status, 200, "{b} {mode}: listing overrides: {overrides}");
                assert!(
                    !overrides.as_array().unwrap().is_empty(),
                    "{b} {mode}: {overrides}"
                );
            }
            // The operator lifts it by clearing the overrides.
            let (_, overrides) = app.get("/system/overrides", Some(OPERATOR));
            for o in overrides.as_array().unwrap() {
                let id = o["id"].as_i64().unwrap();
                let (status, body) = app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR));
                assert_eq!(status, 200, "{b} {mode}: lifting override {id}: {body}");
            }
            assert_eq!(
                app.get("/system/maintenance/state", None).1["mode"],
                "normal",
                "{b} {mode}"
            );
            // And the mode can be set by an operator in every mode, the freeze included.
            assert_eq!(
                app.send_json("POST", &path, Some(ADMIN), freeze).0,
                200,
                "{b} {mode}"
            );
            let lift = r#"{"reason": "over"}"#;
            let (status, body) =
                app.send_json("POST", "/system/maintenance/state/normal", Some(OPERATOR), lift);
            assert_eq!(status, 200, "{b} {mode}: {body}");
        }
    }
}

#[test]
fn a_database_outage_is_answered_fast_and_the_cache_keeps_serving() {
    use std::time::{Duration, Instant};
    let Some((db, proxy)) = crate::support::proxied_postgres() else {
        return;
    };
    let database = url::Url::parse(&db.url).unwrap().path().to_owned();
    let rules = "rate_limits:\n  - scope: api_key\n    key: reader\n    max_requests: 3\n";
    let app = TestApp::spawn(db, &state_with(rules));
    assert_eq!(app.get("/system/overrides", Some(OPERATOR)).0, 200);

    proxy.cut();
    // What needs the database fails fast, with Retry-After, many at once as well as one.
    let started = Instant::now();
    let answers: Vec<crate::support::app::Reply> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let path = if i % 2 == 0 {
                    "/system/overrides"
                } else {
                    "/readyz"
                };
                let app = &app;
                s.spawn(move || app.exchange("GET", path, Some(OPERATOR), &[], None))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let outage_took = started.elapsed();
    for reply in &answers {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "unavailable");
    }
    assert!(
        answers.iter().any(|r| r.header("retry-after") == "1"),
        "Retry-After on a 503"
    );
    assert!(
        outage_took < Duration::from_millis(2500),
        "8 requests during an outage took {outage_took:?}"
    );
    // What the cache serves keeps working: the mode, authentication, the limits.
    let started = Instant::now();
    assert_eq!(app.get("/system/maintenance/state", None).0, 200);
    assert_eq!(app.get("/system/maintenance/windows", None).0, 401);
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            app.exchange("POST", "/system/ratelimits/rules", Some(READER), &[], Some("{}"))
                .status
        })
        .collect();
    assert_eq!(
        statuses[3], 429,
        "the reader's limit is still enforced: {statuses:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cache-served requests took {:?}",
        started.elapsed()
    );

    // A change made elsewhere while the database was away is enforced soon after it is back.
    let admin = std::env::var("VALHALLA_TEST_POSTGRES_URL").unwrap();
    let mut direct = url::Url::parse(&admin).unwrap();
    direct.set_path(&database);
    app.runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(direct.as_str()).await.unwrap();
        sqlx::query("UPDATE api_clients SET active = false WHERE name = 'operator'")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    proxy.restore();
    let back = Instant::now();
    app.wait_for_status(
        "/system/maintenance/windows",
        Some(OPERATOR),
        401,
        Duration::from_secs(4),
    );
    let took = back.elapsed();
    assert!(
        took < Duration::from_millis(3000),
        "enforced {took:?} after the database came back"
    );
    eprintln!(
        "outage: 8 requests answered 503 in {outage_took:?}; a change enforced {took:?} after the database was back"
    );
}

/// A server whose deadlines are short enough to test, and the address it listens on.
fn impatient(max_connections: usize) -> (TestApp, std::net::SocketAddr) {
    impatient_with(max_connections, max_connections)
}

/// [`impatient`], with `max_per_source` connections from one address.
fn impatient_with(max_connections: usize, max_per_source: usize) -> (TestApp, std::net::SocketAddr) {
    let app = TestApp::spawn_with(crate::support::sqlite(), &state_with(""), |state| {
        state.limits = valhalla_ops::server::ConnectionLimits {
            header_timeout: std::time::Duration::from_millis(800),
            body_timeout: std::time::Duration::from_millis(800),
            max_connections,
            max_per_source,
        };
    });
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    (app, addr)
}

/// Reads until the server closes the connection (or `within` passes); what it sent.
fn read_until_closed(stream: &mut std::net::TcpStream, within: std::time::Duration) -> Option<String> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&all).into_owned()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&all).into_owned());
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn a_client_that_trickles_its_headers_is_disconnected() {
    use std::io::Write as _;
    use std::time::{Duration, Instant};
    let (_app, addr) = impatient(1024);
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    // One header line every 200 ms, for longer than the deadline.
    let mut closed = false;
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() {
            closed = true;
            break;
        }
    }
    let closed = closed || read_until_closed(&mut slow, Duration::from_secs(3)).is_some();
    assert!(
        closed,
        "the connection is still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Idle connections go too, so they cannot be hoarded.
    let mut idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for stream in &mut idle {
        assert!(
            read_until_closed(stream, Duration::from_secs(3)).is_some(),
            "an idle connection stayed open"
        );
    }
}

#[test]
fn open_connections_are_bounded() {
    use std::io::Write as _;
    use std::time::Duration;
    let (app, addr) = impatient(4);
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // The fifth connection is not served while four are open...
    let mut fifth = std::net::TcpStream::connect(addr).unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    fifth.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        std::io::Read::read(&mut fifth, &mut buf).is_err(),
        "answered beyond the bound of 4 connections"
    );
    // ...and is served as soon as one of them goes.
    drop(idle);
    let answer = read_until_closed(&mut fifth, Duration::from_secs(3)).expect("answered once a slot is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(app.get("/healthz", None).0, 200);
}

/// When every connection slot is taken, the log says so (once, not per connection).
#[test]
fn a_full_connection_bound_is_logged() {
    use std::time::Duration;
    let db = crate::support::sqlite();
    let state = crate::support::StateDir::new(&[("state.yaml", &state_with(""))]);
    let serving = crate::support::Process::start(
        &db,
        &state,
        &["serve", "--bind", "127.0.0.1:0", "--max-connections", "2"],
    );
    let addr = serving.base().trim_start_matches("http://").to_owned();
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    serving.wait_log(
        "all 2 connections are open (--max-connections)",
        Duration::from_secs(5),
    );
    drop(held);
}

/// A connection to `addr` from the local address `from` (any 127.x.y.z reaches loopback).
fn connect_from(from: &str, addr: std::net::SocketAddr) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// One address cannot take every slot: past its own bound its new connections are closed at
/// once, while another address is served at once.
#[test]
fn one_source_cannot_hold_every_connection() {
    use std::io::Write as _;
    use std::time::Duration;
    let (_app, addr) = impatient_with(8, 3);
    let hog: Vec<std::net::TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut fourth = connect_from("127.0.0.1", addr);
    let _ = fourth.write_all(get);
    let refused = read_until_closed(&mut fourth, Duration::from_secs(2));
    assert_eq!(
        refused.as_deref(),
        Some(""),
        "the hog's fourth connection is closed at once, unanswered"
    );
    let mut other = connect_from("127.0.0.2", addr);
    other.write_all(get).unwrap();
    let answer = read_until_closed(&mut other, Duration::from_secs(2)).expect("another address is served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(hog);
    std::thread::sleep(Duration::from_millis(100));
    let mut again = connect_from("127.0.0.1", addr);
    again.write_all(get).unwrap();
    let answer =
        read_until_closed(&mut again, Duration::from_secs(2)).expect("served once its others closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_a_408() {
    use std::io::Write as _;
    use std::time::{Duration, Instant};
    let (_app, addr) = impatient(1024);
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    slow.write_all(
        format!(
            "POST /system/ratelimits/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"scope\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn bodies_are_json_objects_as_documented() {
    let app = TestApp::spawn(crate::support::sqlite(), &state_with(""));
    let deactivate = format!("/system/clients/{}/deactivate", app.client_id("reader"));
    // serde reads a struct from an array of its fields: `[null, null]` deactivated a client.
    let (status, body) = app.send_json("POST", &deactivate, Some(OPERATOR), "[null, null]");
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"], "the body must be a JSON object",
        "{body}"
    );
    let (status, body) = app.send_json(
        "POST",
        "/system/clients",
        Some(OPERATOR),
        r#"["sneaky", "script", "reader", ""]"#,
    );
    assert_eq!(status, 422, "{body}");
    // `null` where the body is optional is no body (the schema allows it).
    let (status, body) = app.send_json("POST", &deactivate, Some(OPERATOR), "null");
    assert_eq!(
        status, 422,
        "git-owned: a reason is needed, as without a body ({body})"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("reason"),
        "{body}"
    );
    // A whole number written as `60.0` is an integer to JSON Schema, so to the server too.
    let rule = r#"{"scope": "ip", "key": "192.0.2.9", "window_seconds": 60.0, "max_requests": 5.0, "ttl_seconds": 30.0}"#;
    let (status, body) = app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), rule);
    assert_eq!((status, &body["window_seconds"]), (201, &60.into()), "{body}");
    let fraction = r#"{"scope": "ip", "key": "192.0.2.10", "window_seconds": 60.5}"#;
    let (status, body) = app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), fraction);
    assert_eq!(status, 422, "{body}");
    // The mode's reason is required by the schema and by the server alike.
    let (status, body) = app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), "{}");
    assert_eq!(status, 422, "{body}");
}

/// A database outage is logged once when it begins and once when it ends, with counts, not once
/// per failed request; and `/metrics` keeps answering all along, saying the store is down.
#[test]
fn a_database_outage_is_logged_per_transition_and_metrics_still_answer() {
    use std::time::Duration;
    let Some((db, proxy)) = crate::support::proxied_postgres() else {
        return;
    };
    let state = crate::support::StateDir::new(&[("state.yaml", &state_with(""))]);
    assert_eq!(crate::support::run(&db, state.path(), &["reconcile"]).code, 0);
    let serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
    let base = serving.base();
    let agent = crate::support::agent();
    let get = |path: &str| {
        let mut reply = agent
            .get(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {READER}"))
            .call()
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.body_mut().read_to_string().unwrap())
    };
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("valhalla_ops_store_up 1"), "{metrics}");

    proxy.cut();
    for _ in 0..30 {
        assert_eq!(get("/system/overrides").0, 503);
    }
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200, "/metrics answers during the outage: {metrics}");
    assert!(metrics.contains("valhalla_ops_store_up 0"), "{metrics}");
    let log = serving.log();
    assert_eq!(
        log.matches("the store is unreachable").count(),
        1,
        "one line for 30 failed requests:\n{log}"
    );
    assert!(!log.contains("request failed"), "{log}");

    proxy.restore();
    let start = std::time::Instant::now();
    while get("/readyz").0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", serving.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    serving.wait_log("the store answers again", Duration::from_secs(2));
    let log = serving.log();
    let back = log.lines().find(|l| l.contains("answers again")).unwrap();
    assert!(back.contains("requests failed meanwhile"), "{back}");
    assert_eq!(get("/system/overrides").0, 200);
}

//! The status page in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): public and keyed views, a freeze made on another replica appearing within
//! a second, a countdown that moves, an operator lifting it from the page, and the key kept out
//! of the URL and the browser's storage. Screenshots land in `target/status-screenshots/`.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::app::{ADMIN, OPERATOR, READER, state_with};
use crate::support::{Process, StateDir, TestDb, all_backends, tool};

/// A headless Chromium behind its own ChromeDriver on a free port.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(chromedriver: PathBuf, chromium: PathBuf) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // In a process group of its own, so that the browsers it starts go with it, even when
        // a failed assertion skips the orderly close.
        let driver = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("temp dir");
        // The flags this machine's closed network needs (no background connections), and a
        // profile of its own.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,1100".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "goog:chromeOptions": { "binary": chromium, "args": args }
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a Chromium session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// The text of the element with this id.
    async fn text(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    /// Waits until the element with this id says something containing `want`.
    async fn wait_text(&self, id: &str, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.text(id).await.contains(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "#{id} never said {want:?}; it says {:?}",
                self.text(id).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn displayed(&self, id: &str) -> bool {
        match self.client.find(Locator::Id(id)).await {
            Ok(e) => e.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The action buttons the page shows.
    async fn action_buttons(&self) -> usize {
        let mut shown = 0;
        for b in self
            .client
            .find_all(Locator::Css("button[data-action], #freeze, #lift"))
            .await
            .unwrap()
        {
            if b.is_displayed().await.unwrap_or(false) {
                shown += 1;
            }
        }
        shown
    }

    async fn type_key(&self, key: &str) {
        let input = self.client.find(Locator::Id("key")).await.unwrap();
        // Typed and submitted from the keyboard: Enter submits.
        input.send_keys(&format!("{key}\u{E007}")).await.unwrap();
    }

    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

/// A GET from a served process, as `key`.
fn get(base: &str, path: &str, key: &str) -> (u16, Value) {
    let agent = crate::support::agent();
    let mut response = agent
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {key}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or(Value::Null))
}

/// A POST to a served process, as `key`.
fn post(base: &str, path: &str, key: &str, body: &str) -> (u16, Value) {
    let agent = crate::support::agent();
    let mut response = agent
        .post(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn the_status_page_shows_a_freeze_from_another_replica_and_lifts_it() {
    let (Some(chromedriver), Some(chromium)) = (tool("chromedriver"), tool("chromium")) else {
        return;
    };
    for db in all_backends() {
        status_page(&db, chromedriver.clone(), chromium.clone());
    }
}

fn status_page(db: &TestDb, chromedriver: PathBuf, chromium: PathBuf) {
    let b = db.backend;
    let opens = chrono::Utc::now() + chrono::Duration::days(2);
    // A one-off window, a recurring one and a freeze of changes open now (it refuses no run
    // here: nothing below changes the state after the first apply, but for a stale plan).
    let now = chrono::Utc::now();
    let window = format!(
        "maintenance:\n  mode: normal\n  windows:\n    - name: db-upgrade\n      starts_at: \"{}\"\n      ends_at: \"{}\"\n      description: Postgres upgrade\n    - name: nightly\n      schedule: \"0 3 * * *\"\n      duration: 1h\n      mode: read_only\n    - name: year-end\n      starts_at: \"{}\"\n      ends_at: \"{}\"\n      mode: freeze_changes\nrate_limits:\n  - scope: user\n    key: noisy\n    max_requests: 1\n",
        opens.to_rfc3339(),
        (opens + chrono::Duration::hours(2)).to_rfc3339(),
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::days(3)).to_rfc3339(),
    );
    let state = StateDir::new(&[("state.yaml", &state_with(&window))]);
    // A saved plan, then an edit: applying the plan is refused, and the refusal is a run too.
    let (_plans, plan) = crate::support::scratch("plan.json");
    let plan = plan.to_str().unwrap();
    let saved = crate::support::run(db, state.path(), &["reconcile", "--dry-run", "--out", plan]);
    assert_eq!(saved.code, 0, "{b}: {}", saved.stderr);
    let applied = crate::support::run(db, state.path(), &["reconcile"]);
    assert_eq!(applied.code, 0, "{b}: {}", applied.stderr);
    // Runs that change nothing are one row on the page, however many there are.
    for _ in 0..3 {
        assert_eq!(
            crate::support::run(db, state.path(), &["reconcile"]).code,
            0,
            "{b}"
        );
    }
    state.write(
        "more.yaml",
        "feature_flags:\n  - name: new-checkout\n    enabled: false\n",
    );
    let stale = crate::support::run(db, state.path(), &["reconcile", "--plan", plan]);
    assert_ne!(stale.code, 0, "{b}: {stale:?}");
    let serve =
        |name: &str| Process::start(db, &state, &["serve", "--bind", "127.0.0.1:0", "--replica", name]);
    let (replica_a, replica_b) = (serve("a"), serve("b"));
    let (a, other) = (replica_a.base(), replica_b.base());
    // Someone hammers past a limit on A: the page lists them.
    for _ in 0..3 {
        let agent = crate::support::agent();
        let _ = agent
            .get(format!("{a}/system/feature-flags"))
            .header("Authorization", format!("Bearer {READER}"))
            .header("X-User-Id", "noisy")
            .call();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = Browser::start(chromedriver, chromium).await;
        browser.client.goto(&format!("{a}/status")).await.unwrap();

        // Without a key: the mode, and nothing else.
        browser.wait_text("mode", "normal", Duration::from_secs(5)).await;
        assert!(!browser.displayed("private").await, "{b}");
        assert_eq!(browser.action_buttons().await, 0, "{b}");
        // The freeze of changes is public, beside the mode; the platform's Freeze button is not.
        browser.wait_text("changes-frozen", "year-end", Duration::from_secs(2)).await;
        assert!(browser.text("changes-frozen").await.contains("Ends in"), "{b}");
        browser.screenshot(&format!("{b}-public.png")).await;

        // A reader sees overrides, windows and runs, and no buttons.
        browser.type_key(READER).await;
        browser.wait_text("viewer", "(reader)", Duration::from_secs(5)).await;
        assert!(browser.displayed("private").await, "{b}");
        browser.wait_text("windows", "db-upgrade", Duration::from_secs(2)).await;
        assert!(browser.text("windows").await.contains("opens in"), "{b}");
        // A recurring window is listed once, with its rule, and drawn at each occurrence.
        let listed = browser.text("windows").await;
        assert_eq!(listed.matches("nightly").count(), 1, "{b}: {listed}");
        assert!(listed.contains("every 0 3 * * * for 1h, UTC"), "{b}: {listed}");
        let nightly = browser
            .client
            .find_all(Locator::Css("#axis .span.read_only"))
            .await
            .unwrap()
            .len();
        assert!((7..=8).contains(&nightly), "{b}: {nightly} nights drawn in a week");
        let runs = browser.text("runs").await;
        assert!(runs.contains("cli") && runs.contains("8 created"), "{b}: {runs}");
        assert!(runs.contains("3 passes, no change, since"), "{b}: {runs}");
        assert!(runs.contains("refused: the saved plan was computed from another desired state"), "{b}: {runs}");
        assert!(browser.text("overrides-empty").await.contains("None"), "{b}");
        assert!(browser.text("refused").await.contains("user noisy"), "{b}: {}", browser.text("refused").await);
        assert_eq!(browser.action_buttons().await, 0, "{b}: a reader sees no action");

        // Tyr freezes the platform through the other replica: the page shows it within a second.
        let freeze = r#"{"reason": "incident 42: payment provider down", "ttl_seconds": 600}"#;
        let (status, set) = post(&other, "/system/maintenance/state/read_only", OPERATOR, freeze);
        assert_eq!(status, 200, "{b}: {set}");
        let shown = browser.wait_text("mode", "read_only", Duration::from_secs(5)).await;
        assert!(shown < Duration::from_secs(1), "{b}: the freeze showed after {shown:?}");
        let detail = browser.text("mode-detail").await;
        assert!(detail.contains("incident 42") && detail.contains("operator"), "{b}: {detail}");
        browser.wait_text("overrides", "incident 42", Duration::from_secs(2)).await;
        let before = browser.text("mode-until").await;
        assert!(before.starts_with("Ends by itself in 9m") || before.starts_with("Ends by itself in 10m"), "{b}: {before}");
        // It moves every second (waited for, not timed: a loaded machine delays the browser's timers).
        let start = Instant::now();
        while browser.text("mode-until").await == before {
            assert!(start.elapsed() < Duration::from_secs(5), "{b}: the countdown does not move");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(browser.text("mode-until").await.starts_with("Ends by itself in 9m"), "{b}");

        // Times name their zone; what git restores reads as text.
        let overrides = browser.text("overrides").await;
        assert!(overrides.contains("UTC") || overrides.contains("GMT"), "{b}: {overrides}");
        assert!(overrides.contains("mode: normal, reason: (empty)"), "{b}: {overrides}");

        // Forgetting the key takes the previous key's data off the page, not only out of sight.
        browser.client.find(Locator::Id("forget-key")).await.unwrap().click().await.unwrap();
        let left = browser
            .eval("return ['overrides', 'runs', 'refused'].map((id) => document.querySelector(`#${id} tbody`).children.length).concat([document.getElementById('windows').children.length]);")
            .await;
        assert_eq!(left, json!([0, 0, 0, 0]), "{b}");

        // An operator lifts it from the page; while frozen, the banner offers the way out, not
        // another freeze.
        browser.type_key(OPERATOR).await;
        browser.wait_text("viewer", "(operator)", Duration::from_secs(5)).await;
        browser.wait_text("overrides", "incident 42", Duration::from_secs(2)).await;
        assert!(!browser.displayed("freeze").await, "{b}: no second freeze offered");
        assert!(browser.text("lift").await.contains("Lift the freeze"), "{b}");
        assert!(browser.action_buttons().await >= 2, "{b}: the banner's lift and the row's");
        browser.screenshot(&format!("{b}-frozen-operator.png")).await;

        // On a phone's width, frozen, the page still fits and the way out is within reach.
        browser.client.set_window_size(390, 844).await.unwrap();
        let fits = browser
            .eval("const lift = document.querySelector('button[data-action=lift]').getBoundingClientRect(); return [document.documentElement.scrollWidth <= window.innerWidth, lift.right <= window.innerWidth && lift.width > 0];")
            .await;
        assert_eq!(fits, json!([true, true]), "{b}: the page scrolls sideways on a phone, or Lift is out of reach");
        browser.screenshot(&format!("{b}-phone-frozen.png")).await;
        let lift = browser.client.find(Locator::Id("lift")).await.unwrap();
        lift.click().await.unwrap();
        let reason = browser.client.find(Locator::Id("reason")).await.unwrap();
        // Confirming without a reason is refused on the page.
        browser.client.find(Locator::Id("confirm-ok")).await.unwrap().click().await.unwrap();
        browser.wait_text("confirm-error", "reason is required", Duration::from_secs(2)).await;
        reason.send_keys("provider back, incident 42 closed\u{E007}").await.unwrap();
        browser.wait_text("mode", "normal", Duration::from_secs(5)).await;
        browser.wait_text("overrides-empty", "None", Duration::from_secs(2)).await;

        assert!(browser.text("freeze-actions").await.contains("Freeze"), "{b}");

        // A double click on a confirmation sends one freeze.
        browser.client.find(Locator::Id("freeze")).await.unwrap().click().await.unwrap();
        browser.client.find(Locator::Id("reason")).await.unwrap().send_keys("load test").await.unwrap();
        browser.eval("const ok = document.getElementById('confirm-ok'); ok.click(); ok.click(); return true;").await;
        browser.wait_text("mode", "read_only", Duration::from_secs(5)).await;
        let (status, held) = get(&a, "/system/overrides", OPERATOR);
        assert_eq!(status, 200, "{b}: {held}");
        let modes = held.as_array().unwrap().iter().filter(|o| o["kind"] == "maintenance_mode").count();
        assert_eq!(modes, 1, "{b}: {held}");
        browser.screenshot(&format!("{b}-phone.png")).await;

        // Lifted from the banner; then an admin's lockdown, which the banner spells out.
        browser.client.find(Locator::Id("lift")).await.unwrap().click().await.unwrap();
        browser.client.find(Locator::Id("reason")).await.unwrap().send_keys("load test over\u{E007}").await.unwrap();
        browser.wait_text("mode", "normal", Duration::from_secs(5)).await;
        let lockdown = r#"{"action": "lockdown", "payload": {"reason": "credential leak"}}"#;
        let (status, locked) = post(&a, "/admin/ops", ADMIN, lockdown);
        assert_eq!(status, 200, "{b}: {locked}");
        // The operator's key is off now: its page falls back to the public view by itself.
        browser.wait_text("viewer", "unknown or inactive", Duration::from_secs(5)).await;
        assert!(!browser.displayed("private").await, "{b}");
        browser.type_key(ADMIN).await;
        browser.wait_text("lockdown", "Lockdown: 2 clients turned off (operator, reader)", Duration::from_secs(5)).await;
        assert!(browser.text("lift").await.contains("Lift the lockdown"), "{b}");
        browser.screenshot(&format!("{b}-phone-lockdown.png")).await;

        // The key was never in the URL, a cookie or the browser's storage.
        let url = browser.client.current_url().await.unwrap();
        assert!(!url.as_str().contains("vk_"), "{b}: {url}");
        let stored = browser
            .eval("return [localStorage.length, sessionStorage.length, document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)];")
            .await;
        assert_eq!(stored, json!([0, 0, "", "{}", "{}"]), "{b}");
        browser.stop().await;
    });

    // The lift was audited with its reason.
    let lifted = runtime.block_on(async {
        let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
        store.audit(50).await.unwrap()
    });
    assert!(
        lifted.iter().any(|r| r.action == "clear_override"
            && r.after
                .as_deref()
                .is_some_and(|a| a.contains("incident 42 closed"))),
        "{b}: {lifted:?}"
    );
}

#[test]
fn the_page_and_its_assets_carry_a_console_s_security_headers_and_no_inline_script() {
    for db in all_backends() {
        let app = crate::support::app::TestApp::spawn(db, &state_with(""));
        let page = app.exchange("GET", "/status", None, &[], None);
        assert_eq!(page.status, 200);
        let csp = page.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(page.header("x-frame-options"), "DENY");
        // A browser's request for an icon is answered, not a 404.
        let icon = app.exchange("GET", "/favicon.ico", None, &[], None);
        assert_eq!(icon.status, 204);
        assert!(icon.header("cache-control").contains("max-age"));
        let html = app
            .agent
            .get(format!("{}/status", app.base))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert!(html.contains(r#"<script src="/status/app.js" defer></script>"#));
        assert_eq!(html.matches("<script").count(), 1, "one script, from a file");
        assert!(
            !html.contains(" style=") && !html.contains(" onclick="),
            "no inline style or handler"
        );
        for asset in ["/status/app.js", "/status/app.css"] {
            let reply = app.exchange("GET", asset, None, &[], None);
            assert_eq!(reply.status, 200, "{asset}");
            assert!(
                reply
                    .header("content-security-policy")
                    .contains("default-src 'none'")
            );
        }
        // Without a key the data is the mode only; with one, the rest.
        let (status, public) = app.get("/status/snapshot", None);
        assert_eq!(status, 200);
        assert!(
            public.get("overrides").is_none() && public["mode"]["mode"] == "normal",
            "{public}"
        );
        let (status, keyed) = app.get("/status/snapshot", Some(READER));
        assert_eq!(status, 200);
        assert!(
            keyed["overrides"].is_array() && keyed["viewer"]["role"] == "reader",
            "{keyed}"
        );
        // A wrong key is said, not silently shown the public page.
        assert_eq!(
            app.get("/status/snapshot", Some("vk_not_a_key_at_all_0000000000000000"))
                .0,
            401
        );
    }
}

#[test]
fn an_open_status_stream_does_not_hold_up_a_shutdown() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state_with(""))]);
    assert_eq!(crate::support::run(&db, state.path(), &["reconcile"]).code, 0);
    let mut serving = Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
    let base = serving.base();
    let agent = crate::support::agent();
    let mut stream = agent
        .get(format!("{base}/status/events"))
        .header("Authorization", format!("Bearer {READER}"))
        .call()
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut first = [0u8; 13];
    std::io::Read::read_exact(&mut stream.body_mut().as_reader(), &mut first).unwrap();
    assert_eq!(&first, b"event: status");
    // The page is still following when the server is told to stop: it stops all the same.
    let status = serving.stop(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", serving.log());
}

/// A stream of `/status/events` with `key` (or none), its first event read; the status when refused.
fn open_stream(base: &str, key: Option<&str>) -> Result<ureq::http::Response<ureq::Body>, u16> {
    let agent = crate::support::agent();
    let mut request = agent.get(format!("{base}/status/events"));
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut stream = request.call().unwrap();
    if stream.status() != 200 {
        return Err(stream.status().as_u16());
    }
    let mut first = [0u8; 13];
    std::io::Read::read_exact(&mut stream.body_mut().as_reader(), &mut first).unwrap();
    assert_eq!(&first, b"event: status");
    Ok(stream)
}

/// Anonymous pages have a pool of their own: filling it leaves on-call's streams untouched. And
/// an anonymous stream ends after its lifetime, freeing its slot, where it once stayed open for
/// ever.
#[test]
fn anonymous_streams_cannot_crowd_out_on_call_and_do_not_last_for_ever() {
    let app = crate::support::app::TestApp::spawn_with(crate::support::sqlite(), &state_with(""), |state| {
        state.status.anonymous_lifetime = Duration::from_secs(2);
    });
    let base = app.base.clone();
    let anonymous: Vec<_> = (0..32)
        .map(|_| open_stream(&base, None).expect("a slot"))
        .collect();
    assert_eq!(
        open_stream(&base, None).err(),
        Some(503),
        "the anonymous pool is full"
    );
    let keyed = open_stream(&base, Some(READER));
    assert!(keyed.is_ok(), "on-call's page still follows: {:?}", keyed.err());
    // Within the lifetime and a tick, every anonymous stream has ended by itself.
    let started = Instant::now();
    for mut stream in anonymous {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut stream.body_mut().as_reader(), &mut rest).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(open_stream(&base, None).is_ok(), "a slot is free again");
}

/// The next event of a stream with a document (keep-alive comments skipped), as its JSON.
fn next_event(stream: &mut ureq::http::Response<ureq::Body>) -> Value {
    use std::io::Read as _;
    let mut reader = stream.body_mut().as_reader();
    loop {
        let mut event = Vec::new();
        let mut byte = [0u8; 1];
        while !event.ends_with(b"\n\n") {
            assert_eq!(reader.read(&mut byte).unwrap(), 1, "the stream ended");
            event.push(byte[0]);
        }
        let text = String::from_utf8(event).unwrap();
        if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            return serde_json::from_str(data).unwrap();
        }
    }
}

/// A keyed stream follows its key: demoted in git, the next document is the new role's.
#[test]
fn a_status_stream_follows_its_key_when_it_is_demoted() {
    for db in all_backends() {
        let app = crate::support::app::TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let agent = crate::support::agent();
        let mut stream = agent
            .get(format!("{}/status/events", app.base))
            .header("Authorization", format!("Bearer {OPERATOR}"))
            .call()
            .unwrap();
        assert_eq!(next_event(&mut stream)["viewer"]["role"], "operator", "{b}");
        let demoted = state_with("").replace(
            "  - name: operator\n    type: script\n    role: operator\n",
            "  - name: operator\n    type: script\n    role: reader\n",
        );
        assert_ne!(demoted, state_with(""));
        app.runtime
            .block_on(crate::support::app::apply(&app.state.db, &demoted));
        let mut role = Value::Null;
        for _ in 0..5 {
            role = next_event(&mut stream)["viewer"]["role"].clone();
            if role == "reader" {
                break;
            }
        }
        assert_eq!(role, "reader", "{b}");
    }
}

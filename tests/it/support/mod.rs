//! Test databases on both backends, throwaway state directories, and the binary under test.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

pub mod app;
pub mod receiver;

/// The admin URL of the Postgres server tests create their databases on.
const POSTGRES_ENV: &str = "VALHALLA_TEST_POSTGRES_URL";
/// Set (as CI does) to fail instead of skipping when Postgres is not configured or reachable.
const REQUIRE_ENV: &str = "VALHALLA_REQUIRE_POSTGRES";

/// A fresh, empty database; a Postgres one is dropped when the value is.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    /// Holds the SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) of a Postgres database to drop.
    postgres: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop may run inside a runtime, so the cleanup gets a thread and a runtime of its own.
            let _ = std::thread::spawn(move || {
                block_on(async move {
                    let mut conn = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .join();
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(f)
}

/// A new SQLite database in its own directory.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    TestDb {
        url,
        backend: "sqlite",
        _dir: Some(dir),
        postgres: None,
    }
}

/// A new Postgres database, or `None` (said once, plainly) when no server is configured.
pub fn postgres() -> Option<TestDb> {
    let db = postgres_unborn()?;
    db.create();
    Some(db)
}

/// The URL of a Postgres database that does not exist until [`TestDb::create`] (to test a
/// database that is down), or `None` when no server is configured. Dropped like the others.
pub fn postgres_unborn() -> Option<TestDb> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static SAID: Once = Once::new();
    let admin = server_url(
        "Postgres tests",
        POSTGRES_ENV,
        REQUIRE_ENV,
        "postgres://user@host:5432/postgres",
        &SAID,
    )?;
    let name = format!(
        "vops_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_subsec_nanos()
    );
    let mut url = url::Url::parse(&admin).expect("a valid Postgres URL");
    url.set_path(&name);
    Some(TestDb {
        url: url.to_string(),
        backend: "postgres",
        _dir: None,
        postgres: Some((admin, name)),
    })
}

impl TestDb {
    /// Creates the Postgres database of [`postgres_unborn`].
    pub fn create(&self) {
        let Some((admin, name)) = self.postgres.clone() else {
            return;
        };
        let created = std::thread::spawn(move || {
            block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join()
        .expect("create thread");
        if let Err(e) = created {
            panic!("cannot create a Postgres test database through {POSTGRES_ENV}: {e}");
        }
    }
}

/// The URL of a server in `var`, or `None` when it is not set: then said once (through `said`),
/// plainly, on the real stderr past the test harness's capture, so that a plain `cargo test`
/// tells which half did not run; a failure instead when `require` is set, as in CI.
fn server_url(tests: &str, var: &str, require: &str, example: &str, said: &Once) -> Option<String> {
    if let Ok(url) = std::env::var(var) {
        return Some(url);
    }
    let required = std::env::var_os(require).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{require} is set but {var} is not: the {tests} cannot run"
    );
    said.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\nNOTE: {tests} did NOT run: set {var}={example} to run them.\n"
        );
    });
    None
}

/// One fresh database per backend that can run here.
pub fn all_backends() -> Vec<TestDb> {
    std::iter::once(sqlite()).chain(postgres()).collect()
}

/// A state directory with the given files.
pub struct StateDir {
    dir: tempfile::TempDir,
}

impl StateDir {
    pub fn new(files: &[(&str, &str)]) -> StateDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = StateDir { dir };
        for (name, text) in files {
            s.write(name, text);
        }
        s
    }

    /// A copy of the repository's `state/` without its maintenance windows: they recur, and a
    /// test run that met one open (a Sunday night in Berlin) would see another platform.
    pub fn sample() -> StateDir {
        let s = StateDir::sample_as_shipped();
        std::fs::remove_file(s.path().join("windows.yaml")).expect("state/windows.yaml");
        s
    }

    /// A copy of the repository's `state/`, windows included.
    pub fn sample_as_shipped() -> StateDir {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("state");
        let s = StateDir::new(&[]);
        for entry in std::fs::read_dir(src).expect("state/") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), s.path().join(entry.file_name())).expect("copy");
        }
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write state file");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove state file");
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).expect("read state file")
    }
}

/// What a run of the binary printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary, with a clean environment for the settings it reads.
pub fn command(db: &TestDb, state: &Path) -> Command {
    with_settings(Command::new(env!("CARGO_BIN_EXE_valhalla-ops")), db, state)
}

/// The binary run by `faketime` (Debian's, at `faketime`) with its clock moved by `offset`
/// (`+5y`, `-1d`); timers and timeouts keep the real monotonic clock.
pub fn command_at(faketime: &Path, offset: &str, db: &TestDb, state: &Path) -> Command {
    let mut cmd = Command::new(faketime);
    cmd.args(["-f", offset, env!("CARGO_BIN_EXE_valhalla-ops")])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    with_settings(cmd, db, state)
}

/// `cmd` with a clean environment for the settings the binary reads.
fn with_settings(mut cmd: Command, db: &TestDb, state: &Path) -> Command {
    cmd.env("DATABASE_URL", &db.url)
        .env("VALHALLA_STATE", state)
        .env("NO_COLOR", "1")
        .env_remove("VALHALLA_ACTOR")
        .env_remove("RUST_LOG");
    cmd
}

/// An HTTP client that reads error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Runs the binary with `args` against `db` and `state`.
pub fn run(db: &TestDb, state: &Path, args: &[&str]) -> Run {
    finish(command(db, state).args(args).output().expect("run valhalla-ops"))
}

pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scratch file path that lives as long as the returned directory.
pub fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    (dir, path)
}

/// The binary running in the background, its log kept; killed when dropped.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    pub fn start(db: &TestDb, state: &StateDir, args: &[&str]) -> Process {
        Process::start_with(db, state, args, &[])
    }

    /// [`Process::start`] with `env` set besides the settings.
    pub fn start_with(db: &TestDb, state: &StateDir, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = command(db, state.path())
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Process { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str, within: Duration) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(start.elapsed() < within, "never logged {text:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address a `serve` process says it serves on.
    pub fn base(&self) -> String {
        // The whole line: the log is read in chunks, which can end inside the address.
        self.wait_log("serving http://", Duration::from_secs(10));
        let start = Instant::now();
        loop {
            let log = self.log();
            let from = log.find("serving http://").expect("waited for it");
            if let Some((line, _)) = log[from..].split_once('\n') {
                let base = line.split_whitespace().find(|w| w.starts_with("http://"));
                return base.unwrap_or_else(|| panic!("no address in {line}")).to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the serving line never ended:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The address a `serve --grpc` process says its rate limit service is at.
    pub fn grpc(&self) -> String {
        const SAID: &str = "rate limit service at grpc://";
        self.wait_log(SAID, Duration::from_secs(10));
        let start = Instant::now();
        loop {
            let log = self.log();
            let from = log.find(SAID).expect("waited for it") + SAID.len();
            if let Some((addr, _)) = log[from..].split_once(' ') {
                return addr.to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the line never ended:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the process at once (SIGKILL: nothing it holds is finished or released).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    pub fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal();
        self.exited(within).expect("did not stop on SIGTERM")
    }

    /// Sends SIGTERM.
    pub fn signal(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// The exit status, if the process exits within `within`.
    pub fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new Postgres database reached through a [`Proxy`] the test can cut, or `None` (said once)
/// when no server is configured.
pub fn proxied_postgres() -> Option<(TestDb, Proxy)> {
    let mut db = postgres()?;
    let real = url::Url::parse(&db.url).expect("a Postgres URL");
    let proxy = Proxy::start(format!("127.0.0.1:{}", real.port().unwrap_or(5432)));
    let mut proxied = real;
    proxied.set_port(Some(proxy.port)).expect("a port");
    db.url = proxied.to_string();
    Some((db, proxy))
}

/// A TCP proxy to a real server that a test can cut, as a database host going dark: while cut,
/// open connections are dropped and new ones are accepted but never answered.
pub struct Proxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// Every socket of the proxy, to shut down when it is cut.
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    /// Proxies a free local port to `upstream` (`host:port`).
    pub fn start(upstream: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sockets: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (up_, sockets_) = (Arc::clone(&up), Arc::clone(&sockets));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let keep = |s: &std::net::TcpStream| sockets_.lock().unwrap().push(s.try_clone().unwrap());
                keep(&client);
                if !up_.load(Ordering::Acquire) {
                    continue; // Held open, never answered, until the proxy is restored.
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = server.set_nodelay(true);
                keep(&server);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, sockets }
    }

    /// The database goes dark: connections drop, new ones hang.
    pub fn cut(&self) {
        self.up.store(false, Ordering::Release);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The database is back; connections held while it was dark are closed.
    pub fn restore(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        self.up.store(true, Ordering::Release);
    }
}

/// Runs SQL directly on either backend, as an operator editing the database by hand would.
pub async fn exec(db: &valhalla_ops::store::Db, sql: &str) {
    use valhalla_ops::store::Backend;
    let sql_safe = || sqlx::AssertSqlSafe(sql.to_owned());
    match db.pool() {
        Backend::Postgres(p) => sqlx::query(sql_safe()).execute(p).await.map(drop),
        Backend::Sqlite(p) => sqlx::query(sql_safe()).execute(p).await.map(drop),
    }
    .expect(sql);
}

/// Set (as CI does) to fail instead of skipping when a third-party tool a test runs is missing.
const REQUIRE_TOOLS_ENV: &str = "VALHALLA_REQUIRE_TOOLS";

/// The path of `name` on the PATH, or `None` (said plainly, once per tool) when it is not
/// installed; with `VALHALLA_REQUIRE_TOOLS` set, a missing tool fails the test instead.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let required = std::env::var_os(REQUIRE_TOOLS_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{REQUIRE_TOOLS_ENV} is set but `{name}` is not installed (`bash .ci/run` installs it)"
        );
        static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        if !said.iter().any(|s| s == name) {
            said.push(name.to_owned());
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTE: the tests that run `{name}` did NOT run: it is not installed (`bash .ci/run` installs it).\n"
            );
        }
    }
    found
}

/// Whether `python3` can import every one of `modules` (PyPI's `packages`, which `bash .ci/run`
/// installs) for the tests that `what` names; said plainly when not (once per `what`), and a
/// failure when the tools are required.
pub fn python_modules(modules: &[&str], packages: &str, what: &str) -> bool {
    let Some(python) = tool("python3") else {
        return false;
    };
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let found = Command::new(python)
        .args(["-c", &imports])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let required = std::env::var_os(REQUIRE_TOOLS_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{REQUIRE_TOOLS_ENV} is set but Python cannot import {modules:?} (`pip install {packages}`; `bash .ci/run` does)"
        );
        static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        if !said.iter().any(|w| w == what) {
            said.push(what.to_owned());
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTE: the tests that {what} did NOT run: {packages} are not installed (`bash .ci/run` installs them).\n"
            );
        }
    }
    found
}

/// The Redis server tests count in (they use their own key prefix and delete its keys).
const REDIS_ENV: &str = "VALHALLA_TEST_REDIS_URL";
/// Set (as CI does) to fail instead of skipping when Redis is not configured or reachable.
const REQUIRE_REDIS_ENV: &str = "VALHALLA_REQUIRE_REDIS";

/// A key prefix of its own on the test Redis; its keys are deleted when the value is dropped.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let deleted = (|| -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(self.url.as_str())?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(&keys).query::<()>(&mut conn)?;
            }
            Ok(())
        })();
        if let Err(e) = deleted {
            eprintln!("cannot delete the test keys {}:*: {e}", self.prefix);
        }
    }
}

/// A fresh key prefix on the test Redis, or `None` (said once, plainly) when none is set.
pub fn redis() -> Option<TestRedis> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static SAID: Once = Once::new();
    let url = server_url(
        "Redis counter tests",
        REDIS_ENV,
        REQUIRE_REDIS_ENV,
        "redis://127.0.0.1:6379/0",
        &SAID,
    )?;
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    if let Err(e) = reachable {
        panic!("{REDIS_ENV} is set, but Redis does not answer at {url}: {e}");
    }
    let prefix = format!(
        "vops-test-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_subsec_nanos()
    );
    Some(TestRedis { url, prefix })
}

/// Where a test server counts.
pub enum Counters {
    Memory,
    Redis(TestRedis),
}

/// Every backend with every counter store that can run here: each in memory, and each with
/// Redis when it is configured.
pub fn setups() -> Vec<(TestDb, Counters)> {
    let mut setups = Vec::new();
    for db in all_backends() {
        setups.push((db, Counters::Memory));
    }
    if let Some(redis) = redis() {
        setups.push((sqlite(), Counters::Redis(redis)));
    }
    if let (Some(db), Some(redis)) = (postgres(), redis()) {
        setups.push((db, Counters::Redis(redis)));
    }
    setups
}

/// A private `redis-server` on a free port, which a test may kill and restart.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or `None` when `redis-server` is not installed (and the tools are not
    /// required).
    pub fn start() -> Option<RedisServer> {
        let binary = tool("redis-server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            binary,
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let answered = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if answered.is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server: connections stay open, nothing answers.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 20 ms until it holds, failing after `within`: for what another process or
/// replica hears of a change a moment later (a Postgres NOTIFY under load, say).
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "not so within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `tests/notify/check.py` on `deliveries` (each `{"secret", "headers", "body"}`), as a
/// webhook receiver would check them: Python's own HMAC over each signature, and the
/// CloudEvents SDK reading each body. Its output: what the SDK read, or why it refused.
pub fn check_deliveries(deliveries: &[serde_json::Value]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/notify/check.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let input = serde_json::Value::Array(deliveries.to_vec()).to_string();
    let mut stdin = child.stdin.take().expect("its stdin");
    stdin.write_all(input.as_bytes()).expect("write the deliveries");
    drop(stdin);
    child.wait_with_output().expect("its output")
}

/// The store's recorded runs, newest first, read through a handle of the test's own.
pub fn runs(db: &TestDb) -> Vec<valhalla_ops::store::RunRecord> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
        store.runs(100).await.unwrap()
    })
}

/// The store's audit rows, newest first.
pub fn audit(db: &TestDb) -> Vec<valhalla_ops::store::AuditRecord> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
        store.audit(1000).await.unwrap()
    })
}

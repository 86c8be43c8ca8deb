//! Reconcile benchmark: 100,000 rules, 10,000 clients and 1,000 windows, on SQLite and (when
//! `VALHALLA_TEST_POSTGRES_URL` is set) PostgreSQL. Prints figures; asserts nothing.
//!
//! `cargo bench --bench reconcile` (add `-- --rules N` for another size).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::Connection as _;
use valhalla_ops::desired::{DesiredState, load_dir};
use valhalla_ops::mirror::Mirror;
use valhalla_ops::reconcile::{Request, reconcile};
use valhalla_ops::store::{Backend, Db};

/// The allocator of the shipped binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Size {
    rules: usize,
    clients: usize,
    windows: usize,
}

/// Writes a state directory of `size` as a team would split it: rules over ten files.
fn generate(dir: &Path, size: &Size) {
    generate_in(dir, size, 10);
}

/// Writes a state directory of `size` with the rules over `files` files.
fn generate_in(dir: &Path, size: &Size, files: usize) {
    let mut clients = String::from("version: 1\nclients:\n");
    for i in 0..size.clients {
        let hash = valhalla_ops::domain::KeySha256::of_key(&format!("bench-key-{i}"));
        let _ = write!(
            clients,
            "  - name: client-{i}\n    type: integration\n    role: reader\n    key_sha256: {}\n    description: Bench client {i}\n",
            hash.as_str()
        );
    }
    std::fs::write(dir.join("clients.yaml"), clients).unwrap();
    for f in 0..files {
        let mut rules = String::from("version: 1\nrate_limits:\n");
        for i in (f..size.rules).step_by(files) {
            // Unique by construction: each pattern draws on its own part of the index.
            let n = i / 4;
            let (scope, key) = match i % 4 {
                0 => (
                    "ip",
                    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
                ),
                1 => ("ip", format!("11.{}.{}.0/24", (n >> 8) & 255, n & 255)),
                3 if n < size.clients => ("api_key", format!("client-{n}")),
                _ => ("user", format!("user-{i}")),
            };
            let _ = write!(
                rules,
                "  - scope: {scope}\n    key: \"{key}\"\n    window_seconds: {}\n    max_requests: {}\n    description: Rule {i}\n",
                60 + i % 60,
                100 + i % 1000
            );
        }
        std::fs::write(dir.join(format!("rules-{f:03}.yaml")), rules).unwrap();
    }
    let mut windows = String::from("version: 1\nmaintenance:\n  mode: normal\n  windows:\n");
    for i in 0..size.windows {
        let day = 1 + i % 28;
        let month = 1 + (i / 28) % 12;
        // Far ahead, so that no window ages into a warning (and a slower load) on a later date.
        let year = 2090 + i / (28 * 12);
        let _ = write!(
            windows,
            "    - name: window-{i}\n      starts_at: {year}-{month:02}-{day:02}T02:00:00Z\n      ends_at: {year}-{month:02}-{day:02}T03:00:00Z\n"
        );
    }
    std::fs::write(dir.join("maintenance.yaml"), windows).unwrap();
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

fn request(dry_run: bool) -> Request {
    Request {
        dry_run,
        actor: "bench".into(),
        source: "bench".into(),
        ..Request::default()
    }
}

/// Initial applies per backend, each on a fresh database.
const INITIAL_RUNS: usize = 3;
/// Dry runs, one-rule applies and reference copies per backend.
const RUNS: usize = 5;

/// One measured operation: loading the state files, then the store part (snapshot, plan,
/// and for an apply the bulk write and commit).
#[derive(Clone, Copy)]
struct Timing {
    load: Duration,
    store: Duration,
}

/// Repeated measurements of one figure.
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[v.len() / 2]
    }

    /// `median (min–max)`.
    fn show(&self) -> String {
        let (min, max) = (self.0.iter().min().unwrap(), self.0.iter().max().unwrap());
        format!(
            "{} ({:.2}–{:.2})",
            secs(self.median()),
            min.as_secs_f64(),
            max.as_secs_f64()
        )
    }
}

/// The figures of one backend: the store part, and end to end with loading the YAML.
struct Figure {
    store: Samples,
    total: Samples,
}

impl Figure {
    fn of(timings: &[Timing]) -> Figure {
        Figure {
            store: Samples(timings.iter().map(|t| t.store).collect()),
            total: Samples(timings.iter().map(|t| t.load + t.store).collect()),
        }
    }
}

struct Figures {
    initial: Figure,
    dry_run: Figure,
    one_change: Figure,
    reference: Samples,
    reference_name: &'static str,
    /// `reconcile --dry-run` and `validate`, each as a process.
    dry_binary: Samples,
    validate: Samples,
    /// `reconcile` applying one changed rule, and `reconcile --dry-run` in sync after it, each
    /// as a process.
    apply_binary: Samples,
    in_sync_binary: Samples,
}

/// Loads the state directory and reconciles it, as `valhalla-ops reconcile` does.
async fn load_and_reconcile(db: &Db, state: &Path, dry_run: bool) -> (valhalla_ops::plan::Summary, Timing) {
    let (loaded, load) = time(|| load_dir(state, Utc::now()).expect("valid state"));
    let (outcome, store) = timed(reconcile(db, &loaded.state, &request(dry_run), Utc::now())).await;
    (outcome.expect("reconcile").plan.summary(), Timing { load, store })
}

/// Measures every figure; `urls` name empty databases, one per initial apply.
async fn measure(
    urls: &[String],
    state: &Path,
    desired: &DesiredState,
    reference: impl AsyncFnOnce(&Db) -> (Samples, &'static str),
) -> Figures {
    let mut initial = Vec::new();
    for url in urls {
        let db = Db::open(url).await.expect("open the bench database");
        let (summary, timing) = load_and_reconcile(&db, state, false).await;
        assert_eq!(
            summary.create,
            desired.rules.len() + desired.clients.len() + desired.windows.len()
        );
        initial.push(timing);
    }
    let db = Db::open(&urls[0]).await.expect("open the bench database");
    let mut dry_run = Vec::new();
    for _ in 0..RUNS {
        let (summary, timing) = load_and_reconcile(&db, state, true).await;
        assert_eq!(summary.changes(), 0, "the store must be in sync");
        dry_run.push(timing);
    }
    // The commands as CI runs them: `reconcile --dry-run` against `validate` (the load alone),
    // each a whole process, in turn; seven of each, since one run moves by a tenth with the
    // machine.
    let mut dry_binary = Vec::new();
    let mut validate = Vec::new();
    for _ in 0..7 {
        let args = [
            "reconcile",
            "--dry-run",
            "--quiet",
            "--database-url",
            &urls[0],
            "--state",
        ];
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push(state.as_os_str());
        dry_binary.push(Duration::from_secs_f64(binary(&args).0));
        validate.push(Duration::from_secs_f64(validate_binary(state).0));
    }

    let file = state.join("rules-005.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let edited = original.replacen("max_requests: ", "max_requests: 9", 1);
    let mut one_change = Vec::new();
    for run in 0..RUNS {
        std::fs::write(&file, if run % 2 == 0 { &edited } else { &original }).unwrap();
        let (summary, timing) = load_and_reconcile(&db, state, false).await;
        assert_eq!(summary.update, 1);
        one_change.push(timing);
    }
    // The same as commands, whole processes, in turn: `reconcile` applying one changed rule,
    // then `reconcile --dry-run` of the state it leaves, in sync.
    let command = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = ["reconcile", "--quiet", "--database-url", urls[0].as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .map(|a| a.as_ref())
            .collect();
        args.extend(["--state".as_ref(), state.as_os_str()]);
        Duration::from_secs_f64(binary(&args).0)
    };
    let mut apply_binary = Vec::new();
    let mut in_sync_binary = Vec::new();
    for run in 0..7 {
        std::fs::write(&file, if run % 2 == 0 { &edited } else { &original }).unwrap();
        apply_binary.push(command(&[]));
        in_sync_binary.push(command(&["--dry-run"]));
    }
    std::fs::write(&file, original).unwrap();
    let (reference, reference_name) = reference(&db).await;
    Figures {
        initial: Figure::of(&initial),
        dry_run: Figure::of(&dry_run),
        one_change: Figure::of(&one_change),
        reference,
        reference_name,
        dry_binary: Samples(dry_binary),
        validate: Samples(validate),
        apply_binary: Samples(apply_binary),
        in_sync_binary: Samples(in_sync_binary),
    }
}

fn report(backend: &str, f: &Figures, library: Duration) {
    println!("{backend}: median (min–max) in seconds; store part = snapshot + plan [+ bulk write + commit]");
    let line = |name: &str, fig: &Figure| {
        println!(
            "  {name:<24} store {:<26} end to end with loading the YAML {}",
            fig.store.show(),
            fig.total.show()
        )
    };
    line("initial apply", &f.initial);
    line("in-sync dry run", &f.dry_run);
    line("apply of 1 changed rule", &f.one_change);
    println!("  {:<24} {}", f.reference_name, f.reference.show());
    println!(
        "  the binary: reconcile --dry-run {} against validate (the load alone) {}: {:.2}x (target ≤ 1.2)",
        f.dry_binary.show(),
        f.validate.show(),
        f.dry_binary.median().as_secs_f64() / f.validate.median().as_secs_f64()
    );
    let ratio = |a: &Samples, b: &Samples| a.median().as_secs_f64() / b.median().as_secs_f64();
    println!(
        "  the binary: reconcile applying 1 changed rule {} against reconcile --dry-run in sync {}: {:.2}x (target ≤ 1.2)",
        f.apply_binary.show(),
        f.in_sync_binary.show(),
        ratio(&f.apply_binary, &f.in_sync_binary)
    );
    let floor = f.reference.median() + library;
    println!(
        "  whole initial reconcile {} against {} {} + the YAML library's parse {} = {}: {:.2}x (target ≤ 3)",
        secs(f.initial.total.median()),
        f.reference_name,
        secs(f.reference.median()),
        secs(library),
        secs(floor),
        f.initial.total.median().as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  whole initial reconcile {} against {} {} alone: {:.2}x (target ≤ 3)",
        secs(f.initial.total.median()),
        f.reference_name,
        secs(f.reference.median()),
        f.initial.total.median().as_secs_f64() / f.reference.median().as_secs_f64()
    );
    println!(
        "  initial apply / reference = {:.2} (target ≤ 3); 1 change / dry run = {:.2} (target ≤ 1.2, \
         store) and {:.2} (end to end); dry run end to end = {} (target ≤ 2 s)",
        ratio(&f.initial.store, &f.reference),
        ratio(&f.one_change.store, &f.dry_run.store),
        ratio(&f.one_change.total, &f.dry_run.total),
        secs(f.dry_run.total.median()),
    );
}

/// The rules as COPY text rows, the same columns the reconciler writes.
fn copy_rows(desired: &DesiredState) -> String {
    let now = Utc::now().to_rfc3339();
    let mut out = String::new();
    for r in &desired.rules {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\tgit\t{now}\t{now}",
            r.scope,
            r.key,
            r.window_seconds.get(),
            r.max_requests,
            r.enabled,
            r.shadow,
            r.description
        );
    }
    out
}

const RULE_COLUMNS: &str =
    "scope, key, window_seconds, max_requests, enabled, shadow, description, owner, created_at, updated_at";

/// COPY of the rules into an empty copy of the table: the physical floor on Postgres.
async fn pg_copy(db: &Db, desired: &DesiredState) -> (Samples, &'static str) {
    let Backend::Postgres(pool) = db.pool() else {
        unreachable!()
    };
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("CREATE TABLE rules_copy (LIKE rate_limit_rules INCLUDING ALL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let rows = copy_rows(desired);
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        sqlx::query("TRUNCATE rules_copy")
            .execute(&mut *conn)
            .await
            .unwrap();
        let start = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY rules_copy ({RULE_COLUMNS}) FROM STDIN"))
            .await
            .unwrap();
        copy.send(rows.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
        samples.push(start.elapsed());
    }
    (Samples(samples), "raw COPY of the rules")
}

/// One prepared INSERT per rule in one transaction: the usual floor on SQLite, which has no COPY.
async fn sqlite_insert(db: &Db, desired: &DesiredState) -> (Samples, &'static str) {
    let Backend::Sqlite(pool) = db.pool() else {
        unreachable!()
    };
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("CREATE TABLE rules_copy AS SELECT * FROM rate_limit_rules WHERE 0")
        .execute(&mut *conn)
        .await
        .unwrap();
    let now = Utc::now();
    let sql = format!("INSERT INTO rules_copy ({RULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'git', ?, ?)");
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        sqlx::query("DELETE FROM rules_copy")
            .execute(&mut *conn)
            .await
            .unwrap();
        let start = Instant::now();
        let mut tx = conn.begin().await.unwrap();
        for r in &desired.rules {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(r.scope.as_str())
                .bind(r.key.as_str())
                .bind(i64::from(r.window_seconds.get()))
                .bind(i64::from(r.max_requests.get()))
                .bind(r.enabled)
                .bind(r.shadow)
                .bind(&r.description)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        samples.push(start.elapsed());
    }
    (Samples(samples), "raw prepared inserts")
}

/// Runs `valhalla-ops validate` on `state` as its own process: wall seconds and the process's
/// peak resident memory in bytes, when GNU time can tell it.
fn validate_binary(state: &std::path::Path) -> (f64, Option<u64>) {
    binary(&["validate".as_ref(), "--state".as_ref(), state.as_os_str()])
}

/// GNU time, which reports the peak resident memory of the command it runs.
const GNU_TIME: &str = "/usr/bin/time";

/// Runs the binary with `args` (output discarded): its wall time in seconds and, under GNU time,
/// its peak resident memory in bytes. Not `wait4`'s figure for our own child: a child started
/// by vfork, as the standard library starts it, is charged at exec with this process's own peak,
/// and this process holds a whole loaded state. GNU time forks from its own small image.
fn binary(args: &[&std::ffi::OsStr]) -> (f64, Option<u64>) {
    let exe = env!("CARGO_BIN_EXE_valhalla-ops");
    let report = tempfile::NamedTempFile::new().expect("a temporary file");
    let timed = std::path::Path::new(GNU_TIME).exists();
    let mut command = if timed {
        let mut command = std::process::Command::new(GNU_TIME);
        command.arg("-f").arg("%M").arg("-o").arg(report.path()).arg(exe);
        command
    } else {
        std::process::Command::new(exe)
    };
    let started = Instant::now();
    let status = command
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run valhalla-ops");
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "{args:?} failed: {status}");
    let peak = timed
        .then(|| std::fs::read_to_string(report.path()).ok())
        .flatten()
        .and_then(|text| text.trim().lines().last()?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    (wall, peak)
}

/// How many one-line edits the watch loop and the replica are timed over.
const EDITS: usize = 20;

/// The watch loop on a state of `size` split over 100 files: the time from writing a file with
/// one line changed to the end of the pass that applies it (its transaction committed and the
/// pass reported), minus the debounce; the whole pass the interval runs, as the reference. Then
/// a replica's reload of one changed row against a whole reload.
async fn incremental(url: &str, size: &Size, backend: &str) {
    use valhalla_ops::replica::{Replica, ReplicaOptions};
    use valhalla_ops::watch::{WatchMetrics, WatchOptions, run};
    let dir = tempfile::tempdir().unwrap();
    generate_in(dir.path(), size, 100);
    let db = Db::open(url).await.expect("open the bench database");
    let debounce = Duration::from_millis(5);
    let metrics = WatchMetrics::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = WatchOptions {
        debounce,
        interval: Duration::from_secs(3600),
        ..WatchOptions::default()
    };
    let watch = tokio::spawn(run(
        db.clone(),
        valhalla_ops::desired::StateDir::new(dir.path()),
        options,
        metrics.clone(),
        valhalla_ops::clock::system(),
        async {
            let _ = stopped.await;
        },
    ));
    let passes = |n: u64| {
        let metrics = metrics.clone();
        async move {
            while metrics.passes.get() < n {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    let (_, first) = timed(passes(1)).await;
    let file = dir.path().join("rules-042.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut edits = Vec::new();
    for i in 0..EDITS {
        let edited = original.replacen("max_requests: ", &format!("max_requests: {}", i + 1), 1);
        let before = metrics.passes.get();
        let started = Instant::now();
        std::fs::write(&file, edited).unwrap();
        passes(before + 1).await;
        edits.push(started.elapsed().saturating_sub(debounce));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let followed = metrics.followed.get();
    let _ = stop.send(());
    let _ = watch.await;
    let edits = Samples(edits);
    println!(
        "{backend}: watch, one line changed in {} rules over 100 files ({EDITS} edits): file written → pass applied \
         median {:.1} ms (min {:.1}, max {:.1}), {followed} of {EDITS} passes followed the change (target < 50 ms); \
         the first, whole pass {}",
        size.rules,
        edits.median().as_secs_f64() * 1e3,
        edits.0.iter().min().unwrap().as_secs_f64() * 1e3,
        edits.0.iter().max().unwrap().as_secs_f64() * 1e3,
        secs(first),
    );

    // A replica: one rule changed over the API, then the author's read-back (the reload of that
    // row); a whole read of the live state as the reference.
    let replica = Replica::new(
        db.clone(),
        valhalla_ops::clock::system(),
        ReplicaOptions::default(),
    );
    let view = replica.view().await.expect("load the view");
    let some_rule = view.mirror.rule_map().values().next().expect("a rule").clone();
    let mut rows = Vec::new();
    for i in 0..EDITS {
        let mut rule = some_rule.rule.clone();
        rule.max_requests = valhalla_ops::domain::MaxRequests::new(1000 + i as i64).unwrap();
        let change = valhalla_ops::store::ApiChange {
            actor: "bench".into(),
            reason: Some("bench".into()),
            expires_at: None,
            now: Utc::now(),
            group_id: None,
        };
        db.put_rule(&rule, &change).await.expect("write a rule");
        let (view, took) = timed(replica.fresh_view()).await;
        let view = view.expect("reload");
        assert_eq!(
            view.mirror.rule(some_rule.id).unwrap().rule.max_requests,
            rule.max_requests
        );
        rows.push(took);
    }
    let mut whole = Vec::new();
    for _ in 0..5 {
        whole.push(timed(Mirror::load(&db)).await.1);
    }
    let (rows, whole) = (Samples(rows), Samples(whole));
    println!(
        "{backend}: replica, one rule changed in {}: row reload median {:.2} ms (max {:.2}) against a whole \
         read of the store {} ({} row reloads, {} whole) (target < 5 ms)",
        size.rules,
        rows.median().as_secs_f64() * 1e3,
        rows.0.iter().max().unwrap().as_secs_f64() * 1e3,
        secs(whole.median()),
        replica.row_reloads(),
        replica.reloads(),
    );
}

fn main() {
    let mut args = std::env::args().skip_while(|a| a != "--rules");
    let rules = args.nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let size = Size {
        rules,
        clients: 10_000.min(rules.max(1)),
        windows: 1_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    generate(&state, &size);
    println!(
        "valhalla-ops reconcile benchmark: {} rules, {} clients, {} windows",
        size.rules, size.clients, size.windows
    );

    let (loaded, first) = time(|| load_dir(&state, Utc::now()).expect("the generated state is valid"));
    assert_eq!(
        loaded.state.rules.len(),
        size.rules,
        "generated rules must be unique"
    );
    // Three runs, as for the library below: the first also warms the allocator and the caches.
    let validate = Samples(
        std::iter::once(first)
            .chain((0..2).map(|_| time(|| load_dir(&state, Utc::now()).unwrap()).1))
            .collect(),
    );
    println!("validate (load + check every file)    {}", validate.show());
    // The floor: the YAML library's own deserialization of the same bytes into its tree.
    let texts: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let library = Samples(
        (0..3)
            .map(|_| {
                time(|| {
                    for text in &texts {
                        let value: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
                        std::hint::black_box(value);
                    }
                })
                .1
            })
            .collect(),
    );
    println!(
        "the YAML library alone (the same bytes into its tree) {}: validate is {:.2}x of it (target ≤ 1.5)",
        library.show(),
        validate.median().as_secs_f64() / library.median().as_secs_f64()
    );
    let desired = loaded.state;
    let bytes: u64 = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    for _ in 0..3 {
        match validate_binary(&state) {
            (wall, Some(peak)) => println!(
                "validate (the binary)                 {wall:.2} s, peak memory {:.0} MB for {:.1} MB of files ({:.1}x, target ≤ 5)",
                peak as f64 / 1e6,
                bytes as f64 / 1e6,
                peak as f64 / bytes as f64
            ),
            (wall, None) => println!(
                "validate (the binary)                 {wall:.2} s; peak memory not measured: it needs GNU time at {GNU_TIME}"
            ),
        }
    }

    let sqlite_urls: Vec<String> = (0..INITIAL_RUNS)
        .map(|i| format!("sqlite://{}", dir.path().join(format!("bench-{i}.db")).display()))
        .collect();
    let figures = runtime.block_on(measure(&sqlite_urls, &state, &desired, async |db| {
        sqlite_insert(db, &desired).await
    }));
    report("sqlite", &figures, library.median());
    let incremental_db = format!("sqlite://{}", dir.path().join("incremental.db").display());
    runtime.block_on(incremental(&incremental_db, &size, "sqlite"));

    match std::env::var("VALHALLA_TEST_POSTGRES_URL") {
        Err(_) => println!("postgres: skipped (set VALHALLA_TEST_POSTGRES_URL to an admin URL)"),
        Ok(admin) => runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to Postgres");
            let mut urls = Vec::new();
            let names: Vec<String> = (0..INITIAL_RUNS)
                .map(|i| format!("vops_bench_{}_{i}", std::process::id()))
                .collect();
            for name in &names {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(name);
                urls.push(url.to_string());
            }
            let figures = measure(&urls, &state, &desired, async |db| pg_copy(db, &desired).await).await;
            report("postgres", &figures, library.median());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {} WITH (FORCE)",
                names[1]
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", names[1])))
                .execute(&mut conn)
                .await
                .unwrap();
            incremental(&urls[1], &size, "postgres").await;
            for name in &names {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }),
    }
}

//! Recurring windows' occurrences against an independent oracle: Python's croniter matching the
//! wall clock and zoneinfo placing the matches, over a few thousand generated schedules, zones
//! and instants, the daylight-saving changes of 2026–2030 included.

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use valhalla_ops::calendar::{Length, Recurrence, Schedule, Zone};

const MINUTES: &[&str] = &["0", "30", "15", "*/20", "0,45", "5-10", "59"];
const HOURS: &[&str] = &["*", "2", "1-3", "*/6", "23", "0", "1,2"];
const DAYS: &[&str] = &["*", "*", "1", "15", "28-31", "L", "31"];
const MONTHS: &[&str] = &["*", "*", "3", "10", "11", "*/2", "4"];
const WEEKDAYS: &[&str] = &["*", "*", "SUN", "1-5", "0", "6"];
const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "UTC",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "Europe/London",
];
const CASES: usize = 3000;

/// A small deterministic generator: the same cases on every run.
struct Lcg(u64);
impl Lcg {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The `n`th `weekday` of `month` (from the end when `n` is negative), at noon UTC.
fn nth(year: i32, month: u32, weekday: Weekday, n: i32) -> DateTime<Utc> {
    let days: Vec<NaiveDate> = (1..=31)
        .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
        .filter(|d| d.weekday() == weekday)
        .collect();
    let day = if n > 0 {
        days[n as usize - 1]
    } else {
        days[days.len() - n.unsigned_abs() as usize]
    };
    Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
}

/// Instants near the daylight-saving changes of 2026–2030 (Europe, the US, Lord Howe, southern
/// Brazil has none since 2019), and anywhere in those years.
fn instant(rng: &mut Lcg) -> DateTime<Utc> {
    let year = 2026 + rng.below(5) as i32;
    let near = match rng.below(8) {
        0 => nth(year, 3, Weekday::Sun, -1),
        1 => nth(year, 10, Weekday::Sun, -1),
        2 => nth(year, 3, Weekday::Sun, 2),
        3 => nth(year, 11, Weekday::Sun, 1),
        4 => nth(year, 4, Weekday::Sun, 1),
        5 => nth(year, 10, Weekday::Sun, 1),
        _ => {
            Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(rng.below(525_600) as i64)
        }
    };
    near - Duration::hours(36) + Duration::minutes(rng.below(72 * 60) as i64)
}

#[test]
fn occurrences_agree_with_croniter_and_zoneinfo() {
    if !crate::support::python_modules(
        &["croniter", "zoneinfo"],
        "croniter",
        "check occurrences against croniter",
    ) {
        return;
    }
    let mut rng = Lcg(0x5eed);
    let mut lines = String::new();
    for _ in 0..CASES {
        let schedule = [MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS]
            .map(|f| rng.pick(f))
            .join(" ");
        let zone = rng.pick(ZONES);
        let from = instant(&mut rng);
        let rule = Recurrence {
            schedule: Schedule::parse(&schedule).unwrap(),
            duration: Length::parse("1h").unwrap(),
            timezone: Zone::parse(zone).unwrap(),
        };
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let starts: Vec<String> = rule.starts(from).take(5).map(time).collect();
        let case =
            serde_json::json!({"schedule": schedule, "zone": zone, "from": time(from), "starts": starts});
        lines.push_str(&format!("{case}\n"));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/occurrences.py");
    let mut oracle = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Written by a thread of its own: an oracle that stops early must still be heard.
    let mut stdin = oracle.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let out = oracle.wait_with_output().unwrap();
    let _ = writer.join();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("{CASES} cases, 0 disagreements")),
        "{said}"
    );
}

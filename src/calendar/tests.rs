//! The daylight-saving rules on real zones' nights, merging, and the rule checks.

use chrono::{DateTime, Utc};

use super::*;

fn rule(schedule: &str, duration: &str, zone: &str) -> Recurrence {
    Recurrence {
        schedule: Schedule::parse(schedule).unwrap(),
        duration: Length::parse(duration).unwrap(),
        timezone: Zone::parse(zone).unwrap(),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The starts of `r` from `from`, as RFC 3339 in UTC.
fn starts(r: &Recurrence, from: &str, n: usize) -> Vec<String> {
    r.starts(at(from))
        .take(n)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

#[test]
fn berlin_spring_forward_moves_a_skipped_start_to_the_end_of_the_gap() {
    // 2027-03-28: 02:00 CET becomes 03:00 CEST at 01:00Z; 02:30 is never shown.
    let r = rule("30 2 * * *", "1h", "Europe/Berlin");
    assert_eq!(
        starts(&r, "2027-03-27T00:00:00Z", 3),
        [
            "2027-03-27T01:30:00Z",
            "2027-03-28T01:00:00Z",
            "2027-03-29T00:30:00Z"
        ]
    );
    // Every start in the skipped hour lands on its end, once.
    let r = rule("*/15 2 28 3 *", "10m", "Europe/Berlin");
    assert_eq!(starts(&r, "2027-03-28T00:00:00Z", 1), ["2027-03-28T01:00:00Z"]);
    // A year later the 28th is past the change: 02:00 CEST is shown.
    assert_eq!(starts(&r, "2027-03-28T00:00:00Z", 2)[1], "2028-03-28T00:00:00Z");
}

#[test]
fn berlin_fall_back_starts_once_at_the_first_occurrence_and_lasts_real_time() {
    // 2027-10-31: 03:00 CEST becomes 02:00 CET at 01:00Z; 02:30 is shown twice.
    let r = rule("30 2 * * *", "2h", "Europe/Berlin");
    assert_eq!(
        starts(&r, "2027-10-30T00:00:00Z", 3),
        [
            "2027-10-30T00:30:00Z",
            "2027-10-31T00:30:00Z",
            "2027-11-01T01:30:00Z"
        ]
    );
    // Two hours of real time, although the wall clock shows 02:30 to 03:30.
    let night = r.occurrences(at("2027-10-31T00:00:00Z")).next().unwrap();
    assert_eq!(night.ends_at - night.starts_at, chrono::TimeDelta::hours(2));
    assert_eq!(night.ends_at, at("2027-10-31T02:30:00Z"));
}

#[test]
fn new_york_both_nights() {
    // 2027-03-14: 02:00 EST becomes 03:00 EDT at 07:00Z.
    let r = rule("30 2 * * *", "30m", "America/New_York");
    assert_eq!(
        starts(&r, "2027-03-13T00:00:00Z", 3),
        [
            "2027-03-13T07:30:00Z",
            "2027-03-14T07:00:00Z",
            "2027-03-15T06:30:00Z"
        ]
    );
    // 2027-11-07: 02:00 EDT becomes 01:00 EST at 06:00Z; 01:30 is shown at 05:30Z and 06:30Z.
    let r = rule("30 1 * * *", "30m", "America/New_York");
    assert_eq!(
        starts(&r, "2027-11-06T00:00:00Z", 3),
        [
            "2027-11-06T05:30:00Z",
            "2027-11-07T05:30:00Z",
            "2027-11-08T06:30:00Z"
        ]
    );
}

#[test]
fn lord_howe_shifts_by_half_an_hour() {
    // 2027-04-04: 02:00 (+11) becomes 01:30 (+10:30) at 15:00Z on the 3rd; 01:45 is shown twice.
    let r = rule("45 1 * * *", "15m", "Australia/Lord_Howe");
    assert_eq!(
        starts(&r, "2027-04-02T00:00:00Z", 3),
        [
            "2027-04-02T14:45:00Z",
            "2027-04-03T14:45:00Z",
            "2027-04-04T15:15:00Z"
        ]
    );
    // 2027-10-03: 02:00 (+10:30) becomes 02:30 (+11) at 15:30Z on the 2nd; 02:15 is skipped.
    let r = rule("15 2 * * *", "15m", "Australia/Lord_Howe");
    assert_eq!(
        starts(&r, "2027-10-01T00:00:00Z", 3),
        [
            "2027-10-01T15:45:00Z",
            "2027-10-02T15:30:00Z",
            "2027-10-03T15:15:00Z"
        ]
    );
}

#[test]
fn a_window_crosses_midnight_and_the_year_end() {
    let r = rule("0 23 31 12 *", "3h", "UTC");
    let when = When::Every(r);
    let next = when.next(at("2027-06-01T00:00:00Z"), 2);
    assert_eq!(
        next,
        [
            Interval {
                starts_at: at("2027-12-31T23:00:00Z"),
                ends_at: at("2028-01-01T02:00:00Z")
            },
            Interval {
                starts_at: at("2028-12-31T23:00:00Z"),
                ends_at: at("2029-01-01T02:00:00Z")
            },
        ]
    );
    // Open after midnight: the interval that holds now comes first.
    assert_eq!(when.next(at("2028-01-01T01:00:00Z"), 1)[0], next[0]);
    assert!(when.next(at("2028-01-01T02:00:00Z"), 1)[0].starts_at > next[0].starts_at);
}

#[test]
fn overlapping_occurrences_merge_and_the_merge_is_found_from_inside() {
    // Every hour for 90 minutes, from 01:00 to 03:00 only: one interval 01:00 to 04:30.
    let r = rule("0 1-3 * * *", "90m", "UTC");
    let merged = Interval {
        starts_at: at("2027-05-01T01:00:00Z"),
        ends_at: at("2027-05-01T04:30:00Z"),
    };
    for from in [
        "2027-04-30T12:00:00Z",
        "2027-05-01T01:00:00Z",
        "2027-05-01T03:59:00Z",
    ] {
        assert_eq!(r.merged(at(from)).next(), Some(merged), "from {from}");
    }
    // Touching occurrences merge too.
    let r = rule("0 1,2 * * *", "1h", "UTC");
    assert_eq!(
        r.merged(at("2027-05-01T00:00:00Z")).next().unwrap().ends_at,
        at("2027-05-01T03:00:00Z")
    );
    // Not merged, they are listed one by one.
    assert_eq!(r.occurrences(at("2027-05-01T00:00:00Z")).take(2).count(), 2);
}

#[test]
fn rules_that_never_fire_or_fire_too_often_are_told_apart() {
    let from = at("2027-01-01T00:00:00Z");
    assert!(!rule("0 0 30 2 *", "1h", "UTC").fires(from));
    assert!(!rule("0 0 31 4 *", "1h", "UTC").fires(from));
    assert!(rule("0 0 29 2 *", "1h", "UTC").fires(from));
    assert!(rule("0 2 * * SUN", "2h", "Europe/Berlin").fires(from));
    assert!(rule("*/30 * * * *", "10m", "UTC").fires_more_than_hourly(from));
    assert!(rule("0,59 3 * * *", "10m", "UTC").fires_more_than_hourly(from));
    assert!(!rule("0 * * * *", "10m", "UTC").fires_more_than_hourly(from));
    assert!(!rule("0 2 * * SUN", "2h", "UTC").fires_more_than_hourly(from));
}

#[test]
fn one_off_windows_are_their_interval() {
    let i = Interval {
        starts_at: at("2031-01-10T02:00:00Z"),
        ends_at: at("2031-01-10T04:00:00Z"),
    };
    let when = When::Once(i);
    assert_eq!(when.next(at("2031-01-10T03:00:00Z"), 3), [i]);
    assert!(when.next(at("2031-01-10T04:00:00Z"), 3).is_empty());
}

#[test]
fn openings_follow_the_clock_past_their_span() {
    let whens = [
        When::Every(rule("0 2 * * *", "2h", "UTC")),
        When::Once(Interval {
            starts_at: at("2027-05-01T03:00:00Z"),
            ends_at: at("2027-05-03T00:00:00Z"),
        }),
    ];
    let cache = Openings::default();
    let open = |t: &str| -> Vec<usize> {
        let all = whens.iter().map(Some);
        cache.open_at(at(t), all).into_iter().map(|(i, _)| i).collect()
    };
    assert_eq!(open("2027-05-01T01:00:00Z"), Vec::<usize>::new());
    assert_eq!(open("2027-05-01T03:30:00Z"), [0, 1]);
    assert_eq!(open("2027-05-02T02:00:00Z"), [0, 1]);
    assert_eq!(open("2027-05-04T02:00:00Z"), [0]);
    // An inactive window is never open.
    let none = Openings::default().open_at(at("2027-05-05T02:00:00Z"), whens.iter().map(|_| None));
    assert!(none.is_empty());
}

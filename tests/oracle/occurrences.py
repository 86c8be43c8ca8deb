"""The occurrences of recurring windows, computed independently: croniter matches the wall clock,
zoneinfo places each match at the first instant whose local time is at or past it.

Reads JSON lines {"schedule", "zone", "from", "starts"} (our code's first starts at or after
`from`) on stdin; prints each case where the oracle disagrees, and exits 1 if any does."""

import json
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

UTC = timezone.utc


def instant_of(naive, zone):
    """The first instant whose local time in `zone` is at or past `naive`."""
    a = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(a, b), max(a, b)
    u = lo
    while u <= hi:
        if u.astimezone(zone).replace(tzinfo=None) >= naive:
            return u
        u += timedelta(minutes=1)
    return hi


def starts(schedule, zone, start, n):
    local = start.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3, minutes=1)
    it = croniter(schedule, local)
    out = []
    for _ in range(10000):
        try:
            t = instant_of(it.get_next(datetime), zone)
        except CroniterBadDateError:
            # A schedule that never fires (31 April): no occurrences, as ours says.
            break
        if t >= start and (not out or out[-1] != t):
            out.append(t)
            if len(out) == n:
                break
    return out


def main():
    bad = 0
    cases = 0
    for line in sys.stdin:
        case = json.loads(line)
        cases += 1
        start = datetime.fromisoformat(case["from"].replace("Z", "+00:00"))
        ours = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in case["starts"]]
        theirs = starts(case["schedule"], ZoneInfo(case["zone"]), start, len(ours))
        if ours != theirs:
            bad += 1
            if bad <= 20:
                shown = [t.isoformat() for t in theirs]
                print(f"{case['schedule']!r} in {case['zone']} from {case['from']}: ours {case['starts']}, croniter {shown}")
    print(f"{cases} cases, {bad} disagreements")
    sys.exit(1 if bad or not cases else 0)


main()

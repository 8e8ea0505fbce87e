"""deploymentWindow: DST, zones, midnight, deny windows, overlaps, validation, and exact timing."""

from __future__ import annotations

from calendar import monthrange
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.rules.deployment_window import (
    DeploymentWindowSpec,
    evaluate,
    next_opening,
    starts_between,
    window_at,
)
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # Monday 09:00 in New York (EST)
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)


def z(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


NY_OFFICE = DeploymentWindowSpec(
    rrule="FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9", duration_minutes=480, timezone="America/New_York"
)


@pytest.mark.parametrize(
    ("now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        # Winter (EST, UTC-5): 09:00-17:00 local is 14:00Z-22:00Z.
        (T0, Status.ALLOWED, "InsideDeploymentWindow", T0, z(2026, 3, 2, 22)),
        (T0 - US, Status.PENDING, "OutsideDeploymentWindow", None, T0),
        (z(2026, 3, 2, 22), Status.PENDING, "OutsideDeploymentWindow", None, z(2026, 3, 3, 14)),
        # Friday before the Mar 8 change: the next opening is Monday 09:00 EDT = 13:00Z.
        (z(2026, 3, 6, 15), Status.PENDING, "OutsideDeploymentWindow", None, z(2026, 3, 9, 13)),
        (z(2026, 3, 9, 13), Status.ALLOWED, "InsideDeploymentWindow", z(2026, 3, 9, 13), z(2026, 3, 9, 21)),
        (z(2026, 3, 9, 12, 59), Status.PENDING, "OutsideDeploymentWindow", None, z(2026, 3, 9, 13)),
        # Summer (EDT, UTC-4) until Nov 1: 13:00Z-21:00Z.
        (
            z(2026, 10, 29, 20, 59),
            Status.ALLOWED,
            "InsideDeploymentWindow",
            z(2026, 10, 29, 13),
            z(2026, 10, 29, 21),
        ),
        (z(2026, 10, 30, 12), Status.PENDING, "OutsideDeploymentWindow", None, z(2026, 11, 2, 14)),
        # Winter again after Nov 1.
        (
            z(2026, 11, 2, 14),
            Status.ALLOWED,
            "InsideDeploymentWindow",
            z(2026, 11, 2, 14),
            z(2026, 11, 2, 22),
        ),
        (z(2026, 11, 2, 13, 30), Status.PENDING, "OutsideDeploymentWindow", None, z(2026, 11, 2, 14)),
    ],
)
def test_new_york_office_hours_stay_local_across_both_dst_changes(
    now: datetime, status: Status, reason: str, satisfied_at: datetime | None, next_check_at: datetime
) -> None:
    verdict = evaluate(NY_OFFICE, now=now)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert verdict.satisfied_at == satisfied_at
    assert verdict.next_check_at == next_check_at


@pytest.mark.parametrize(
    ("spec", "at", "window"),
    [
        # Europe/London: 10:00 GMT before Mar 29, 10:00 BST (09:00Z) after.
        (
            DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=10", duration_minutes=60, timezone="Europe/London"),
            z(2026, 3, 27, 10, 30),
            (z(2026, 3, 27, 10), z(2026, 3, 27, 11)),
        ),
        (
            DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=10", duration_minutes=60, timezone="Europe/London"),
            z(2026, 3, 30, 9, 30),
            (z(2026, 3, 30, 9), z(2026, 3, 30, 10)),
        ),
        # Crossing midnight: 22:00 + 240 min.
        (
            DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=22", duration_minutes=240),
            z(2026, 3, 3, 1, 59),
            (z(2026, 3, 2, 22), z(2026, 3, 3, 2)),
        ),
        # Crossing midnight and the spring-forward: 4 elapsed hours end at 03:00 EDT (07:00Z).
        (
            DeploymentWindowSpec(
                rrule="FREQ=DAILY;BYHOUR=22", duration_minutes=240, timezone="America/New_York"
            ),
            z(2026, 3, 8, 6, 59),
            (z(2026, 3, 8, 3), z(2026, 3, 8, 7)),
        ),
        # Overlapping occurrences merge into one run: 09:00, 10:00, 11:00 for 90 min each.
        (
            DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=9,10,11", duration_minutes=90),
            z(2026, 3, 2, 10, 45),
            (z(2026, 3, 2, 9), z(2026, 3, 2, 12, 30)),
        ),
        # Back-to-back occurrences (end == next start) merge too.
        (
            DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=9,10", duration_minutes=60),
            z(2026, 3, 2, 9, 30),
            (z(2026, 3, 2, 9), z(2026, 3, 2, 11)),
        ),
    ],
)
def test_window_at_finds_the_covering_run(
    spec: DeploymentWindowSpec, at: datetime, window: tuple[datetime, datetime]
) -> None:
    assert window_at(spec, at) == window
    verdict = evaluate(spec, now=at)
    assert (verdict.status, verdict.satisfied_at, verdict.next_check_at) == (Status.ALLOWED, *window)
    assert window_at(spec, window[1]) is None


def test_midnight_window_is_closed_at_its_end_and_reopens_at_22() -> None:
    spec = DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=22", duration_minutes=240)
    verdict = evaluate(spec, now=z(2026, 3, 3, 2))
    assert (verdict.status, verdict.next_check_at) == (Status.PENDING, z(2026, 3, 3, 22))


FREEZE = DeploymentWindowSpec(
    rrule="FREQ=WEEKLY;BYDAY=FR;BYHOUR=22", duration_minutes=56 * 60, allow_window=False
)


@pytest.mark.parametrize(
    ("now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        (z(2026, 3, 7, 12), Status.PENDING, "InsideDenyWindow", None, z(2026, 3, 9, 6)),
        (z(2026, 3, 6, 22), Status.PENDING, "InsideDenyWindow", None, z(2026, 3, 9, 6)),
        (z(2026, 3, 9, 6), Status.ALLOWED, "OutsideDenyWindow", z(2026, 3, 9, 6), z(2026, 3, 13, 22)),
        (z(2026, 3, 11, 12), Status.ALLOWED, "OutsideDenyWindow", z(2026, 3, 9, 6), z(2026, 3, 13, 22)),
    ],
)
def test_deny_window(
    now: datetime, status: Status, reason: str, satisfied_at: datetime | None, next_check_at: datetime
) -> None:
    verdict = evaluate(FREEZE, now=now)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)


BERLIN = DeploymentWindowSpec(
    rrule="DTSTART;TZID=Europe/Berlin:20260105T080000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4",
    duration_minutes=120,
)


@pytest.mark.parametrize(
    ("now", "status", "reason", "next_check_at"),
    [
        (z(2026, 1, 1), Status.PENDING, "OutsideDeploymentWindow", z(2026, 1, 5, 7)),  # 08:00 CET
        (z(2026, 1, 7, 8), Status.ALLOWED, "InsideDeploymentWindow", z(2026, 1, 7, 9)),
        (z(2026, 1, 8), Status.PENDING, "OutsideDeploymentWindow", z(2026, 1, 12, 7)),
        (z(2026, 1, 14, 8, 59), Status.ALLOWED, "InsideDeploymentWindow", z(2026, 1, 14, 9)),
        (z(2026, 1, 14, 9), Status.DENIED, "NoFutureWindow", None),  # COUNT=4 is used up
    ],
)
def test_explicit_dtstart_with_tzid(
    now: datetime, status: Status, reason: str, next_check_at: datetime
) -> None:
    assert BERLIN.timezone == "Europe/Berlin"  # the TZID names the zone when none is given
    verdict = evaluate(BERLIN, now=now)
    assert (verdict.status, verdict.reason, verdict.next_check_at) == (status, reason, next_check_at)


def test_dtstart_in_utc_anchors_an_instant_and_recurs_in_the_window_zone() -> None:
    spec = DeploymentWindowSpec(
        rrule="DTSTART:20260105T140000Z\nRRULE:FREQ=DAILY", duration_minutes=60, timezone="America/New_York"
    )
    # 14:00Z on Jan 5 is 09:00 EST; the rule keeps 09:00 local, so 13:00Z in summer.
    assert window_at(spec, z(2026, 7, 1, 13, 30)) == (z(2026, 7, 1, 13), z(2026, 7, 1, 14))


def test_until_ends_the_rule() -> None:
    allow = DeploymentWindowSpec(rrule="FREQ=DAILY;BYHOUR=9;UNTIL=20260310T000000Z", duration_minutes=60)
    deny = allow.model_copy(update={"allow_window": False})
    assert evaluate(allow, now=z(2026, 3, 9, 9, 30)).status == Status.ALLOWED
    assert evaluate(allow, now=z(2026, 3, 9, 10)).reason == "NoFutureWindow"
    late = evaluate(deny, now=z(2026, 3, 9, 10))
    assert (late.status, late.next_check_at, late.satisfied_at) == (Status.ALLOWED, None, z(2026, 3, 9, 10))


def test_next_opening() -> None:
    assert next_opening(NY_OFFICE, T0 + MIN) == T0 + MIN
    assert next_opening(NY_OFFICE, z(2026, 3, 6, 15)) == z(2026, 3, 9, 13)
    assert next_opening(FREEZE, z(2026, 3, 7, 12)) == z(2026, 3, 9, 6)
    assert next_opening(FREEZE, z(2026, 3, 11, 12)) == z(2026, 3, 11, 12)


def test_camel_case_input_and_round_trip() -> None:
    spec = DeploymentWindowSpec.model_validate(
        {
            "rrule": "FREQ=DAILY;BYHOUR=9",
            "durationMinutes": 30,
            "timezone": "Asia/Tokyo",
            "allowWindow": False,
        }
    )
    assert DeploymentWindowSpec.model_validate(spec.model_dump(by_alias=True)) == spec
    assert DeploymentWindowSpec.model_validate(BERLIN.model_dump(by_alias=True)) == BERLIN


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rrule": "FREQ=SOMETIMES"}, "FREQ must be one of"),
        ({"rrule": "FREQ=DAILY;BYHOUR=24"}, "BYHOUR values must be in 0..23"),
        ({"rrule": "FREQ=DAILY;BYDAY=XX"}, "BYDAY values"),
        ({"rrule": "FREQ=DAILY;FOO=1"}, "unsupported part FOO"),
        ({"rrule": "FREQ=DAILY;INTERVAL=0"}, "INTERVAL must be an integer"),
        ({"rrule": "FREQ=DAILY;UNTIL=20261231T000000"}, "RFC 5545 requires UTC"),
        ({"rrule": "FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z"}, "COUNT and UNTIL"),
        ({"rrule": "FREQ=WEEKLY;BYMONTHDAY=1"}, "cannot be used with FREQ=WEEKLY"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "never produces an occurrence"),
        ({"rrule": ""}, "exactly one RRULE"),
        ({"rrule": "RRULE:FREQ=DAILY\nEXDATE:20260101T000000Z"}, "only DTSTART and RRULE"),
        (
            {
                "rrule": "DTSTART;TZID=Europe/Berlin:20260105T080000\nRRULE:FREQ=DAILY",
                "timezone": "America/New_York",
            },
            "differs from timezone",
        ),
        ({"rrule": "DTSTART;TZID=Mars/Base:20260105T080000\nRRULE:FREQ=DAILY"}, "unknown IANA time zone"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone 'Mars/Olympus'"),
        ({"timezone": ""}, "unknown IANA time zone"),
        ({"durationMinutes": 0}, "greater than or equal to 1"),
        ({"unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_are_rejected_with_a_clear_message(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeploymentWindowSpec.model_validate({"rrule": "FREQ=DAILY", "durationMinutes": 60, **fields})


def test_spec_is_frozen() -> None:
    with pytest.raises(ValidationError):
        NY_OFFICE.duration_minutes = 5


@pytest.mark.parametrize(
    "rule", ["FREQ=MONTHLY", "FREQ=MONTHLY;INTERVAL=5", "FREQ=YEARLY", "FREQ=YEARLY;INTERVAL=3"]
)
@pytest.mark.parametrize(
    "dtstart", ["20200131T100000", "20200330T100000", "20200229T100000", "20200531T235959"]
)
def test_month_end_anchors_keep_their_day_when_moved(rule: str, dtstart: str) -> None:
    # Moving Jan 31 by a month lands on Feb 29: the pinned BYMONTHDAY keeps the 31st.
    spec = DeploymentWindowSpec(
        rrule=f"DTSTART;TZID=Europe/Berlin:{dtstart}\nRRULE:{rule}", duration_minutes=1
    )
    start = datetime.strptime(dtstart, "%Y%m%dT%H%M%S").replace(tzinfo=ZoneInfo("Europe/Berlin"))
    lo, hi = z(2020, 1, 1), z(2040, 1, 1)
    expected = sorted(
        o.astimezone(UTC) for o in rrulestr("RRULE:" + rule, dtstart=start).between(lo, hi, inc=True)
    )
    assert starts_between(spec, lo, hi) == expected


def test_a_1970_anchor_matches_dateutil_walking_from_1970() -> None:
    spec = DeploymentWindowSpec(
        rrule="FREQ=WEEKLY;INTERVAL=3;BYDAY=TU;BYHOUR=9", duration_minutes=60, timezone="Australia/Sydney"
    )
    zone = ZoneInfo("Australia/Sydney")
    lo, hi = z(2026, 1, 1), z(2027, 1, 1)
    reference = rrulestr(
        "RRULE:FREQ=WEEKLY;INTERVAL=3;BYDAY=TU;BYHOUR=9", dtstart=datetime(1970, 1, 1, tzinfo=zone)
    )
    expected = sorted(
        o.astimezone(UTC) for o in reference.between(lo - timedelta(days=2), hi + timedelta(days=2))
    )
    assert starts_between(spec, lo, hi) == [at for at in expected if lo <= at < hi]


# --- properties ---------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/London", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def window_specs(draw: st.DrawFn) -> DeploymentWindowSpec:
    hour, minute = draw(st.integers(0, 23)), draw(st.sampled_from([0, 15, 30, 45]))
    days = ",".join(draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True)))
    hours = ",".join(map(str, draw(st.lists(st.integers(0, 23), min_size=2, max_size=4, unique=True))))
    rule = draw(
        st.sampled_from(
            [
                f"FREQ=WEEKLY;BYDAY={days};BYHOUR={hour};BYMINUTE={minute}",
                f"FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute}",
                f"FREQ=HOURLY;INTERVAL={13 + hour}",  # gaps longer than any duration drawn
                f"FREQ=MONTHLY;BYMONTHDAY={1 + hour};BYHOUR={hour}",
                f"FREQ=DAILY;BYHOUR={hours}",  # overlapping and back-to-back windows
            ]
        )
    )
    return DeploymentWindowSpec(
        rrule=rule,
        duration_minutes=draw(st.one_of(st.integers(1, 12 * 60), st.sampled_from([60, 120, 180]))),
        timezone=draw(st.sampled_from(ZONES)),
        allow_window=draw(st.booleans()),
    )


instants = st.integers(0, 3 * 365 * 24 * 3600).map(lambda s: z(2025, 1, 1) + timedelta(seconds=s))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=window_specs(), now=instants, fractions=st.lists(st.floats(0, 1), max_size=5))
def test_the_verdict_holds_until_next_check_at_and_changes_exactly_then(
    spec: DeploymentWindowSpec, now: datetime, fractions: list[float]
) -> None:
    verdict = evaluate(spec, now=now)
    assert verdict.next_check_at is not None and verdict.next_check_at > now
    assume(verdict.next_check_at - now < timedelta(days=300))  # not a run that covers every day
    span = verdict.next_check_at - now
    for at in [now, verdict.next_check_at - US] + [now + span * f for f in fractions]:
        if at < verdict.next_check_at:
            later = evaluate(spec, now=at)
            assert (later.status, later.reason, later.satisfied_at, later.next_check_at) == (
                verdict.status,
                verdict.reason,
                verdict.satisfied_at,
                verdict.next_check_at,
            )
    assert evaluate(spec, now=verdict.next_check_at).status != verdict.status


@st.composite
def raw_rules(draw: st.DrawFn) -> tuple[str, str, datetime, timedelta]:
    """FREQ, an RRULE line, a wall-clock DTSTART, and how far before the compared range it starts."""
    freq = draw(st.sampled_from(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY"]))
    parts = [f"FREQ={freq}", f"INTERVAL={draw(st.integers(1, 4))}"]
    if freq == "MINUTELY":
        parts[1] = f"INTERVAL={draw(st.integers(7, 90))}"
    if draw(st.booleans()):
        parts.append("WKST=" + draw(st.sampled_from(DAYS)))
    if draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=3, unique=True))
        if freq in {"MONTHLY", "YEARLY"} and draw(st.booleans()):
            days = [f"{draw(st.sampled_from([1, 2, -1]))}{d}" for d in days]
        parts.append("BYDAY=" + ",".join(days))
    elif freq in {"MONTHLY", "YEARLY", "DAILY"} and draw(st.booleans()):
        parts.append(f"BYMONTHDAY={draw(st.sampled_from([1, 15, 28, 29, 30, 31, -1, -3]))}")
    if freq == "YEARLY" and draw(st.booleans()) and not any(p.startswith("BYMONTHDAY=") for p in parts):
        parts.append(
            "BYMONTH="
            + ",".join(map(str, draw(st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))))
        )
    if freq in {"YEARLY", "MONTHLY", "WEEKLY", "DAILY"} and draw(st.booleans()):
        parts.append(
            "BYHOUR="
            + ",".join(map(str, draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))))
        )
    if freq != "MINUTELY" and draw(st.booleans()):
        parts.append(f"BYMINUTE={draw(st.sampled_from([0, 30, 45]))}")
    if freq in {"YEARLY", "MONTHLY", "WEEKLY"} and len(parts) > 2 and draw(st.booleans()):
        parts.append(f"BYSETPOS={draw(st.sampled_from([1, -1]))}")
    year, month = draw(st.integers(2020, 2025)), draw(st.integers(1, 12))
    day = min(draw(st.one_of(st.sampled_from([29, 30, 31]), st.integers(1, 28))), monthrange(year, month)[1])
    dtstart = datetime(
        year,
        month,
        day,
        draw(st.integers(0, 23)),
        draw(st.sampled_from([0, 30, 59])),
        draw(st.sampled_from([0, 0, 17])),
    )
    lead = {"HOURLY": timedelta(days=40), "MINUTELY": timedelta(days=2)}.get(freq, timedelta(days=3 * 365))
    seconds = draw(st.integers(0, int(lead.total_seconds())))  # mostly far enough to move the anchor
    return freq, ";".join(parts), dtstart, timedelta(seconds=seconds)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=raw_rules(), zone_name=st.sampled_from(ZONES))
def test_moving_the_anchor_by_whole_periods_keeps_every_occurrence(
    rule: tuple[str, str, datetime, timedelta], zone_name: str
) -> None:
    freq, line, dtstart, lead = rule
    text = f"DTSTART;TZID={zone_name}:{dtstart:%Y%m%dT%H%M%S}\nRRULE:{line}"
    try:
        spec = DeploymentWindowSpec(rrule=text, duration_minutes=1)
    except ValidationError:
        assume(False)
        raise
    zone = ZoneInfo(zone_name)
    lo = dtstart.replace(tzinfo=zone).astimezone(UTC) + lead
    hi = lo + {"MINUTELY": timedelta(hours=12), "HOURLY": timedelta(days=4)}.get(freq, timedelta(days=90))
    unshifted = rrulestr("RRULE:" + line, dtstart=dtstart.replace(tzinfo=zone))
    expected = sorted(
        o.astimezone(UTC) for o in unshifted.between(lo - timedelta(days=2), hi + timedelta(days=2), inc=True)
    )
    assert starts_between(spec, lo, hi) == [at for at in expected if lo <= at < hi]

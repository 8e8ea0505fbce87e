"""``deploymentWindow``: deploy only inside, or never inside, a recurring calendar window.

Why it exists: operators state windows as an RFC 5545 recurrence in a named zone ("weekdays
09:00 New York, for 8 hours"; "never Friday 22:00 to Monday"). This module answers, for one
instant, whether that instant is inside a window and the exact instant the answer next changes,
so that the scheduler can sleep until then and ``GET .../decision?at=`` can look ahead.

How: occurrences are wall-clock times in the window's zone (dateutil iterates naive wall-clock
times and attaches the ``ZoneInfo``), so 09:00 stays 09:00 across DST; each start is then
converted to UTC and the duration is added in UTC (elapsed time). A local time skipped by a
spring-forward is read with the offset before the gap, and an ambiguous one as its first
instance, as RFC 5545 §3.3.5 says. Starts are expanded in fixed UTC chunks that are cached, and
each chunk is expanded from an anchor moved forward by whole periods to just before it (see
``_anchor_near``), so a rule anchored in 1970 never walks half a million hourly occurrences.

Must not: read a clock; compare wall-clock datetimes (two datetimes that share one ``tzinfo``
compare as naive wall time, so every instant here is UTC before it is compared); accept at write
time a rule it cannot expand quickly at evaluation time.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.rules.verdict import Verdict

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MARGIN = timedelta(days=2)  # wider than any UTC offset change, so wall/UTC skew never hides a start
_HORIZON = timedelta(days=400)  # a run of back-to-back windows is followed this far, then re-checked
_LAST_YEAR = 9990  # stop well before datetime.max so that UTC conversions cannot overflow
_MAX_DURATION_MINUTES = 366 * 24 * 60
_MAX_COUNT = 10_000
_DENSITY_SAMPLE = 128  # about this many starts per cached chunk

_FREQ_STEP: Mapping[str, tuple[int, timedelta]] = {  # (months, fixed step) of one period, INTERVAL=1
    "YEARLY": (12, timedelta(days=366)),
    "MONTHLY": (1, timedelta(days=31)),
    "WEEKLY": (0, timedelta(weeks=1)),
    "DAILY": (0, timedelta(days=1)),
    "HOURLY": (0, timedelta(hours=1)),
    "MINUTELY": (0, timedelta(minutes=1)),
    "SECONDLY": (0, timedelta(seconds=1)),
}
_FREQ_RANK = {name: rank for rank, name in enumerate(_FREQ_STEP)}
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_NUMBER_PARTS = {  # part: (lowest magnitude, highest, may be negative)
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_NOT_WITH = {  # RFC 5545 §3.3.10: parts that MUST NOT appear with these frequencies
    "BYMONTHDAY": {"WEEKLY"},
    "BYYEARDAY": {"DAILY", "WEEKLY", "MONTHLY"},
    "BYWEEKNO": set(_FREQ_STEP) - {"YEARLY"},
}
_INT = re.compile(r"[+-]?\d{1,4}")
_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UTC_STAMP = re.compile(r"\d{8}T\d{6}Z")
_DTSTART = re.compile(r"DTSTART((?:;[A-Z-]+=[^;:]*)*):(\d{8}T\d{6})(Z?)", re.IGNORECASE)
_TZID = re.compile(r"^DTSTART[^:]*;TZID=([^;:]+)", re.IGNORECASE | re.MULTILINE)


class DeploymentWindowSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    # Declared before ``rrule`` so that the rrule validator sees the validated zone.
    timezone: str = "UTC"
    rrule: str
    duration_minutes: int = Field(ge=1, le=_MAX_DURATION_MINUTES)
    allow_window: bool = True

    @model_validator(mode="before")
    @classmethod
    def _zone_from_dtstart(cls, data: Any) -> Any:
        """A ``DTSTART;TZID=`` line names the zone when ``timezone`` is not given."""
        rrule = data.get("rrule") if isinstance(data, dict) and "timezone" not in data else None
        if isinstance(rrule, str) and (found := _TZID.search(rrule.strip())):
            return {**data, "timezone": found.group(1)}
        return data

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("rrule")
    @classmethod
    def _valid_rrule(cls, value: str, info: ValidationInfo) -> str:
        if "timezone" in info.data:  # otherwise the timezone error is the one to report
            _compile(value, info.data["timezone"])
        return value

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)


@dataclass(frozen=True)
class _Recurrence:
    zone: ZoneInfo
    dtstart: datetime  # naive wall-clock time in ``zone``
    text: str  # "RRULE:..." with every default that dateutil would take from DTSTART made explicit
    pattern: str  # ``text`` without COUNT and UNTIL: the endless pattern the rule is cut from
    months: int  # one period (FREQ × INTERVAL) in months, or 0 when the period is ``step``
    step: timedelta
    shiftable: bool  # no COUNT: the anchor may move by whole periods without changing the set
    span: timedelta  # width of a cached chunk of starts
    first_at: datetime  # no start is before this instant
    last_at: datetime | None  # no start is after this instant; None when the rule never ends


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Where:
    run: tuple[datetime, datetime] | None  # covering [start, end) of back-to-back windows
    previous_end_at: datetime | None  # when outside: end of the last window before
    next_start_at: datetime | None  # when outside: first start after
    zone: ZoneInfo


def evaluate(spec: DeploymentWindowSpec, *, now: datetime) -> Verdict:
    where = _where(spec, now)
    details: dict[str, Any] = {"timezone": spec.timezone, "allowWindow": spec.allow_window}
    if where.run is not None:
        start_at, end_at = where.run
        details |= {"windowStart": _iso(start_at), "windowEnd": _iso(end_at)}
        if spec.allow_window:
            message = f"inside the deployment window until {_local(end_at, where.zone)}"
            return Verdict.allowed(
                "InsideDeploymentWindow",
                message,
                details=details,
                satisfied_at=start_at,
                next_check_at=end_at,
            )
        message = f"inside a deny window until {_local(end_at, where.zone)}"
        return Verdict.pending("InsideDenyWindow", message, details=details, next_check_at=end_at)
    nxt = where.next_start_at
    if nxt is not None:
        details["nextWindowStart"] = _iso(nxt)
    if not spec.allow_window:
        message = "outside every deny window" + (f"; the next opens {_local(nxt, where.zone)}" if nxt else "")
        return Verdict.allowed(
            "OutsideDenyWindow",
            message,
            details=details,
            satisfied_at=where.previous_end_at,
            next_check_at=nxt,
        )
    if nxt is None:
        return Verdict.denied("NoFutureWindow", "the deployment window never opens again", details=details)
    message = f"outside the deployment window; it opens {_local(nxt, where.zone)}"
    return Verdict.pending("OutsideDeploymentWindow", message, details=details, next_check_at=nxt)


def window_at(spec: DeploymentWindowSpec, at: datetime) -> tuple[datetime, datetime] | None:
    """The covering [start, end) of back-to-back windows if ``at`` is inside one, else None."""
    return _where(spec, at).run


def next_opening(spec: DeploymentWindowSpec, at: datetime) -> datetime | None:
    """The first instant ≥ ``at`` at which the rule lets a deploy through (None: never again).

    Allow window: ``at`` if inside, else the next start. Deny window: ``at`` if outside, else the
    end of the covering run.
    """
    where = _where(spec, at)
    if spec.allow_window:
        return _utc(at) if where.run else where.next_start_at
    return where.run[1] if where.run else _utc(at)


def starts_between(spec: DeploymentWindowSpec, start_at: datetime, end_at: datetime) -> list[datetime]:
    """Window starts in [start_at, end_at), ascending UTC (for previews and property tests)."""
    rec, key = _lookup(spec)
    lo, hi = _utc(start_at), _utc(end_at)
    found = []
    for at in _after(rec, key, lo - timedelta(microseconds=1)):
        if at >= hi:
            break
        found.append(at)
    return found


def _where(spec: DeploymentWindowSpec, at: datetime) -> _Where:
    rec, key = _lookup(spec)
    at = _utc(at)
    duration = spec.duration
    earlier = _before(rec, key, at)
    latest = next(earlier, None)
    if latest is None or latest + duration <= at:
        previous_end = None if latest is None else latest + duration
        return _Where(None, previous_end, next(_after(rec, key, at), None), rec.zone)
    start_at = latest
    for s in earlier:  # back-to-back windows before ``latest`` extend the run backwards
        if s + duration < start_at or s < at - _HORIZON:
            break
        start_at = s
    end_at = latest + duration
    for s in _after(rec, key, at):  # and windows that start before it ends extend it forwards
        if s > end_at or end_at > at + _HORIZON:
            break
        end_at = s + duration
    return _Where((start_at, end_at), None, None, rec.zone)


def _after(rec: _Recurrence, key: tuple[str, str], at: datetime) -> Iterator[datetime]:
    """Starts strictly after ``at``, ascending."""
    index = (at - _EPOCH) // rec.span
    starts = _chunk(*key, index)
    yield from starts[bisect_right(starts, at) :]
    while True:
        index += 1
        lo = _EPOCH + index * rec.span
        if (rec.last_at is not None and lo > rec.last_at) or lo.year >= _LAST_YEAR:
            return
        yield from _chunk(*key, index)


def _before(rec: _Recurrence, key: tuple[str, str], at: datetime) -> Iterator[datetime]:
    """Starts at or before ``at``, descending."""
    index = (at - _EPOCH) // rec.span
    starts = _chunk(*key, index)
    yield from reversed(starts[: bisect_right(starts, at)])
    while _EPOCH + index * rec.span > rec.first_at:
        index -= 1
        yield from reversed(_chunk(*key, index))


@lru_cache(maxsize=8192)
def _chunk(rrule: str, timezone: str, index: int) -> tuple[datetime, ...]:
    """Sorted UTC starts in [epoch + index·span, epoch + (index+1)·span)."""
    rec = _compile(rrule, timezone)
    lo = _EPOCH + index * rec.span
    hi = lo + rec.span
    if hi <= rec.first_at or (rec.last_at is not None and lo > rec.last_at) or lo.year >= _LAST_YEAR:
        return ()
    wall_lo = (lo - _MARGIN).astimezone(rec.zone).replace(tzinfo=None)
    anchor = _anchor_near(rec, wall_lo) if rec.shiftable else rec.dtstart
    found = []
    for occurrence in _occurrences(rec.text, rec.zone, anchor):
        at = occurrence.astimezone(UTC)
        if at >= hi + _MARGIN:
            break
        if at >= lo and at < hi:
            found.append(at)
    return tuple(sorted(found))


def _lookup(spec: DeploymentWindowSpec) -> tuple[_Recurrence, tuple[str, str]]:
    return _compile(spec.rrule, spec.timezone), (spec.rrule, spec.timezone)


# ---------------------------------------------------------------- compiling a rule


@lru_cache(maxsize=1024)
def _compile(rrule: str, timezone: str) -> _Recurrence:
    zone = _zone(timezone)
    dtstart_line, rule_line = _split_lines(rrule)
    dtstart = _parse_dtstart(dtstart_line, zone, timezone)
    parts = _parse_parts(rule_line)
    _pin_defaults(parts, dtstart)
    freq, interval = parts["FREQ"], int(parts["INTERVAL"])
    months, step = _FREQ_STEP[freq]
    text = "RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items())
    pattern = "RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items() if k not in {"COUNT", "UNTIL"})
    rec = _Recurrence(
        zone=zone,
        dtstart=dtstart,
        text=text,
        pattern=pattern,
        months=months * interval,
        step=step * interval,
        shiftable="COUNT" not in parts,
        span=timedelta(days=400),
        first_at=_aware(dtstart, zone) - _MARGIN,
        last_at=None,
    )
    try:
        _occurrences(text, zone, dtstart)  # dateutil's own checks
        _require_an_occurrence(rec)
        return replace(rec, span=_chunk_span(rec), last_at=_last_at(rec, parts))
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise ValueError(f"invalid rrule: {exc}") from exc


def _require_an_occurrence(rec: _Recurrence) -> None:
    # An endless pattern repeats within 400 Gregorian years, so look in the last 400
    # representable years: there, a rule whose parts can never all match gives up quickly.
    probe = max(_anchor_near(rec, datetime(9599, 1, 1), always=True), rec.dtstart)
    if next(_occurrences(rec.pattern, rec.zone, probe), None) is None:
        raise ValueError("the rule never produces an occurrence (its BY parts can never all match)")


def _last_at(rec: _Recurrence, parts: Mapping[str, str]) -> datetime | None:
    if "UNTIL" in parts:
        return datetime.strptime(parts["UNTIL"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if "COUNT" in parts:
        return max(o.astimezone(UTC) for o in _occurrences(rec.text, rec.zone, rec.dtstart))
    return None


def _chunk_span(rec: _Recurrence) -> timedelta:
    """A chunk width holding about ``_DENSITY_SAMPLE`` starts, between one hour and 400 days."""
    anchor = _anchor_near(rec, datetime(2001, 1, 1), always=True)
    anchor = max(anchor, rec.dtstart)
    limit = anchor + timedelta(days=400)
    for n, occurrence in enumerate(_occurrences(rec.pattern, rec.zone, anchor), start=1):
        wall = occurrence.replace(tzinfo=None)
        if wall >= limit:
            break
        if n == _DENSITY_SAMPLE:
            return max(wall - anchor, timedelta(hours=1))
    return timedelta(days=400)


def _anchor_near(rec: _Recurrence, wall: datetime, *, always: bool = False) -> datetime:
    """DTSTART moved forward by whole periods to at least one period before ``wall``.

    Every default dateutil derives from DTSTART is pinned in ``rec.text``, the period grid
    (years, months, wkst-weeks, or fixed wall-clock steps) is kept, and BYSETPOS picks from whole
    period sets before the DTSTART filter: so the moved rule has exactly the original's
    occurrences from its anchor on. The extra period skips dateutil's partial first WEEKLY
    period. COUNT counts from the true DTSTART, so COUNT rules are not moved (unless ``always``,
    for the COUNT-free pattern).
    """
    start = rec.dtstart
    if wall <= start or not (rec.shiftable or always):
        return start
    if rec.months:
        gap = (wall.year - start.year) * 12 + wall.month - start.month
        return _add_months(start, max(gap // rec.months - 2, 0) * rec.months)
    return start + max((wall - start) // rec.step - 1, 0) * rec.step


def _add_months(wall: datetime, months: int) -> datetime:
    year, month0 = divmod(wall.month - 1 + months, 12)
    year += wall.year
    day = min(wall.day, calendar.monthrange(year, month0 + 1)[1])
    return wall.replace(year=year, month=month0 + 1, day=day)


def _occurrences(text: str, zone: ZoneInfo, dtstart: datetime) -> Iterator[datetime]:
    """Occurrences as aware datetimes in ``zone``; dateutil checks the rule when this is called."""
    occurrences: Iterator[datetime] = iter(rrulestr(text, dtstart=dtstart.replace(tzinfo=zone)))
    return occurrences


def _split_lines(text: str) -> tuple[str | None, str]:
    dtstart: str | None = None
    rules: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        upper = line.upper()
        if not line:
            continue
        if upper.startswith("DTSTART"):
            if dtstart is not None:
                raise ValueError("invalid rrule: more than one DTSTART line")
            dtstart = line
        elif upper.startswith("RRULE:"):
            rules.append(line[6:])
        elif ":" not in line and upper.startswith(("FREQ=", "INTERVAL=", "BY", "COUNT=", "UNTIL=", "WKST=")):
            rules.append(line)
        else:
            raise ValueError(
                f"invalid rrule: unsupported line {line!r} (only DTSTART and RRULE are supported)"
            )
    if len(rules) != 1:
        raise ValueError("invalid rrule: exactly one RRULE is required")
    return dtstart, rules[0]


def _parse_dtstart(line: str | None, zone: ZoneInfo, timezone: str) -> datetime:
    if line is None:
        return datetime(1970, 1, 1)  # the deterministic anchor: 1970-01-01T00:00:00 local
    found = _DTSTART.fullmatch(line)
    if found is None:
        raise ValueError(
            f"invalid rrule: DTSTART must look like DTSTART;TZID=Area/City:20260105T080000, got {line!r}"
        )
    params = dict(p.split("=", 1) for p in found.group(1).split(";") if p)
    params = {k.upper(): v for k, v in params.items()}
    if set(params) - {"TZID", "VALUE"} or params.get("VALUE", "DATE-TIME").upper() != "DATE-TIME":
        raise ValueError(f"invalid rrule: unsupported DTSTART parameters in {line!r}")
    tzid = params.get("TZID")
    if tzid is not None and tzid != timezone:
        raise ValueError(
            f"invalid rrule: DTSTART TZID={tzid} differs from timezone {timezone!r}; make them equal"
        )
    if tzid is not None and found.group(3):
        raise ValueError("invalid rrule: DTSTART cannot have both TZID and a UTC 'Z' suffix")
    wall = datetime.strptime(found.group(2), "%Y%m%dT%H%M%S")
    if not 1900 <= wall.year <= 9000:
        raise ValueError("invalid rrule: DTSTART year must be between 1900 and 9000")
    if found.group(3):  # a UTC anchor instant; the recurrence still runs in the window's zone
        return wall.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    return wall


def _parse_parts(line: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in line.strip().rstrip(";").split(";"):
        name, sep, value = item.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not sep or not value:
            raise ValueError(f"invalid rrule: expected NAME=VALUE, got {item!r}")
        if name in parts:
            raise ValueError(f"invalid rrule: {name} appears more than once")
        parts[name] = value
    _check_parts(parts)
    parts.setdefault("INTERVAL", "1")
    parts.setdefault("WKST", "MO")  # dateutil would read calendar.firstweekday(), a process global
    return parts


def _check_parts(parts: Mapping[str, str]) -> None:
    freq = parts.get("FREQ", "")
    if freq not in _FREQ_STEP:
        raise ValueError(f"invalid rrule: FREQ must be one of {', '.join(_FREQ_STEP)}")
    for name, value in parts.items():
        _check_part(name, value, freq)
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("invalid rrule: COUNT and UNTIL cannot both be given")
    if "BYSETPOS" in parts and not set(parts) & (set(_NUMBER_PARTS) | {"BYDAY"}) - {"BYSETPOS"}:
        raise ValueError("invalid rrule: BYSETPOS needs another BYxxx part")
    if "BYSETPOS" in parts and _FREQ_RANK[freq] > _FREQ_RANK["WEEKLY"]:
        raise ValueError("invalid rrule: BYSETPOS is supported with FREQ=YEARLY, MONTHLY or WEEKLY only")


def _check_part(name: str, value: str, freq: str) -> None:
    if freq in _NOT_WITH.get(name, set()):
        raise ValueError(f"invalid rrule: {name} cannot be used with FREQ={freq} (RFC 5545)")
    if name in _NUMBER_PARTS:
        lowest, highest, signed = _NUMBER_PARTS[name]
        for item in value.split(","):
            number = int(item) if _INT.fullmatch(item) else None
            if number is None or not lowest <= abs(number) <= highest or (number < 0 and not signed):
                span = f"±{lowest}..{highest}" if signed else f"{lowest}..{highest}"
                raise ValueError(f"invalid rrule: {name} values must be in {span}, got {item!r}")
    elif name == "BYDAY":
        for item in value.split(","):
            found = _BYDAY.fullmatch(item)
            if found is None or (found.group(1) and not 1 <= abs(int(found.group(1))) <= 53):
                raise ValueError(f"invalid rrule: BYDAY values look like MO or -1FR, got {item!r}")
            if found.group(1) and freq not in {"MONTHLY", "YEARLY"}:
                raise ValueError(f"invalid rrule: BYDAY ordinals like {item} need FREQ=MONTHLY or YEARLY")
    elif name in {"INTERVAL", "COUNT"}:
        top = _MAX_COUNT if name == "COUNT" else 1000
        if not value.isdigit() or not 1 <= int(value) <= top:
            raise ValueError(f"invalid rrule: {name} must be an integer in 1..{top}, got {value!r}")
    elif name == "UNTIL":
        if not _UTC_STAMP.fullmatch(value):
            raise ValueError(
                f"invalid rrule: UNTIL must be a UTC date-time like 20261231T235959Z, got {value!r} "
                "(RFC 5545 requires UTC when DTSTART has a time zone, and window starts always do)"
            )
    elif name == "WKST":
        if value not in _DAYS:
            raise ValueError(f"invalid rrule: WKST must be one of {', '.join(_DAYS)}")
    elif name != "FREQ":
        raise ValueError(f"invalid rrule: unsupported part {name}")


def _pin_defaults(parts: dict[str, str], dtstart: datetime) -> None:
    """Write down the BY parts that RFC 5545 (and dateutil) take from DTSTART when absent."""
    freq = parts["FREQ"]
    if not {"BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY"} & set(parts):
        if freq == "YEARLY":
            parts.setdefault("BYMONTH", str(dtstart.month))
        if freq in {"YEARLY", "MONTHLY"}:
            parts["BYMONTHDAY"] = str(dtstart.day)
        if freq == "WEEKLY":
            parts["BYDAY"] = _DAYS[dtstart.weekday()]
    rank = _FREQ_RANK[freq]
    for name, value, below in (
        ("BYHOUR", dtstart.hour, "HOURLY"),
        ("BYMINUTE", dtstart.minute, "MINUTELY"),
        ("BYSECOND", dtstart.second, "SECONDLY"),
    ):
        if rank < _FREQ_RANK[below]:
            parts.setdefault(name, str(value))


# ---------------------------------------------------------------- small helpers


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(
            f"unknown IANA time zone {name!r} (use a name like 'Europe/Berlin' or 'UTC')"
        ) from exc


def _aware(wall: datetime, zone: ZoneInfo) -> datetime:
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return at.astimezone(UTC)


def _iso(at: datetime) -> str:
    """RFC 3339 with a Z; ``at`` is already UTC."""
    return at.isoformat().replace("+00:00", "Z")


def _local(at: datetime, zone: ZoneInfo) -> str:
    return f"{at.astimezone(zone).isoformat(timespec='minutes')} ({zone.key})"

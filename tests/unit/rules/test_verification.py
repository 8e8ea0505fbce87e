"""verification: the spec's write-time checks, templates, and outcomes derived from measurements.

Named instants: T0 is when the run started; each measurement is taken when it falls due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from controller.rules.verification import MetricSpec, VerificationSpec
from controller.verification.analysis import (
    Measurement,
    MeasurementStatus,
    RunStatus,
    classify,
    job_verification,
    metric_state,
    run_state,
)
from controller.verification.providers import stored
from controller.verification.templates import TemplateError, paths, render

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
P, F, INC, E = (MeasurementStatus.PASSED, MeasurementStatus.FAILED, MeasurementStatus.INCONCLUSIVE,
              MeasurementStatus.ERROR)
DOCS = {"resource": {"identifier": "eu-1", "metadata": {"region": "eu", "zone-a": "1"}, "config": {"port": 8443}},
        "environment": {"name": "production"}, "deployment": {"slug": "api"}, "version": {"tag": "1.2.0"},
        "job": {"id": "j1"}}


def metric(**fields: Any) -> MetricSpec:
    base = {"name": "m", "provider": {"type": "sleep"}, "intervalSeconds": 60, "count": 3}
    return MetricSpec.model_validate(base | fields)


def taken(*statuses: MeasurementStatus, metric_index: int = 0) -> list[Measurement]:
    """One measurement a minute from T0, as the schedule takes them."""
    return [Measurement(metric_index, seq, s, T0 + seq * MIN) for seq, s in enumerate(statuses)]


# ------------------------------------------------------------------------------------- one measurement

BOTH = {"successCondition": "result.latency < 100", "failureCondition": "result.latency > 500"}


@pytest.mark.parametrize(("fields", "result", "error", "status", "message"), [
    ({}, {"ok": True}, None, P, "successCondition holds: result.ok"),
    ({}, {"ok": False}, None, F, "successCondition does not hold: result.ok"),
    (BOTH, {"latency": 50}, None, P, "successCondition holds: result.latency < 100"),
    (BOTH, {"latency": 900}, None, F, "failureCondition holds: result.latency > 500"),
    (BOTH, {"latency": 300}, None, INC, "neither successCondition nor failureCondition holds"),
    ({"successCondition": None, "failureCondition": "result.latency > 500"}, {"latency": 300}, None, P,
     "failureCondition does not hold: result.latency > 500"),
    # The failure condition is checked first: a result both "fast" and "failing" fails.
    ({"successCondition": "true", "failureCondition": "result.code == 500"}, {"code": 500}, None, F,
     "failureCondition holds: result.code == 500"),
    # A condition that cannot be evaluated (a missing key, a wrong type) is an error, never a pass.
    (BOTH, {"other": 1}, None, E, "failureCondition could not be evaluated: no such member in mapping: 'latency'"),
    ({"successCondition": "result.json.status == 'ok'"}, {"json": None}, None, E, "successCondition could not"),
    (BOTH, None, "ConnectError: connection refused", E, "ConnectError: connection refused"),
    # Integral floats from JSON compare with ints.
    ({"successCondition": "result.code == 200"}, {"code": 200.0}, None, P, "successCondition holds"),
])
def test_a_measurement_is_classified_by_its_conditions(
    fields: dict[str, Any], result: dict[str, Any] | None, error: str | None, status: MeasurementStatus, message: str
) -> None:
    got_status, got_message = classify(metric(**fields), result, error)
    assert got_status is status
    assert got_message.startswith(message)


# ------------------------------------------------------------------------------------- a metric


@pytest.mark.parametrize(("fields", "statuses", "status", "message"), [
    ({}, (), RunStatus.RUNNING, "0 of 3 measurements taken"),
    ({}, (P, P), RunStatus.RUNNING, "2 of 3 measurements taken"),
    ({}, (P, P, P), RunStatus.PASSED, "3 of 3 measurements passed"),
    ({}, (P, F), RunStatus.FAILED, "1 failed measurements exceed failureThreshold 0"),
    ({"failureThreshold": 1}, (F, P, P), RunStatus.PASSED, "2 of 3 measurements passed"),
    ({"failureThreshold": 1}, (F, P, F), RunStatus.FAILED, "2 failed measurements exceed failureThreshold 1"),
    ({"count": 5, "successThreshold": 2}, (F, P), RunStatus.FAILED, "1 failed measurements exceed failureThreshold 0"),
    ({"count": 5, "successThreshold": 2, "failureThreshold": 1}, (F, P, P), RunStatus.PASSED, "2 passed in a row"),
    ({"count": 5, "successThreshold": 2, "errorThreshold": 4}, (P, E, P), RunStatus.RUNNING, "3 of 5"),
    ({"errorThreshold": 1}, (E, P), RunStatus.RUNNING, "2 of 3 measurements taken"),
    ({"errorThreshold": 1}, (E, P, E), RunStatus.FAILED, "2 provider errors exceed errorThreshold 1"),
    ({}, (P, INC, P), RunStatus.INCONCLUSIVE, "3 of 3 measurements taken; 1 inconclusive"),
    # Errors within their threshold, and nothing ever passed: health was never shown.
    ({}, (E, E, E), RunStatus.INCONCLUSIVE, "3 of 3 measurements taken; no measurement passed"),
])
def test_a_metric_state_follows_from_its_measurements(
    fields: dict[str, Any], statuses: tuple[MeasurementStatus, ...], status: RunStatus, message: str
) -> None:
    state = metric_state(metric(**fields), taken(*statuses), T0)
    assert (state.status, state.message[: len(message)]) == (status, message)
    assert state.taken == len(statuses)


@pytest.mark.parametrize(("provider", "statuses", "due"), [
    ({"type": "sleep"}, (), T0),
    ({"type": "sleep"}, (P,), T0 + MIN),  # an interval after the last was taken
    ({"type": "sleep", "durationSeconds": 30}, (), T0 + timedelta(seconds=30)),
    ({"type": "sleep", "seconds": 30}, (P,), T0 + MIN + timedelta(seconds=30)),
    ({"type": "http", "url": "http://h/"}, (P, P), T0 + 2 * MIN),
])
def test_the_next_measurement_is_due_an_interval_after_the_last(
    provider: dict[str, Any], statuses: tuple[MeasurementStatus, ...], due: datetime
) -> None:
    assert metric_state(metric(provider=provider), taken(*statuses), T0).next_measurement_at == due


def test_a_late_measurement_moves_the_schedule_but_never_skips_or_repeats_one() -> None:
    late = [Measurement(0, 0, P, T0), Measurement(0, 1, P, T0 + 10 * MIN)]  # the controller was down for 9 minutes
    state = metric_state(metric(), late, T0)
    assert (state.status, state.taken, state.next_measurement_at) == (RunStatus.RUNNING, 2, T0 + 11 * MIN)


# ------------------------------------------------------------------------------------- a run


def two_metrics() -> VerificationSpec:
    return VerificationSpec.model_validate({"metrics": [
        {"name": "a", "provider": {"type": "sleep"}, "count": 2, "intervalSeconds": 60},
        {"name": "b", "provider": {"type": "sleep"}, "count": 2, "intervalSeconds": 120,
         "successCondition": "result.ok", "failureCondition": "!result.ok"},
    ]})


@pytest.mark.parametrize(("measurements", "status", "due_at_t0", "next_at"), [
    ([], RunStatus.RUNNING, [0, 1], T0),
    (taken(P) + taken(P, metric_index=1), RunStatus.RUNNING, [], T0 + MIN),
    (taken(P, P) + taken(P, metric_index=1), RunStatus.RUNNING, [], T0 + 2 * MIN),
    (taken(P, P) + taken(P, P, metric_index=1), RunStatus.PASSED, [], None),
    # One failed metric fails the run at once, however far the other has come.
    (taken(F), RunStatus.FAILED, [], None),
    # Inconclusive waits for every running metric to end, then for a person.
    (taken(P, INC) + taken(P, metric_index=1), RunStatus.RUNNING, [], T0 + 2 * MIN),
    (taken(P, INC) + taken(P, P, metric_index=1), RunStatus.INCONCLUSIVE, [], None),
])
def test_a_run_combines_its_metrics(
    measurements: list[Measurement], status: RunStatus, due_at_t0: list[int], next_at: datetime | None
) -> None:
    state = run_state(two_metrics(), measurements, T0)
    assert (state.status, state.due(T0), state.next_measurement_at) == (status, due_at_t0, next_at)


@pytest.mark.parametrize(("statuses", "summary"), [
    ([], None), (["passed"], "passed"), (["passed", "running"], "running"),
    (["inconclusive", "running"], "inconclusive"), (["passed", "failed", "inconclusive"], "failed"),
])
def test_a_jobs_verification_is_the_worst_of_its_runs(statuses: list[str], summary: str | None) -> None:
    assert job_verification(statuses) == summary


# ------------------------------------------------------------------------------------- templates


@pytest.mark.parametrize(("template", "rendered"), [
    ("https://{{ resource.identifier }}.internal/health", "https://eu-1.internal/health"),
    ("{{.resource.metadata.region}}/{{version.tag}}", "eu/1.2.0"),
    ("port={{resource.config.port}}", "port=8443"),
    ("{{resource.metadata.zone-a}}", "1"),
    ("{{resource.metadata}}", '{"region":"eu","zone-a":"1"}'),
    ("no placeholders", "no placeholders"),
])
def test_templates_render_the_targets_fields(template: str, rendered: str) -> None:
    assert render(template, DOCS) == rendered


@pytest.mark.parametrize(("template", "problem"), [
    ("{{ secrets.token }}", "reads 'secrets'"),
    ("{{ resource.name | upper }}", "is not a placeholder"),
    ("{{ resource.name", "unbalanced"),
    ("{{}}", "is not a placeholder"),
])
def test_malformed_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem.replace("|", r"\|")):
        paths(template)


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match="has no value for this target"):
        render("https://{{resource.metadata.missing}}/", DOCS)


# ------------------------------------------------------------------------------------- write-time checks


@pytest.mark.parametrize(("metrics", "loc", "message"), [
    ([{"name": "m", "provider": {"type": "ftp"}}], ("metrics", 0, "provider"),
     "does not match any of the expected tags"),
    ([{"name": "m", "provider": {"type": "http", "url": "file:///etc/passwd"}}],
     ("metrics", 0, "provider", "http", "url"), "must be an absolute http:// or https:// URL"),
    ([{"name": "m", "provider": {"type": "http", "url": "http://{{secret.x}}/"}}],
     ("metrics", 0, "provider", "http", "url"), "invalid template"),
    ([{"name": "m", "provider": {"type": "http", "url": "http://h/", "headers": {"X": "{{nope}}"}}}],
     ("metrics", 0, "provider", "http", "headers"), "invalid template"),
    ([{"name": "m", "provider": {"type": "http", "url": "http://h/", "headers": {"bad header": "x"}}}],
     ("metrics", 0, "provider", "http", "headers"), "not a valid header name"),
    ([{"name": "m", "provider": {"type": "http", "url": "http://h/", "timeout": "2h"}}],
     ("metrics", 0, "provider", "http", "timeout"), "a duration like '10s'"),
    ([{"name": "m", "provider": {"type": "http", "url": "http://h/", "timeout": 120}}],
     ("metrics", 0, "provider", "http", "timeout"), "at most 60 seconds"),
    ([{"name": "m", "provider": {"type": "prometheus", "address": "http://p:9090", "query": "{{x}}"}}],
     ("metrics", 0, "provider", "prometheus", "query"), "invalid template"),
    ([{"name": "m", "provider": {"type": "sleep"}, "successCondition": "result.ok &&"}],
     ("metrics", 0, "successCondition"), "invalid CEL"),
    ([{"name": "m", "provider": {"type": "sleep"}, "failureCondition": "resource.name == 'x'"}],
     ("metrics", 0, "failureCondition"), "undeclared"),
    ([{"name": "m", "provider": {"type": "sleep"}, "successCondition": None}], ("metrics", 0),
     "give a successCondition, a failureCondition, or both"),
    ([{"name": "m", "provider": {"type": "sleep"}, "count": 2, "successThreshold": 3}], ("metrics", 0),
     "successThreshold cannot exceed count"),
    ([{"name": "m", "provider": {"type": "sleep"}, "intervalSeconds": 0}], ("metrics", 0, "intervalSeconds"),
     "greater than or equal to 1"),
    ([{"name": "m", "provider": {"type": "sleep"}}, {"name": "m", "provider": {"type": "sleep"}}], ("metrics",),
     "metric names must be unique: m"),
    ([], ("metrics",), "at least 1 item"),
])
def test_invalid_specs_are_refused_naming_the_field(metrics: list[Any], loc: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        VerificationSpec.model_validate({"metrics": metrics})
    errors = raised.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert message in errors[0]["msg"]


def test_ctrlplanes_shape_loads_unchanged() -> None:
    spec = VerificationSpec.model_validate({"triggerOn": "jobSuccess", "metrics": [
        {"name": "health-check", "intervalSeconds": 30, "count": 5, "successCondition": "result.statusCode == 200",
         "provider": {"type": "sleep", "durationSeconds": 10}},
        {"name": "web", "intervalSeconds": 30, "count": 5, "successCondition": "result.ok",
         "provider": {"type": "http", "url": "https://{{resource.name}}/", "method": "post", "timeout": "30s",
                      "body": '{"version": "{{version.tag}}"}'}},
    ]})
    sleep, web = (m.provider for m in spec.metrics)
    assert sleep.seconds == 10  # type: ignore[union-attr]
    assert (web.method, web.timeout) == ("POST", 30.0)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------- what is stored


def test_a_large_result_is_cut_down_before_it_is_stored() -> None:
    small = {"ok": True, "statusCode": 200, "body": "fine", "json": None, "headers": {}, "durationMs": 3}
    assert stored(small) == small
    huge = {"ok": True, "statusCode": 200, "body": "x" * 100_000, "json": {"k": "y" * 50_000}, "headers": {"a": "b"},
            "durationMs": 3}
    cut = stored(huge)
    assert cut == {"ok": True, "statusCode": 200, "durationMs": 3, "body": "x" * 4096, "truncated": True}
    assert stored(None) is None

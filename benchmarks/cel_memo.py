"""How much the projection memo saves: µs per selector match, memoised vs direct celpy.

15,000 resources x 10 realistic environment/deployment selectors. Direct celpy evaluation is
timed on a sample (it costs about a minute at full size).

Then the conjunct memo: selectors from benchmarks/world.py that read a field unique to each
resource (``... && resource.name.startsWith('k8s-')``), memoised as a whole expression (the memo
never hits) vs operand by operand (a cheap false operand decides), over 15,000 resources seen for
the first time: once with cold memos, once more over 15,000 *other* resources with warm memos.

Run: .venv/bin/python benchmarks/cel_memo.py
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import world
from controller.cel import Doc, Match, Program
from controller.cel.engine import build
from controller.cel.memo import Memoised

RESOURCES = 15_000
DIRECT_SAMPLE = 1_000

SELECTORS = [
    "resource.kind == 'kubernetes-cluster'",
    "resource.metadata['region'] == 'us-east-1'",
    "resource.kind == 'kubernetes-cluster' && resource.metadata.env == 'prod'",
    "resource.metadata.region in ['eu-west-1', 'eu-central-1']",
    "has(resource.metadata.tier) && resource.metadata.tier == 'critical'",
    "resource.metadata.team == 'payments' || resource.metadata.team == 'checkout'",
    "resource.config.replicas >= 3",
    "resource.metadata.exists(k, k == 'canary')",
    "size(resource.metadata) > 4 && resource.kind != 'vm'",
    "resource.identifier.startsWith('prod-')",  # unique per resource: the memo never hits
]


def resources(count: int, seed: int = 7) -> list[Doc]:
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        metadata = {
            "region": rng.choice(["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"]),
            "env": rng.choice(["prod", "staging", "dev"]),
            "team": rng.choice(["payments", "checkout", "search", "identity", "platform", "data"]),
        }
        if rng.random() < 0.3:
            metadata["tier"] = rng.choice(["critical", "standard"])
        if rng.random() < 0.05:
            metadata["canary"] = "true"
        docs.append(
            Doc(
                {
                    "identifier": f"{metadata['env']}-{i}",
                    "name": f"cluster-{i}",
                    "kind": rng.choice(["kubernetes-cluster", "vm", "lambda"]),
                    "version": "v1",
                    "metadata": metadata,
                    "config": {"replicas": float(rng.randint(1, 5))},
                }
            )
        )
    return docs


class WholeMemo:
    """The memo before operands were memoised one by one: one key over every path read."""

    def __init__(self, source: str, variables: frozenset[str]) -> None:
        self.source = source
        self._memoised = Memoised(build(source, variables))

    @property
    def evaluations(self) -> int:
        return self._memoised.evaluations

    def match(self, activation: Mapping[str, Doc]) -> Match:
        return self._memoised.outcome(activation).match


def per_match(programs: list[Program] | list[WholeMemo], docs: list[Doc]) -> list[float]:
    """µs per match, for each program."""
    timings = []
    for program in programs:
        start = time.perf_counter()
        for doc in docs:
            program.match({"resource": doc})
        timings.append((time.perf_counter() - start) / len(docs) * 1e6)
    return timings


def report(label: str, micros: float, extra: str = "") -> None:
    print(f"{label:<42} {micros:9.2f} µs/match {extra}")


def main(build: Callable[[int], list[Doc]] = resources) -> None:
    docs = build(RESOURCES)
    memoised = [Program(source, {"resource"}) for source in SELECTORS]
    direct = [Program(source, {"resource"}, memo=False) for source in SELECTORS]
    sample = docs[:DIRECT_SAMPLE]
    for doc in sample:
        _ = doc.cel  # conversion is cached per Doc in both modes; keep it out of the direct timing

    cold = per_match(memoised, docs)
    warm = per_match(memoised, docs)
    slow = per_match(direct, sample)

    print(f"{RESOURCES} resources x {len(SELECTORS)} selectors = {RESOURCES * len(SELECTORS)} matches")
    print(f"{'first pass':>10} {'second':>8} {'direct':>8}  µs/match; celpy runs; selector")
    for program, first, second, plain in zip(memoised, cold, warm, slow, strict=True):
        print(f"{first:10.2f} {second:8.2f} {plain:8.2f}  {program.evaluations:6d}  {program.source}")
    cold_mean, warm_mean, slow_mean = (sum(t) / len(t) for t in (cold, warm, slow))
    report("memoised, first pass (misses included)", cold_mean)
    report("memoised, second pass (all hits)", warm_mean)
    report(f"direct celpy (sample of {DIRECT_SAMPLE})", slow_mean)
    print(f"speed-up: {slow_mean / cold_mean:.1f}x first pass, {slow_mean / warm_mean:.0f}x second pass")


UNIQUE_FIELD_SELECTORS = [
    *(world.ENVIRONMENT_SELECTORS[tier] + world.SYSTEM_SCOPES["analytics"] for tier in world.TIERS),
    "resource.kind == 'database' && resource.identifier.contains('/db-')",
    "resource.metadata.team == 'team-07' || resource.name.endsWith('7')",
]


def conjuncts() -> None:
    items = world.resources(2 * RESOURCES)
    first = [Doc(item) for item in items[:RESOURCES]]
    fresh = [Doc(item) for item in items[RESOURCES:]]  # other names: unique fields miss again
    variables = frozenset({"resource"})
    whole = [WholeMemo(source, variables) for source in UNIQUE_FIELD_SELECTORS]
    split = [Program(source, variables) for source in UNIQUE_FIELD_SELECTORS]
    for doc in first + fresh:
        _ = doc.cel  # conversion is cached per Doc in both modes; keep it out of the timing
    timings = [per_match(programs, docs) for programs in (whole, split) for docs in (first, fresh)]
    for programs, docs in ((whole, first), (whole, fresh), (split, first), (split, fresh)):
        assert [p.match({"resource": d}) for p in programs for d in docs[:500]] == [
            Program(p.source, variables, memo=False).match({"resource": d}) for p in programs for d in docs[:500]
        ]

    print()
    print(f"conjunct memo: {RESOURCES} resources x {len(UNIQUE_FIELD_SELECTORS)} selectors reading a unique field")
    print(f"{'whole':>8} {'warm':>8} {'split':>8} {'warm':>8}  µs/match (cold, then warm over new resources)")
    for i, source in enumerate(UNIQUE_FIELD_SELECTORS):
        w1, w2, s1, s2 = (t[i] for t in timings)
        runs = f"{whole[i].evaluations:6d} {split[i].evaluations:6d}"
        print(f"{w1:8.2f} {w2:8.2f} {s1:8.2f} {s2:8.2f}  {runs} celpy runs  {source}")
    w1, w2, s1, s2 = (sum(t) / len(t) for t in timings)
    report("whole-expression memo, cold", w1)
    report("whole-expression memo, warm (new resources)", w2)
    report("conjunct memo, cold", s1, f"{w1 / s1:.1f}x")
    report("conjunct memo, warm (new resources)", s2, f"{w2 / s2:.1f}x")


if __name__ == "__main__":
    main()
    conjuncts()

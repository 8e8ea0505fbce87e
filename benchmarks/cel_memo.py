"""How much the projection memo saves: µs per selector match, memoised vs direct celpy.

15,000 resources x 10 realistic environment/deployment selectors. Direct celpy evaluation is
timed on a sample (it costs about a minute at full size). Run: .venv/bin/python benchmarks/cel_memo.py
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from controller.cel import Doc, Program

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


def per_match(programs: list[Program], docs: list[Doc]) -> list[float]:
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


if __name__ == "__main__":
    main()

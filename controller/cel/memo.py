"""One compiled expression whose outcomes are memoised by projection.

Why it exists: one celpy evaluation costs 100-500 us. At compile time we know the static paths an
expression reads; the memo key for an activation is the tuple of the (frozen) values found at
those paths. Equal keys imply that celpy sees equal inputs, so the cached outcome (error included)
is exactly what celpy would return. A selector that reads only ``environment`` never sees the
resource, so it is evaluated once per environment, not once per resource.

What it must not do: share outcomes between different expressions, or grow without bound (the
memo is cleared when it reaches its limit). Memo hits do not take celpy's lock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Final

from controller.cel.engine import Compiled, run
from controller.cel.outcome import Outcome
from controller.cel.values import ABSENT, Doc, walk

_MEMO_LIMIT: Final = 100_000


class Projection:
    """The values an activation holds at some static paths, frozen into one hashable key.

    Equal keys mean every expression reading only these paths sees equal inputs, so it has equal
    outcomes: callers may key their own caches on it (say, the policies matching a target).
    """

    def __init__(self, paths: Iterable[tuple[str, ...]]) -> None:
        self._paths = tuple((path[0], path[1:]) for path in sorted(set(paths)))

    def key(self, activation: Mapping[str, Doc]) -> Hashable:
        key: list[Hashable] = []
        for root, tail in self._paths:
            doc = activation.get(root)
            if doc is None:
                key.append(ABSENT)
            else:
                key.append(walk(doc.data, tail) if tail else doc.frozen)
        return tuple(key)


class Memoised:
    """``compiled``, evaluated through a projection memo (or directly, when ``memo`` is False)."""

    def __init__(self, compiled: Compiled, *, memo: bool = True) -> None:
        self.compiled = compiled
        self.variables = frozenset(path[0] for path in compiled.paths)
        self.key = Projection(compiled.paths).key
        self.evaluations = 0  # celpy runs, i.e. memo misses
        self._memo: dict[Hashable, Outcome] | None = {} if memo else None

    def outcome(self, activation: Mapping[str, Doc]) -> Outcome:
        if self._memo is None:
            return self.run(activation, None)
        key = self.key(activation)
        outcome = self._memo.get(key)
        return self.run(activation, key) if outcome is None else outcome

    def cached(self, key: Hashable) -> Outcome | None:
        return None if self._memo is None else self._memo.get(key)

    def run(self, activation: Mapping[str, Doc], key: Hashable) -> Outcome:
        """Evaluate with celpy and remember the outcome under ``key``."""
        context = {name: activation[name].cel for name in self.variables if name in activation}
        self.evaluations += 1
        outcome = run(self.compiled.runner, context)
        self.remember(key, outcome)
        return outcome

    def remember(self, key: Hashable, outcome: Outcome) -> None:
        """Store ``outcome``, which celpy gives for ``key`` (whoever worked it out)."""
        memo = self._memo
        if memo is not None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = outcome

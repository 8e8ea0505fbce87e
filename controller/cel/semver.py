"""SemVer 2.0 versions as a value type: parsing, precedence and ordering.

Why it exists: release rules compare versions, and neither string nor lexical order is SemVer
precedence (``1.10.0 > 1.9.0``, ``1.0.0-rc.1 < 1.0.0``). The CEL functions built on it live in
:mod:`controller.cel.functions`.

What it must not do: know about celpy. Parsing failures are ``ValueError``; turning them into CEL
evaluation errors is the caller's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(
    rf"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)
Precedence = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


@total_ordering
@dataclass(frozen=True, eq=False)
class SemVer:
    """A parsed version; equality and ordering are SemVer precedence (build metadata ignored)."""

    text: str
    precedence: Precedence

    @classmethod
    def parse(cls, text: str) -> SemVer:
        found = _SEMVER.fullmatch(text)
        if found is None:
            raise ValueError(f"invalid semantic version {text!r}")
        major, minor, patch, pre = found.groups()
        if pre is None:  # a release ranks above all of its pre-releases
            return cls(text, (int(major), int(minor), int(patch), 1, ()))
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        return cls(text, (int(major), int(minor), int(patch), 0, ids))

    def compare(self, other: SemVer) -> int:
        return (self.precedence > other.precedence) - (self.precedence < other.precedence)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemVer) and self.precedence == other.precedence

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence < other.precedence

    def __hash__(self) -> int:
        return hash(self.precedence)

    def __str__(self) -> str:
        return self.text

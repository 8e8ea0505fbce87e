"""CEL for Releasegate: the one package through which every expression is compiled and evaluated.

Why it exists: selectors, ``versionSelector``/``condition`` rules and verification conditions are
all CEL. Keeping celpy behind one door gives one set of semantics (number normalisation, timestamps,
what a missing key means), one place to cache compiled programs, and one place to fix celpy quirks.

What it must not do: touch a database, read a clock, or know about HTTP. It is pure, given its
inputs. ``Program.match`` never raises for an evaluation problem: a missing key, a type mismatch
or a non-boolean result is ``Match(False, error=...)``, so selectors fail closed and the reason can
be recorded. Callers import from here only; the modules below are private to the package.

Use: wrap each entity revision in a :class:`Doc` once and reuse it (its CEL value is converted
lazily and cached); ``compile_expression(source, variables)`` gives a cached :class:`Program`.

Layers, each importing only those above it::

    semver       SemVer 2.0 parsing and precedence (no celpy)
    values       documents <-> CEL values; frozen values for memo keys; Doc
    functions    the custom CEL functions semver(), compare(), semverCompare()
    outcome      Match, CelEvaluationError, and describing what celpy returned
    analysis     CelSyntaxError; name checks, static paths, top-level &&/|| operands
    escapes      proving an operand cannot abort the whole expression
    engine       celpy's environment and lock: build and run
    memo         one program memoised by the values at the paths it reads
    connective   a top-level &&/|| chain, short-circuited operand by operand
    program      Program and compile_expression

Threads: celpy's compiled programs pass the activation through a module global, so evaluations
are serialised by a lock. Memo hits do not take it.
"""

from controller.cel.analysis import CelSyntaxError
from controller.cel.memo import Projection
from controller.cel.outcome import CelEvaluationError, Match
from controller.cel.program import Program, checked, compile_expression
from controller.cel.values import Doc

__all__ = [
    "CelEvaluationError",
    "CelSyntaxError",
    "Doc",
    "Match",
    "Program",
    "Projection",
    "checked",
    "compile_expression",
]

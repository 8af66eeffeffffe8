"""Conditions compiled to Python functions: as fast as closures written by hand.

The generated source only ever names locals, helper functions and constants passed in as
closure cells (``c0``, ``c1`` …): no value from a rule is spliced into the source text, so a
condition cannot inject code. Semantics are those of ``interpreter.evaluate`` (a property
test holds the two together); a missing field and a null one are both ``None`` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from careflow.conditions.language import NamedFields, is_number

Predicate = Callable[[Mapping[str, Any]], bool]

_NUM = (int, float)


def _tag(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return ("b", value)
    if is_number(value):
        return ("n", value)
    return ("s", value)


def _tags_of(value: Any) -> Any:
    if value.__class__ in (str, int, float, bool):
        return (_tag(value),)
    return ()


def _list_has(items: list[Any], tag: tuple[str, Any]) -> bool:
    return any(_tags_of(x) == (tag,) for x in items)


def _one_of_generic(value: Any, allowed: frozenset[tuple[str, Any]]) -> bool:
    if value.__class__ is list:
        return any(t in allowed for x in value for t in _tags_of(x))
    return any(t in allowed for t in _tags_of(value))


HELPERS: dict[str, Any] = {
    "_NUM": _NUM,
    "_SEQ": (list, str),
    "_dict": dict,
    "_list": list,
    "_str": str,
    "_list_has": _list_has,
    "_one_of_generic": _one_of_generic,
}
FAST_NAMES = tuple(HELPERS)


class _Builder:
    def __init__(self, named: NamedFields) -> None:
        self.named = named
        self.constants: list[Any] = []
        self.functions: list[str] = []
        self.counter = 0

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"c{len(self.constants) - 1}"

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # --- values -------------------------------------------------------------------------

    def getter(self, path: str, var: str) -> list[str]:
        parts = path.split(".")
        lines = [f"{var} = ctx.get({self.const(parts[0])})"]
        for part in parts[1:]:
            lines.append(
                f"{var} = {var}.get({self.const(part)}) if {var}.__class__ is _dict else None"
            )
        return lines

    def equals(self, v: str, expected: Any) -> str:
        c = self.const(expected)
        if isinstance(expected, bool):
            return f"({v} is {c} or ({v}.__class__ is _list and any(x is {c} for x in {v})))"
        if isinstance(expected, str):
            # Only a string equals a string constant: no class test before the comparison.
            return f"({v} == {c} or ({v}.__class__ is _list and {c} in {v}))"
        return (
            f"(({v}.__class__ in _NUM and {v} == {c}) or ({v}.__class__ is _list and "
            f"any(x.__class__ in _NUM and x == {c} for x in {v})))"
        )

    def one_of(self, v: str, options: list[Any]) -> str:
        if options and all(isinstance(o, str) for o in options):
            c = self.const(frozenset(options))
            return (
                f"({v} in {c} if {v}.__class__ is _str else ({v}.__class__ is _list and "
                f"any(x.__class__ is str and x in {c} for x in {v})))"
            )
        c = self.const(frozenset(_tag(o) for o in options))
        return f"({v} is not None and _one_of_generic({v}, {c}))"

    def operator(self, v: str, op: str, operand: Any) -> str:
        if op == "exists":
            return f"({v} is not None)" if operand else f"({v} is None)"
        if op == "eq":
            return self.equals(v, operand)
        if op == "ne":
            return f"({v} is None or not {self.equals(v, operand)})"
        if op == "in":
            return self.one_of(v, operand)
        if op == "not_in":
            return f"({v} is None or not {self.one_of(v, operand)})"
        if op in ("gt", "gte", "lt", "lte"):
            symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            c = self.const(operand)
            kind = "_NUM" if is_number(operand) else "(str,)"
            return f"({v}.__class__ in {kind} and {v} {symbol} {c})"
        if op == "contains":
            c = self.const(operand)
            if isinstance(operand, str):
                return f"({v}.__class__ in _SEQ and {c} in {v})"
            t = self.const(_tag(operand))
            return f"({v}.__class__ is _list and _list_has({v}, {t}))"
        if op == "starts_with":
            return f"({v}.__class__ is _str and {v}.startswith({self.const(operand)}))"
        raise ValueError(f"unknown operator {op!r}")

    def matcher(self, v: str, matcher: Any) -> str:
        if isinstance(matcher, list):
            return self.one_of(v, matcher)
        if not isinstance(matcher, Mapping):
            return self.equals(v, matcher)
        return " and ".join(self.operator(v, op, operand) for op, operand in matcher.items())

    # --- condition objects --------------------------------------------------------------

    def entry_lines(self, key: str, matcher: Any) -> list[str]:
        """Statements that ``return False`` when this entry fails."""
        if key in ("all", "any"):
            subs = [self.function(sub) for sub in matcher]
            joiner = " and " if key == "all" else " or "
            expr = joiner.join(f"{s}(ctx)" for s in subs) or ("True" if key == "all" else "False")
            return [f"if not ({expr}): return False"]
        if key == "not":
            return [f"if {self.function(matcher)}(ctx): return False"]
        v = self.fresh("v")
        return [
            *self.getter(self.named.get(key, key), v),
            f"if not ({self.matcher(v, matcher)}): return False",
        ]

    def function(self, condition: Mapping[str, Any]) -> str:
        name = self.fresh("f")
        body: list[str] = []
        first = len(self.constants)
        for key, matcher in condition.items():
            body.extend(self.entry_lines(key, matcher))
        body.append("return True")
        # This function's constants, and the helpers and builtins it names, become parameter
        # defaults: read as fast locals rather than closure cells or globals, as in closures
        # written by hand. Callers pass ``ctx`` only.
        text = "\n".join(body)
        names = [name for name in FAST_NAMES if name in text]  # a spare default costs nothing
        params = ", ".join(
            [
                "ctx",
                *(f"c{i}=c{i}" for i in range(first, len(self.constants))),
                *(f"{name}={name}" for name in names),
            ]
        )
        self.functions.append(
            f"def {name}({params}):\n" + "\n".join("    " + line for line in body)
        )
        return name


def generate(condition: Mapping[str, Any], named: NamedFields | None = None) -> Predicate:
    """Compile a *validated* condition object into one Python function."""
    builder = _Builder(named or {})
    entry = builder.function(condition)
    params = ", ".join(f"c{i}" for i in range(len(builder.constants)))
    inner = "\n".join(builder.functions)
    source = f"def _factory({params}):\n" + "\n".join(
        "    " + line for line in (inner + f"\nreturn {entry}").splitlines()
    )
    namespace: dict[str, Any] = dict(HELPERS)
    exec(
        compile(source, "<careflow-condition>", "exec"), namespace
    )  # the source holds no rule values: see module doc
    predicate: Predicate = namespace["_factory"](*builder.constants)
    return predicate

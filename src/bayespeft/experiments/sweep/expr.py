r"""The tiny expression language of sweep ``cases`` (no ``eval``): ``"${2 * adapter.r}"``.

A value in a case's ``set:`` mapping is an expression when it is a string of the form ``${...}`` (the whole
value); every other value is a literal. Expressions are parsed by the recursive-descent parser below and
evaluated over numbers only:

.. code-block:: text

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "//" | "%") unary)*
    unary   := ("-" | "+") unary | power
    power   := atom ("**" unary)?
    atom    := NUMBER | KEY | FUNC "(" expr ("," expr)* ")" | "(" expr ")"
    KEY     := NAME ("." NAME)*          a dotted config key of the run, e.g. adapter.r, train.lr
    FUNC    := min | max | int | round | abs

``KEY`` is looked up in the run's config after its axis values and literal case values are applied (a key the
config leaves at its default has the default's value). Only numbers (int, float; not booleans) can be combined;
``/`` is true division, ``//`` floor division; integer arithmetic stays integer (``2 * adapter.r`` with r = 4 is
``8``), up to 2**1024 like floats (a larger power is an overflow). Errors (:class:`ExpressionError`) name the expression and what was wrong: a syntax error and its
position, an unknown function, a key that is not a number, a division by zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<op>\*\*|//|[-+*/%(),]))"
)
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "int": int, "round": round, "abs": abs,
}
_MARK = re.compile(r"^\$\{(.*)\}$", re.S)


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated."""


def is_expression(value: Any) -> bool:
    """Whether a case value is an expression (a string ``${...}``)."""
    return isinstance(value, str) and _MARK.match(value.strip()) is not None


@dataclass(frozen=True)
class Expression:
    """A parsed expression: ``keys`` are the config keys it reads; ``evaluate(lookup)`` computes it."""

    text: str
    tree: tuple
    keys: tuple[str, ...]

    def evaluate(self, lookup: Callable[[str], Any]) -> int | float:
        """Value of the expression; ``lookup(key)`` returns a config value (``KeyError`` if there is none)."""
        return _eval(self.tree, lookup, self.text)

    def __str__(self) -> str:
        return "${" + self.text + "}"


def parse(value: str) -> Expression:
    """Parse ``"${...}"`` (or the bare inside) into an :class:`Expression`; raises :class:`ExpressionError`."""
    m = _MARK.match(value.strip())
    text = (m.group(1) if m else value).strip()
    tokens = _tokenize(text)
    parser = _Parser(tokens, text)
    tree = parser.expr()
    if parser.i != len(tokens):
        raise ExpressionError(f"in ${{{text}}}: unexpected {tokens[parser.i][1]!r} at position {tokens[parser.i][2]}")
    keys: list[str] = []
    _collect_keys(tree, keys)
    return Expression(text, tree, tuple(dict.fromkeys(keys)))


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise ExpressionError(f"in ${{{text}}}: unexpected character {text[at]!r} at position {at}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    if not out:
        raise ExpressionError("empty expression ${}")
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            raise ExpressionError(f"in ${{{self.text}}}: the expression ends too early")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _expect(self, op: str) -> None:
        kind, val, pos = self._take()
        if val != op:
            raise ExpressionError(f"in ${{{self.text}}}: expected {op!r} at position {pos}, got {val!r}")

    def expr(self) -> tuple:
        node = self.term()
        while self._peek() in ("+", "-"):
            node = ("bin", self._take()[1], node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while self._peek() in ("*", "/", "//", "%"):
            node = ("bin", self._take()[1], node, self.unary())
        return node

    def unary(self) -> tuple:
        if self._peek() in ("-", "+"):
            return ("neg" if self._take()[1] == "-" else "pos", self.unary())
        return self.power()

    def power(self) -> tuple:
        node = self.atom()
        if self._peek() == "**":
            self._take()
            node = ("bin", "**", node, self.unary())
        return node

    def atom(self) -> tuple:
        kind, val, pos = self._take()
        if kind == "num":
            return ("num", float(val) if any(c in val for c in ".eE") else int(val))
        if kind == "key":
            if self._peek() == "(":
                if val not in FUNCTIONS:
                    raise ExpressionError(f"in ${{{self.text}}}: unknown function {val!r}; functions: {', '.join(FUNCTIONS)}")
                self._take()
                args = [self.expr()]
                while self._peek() == ",":
                    self._take()
                    args.append(self.expr())
                self._expect(")")
                return ("call", val, tuple(args))
            return ("key", val)
        if val == "(":
            node = self.expr()
            self._expect(")")
            return node
        raise ExpressionError(f"in ${{{self.text}}}: unexpected {val!r} at position {pos}")


def _collect_keys(node: tuple, out: list[str]) -> None:
    if node[0] == "key":
        out.append(node[1])
    for child in node[1:]:
        if isinstance(child, tuple):
            if child and isinstance(child[0], str):
                _collect_keys(child, out)
            else:  # the argument tuple of a call
                for arg in child:
                    _collect_keys(arg, out)


def _number(value: Any, what: str, text: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"in ${{{text}}}: {what} is {value!r}, not a number")
    return value


#: Integer powers beyond this many bits overflow like floats do (2**1024): Python's exact integers would otherwise
#: compute ``9 ** 9 ** 9`` (hundreds of MB, minutes) before any config check could refuse the value.
MAX_INT_BITS = 1024


def _power(a: int | float, b: int | float) -> int | float:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and b * math.log2(abs(a)) > MAX_INT_BITS:
        raise OverflowError(f"{a} ** {b} has more than {MAX_INT_BITS} bits")
    return a**b


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
    "//": lambda a, b: a // b, "%": lambda a, b: a % b, "**": _power,
}


def _eval(node: tuple, lookup: Callable[[str], Any], text: str) -> int | float:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "key":
        try:
            value = lookup(node[1])
        except KeyError:
            raise ExpressionError(f"in ${{{text}}}: the run's config has no value for {node[1]!r}") from None
        return _number(value, node[1], text)
    if kind == "neg":
        return -_eval(node[1], lookup, text)
    if kind == "pos":
        return +_eval(node[1], lookup, text)
    if kind == "call":
        args = [_eval(a, lookup, text) for a in node[2]]
        try:
            return _number(FUNCTIONS[node[1]](*args), f"{node[1]}(...)", text)
        except TypeError as e:
            raise ExpressionError(f"in ${{{text}}}: {node[1]}(): {e}") from None
    a, b = _eval(node[2], lookup, text), _eval(node[3], lookup, text)
    try:
        out = _BINARY[node[1]](a, b)
    except ZeroDivisionError:
        raise ExpressionError(f"in ${{{text}}}: division by zero") from None
    except OverflowError:
        raise ExpressionError(f"in ${{{text}}}: the result overflows") from None
    if isinstance(out, complex) or (isinstance(out, float) and not math.isfinite(out)):
        raise ExpressionError(f"in ${{{text}}}: the result {out!r} is not a finite real number")
    return out

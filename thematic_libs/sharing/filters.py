"""Row filters of share orders: a small grammar parsed into a polars expression, never into SQL.

An order may narrow its rows: `street_code = '440605001' and capacity >= 10`, `grid_code in ('G1', 'G2')`,
`closed_at is null`. The text is tokenised and parsed here; column names must be columns of the
dataset that are not sensitive, and values are literals. Nothing of the text ever reaches a SQL
engine, so a filter cannot inject anything: what does not parse is refused with the position.

Grammar:  filter := clause (("and" | "or") clause)*      (and binds tighter than or)
          clause := column op literal | column "in" "(" literal ("," literal)* ")" | column "is" ["not"] "null"
          op     := = | != | <> | < | <= | > | >=
          literal:= 'text' (a quote doubled inside) | number | true | false
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

MAX_FILTER_CHARS = 2_000
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_COMPARE = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<>": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}


class FilterError(ValueError):
    """A filter that does not parse, or names a column it may not use."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError(f"filter: cannot read {text[position : position + 20]!r} at character {position + 1}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


def _literal(token: _Token) -> object:
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "number":
        return float(token.text) if "." in token.text else int(token.text)
    if token.kind == "word" and token.text.lower() in ("true", "false"):
        return token.text.lower() == "true"
    raise FilterError(f"filter: expected a value ('text', a number, true or false) at character {token.position + 1}")


class _Parser:
    def __init__(self, text: str, columns: Iterable[str]) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.columns = set(columns)
        self.used: list[str] = []

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _next(self, what: str) -> _Token:
        token = self._peek()
        if token is None:
            raise FilterError(f"filter: ends where {what} was expected")
        self.index += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def parse(self) -> pl.Expr:
        expression = self._or()
        token = self._peek()
        if token is not None:
            raise FilterError(f"filter: unexpected {token.text!r} at character {token.position + 1}")
        return expression

    def _or(self) -> pl.Expr:
        expression = self._and()
        while self._keyword("or"):
            expression = expression | self._and()
        return expression

    def _and(self) -> pl.Expr:
        expression = self._clause()
        while self._keyword("and"):
            expression = expression & self._clause()
        return expression

    def _clause(self) -> pl.Expr:
        token = self._next("a column")
        if token.kind == "punct" and token.text == "(":
            expression = self._or()
            closing = self._next("')'")
            if closing.text != ")":
                raise FilterError(f"filter: expected ')' at character {closing.position + 1}")
            return expression
        if token.kind != "word" or token.text not in self.columns:
            allowed = ", ".join(sorted(self.columns))
            raise FilterError(f"filter: {token.text!r} is not a column the filter may use ({allowed})")
        self.used.append(token.text)
        column = pl.col(token.text)
        if self._keyword("is"):
            negate = self._keyword("not")
            if not self._keyword("null"):
                raise FilterError(f"filter: expected `is null` or `is not null` after {token.text}")
            return column.is_not_null() if negate else column.is_null()
        if self._keyword("in"):
            opening = self._next("'('")
            if opening.text != "(":
                raise FilterError(f"filter: expected '(' after `{token.text} in`")
            values = [_literal(self._next("a value"))]
            while (separator := self._next("',' or ')'")).text == ",":
                values.append(_literal(self._next("a value")))
            if separator.text != ")":
                raise FilterError(f"filter: expected ')' at character {separator.position + 1}")
            return column.is_in(values)
        operator = self._next("an operator")
        if operator.kind != "op":
            raise FilterError(f"filter: expected an operator (= != < <= > >= in, is null) after {token.text}")
        return _COMPARE[operator.text](column, pl.lit(_literal(self._next("a value"))))


@dataclass(frozen=True)
class RowFilter:
    text: str
    expression: pl.Expr
    columns: tuple[str, ...]


def parse_filter(text: str, allowed_columns: Iterable[str]) -> RowFilter:
    """Parse an order's filter; only `allowed_columns` (the dataset's non-sensitive columns) may appear."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter: longer than {MAX_FILTER_CHARS} characters")
    if not text.strip():
        raise FilterError("filter: empty; leave --filter out to share every row")
    parser = _Parser(text, allowed_columns)
    expression = parser.parse()
    return RowFilter(text=text.strip(), expression=expression, columns=tuple(dict.fromkeys(parser.used)))

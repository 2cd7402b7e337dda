"""SQL text of the migration files: the ``{database}`` placeholder and splitting into statements.

clickhouse-connect sends one statement per request, so a file is split on the ``;`` that end
statements, ignoring those inside quotes and comments. Comments are dropped from the statements.
Only ``{database}`` is replaced: other braces (``{shard}``/``{replica}`` macros in the cluster files,
``{'a': 1}`` map literals) pass through untouched.
"""

from __future__ import annotations

DATABASE_PLACEHOLDER = "{database}"
_QUOTES = "'\"`"


def render(sql: str, database: str) -> str:
    """``sql`` with every ``{database}`` replaced by ``database`` (a checked identifier)."""
    return sql.replace(DATABASE_PLACEHOLDER, database)


def _skip_quoted(sql: str, start: int) -> int:
    """The index just past the quoted literal or identifier opening at ``start``."""
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        ch = sql[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if sql.startswith(quote, i + 1):  # a doubled quote stands for itself
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError(f"unterminated {quote} quote starting at offset {start}")


def split_statements(sql: str) -> list[str]:
    """The non-empty statements of ``sql``, without comments or the closing ``;``.

    Raises ``ValueError`` for an unterminated quote or block comment.
    """
    statements: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(sql):
        ch = sql[i]
        if ch in _QUOTES:
            end = _skip_quoted(sql, i)
            current.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = len(sql) if newline < 0 else newline
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            if close < 0:
                raise ValueError(f"unterminated /* comment starting at offset {i}")
            current.append(" ")
            i = close + 2
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [cleaned for cleaned in (s.strip() for s in statements) if cleaned]

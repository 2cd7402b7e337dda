"""Splitting migration files into statements and the ``{database}`` placeholder."""

import pytest

from tollway.warehouse.sqltext import render, split_statements


def test_splits_on_semicolons_that_end_statements() -> None:
    sql = "CREATE TABLE a (x UInt8) ENGINE = Memory;\n\nCREATE VIEW b AS SELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "CREATE VIEW b AS SELECT 1"]


def test_semicolons_in_quotes_and_comments_do_not_split() -> None:
    sql = """
    -- a comment; with a semicolon and a 'quote
    SELECT 'a;b', "c;d", `e;f` /* g; h */ FROM t; -- trailing; comment
    SELECT 'it''s; fine', 'back\\'slash;'
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].startswith("SELECT 'a;b', \"c;d\", `e;f`")
    assert "comment" not in statements[0]
    assert statements[1] == "SELECT 'it''s; fine', 'back\\'slash;'"


def test_comment_only_and_empty_statements_are_dropped() -> None:
    assert split_statements("-- nothing here\n;\n  ;\n/* nor here */") == []


@pytest.mark.parametrize("sql", ["SELECT 'open", "SELECT 1 /* open"])
def test_unterminated_quote_or_comment_is_an_error(sql: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements(sql)


def test_render_replaces_only_the_database_placeholder() -> None:
    sql = "CREATE TABLE {database}.t ON CLUSTER '{cluster}' ENGINE = X('/{shard}/{database}', '{replica}') -- {'a': 1}"
    assert render(sql, "tw") == (
        "CREATE TABLE tw.t ON CLUSTER '{cluster}' ENGINE = X('/{shard}/tw', '{replica}') -- {'a': 1}"
    )

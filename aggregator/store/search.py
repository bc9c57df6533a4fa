"""Full-text search over every version, on either backend, with one query language.

The language is PostgreSQL's ``websearch_to_tsquery``: words must all appear,
``"a phrase"`` must appear as written, ``OR`` between words or phrases accepts
either, and ``-word`` (or ``-"a phrase"``) excludes. No input is a syntax error.

* SQLite: an FTS5 table, ``versions_fts`` (porter stemming); the query is parsed
  here and written as FTS5 phrases, so no character of it is FTS5 syntax.
* PostgreSQL: the generated ``tsvector`` column ``versions.search`` (English
  stemming, a GIN index); the text goes to ``websearch_to_tsquery`` as typed.

Snippets wrap each match in ``\\x02`` … ``\\x03``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aggregator.errors import StoreError
from aggregator.store.db import Database

#: ``ts_headline`` options matching FTS5's ``snippet(..., 16)``.
_HEADLINE = "StartSel=\x02, StopSel=\x03, MaxWords=16, MinWords=6, ShortWord=2"
_PG_QUERY = "websearch_to_tsquery('english', ?)"
_PG_DOC = (
    "left(concat_ws(' … ', v.title, coalesce(nullif(v.content_text, ''), v.summary_text)), 100000)"
)


@dataclass(frozen=True, slots=True)
class Term:
    """A word or a quoted phrase, possibly excluded (``-``)."""

    text: str
    negated: bool = False


_TOKENS = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def parse(text: str) -> list[list[Term]]:
    """``text`` as alternatives (split on ``OR``), each a list of terms that must all hold.

    Raises:
        StoreError: nothing to search for, or an alternative only excludes words.
    """
    groups: list[list[Term]] = [[]]
    for match in _TOKENS.finditer(text.replace("\x00", " ")):
        sign, phrase, word = match.groups()
        if word is not None and word == "OR":
            groups.append([])
            continue
        negated = bool(sign) or (word is not None and word.startswith("-") and len(word) > 1)
        value = phrase if phrase is not None else (word or "").removeprefix("-")
        value = " ".join(re.findall(r"\w+", value))
        if value:
            groups[-1].append(Term(value, negated))
    groups = [g for g in groups if g]
    if not groups:
        raise StoreError("search text is empty (give a word or a phrase to look for)")
    for group in groups:
        if all(t.negated for t in group):
            excluded = " ".join("-" + t.text for t in group)
            raise StoreError(f"{excluded!r} only excludes: add a word that must appear")
    return groups


def fts5(text: str) -> str:
    """The FTS5 query for ``text`` (every term quoted as a phrase)."""
    alternatives = []
    for group in parse(text):
        wanted = " AND ".join(_quote(t.text) for t in group if not t.negated)
        unwanted = "".join(f" NOT {_quote(t.text)}" for t in group if t.negated)
        alternatives.append(f"({wanted}){unwanted}")
    return " OR ".join(alternatives)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def ranked(db: Database, text: str, *, limit: int, cap: int) -> tuple[list[dict[str, Any]], bool]:
    """The best ``limit`` matching versions among the newest ``cap`` matches.

    Returns rows (``entry_id``, ``version``, ``seen_at``, ``current``, ``snippet``)
    and whether more than ``cap`` matched (then only the newest were ranked).
    """
    if db.is_postgres:
        parse(text)
        floor = db.value(
            f"SELECT v.id FROM versions v WHERE v.search @@ {_PG_QUERY}"
            " ORDER BY v.id DESC LIMIT 1 OFFSET ?",
            [text, cap],
        )
        start = int(floor) + 1 if floor is not None else 0
        found = db.rows(
            "SELECT v.entry_id, v.version, v.seen_at, e.current_version_id = v.id AS current,"
            f" ts_headline('english', {_PG_DOC}, q, ?) AS snippet"
            f" FROM versions v JOIN entries e ON e.id = v.entry_id, {_PG_QUERY} AS q"
            " WHERE v.search @@ q AND v.id >= ?"
            " ORDER BY ts_rank(v.search, q) DESC, v.version LIMIT ?",
            [_HEADLINE, text, start, limit],
        )
        return found, start > 0
    query = fts5(text)
    floor = db.value(
        "SELECT rowid FROM versions_fts WHERE versions_fts MATCH ?"
        " ORDER BY rowid DESC LIMIT 1 OFFSET ?",
        [query, cap],
    )
    start = int(floor) + 1 if floor is not None else 0
    found = db.rows(
        "SELECT v.entry_id, v.version, v.seen_at, e.current_version_id = v.id AS current,"
        " snippet(versions_fts, -1, char(2), char(3), '…', 16) AS snippet"
        " FROM versions_fts JOIN versions v ON v.id = versions_fts.rowid"
        " JOIN entries e ON e.id = v.entry_id"
        " WHERE versions_fts MATCH ? AND versions_fts.rowid >= ?"
        " ORDER BY rank, v.version LIMIT ?",
        [query, start, limit],
    )
    return found, start > 0


def newest(db: Database, text: str, *, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` matching versions, with the same columns as ``ranked``."""
    if db.is_postgres:
        parse(text)
        return db.rows(
            "SELECT v.entry_id, v.version, v.seen_at, e.current_version_id = v.id AS current,"
            f" ts_headline('english', {_PG_DOC}, q, ?) AS snippet"
            f" FROM versions v JOIN entries e ON e.id = v.entry_id, {_PG_QUERY} AS q"
            " WHERE v.search @@ q ORDER BY v.id DESC LIMIT ?",
            [_HEADLINE, text, limit],
        )
    return db.rows(
        "SELECT v.entry_id, v.version, v.seen_at, e.current_version_id = v.id AS current,"
        " snippet(versions_fts, -1, char(2), char(3), '…', 16) AS snippet"
        " FROM versions_fts JOIN versions v ON v.id = versions_fts.rowid"
        " JOIN entries e ON e.id = v.entry_id"
        " WHERE versions_fts MATCH ? ORDER BY versions_fts.rowid DESC LIMIT ?",
        [fts5(text), limit],
    )


def entries_matching(db: Database, text: str, limit: int) -> tuple[str, list[Any]]:
    """A condition on ``e.id`` (and its parameters): entries with a version matching ``text``."""
    if db.is_postgres:
        parse(text)
        # the matches first, through the GIN index (a LIMIT of DISTINCT entry ids tempted
        # the planner into walking every version in entry order), then their entries
        return (
            "e.id IN (SELECT DISTINCT entry_id FROM (SELECT v.entry_id FROM versions v"
            f" WHERE v.search @@ {_PG_QUERY} LIMIT ?) AS found LIMIT ?)",
            [text, limit * 20, limit],
        )
    return (
        "e.id IN (SELECT DISTINCT v.entry_id FROM versions_fts JOIN versions v"
        " ON v.id = versions_fts.rowid WHERE versions_fts MATCH ? LIMIT ?)",
        [fts5(text), limit],
    )

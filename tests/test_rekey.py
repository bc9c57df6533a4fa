"""A story is one story when its key changes; different stories stay apart.

Polled through the real pipeline from the local HTTP server into a real SQLite file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from email.utils import parsedate_to_datetime
from pathlib import Path

from click.testing import CliRunner
from sqlite_utils import Database

from aggregator.cli import main
from aggregator.detect import detect
from aggregator.models import Item, Known, Snapshot
from aggregator.normalize import snapshot
from aggregator.store import Store, open_database
from aggregator.store.schema import migrations
from tests import liveblog_story, rekey_story
from tests.conftest import Harness
from tests.rekey_story import (
    BRIEFING,
    BRIEFING_NEXT,
    GENEVA,
    GENEVA_FIXED,
    ISTANBUL,
    ISTANBUL_FIXED,
    LIVE_15,
    LIVE_16,
    OLDER,
    REWRITE,
    REWRITE_NEW,
    TYPO,
    TYPO_FIXED,
    Story,
)


def poll_feed(harness: Harness, stories: list[Story]) -> list[tuple[str, str, str]]:
    """Serve ``stories`` as the feed, poll once; the poll's (kind, slug, fields) changes."""
    seen = len(harness.changes()) if harness.db_path.exists() else 0
    harness.server.serve("/feed.xml", rekey_story.rss(stories))
    [result] = harness.poll()
    assert result.ok, result.error
    return [(k, key.rstrip("/").rsplit("/", 1)[-1], f) for k, key, f in harness.changes()[seen:]]


def events(harness: Harness) -> list[dict]:
    return [
        json.loads(r["payload"]) for r in harness.rows("SELECT payload FROM outbox ORDER BY id")
    ]


def test_fixed_and_rewritten_slugs_move_the_story_a_daily_briefing_does_not(
    harness: Harness,
) -> None:
    """A slug typo fix and a slug rewrite are one `moved` change each; the next day's
    briefing (same title, new URL and text) is new and yesterday's removed; a feed
    that serves the old slug again moves the story back to its old key."""
    harness.add("world", "/feed.xml")
    harness.extra = (
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "edits"\npath = "{harness.tmp}/edits.jsonl"\n'
        'kinds = ["changed"]\n'
    )
    poll_feed(harness, [TYPO, REWRITE, BRIEFING, OLDER])
    ids = {r["key"]: r["id"] for r in harness.rows("SELECT id, key FROM entries")}

    got = poll_feed(harness, [BRIEFING_NEXT, TYPO_FIXED, REWRITE_NEW, OLDER])
    assert got == [
        ("new", "2026-11-28", "[]"),
        ("moved", "zelensky-erdogan-grain-corridor", '["key", "link", "summary"]'),
        ("moved", "foreign-ministers-second-round-talks", '["key", "link", "summary"]'),
        ("removed", "2026-11-27", "[]"),
    ]
    entries = harness.rows("SELECT id, key, url, version_count FROM entries ORDER BY id")
    assert len(entries) == 5
    typo = next(e for e in entries if e["id"] == ids[TYPO.link])
    assert typo == {
        "id": ids[TYPO.link], "key": TYPO_FIXED.link, "url": TYPO_FIXED.link, "version_count": 2,
    }  # fmt: skip
    keys = harness.rows(
        "SELECT key, url, replaced_at IS NOT NULL AS replaced FROM entry_keys"
        " WHERE entry_id = ? ORDER BY id",
        (typo["id"],),
    )
    assert keys == [
        {"key": TYPO.link, "url": TYPO.link, "replaced": 1},
        {"key": TYPO_FIXED.link, "url": TYPO_FIXED.link, "replaced": 0},
    ]
    moved = harness.rows(
        "SELECT entry_id, old_key, new_key, edit FROM changes WHERE kind = 'moved' ORDER BY id"
    )
    assert moved == [
        {"entry_id": ids[TYPO.link], "old_key": TYPO.link, "new_key": TYPO_FIXED.link,
         "edit": "edited"},
        {"entry_id": ids[REWRITE.link], "old_key": REWRITE.link, "new_key": REWRITE_NEW.link,
         "edit": "edited"},
    ]  # fmt: skip

    [event] = [
        e for e in events(harness) if e["kind"] == "moved" and e["entry"]["id"] == typo["id"]
    ]
    assert event["type"] == "change"
    assert event["moved"] == {
        "from": {"key": TYPO.link, "url": TYPO.link},
        "to": {"key": TYPO_FIXED.link, "url": TYPO_FIXED.link},
    }
    assert event["entry"] == {"id": typo["id"], "key": TYPO_FIXED.link, "url": TYPO_FIXED.link}
    assert event["fields"] == ["key", "link", "summary"] and event["version"] == {
        "before": 1, "after": 2,
    }  # fmt: skip
    news = [e["entry"]["url"] for e in events(harness) if e["kind"] == "new"]
    assert TYPO_FIXED.link not in news and REWRITE_NEW.link not in news
    sent = [json.loads(x) for x in (harness.tmp / "edits.jsonl").read_text().splitlines()]
    assert sorted(e["kind"] for e in sent) == ["moved", "moved"]  # kinds = ["changed"] passes moved

    got = poll_feed(harness, [BRIEFING_NEXT, TYPO, REWRITE_NEW, OLDER])  # a stale cache's copy
    assert got == [("moved", "zelensky-erdgoan-grain-corridor", '["key", "link", "summary"]')]
    [entry] = harness.rows("SELECT id, key, version_count FROM entries WHERE id = ?", (typo["id"],))
    assert entry == {"id": typo["id"], "key": TYPO.link, "version_count": 3}


def test_history_and_diff_find_a_moved_story_by_its_old_key_or_url(harness: Harness) -> None:
    """`history OLD-URL` shows the one story with every version; the digest shows the move."""
    harness.add("world", "/feed.xml")
    poll_feed(harness, [TYPO, OLDER])
    poll_feed(harness, [TYPO_FIXED, OLDER])
    db = str(harness.db_path)
    for term in (TYPO.link, TYPO_FIXED.link):
        result = CliRunner().invoke(main, ["history", term, "--db", db], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "2 versions" in result.output, result.output
        assert "moved key, link, summary (v1 → v2, edited)" in result.output
        assert f"moved: {TYPO.link} → {TYPO_FIXED.link}" in result.output
    diff = CliRunner().invoke(main, ["diff", TYPO.link, "--db", db, "--no-color"])
    assert diff.exit_code == 0, diff.output
    assert "Kyiv [-said-]{+called+} the [-call had been-]{+conversation+}" in diff.output
    digest = CliRunner().invoke(main, ["digest", "--since", "1h", "--db", db])
    assert "1 moved" in digest.output and digest.output.count(TYPO.title) == 1


def test_rekey_off_keeps_keys_apart(harness: Harness) -> None:
    """`rekey = "off"`: a new link is a new entry and the old one is removed, as before."""
    harness.add("world", "/feed.xml", rekey="off")
    poll_feed(harness, [TYPO, REWRITE, BRIEFING, OLDER])
    got = poll_feed(harness, [BRIEFING_NEXT, TYPO_FIXED, REWRITE_NEW, OLDER])
    assert got == [
        ("new", "2026-11-28", "[]"),
        ("new", "zelensky-erdogan-grain-corridor", "[]"),
        ("new", "foreign-ministers-second-round-talks", "[]"),
        ("removed", "zelensky-erdgoan-grain-corridor", "[]"),
        ("removed", "ministers-meeting-antalya", "[]"),
        ("removed", "2026-11-27", "[]"),
    ]
    assert harness.rows("SELECT count(*) AS n FROM entry_keys WHERE replaced_at IS NOT NULL") == [
        {"n": 0}
    ]


def test_two_moves_in_one_poll_pair_up_and_a_replaced_story_is_new(harness: Harness) -> None:
    """Two stories of one section both fixed in the same poll (listed in swapped order)
    each keep their own entry; live coverage replaced by the next day's (similar headline,
    same section, new text) is not taken for a move."""
    harness.add("world", "/feed.xml")
    poll_feed(harness, [GENEVA, ISTANBUL, LIVE_15, OLDER])
    ids = {r["key"]: r["id"] for r in harness.rows("SELECT id, key FROM entries")}
    got = poll_feed(harness, [LIVE_16, ISTANBUL_FIXED, GENEVA_FIXED, OLDER])
    assert got == [
        ("new", "live-ceasefire-talks-day-16", "[]"),
        ("moved", "ceasefire-talks-istanbul", '["key", "link"]'),
        ("moved", "ceasefire-talks-geneva", '["key", "link"]'),
        ("removed", "live-ceasefire-talks-day-15", "[]"),
    ]
    now = {r["key"]: r["id"] for r in harness.rows("SELECT id, key FROM entries")}
    assert now[GENEVA_FIXED.link] == ids[GENEVA.link]
    assert now[ISTANBUL_FIXED.link] == ids[ISTANBUL.link]
    links = harness.rows(
        "SELECT v.link FROM versions v JOIN entries e ON e.id = v.entry_id WHERE e.key = ?"
        " ORDER BY v.version",
        (GENEVA_FIXED.link,),
    )
    assert links == [{"link": GENEVA.link}, {"link": GENEVA_FIXED.link}]


def test_a_live_blog_post_whose_id_changes_is_moved(harness: Harness) -> None:
    """A post republished under a new id (one word of it edited) stays one entry."""
    harness.add("live", "/live.html", kind="liveblog")
    blog = liveblog_story
    posts = [blog.BEGIN, blog.CORRIDORS, blog.ARRIVE]
    renamed = replace(
        blog.BEGIN,
        ident="post-3-final",
        paragraphs=(blog.BEGIN.paragraphs[0].replace("hotel", "seaside hotel"),),
    )
    for epoch_posts in (posts, [renamed, *posts[1:]]):
        html = blog.jsonld_blog(blog.HEADLINE, epoch_posts)
        harness.server.serve("/live.html", html, content_type="text/html; charset=utf-8")
        [result] = harness.poll()
        assert result.ok, result.error
    last = harness.changes()[4:]
    assert [(k, key.rsplit("#", 1)[-1], f) for k, key, f in last] == [
        ("moved", "post-3-final", '["key", "content"]')
    ]
    [row] = harness.rows("SELECT old_key, new_key FROM changes WHERE kind = 'moved'")
    assert row == {"old_key": f"{blog.BLOG_URL}#post-3", "new_key": f"{blog.BLOG_URL}#post-3-final"}


def test_only_the_field_that_changed_is_reported(harness: Harness) -> None:
    """Feed: author-only and caption-only edits name only that field; an <em> wrapper
    dropped is no change. Page: a headline-only edit is ["title"] although the page spells
    its headline differently in JSON-LD and <h1> (under a kicker); an author-only edit is
    ["author"]; markup and figure captions (outside the article text) make no version."""
    harness.add("world", "/feed.xml")
    base = replace(OLDER, caption="Tankers at anchor off the coast.")
    emphasis = replace(base, paragraphs=(base.paragraphs[0].replace("oil", "<em>oil</em>"),))
    feed_steps = [
        (emphasis, None),
        (replace(emphasis, author="Maria Ionescu"), '["author"]'),
        (replace(emphasis, author="Maria Ionescu", caption="Tankers in port."), '["summary"]'),
        (replace(base, author="Maria Ionescu", caption="Tankers in port."), None),
    ]
    slug = OLDER.link.rsplit("/", 1)[-1]
    for step, (item, fields) in enumerate(feed_steps):
        want = [("new", slug, "[]")] if step == 0 else [("changed", slug, fields)] if fields else []
        assert poll_feed(harness, [item]) == want, f"feed step {step}"

    harness.sources = []
    harness.add("article", "/article.html", kind="page")
    page_steps = [
        ({"headline": "Talks \u2018under way\u2019 in Turkey"}, None),
        ({"headline": "Talks \u2018under way\u2019 in Antalya"}, '["title"]'),
        ({"headline": "Talks \u2018under way\u2019 in Antalya", "emphasis": False}, None),
        ({"headline": "Talks \u2018under way\u2019 in Antalya", "author": "Jane Doe"},
         '["author"]'),
        ({"headline": "Talks \u2018under way\u2019 in Antalya", "author": "Jane Doe",
          "caption": "Ministers at the hotel."}, None),
    ]  # fmt: skip
    seen = len(harness.changes())
    for step, (kwargs, fields) in enumerate(page_steps):
        headline = kwargs.pop("headline")
        body = rekey_story.article(headline, **kwargs)
        harness.server.serve("/article.html", body, content_type="text/html; charset=utf-8")
        [result] = harness.poll("article")
        assert result.ok, result.error
        got = [(k, f) for k, _, f in harness.changes()[seen:]]
        seen += len(got)
        want = [("new", "[]")] if step == 0 else [("changed", fields)] if fields else []
        assert got == want, f"page step {step}"
    [first] = harness.rows(
        "SELECT v.content_text FROM versions v JOIN entries e ON e.id = v.entry_id"
        " JOIN sources s ON s.id = e.source_id WHERE s.name = 'article' AND v.version = 1"
    )
    assert first["content_text"].startswith("Talks between the top diplomats")


def test_migration_keeps_every_row_and_the_views(tmp_path: Path) -> None:
    """0007 on a database with history: entry_keys backfilled, changes (ids, outbox
    references) kept, the CHECK widened to 'moved', and both views answer as before."""
    path = tmp_path / "old.db"
    db = open_database(path)
    migrations.apply(Database(db.conn), stop_before="0007_story_keys")
    statements = [
        "INSERT INTO sources (id, name, kind, url, config_url, added_at)"
        " VALUES (1, 'world', 'feed', 'https://n.example/rss', 'https://n.example/rss', 't0')",
        "INSERT INTO fetches (id, source_id, started_at, url, outcome) VALUES (1, 1, 't1', 'u',"
        " 'changed')",
        "INSERT INTO entries (id, source_id, key, url, title, first_seen_at, last_seen_at,"
        " version_count) VALUES (1, 1, 'talks', 'https://n.example/a', 'Second', 't1', 't2', 2)",
        "INSERT INTO versions (id, entry_id, version, title, content_hash, seen_at, fetch_id)"
        " VALUES (1, 1, 1, 'First', 'h1', 't1', 1), (2, 1, 2, 'Second', 'h2', 't2', 1)",
        "UPDATE entries SET current_version_id = 2 WHERE id = 1",
        "INSERT INTO changes (id, source_id, entry_id, kind, fields, new_version_id,"
        " detected_at, fetch_id) VALUES (7, 1, 1, 'new', '[]', 1, 't1', 1)",
        "INSERT INTO changes (id, source_id, entry_id, kind, fields, old_version_id,"
        " new_version_id, detected_at, fetch_id) VALUES (9, 1, 1, 'changed', '[\"title\"]', 1,"
        " 2, 't2', 1)",
        "INSERT INTO outbox (event_id, type, source_id, entry_id, change_id, payload,"
        " created_at) VALUES ('e9', 'change', 1, 1, 9, '{}', 't2')",
    ]
    with db.atomic():
        for sql in statements:
            db.execute(sql)
    views = {v: db.execute(f"SELECT * FROM {v} ORDER BY 1, 2").fetchall()
             for v in ("change_log", "headline_history")}  # fmt: skip
    db.close()

    store = Store.open(path)
    try:
        for view, rows in views.items():
            assert store.db.execute(f"SELECT * FROM {view} ORDER BY 1, 2").fetchall() == rows
        assert store.db.execute(
            "SELECT entry_id, source_id, key, url, first_seen_at, replaced_at FROM entry_keys"
        ).fetchall() == [(1, 1, "talks", "https://n.example/a", "t1", None)]
        assert store.db.execute(
            "SELECT id, kind, old_key, new_key FROM changes ORDER BY id"
        ).fetchall() == [(7, "new", None, None), (9, "changed", None, None)]
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store.db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        store.db.execute(
            "INSERT INTO changes (source_id, entry_id, kind, detected_at, old_key, new_key)"
            " VALUES (1, 1, 'moved', 't3', 'talks', 'talks-2')"
        )
        names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        assert {"idx_changes_detected", "idx_changes_entry", "idx_changes_source"} <= names
        assert "changes_new" not in names
    finally:
        store.close()


def _known(story: Story, position: int) -> Known:
    snap = _snap(story)
    return Known(
        position, story.link, snap.texts, snap.content_hash, 1, False, position,
        snap.item.published, last_seen="2026-11-28 12:00:00.000",
    )  # fmt: skip


def _snap(story: Story) -> Snapshot:
    summary = "".join(f"<p>{p}</p>" for p in story.paragraphs)
    published = parsedate_to_datetime(story.published).strftime("%Y-%m-%d %H:%M:%S.000")
    item = Item(story.link, story.title, story.link, story.author, summary, "", published)
    return snapshot(item)


def test_ambiguous_or_distant_pairs_are_not_linked() -> None:
    """A story that left while two identical copies arrived links to neither (a tie); the
    same headline and text published a day later is another edition, not a move."""
    stored = {TYPO.link: _known(TYPO, 0), OLDER.link: _known(OLDER, 1)}
    copy = replace(TYPO_FIXED, link=f"{rekey_story.BASE}/2026/11/28/zelensky-erdogan-call")
    listing = [_snap(TYPO_FIXED), _snap(copy), _snap(OLDER)]
    assert [c.kind for c in detect(stored, listing)] == ["new", "new", "removed"]

    next_day = replace(TYPO_FIXED, published="Sun, 29 Nov 2026 08:00:00 GMT")
    assert [c.kind for c in detect(stored, [_snap(next_day), _snap(OLDER)])] == [
        "new", "removed",
    ]  # fmt: skip
    assert [c.kind for c in detect(stored, [_snap(TYPO_FIXED), _snap(OLDER)])] == ["moved"]


def test_rekey_must_be_auto_or_off(tmp_path: Path) -> None:
    """A misspelt rekey value stops the config load, naming the key and the choices."""
    import pytest

    from aggregator import config as config_mod
    from aggregator.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text('[[sources]]\nurl = "https://x.example/feed"\nrekey = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.rekey: must be one of auto, off"):
        config_mod.load(path)


def test_a_batched_move_stays_a_move_and_passes_a_changed_filter() -> None:
    """Folding a move with a later edit keeps kind moved, from the first old key to the last
    new one; a sink whose kinds list `changed` gets it, one listing only `new` does not."""
    from aggregator.config import SinkConfig
    from aggregator.events import fold_events
    from aggregator.notify.filters import Filter

    def event(n: int, kind: str, moved: dict | None) -> dict:
        base = {
            "id": f"e{n}", "type": "change", "kind": kind, "source": {"name": "world"},
            "entry": {"id": 1, "key": "k2", "url": "u2"}, "title": {"before": "a", "after": "a"},
            "fields": ["key"] if moved else ["summary"], "diff": "", "words_changed": 3,
            "version": {"before": n, "after": n + 1},
        }  # fmt: skip
        return {**base, "moved": moved} if moved else base

    move = {"from": {"key": "k1", "url": "u1"}, "to": {"key": "k2", "url": "u2"}}
    folded = fold_events([event(1, "moved", move), event(2, "changed", None)])
    assert folded["kind"] == "moved" and folded["moved"] == move
    assert folded["fields"] == ["key", "summary"]
    wants_changed = Filter(SinkConfig(kind="stdout", name="a", kinds=["changed"]))
    wants_new = Filter(SinkConfig(kind="stdout", name="b", kinds=["new"]))
    assert wants_changed.accepts(folded) and not wants_new.accepts(folded)

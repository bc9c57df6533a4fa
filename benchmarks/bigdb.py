"""Generate a large aggregator database (default 1,000,000 versions) for the read benchmarks.

    python3 benchmarks/bigdb.py OUT.db [--versions 1000000] [--sources 10000] [--seed 1]

The schema is the real one: the file is created with ``Store.open`` (every migration runs),
then rows are bulk-inserted with ``executemany`` in large transactions. The secondary
indexes and the full-text triggers are dropped during the load and re-created exactly as
they were afterwards (the FTS index is rebuilt in one pass, which is much faster than a
trigger per row).

What it holds, seeded (the same seed gives the same rows; times are relative to ``--now``,
default the current time, so ``digest --since 24h`` finds the last day):

- sources: 80% feeds, 12% live blogs, 8% pages, polled every 2 minutes to an hour;
  a few failing.
- entries and versions over ~30 days: most entries have one version, a tail of live-updated
  stories has 20-100; pages are one article with many edits; live blogs many short posts.
  Titles ~60-90 characters, summaries ~200-400, content ~2-5 KB for pages and full-text
  feeds; words drawn from a Zipf-weighted vocabulary (common and rare words), plus known
  rare words and a known phrase (``RARE_WORDS``, ``PHRASE``) for the search benchmark, and
  the README's example story (source ``world``, key ``talks``, ``antalya``).
- changes as the pipeline writes them: new, changed (fields, edit), removed, restored;
  ``entries.current_version_id``/``version_count``/``removed_at`` consistent with them
  (see ``aggregator/store/rows.py``); every poll with changes has its ``fetches`` row, and
  unchanged polls are logged for the last ``--fetch-days`` days.
- an outbox event per change (the change event's shape) and its deliveries to two sinks.
- a last-24h slice of a few thousand changes (``--recent``; about 0.6% of the versions).

Prints rows per table, file size, bytes per version and build time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from aggregator.normalize import content_hash
from aggregator.store import Store
from aggregator.timeutil import from_db, to_db, utcnow

DAY = 86400.0
HISTORY_DAYS = 30
#: A word in three versions, and one in a single version.
RARE_WORD, UNIQUE_WORD = "quillobrant", "zephyrantic"
#: Words that occur in only a few versions, and in how many.
RARE_WORDS = {RARE_WORD: 3, UNIQUE_WORD: 1, "morvalinthe": 12}
#: A phrase in about 150 versions (its words are also common on their own).
PHRASE = "harbour bridge closure"
PHRASE_VERSIONS = 150
#: A word in roughly a third of all versions.
COMMON_WORD = "government"

_COMMON = """the of and to in a is that for on was with he it as at by said from his has
have be are an not this but had they were been their its who after new will more
would one first two people year years government minister police president state
officials city country report week day time last told also over up out about into
than when could she her before other some such while where during against under
since between three four million percent company party election court health war
military forces attack talks ceasefire prime leader public national local world news
market economy prices workers school water power energy fire storm flood rescue
officials agency council hospital border trade deal vote parliament judge trial
security crisis support plan budget tax bank rates inflation strike union protest
""".split()  # noqa: SIM905 (a word list reads better as text)

_SYLLABLES = (  # noqa: SIM905
    "ba be bi bo bu da de di do du fa fe fi fo ka ke ki ko ku la le li lo lu ma me mi mo mu"
    " na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi"
    " vo za ze zo tra tre tri pro pre bra bre gri gro ster stan mor val lin thor quen"
).split()


def build_vocab(rng: random.Random, size: int = 30000) -> list[str]:
    """Real common words first, then pronounceable made-up words (Zipf rank order)."""
    words = list(dict.fromkeys(_COMMON))
    seen = set(words) | set(RARE_WORDS) | set(PHRASE.split())
    while len(words) < size:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Corpus:
    """Pools of sentences and headlines built from a Zipf-weighted vocabulary."""

    def __init__(self, seed: int, sentences: int = 60000, titles: int = 40000) -> None:
        self.rng = random.Random(seed)
        vocab = build_vocab(self.rng)
        ranks = np.arange(len(vocab), dtype=np.float64)
        weights = 1.0 / np.power(ranks + 2.7, 1.07)
        weights /= weights.sum()
        npr = np.random.default_rng(seed)
        lengths = npr.integers(8, 25, size=sentences)
        flat = npr.choice(len(vocab), size=int(lengths.sum()), p=weights)
        self.sentences: list[str] = []
        pos = 0
        for n in lengths:
            words = [vocab[i] for i in flat[pos : pos + n]]
            pos += n
            if self.rng.random() < 0.3:  # the common word in ~1/3 of the texts
                words[self.rng.randrange(len(words))] = COMMON_WORD
            self.sentences.append(" ".join(words).capitalize() + ".")
        tlen = npr.integers(9, 14, size=titles)
        tflat = npr.choice(len(vocab), size=int(tlen.sum()), p=weights)
        self.titles: list[str] = []
        pos = 0
        for n in tlen:
            words = [vocab[i] for i in tflat[pos : pos + n]]
            pos += n
            title = " ".join(w.capitalize() if j in (0, 3) else w for j, w in enumerate(words))
            self.titles.append(title[:90])
        self.vocab = vocab

    def title(self) -> str:
        return self.rng.choice(self.titles)

    def text(self, low: int, high: int) -> str:
        target = self.rng.randint(low, high)
        parts, size = [], 0
        while size < target:
            sentence = self.rng.choice(self.sentences)
            parts.append(sentence)
            size += len(sentence) + 1
        return " ".join(parts)

    def paragraphs(self, low: int, high: int) -> str:
        target = self.rng.randint(low, high)
        paras, size = [], 0
        while size < target:
            para = self.text(250, 700)
            paras.append(para)
            size += len(para) + 2
        return "\n\n".join(paras)


# -- the skeleton: which entries, versions and changes, and when ---------------------------


@dataclass(slots=True)
class Source:
    id: int
    name: str
    kind: str  # feed, liveblog, page
    url: str
    interval: float
    phase: float
    added: float  # seconds since the history's start
    full_text: bool  # a feed carrying content:encoded
    failing: int = 0
    last_change: float = -1.0


@dataclass(slots=True)
class Entry:
    gid: int
    source: int
    key: str
    url: str
    published: float
    special: str = ""  # "talks": the README's example story
    first_seen: float = 0.0
    last_seen: float = 0.0
    removed: bool = False
    position: int | None = None
    events: int = 0  # events not yet replayed


@dataclass(slots=True)
class Plan:
    sources: list[Source] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    # (time, source id, sequence, entry gid, kind, extra)
    events: list[tuple[float, int, int, int, str, int]] = field(default_factory=list)


SECTIONS = ("world", "politics", "business", "science", "sport", "culture", "health", "tech")


def make_sources(rng: random.Random, count: int, span: float) -> list[Source]:
    sources = []
    for i in range(1, count + 1):
        roll = rng.random()
        kind = "feed" if roll < 0.80 else "liveblog" if roll < 0.92 else "page"
        site = f"news{rng.randrange(count // 3 + 1)}.example"
        section = rng.choice(SECTIONS)
        if kind == "feed":
            interval = rng.choices((300.0, 900.0, 1800.0, 3600.0), (0.1, 0.4, 0.3, 0.2))[0]
            name, url = f"{site.split('.')[0]}-{section}-{i}", f"https://{site}/{section}/rss.xml"
        elif kind == "liveblog":
            interval = rng.choice((120.0, 180.0, 300.0))
            name, url = f"live-{section}-{i}", f"https://{site}/live/{section}-{i}"
        else:
            interval = rng.choice((300.0, 600.0, 900.0))
            name, url = f"page-{section}-{i}", f"https://{site}/{section}/story-{i}"
        added = rng.uniform(0, 6 * 3600) if rng.random() < 0.85 else rng.uniform(0, span * 0.9)
        sources.append(
            Source(
                id=i, name=name, kind=kind, url=url, interval=interval,
                phase=rng.uniform(0, interval), added=added,
                full_text=kind == "feed" and rng.random() < 0.12,
                failing=rng.choice((1, 3, 7)) if rng.random() < 0.02 else 0,
            )
        )  # fmt: skip
    if sources:
        world = sources[0]
        world.name, world.kind, world.full_text, world.failing = "world", "feed", False, 0
        world.url, world.interval, world.added = "https://news.example/world/rss.xml", 300.0, 0.0
    return sources


def feed_versions(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.80:
        return 1
    if roll < 0.90:
        return 2
    if roll < 0.96:
        return rng.randint(3, 5)
    if roll < 0.99:
        return rng.randint(6, 19)
    return rng.randint(20, 100)


class Planner:
    """Lays out entries, versions and changes on each source's poll grid."""

    def __init__(self, rng: random.Random, span: float, recent_share: float) -> None:
        self.rng = rng
        self.span = span
        self.recent_share = recent_share
        self.plan = Plan()
        self.seq = 0
        self.versions = 0
        self.target = 0  # versions to plan in all (add_entry stops there)
        self.numbers: dict[int, int] = {}  # entries made so far, by source id

    def slot(self, source: Source, t: float) -> float:
        """The first poll of ``source`` at or after ``t``."""
        k = math.ceil((t - source.phase) / source.interval)
        return source.phase + max(k, 0) * source.interval

    def last_slot(self, source: Source) -> float:
        return (
            source.phase
            + math.floor((self.span - source.phase) / source.interval) * source.interval
        )

    def add_event(self, t: float, source: Source, entry: Entry, kind: str, extra: int = 0) -> None:
        self.seq += 1
        entry.events += 1
        source.last_change = max(source.last_change, t)
        self.plan.events.append((t, source.id, self.seq, entry.gid, kind, extra))

    def window(self, source: Source, length: float) -> tuple[float, float]:
        """Where an entry's (or live blog's) activity of ``length`` seconds falls."""
        end = self.span
        if self.rng.random() < self.recent_share:
            start = self.rng.uniform(max(source.added, end - DAY), end)
            return start, end
        latest = max(source.added, end - DAY - length)
        start = self.rng.uniform(source.added, latest) if latest > source.added else source.added
        return start, min(end - DAY, start + length)

    def add_entry(self, source: Source, key: str, url: str, versions: int, start: float,
                  end: float, gap: float, special: str = "") -> Entry:  # fmt: skip
        entry = Entry(
            len(self.plan.entries), source.id, key, url, start - self.rng.uniform(0, 3600)
        )
        entry.special = special
        self.plan.entries.append(entry)
        t = self.slot(source, start)
        limit = min(end, self.last_slot(source))
        times = []
        for _ in range(max(1, min(versions, self.target - self.versions))):
            if t > limit:
                break
            times.append(t)
            t = self.slot(source, t + source.interval + self.rng.expovariate(1 / gap))
        if not times:
            times.append(self.last_slot(source))
        entry.first_seen = times[0]
        self.add_event(times[0], source, entry, "new")
        for when in times[1:]:
            self.add_event(when, source, entry, "changed")
        self.versions += len(times)
        last = times[-1]
        if (
            source.kind != "page"
            and self.rng.random() < 0.025
            and last + 2 * source.interval < limit
        ):
            gone = self.slot(source, last + self.rng.uniform(source.interval, 12 * 3600))
            if gone <= limit:
                self.add_event(gone, source, entry, "removed")
                entry.removed = True
                last = gone
                if self.rng.random() < 0.2:
                    back = self.slot(source, gone + self.rng.uniform(source.interval, 6 * 3600))
                    if back <= limit:
                        room = self.versions < self.target
                        fields = 1 if room and self.rng.random() < 0.3 else 0
                        self.add_event(back, source, entry, "restored", fields)
                        self.versions += fields
                        entry.removed = False
                        last = back
        listed = self.rng.uniform(DAY, 3 * DAY) if source.kind == "feed" else self.span
        entry.last_seen = last if entry.removed else min(self.last_slot(source), last + listed)
        return entry

    def fill_source(self, source: Source, budget: int) -> None:
        rng = self.rng
        if source.kind == "page":
            start, end = self.window(source, rng.uniform(0.5, 3) * DAY)
            self.add_entry(source, source.url, source.url, budget, start, end, gap=900)
            return
        used = 0
        if source.kind == "liveblog":
            start, end = self.window(source, rng.uniform(0.3, 4) * DAY)
            while used < budget and self.versions < self.target:
                n = self.numbers[source.id] = self.numbers.get(source.id, 0) + 1
                versions = 1 if rng.random() < 0.85 else rng.randint(2, 4)
                when = rng.uniform(start, end)
                post = f"post-{source.id}-{n}"
                entry = self.add_entry(source, post, f"{source.url}#{post}", versions, when,
                                       end, gap=1200)  # fmt: skip
                used += max(entry.events, 1)
            return
        while used < budget and self.versions < self.target:
            n = self.numbers[source.id] = self.numbers.get(source.id, 0) + 1
            versions = min(feed_versions(rng), max(1, budget - used))
            gap = 1500 if versions >= 20 else rng.uniform(1800, 4 * 3600)
            start, end = self.window(source, versions * (source.interval + gap) * 2)
            if n <= 25 and end < self.span:  # the first poll lists the feed's current items
                start = source.added
            section = source.url.split("/")[3]
            day = (datetime(2026, 1, 1) + timedelta(seconds=start)).strftime("%Y/%m/%d")
            host = source.url.split("/")[2]
            url = f"https://{host}/{section}/{day}/story-{source.id}-{n}"
            entry = self.add_entry(source, url, url, versions, start, end, gap=gap)
            used += max(entry.events, 1)

    def talks(self, source: Source) -> None:
        """The README's example story: five versions in the last few hours."""
        url = "https://news.example/2026/antalya-talks"
        start = self.span - 5 * 3600
        entry = self.add_entry(source, "talks", url, 5, start, self.span, gap=1800, special="talks")
        entry.removed = False


def make_plan(rng: random.Random, versions: int, sources: int, recent: int) -> Plan:
    span = HISTORY_DAYS * DAY
    planner = Planner(rng, span, recent_share=recent / max(versions, 1))
    planner.plan.sources = make_sources(rng, sources, span)
    weight = {"feed": 1.0, "liveblog": 1.3, "page": 0.45}
    weights = [weight[s.kind] * rng.lognormvariate(0, 0.6) for s in planner.plan.sources]
    total = sum(weights)
    planner.target = versions - len(TALKS)  # room for the README's story
    for source, w in zip(planner.plan.sources, weights, strict=True):
        budget = max(1, round(versions * w / total))
        if source.kind == "page":
            budget = min(budget, 100)
        planner.fill_source(source, budget)
        if planner.versions >= versions:
            break
    feeds = [s for s in planner.plan.sources if s.kind == "feed"]
    planner.target = versions
    planner.talks(planner.plan.sources[0])
    while planner.versions < versions and feeds:  # top up with single-version feed items
        source = rng.choice(feeds)
        planner.fill_source(source, 1)
    planner.plan.events.sort()
    return planner.plan


# -- replay: texts and rows --------------------------------------------------------------


@dataclass(slots=True)
class State:
    """An entry's current text while its events are replayed."""

    title: str
    summary: str
    content: str
    author: str
    version: int = 0
    version_id: int | None = None


TALKS = (
    ("Talks in Antalya open with a call for calm",
     "Envoys met in Antalya on Monday for the first round of ceasefire talks."),
    ("Ceasefire talks in Antalya enter second day",
     "Envoys met in Antalya for a second day of ceasefire talks; no agreement yet."),
    ("Ceasefire talks stall over border map",
     "The talks stalled over the border map, officials said."),
    ("Ceasefire talks resume after overnight break",
     "The talks resumed after an overnight break, officials said."),
    ("Ceasefire agreed after three days of talks",
     "A ceasefire was agreed after three days of talks, both delegations said."),
)  # fmt: skip


class Replayer:
    """Turns the plan into rows, in time order (ids increase with time, as in a real run)."""

    def __init__(self, plan: Plan, corpus: Corpus, start: datetime, rng: random.Random) -> None:
        self.plan = plan
        self.corpus = corpus
        self.rng = rng
        self.start = start
        self.epoch = start.timestamp()
        self.days: dict[int, str] = {}
        self.sources = {s.id: s for s in plan.sources}
        self.states: dict[int, State] = {}
        self.entry_ids: dict[int, int] = {}
        # gid -> (current version id, version count, current title)
        self.current: dict[int, tuple[int, int, str]] = {}
        self.removed_at: dict[int, str] = {}
        self.authors = [f"{corpus.title().split()[0]} {corpus.title().split()[1]}".title()
                        for _ in range(400)]  # fmt: skip
        self.rare = self._rare_targets()
        self.counts = dict.fromkeys(("versions", "changes", "fetches", "outbox"), 0)

    def _rare_targets(self) -> dict[int, str]:
        """Which new-entry events carry a rare word or the phrase (by event index)."""
        news = [
            i
            for i, ev in enumerate(self.plan.events)
            if ev[4] == "new" and not self.plan.entries[ev[3]].special
        ]
        targets: dict[int, str] = {}
        for word, n in RARE_WORDS.items():
            for i in self.rng.sample(news, min(n, len(news))):
                targets[i] = word
        for i in self.rng.sample(news, min(PHRASE_VERSIONS, len(news))):
            targets.setdefault(i, PHRASE)
        return targets

    def at(self, t: float) -> str:
        """Database text of ``t`` seconds after the start (``to_db``, without its cost)."""
        ms = round((self.epoch + t) * 1000)
        day, rest = divmod(ms, 86_400_000)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = self.days[day] = to_db(datetime.fromtimestamp(day * 86400, UTC))[:10]
        secs, milli = divmod(rest, 1000)
        h, rem = divmod(secs, 3600)
        return f"{prefix} {h:02d}:{rem // 60:02d}:{rem % 60:02d}.{milli:03d}"

    def first_text(self, source: Source, entry: Entry, inject: str | None) -> State:
        c = self.corpus
        if entry.special == "talks":
            title, summary = TALKS[0]
            return State(title, summary, "", "Staff reporter")
        title, summary = c.title(), c.text(200, 400)
        if source.kind == "page" or source.full_text:
            content = c.paragraphs(2000, 3500)
        elif source.kind == "liveblog":
            content, summary = c.paragraphs(300, 1200), ""
        else:
            content = ""
        if inject:
            words = summary.split(" ") if summary else content.split(" ")
            words.insert(self.rng.randrange(1, len(words)), inject)
            if summary:
                summary = " ".join(words)
            else:
                content = " ".join(words)
        return State(title, summary, content, self.rng.choice(self.authors))

    def edit(self, source: Source, entry: Entry, state: State) -> tuple[list[str], str | None]:
        """Change the entry's text as a publisher would; return (fields, edit)."""
        c, rng = self.corpus, self.rng
        if entry.special == "talks":
            state.title, state.summary = TALKS[min(state.version, len(TALKS) - 1)]
            return ["title", "summary"], "edited"
        has_content = bool(state.content)
        roll = rng.random()
        if has_content and source.kind in ("page", "liveblog") and roll < 0.55:
            if len(state.content) < 5000:
                state.content += "\n\n" + c.text(250, 600)
                return ["content"], "appended"
            roll = 0.9
        if roll < 0.35 or (not state.summary and not has_content):
            state.title = self._reword(state.title)
            return ["title"], None
        if roll < 0.55:
            state.title = self._reword(state.title)
            if state.summary:
                state.summary = self._resentence(state.summary)
                return ["title", "summary"], "edited"
            return ["title"], None
        if state.summary and (not has_content or roll < 0.8):
            if rng.random() < 0.3:
                state.summary += " " + c.text(60, 140)
                return ["summary"], "appended"
            state.summary = self._resentence(state.summary)
            return ["summary"], "edited"
        state.content = self._resentence(state.content)
        return ["content"], "edited"

    def _reword(self, title: str) -> str:
        words = title.split()
        for _ in range(self.rng.randint(1, 3)):
            words[self.rng.randrange(len(words))] = self.rng.choice(self.corpus.vocab[:3000])
        return " ".join(words)[:90]

    def _resentence(self, text: str) -> str:
        sentences = text.split(". ")
        i = self.rng.randrange(len(sentences))
        sentences[i] = self.rng.choice(self.corpus.sentences).rstrip(".")
        return ". ".join(sentences)

    def rows(self) -> Iterator[tuple[str, tuple[object, ...]]]:
        """Yield ``(table, row)`` in time order; entries come at the end (their final state)."""
        fetch_key: tuple[float, int] | None = None
        fetch_id = 0
        fetch_changes = 0
        delivery_id = 0
        for index, (t, sid, _seq, gid, kind, extra) in enumerate(self.plan.events):
            source, entry = self.sources[sid], self.plan.entries[gid]
            when = self.at(t)
            if fetch_key != (t, sid):
                if fetch_key is not None:
                    yield "fetches", self.fetch_row(fetch_id, fetch_key, "changed", fetch_changes)
                fetch_key, fetch_changes = (t, sid), 0
                fetch_id += 1
            fetch_changes += 1
            change = self.apply(index, source, entry, kind, extra, when, fetch_id)
            for table, row in change:
                yield table, row
                if table == "outbox":
                    delivery_id += 1
                    yield from self.deliveries(delivery_id, int(row[0]), when)  # type: ignore[arg-type]
        if fetch_key is not None:
            yield "fetches", self.fetch_row(fetch_id, fetch_key, "changed", fetch_changes)
        self.counts["fetches"] = fetch_id

    def apply(self, index: int, source: Source, entry: Entry, kind: str, extra: int, when: str,
              fetch_id: int) -> list[tuple[str, tuple[object, ...]]]:  # fmt: skip
        out: list[tuple[str, tuple[object, ...]]] = []
        gid = entry.gid
        fields: list[str] = []
        edit = None
        old_id, count = self.current[gid][:2] if gid in self.current else (None, 0)
        new_id = None
        state = self.states.get(gid)
        if kind == "new":
            self.entry_ids[gid] = len(self.entry_ids) + 1
            state = self.states[gid] = self.first_text(source, entry, self.rare.get(index))
            new_id = self.new_version(out, source, entry, state, when, fetch_id)
        elif kind == "changed" or (kind == "restored" and extra):
            assert state is not None
            fields, edit = self.edit(source, entry, state)
            new_id = self.new_version(out, source, entry, state, when, fetch_id)
        elif kind == "restored":
            new_id = old_id
        if kind == "removed":
            self.removed_at[gid] = when
        elif kind == "restored":
            self.removed_at.pop(gid, None)
        entry_id = self.entry_ids[gid]
        self.counts["changes"] += 1
        change_id = self.counts["changes"]
        out.append(("changes", (
            change_id, source.id, entry_id, kind, json.dumps(fields), edit, old_id, new_id,
            when, fetch_id,
        )))  # fmt: skip
        assert state is not None
        after = self.current[gid][1]
        payload = self.payload(source, entry, kind, fields, edit, state, (count or None, after),
                               when, entry_id)  # fmt: skip
        if kind == "removed":
            payload["version"] = {"before": count, "after": None}
        self.counts["outbox"] += 1
        out.append(("outbox", (
            self.counts["outbox"], payload["id"], "change", source.id, entry_id, change_id,
            json.dumps(payload, ensure_ascii=False), when,
        )))  # fmt: skip
        entry.events -= 1
        if entry.events == 0:
            self.states.pop(gid, None)
        return out

    def new_version(self, out: list[tuple[str, tuple[object, ...]]], source: Source,
                    entry: Entry, state: State, when: str, fetch_id: int) -> int:  # fmt: skip
        state.version += 1
        self.counts["versions"] += 1
        vid = self.counts["versions"]
        texts = {"title": state.title, "link": entry.url, "author": state.author,
                 "summary": state.summary, "content": state.content}  # fmt: skip
        summary_html = f"<p>{state.summary}</p>" if state.summary else None
        content_html = (
            "".join(f"<p>{p}</p>" for p in state.content.split("\n\n")) if state.content else None
        )
        out.append(("versions", (
            vid, self.entry_ids[entry.gid], state.version, state.title, entry.url, state.author,
            summary_html, content_html, state.summary, state.content,
            self.at(entry.published), when if state.version > 1 else None, content_hash(texts),
            when, fetch_id,
        )))  # fmt: skip
        self.current[entry.gid] = (vid, state.version, state.title)
        return vid

    def payload(self, source: Source, entry: Entry, kind: str, fields: list[str],
                edit: str | None, state: State, versions: tuple[int | None, int],
                when: str, entry_id: int) -> dict[str, object]:  # fmt: skip
        text = state.content or state.summary
        diff = ""
        if fields:
            diff = f"…[-{self.corpus.title()[:30]}-] {{+{state.title[:30]}+}}…"
        return {
            "id": f"{self.rng.getrandbits(128):032x}",
            "type": "change",
            "kind": kind,
            "source": {"name": source.name, "url": source.url, "kind": source.kind},
            "entry": {"id": entry_id, "key": entry.key, "url": entry.url},
            "title": {"before": None if kind == "new" else state.title, "after": state.title},
            "fields": fields,
            "edit": edit,
            "diff": diff,
            "words_changed": len(diff.split()) if diff else 0,
            "excerpt": text if len(text) <= 300 else text[:299].rstrip() + "…",
            "version": {"before": versions[0], "after": versions[1]},
            "detected_at": when,
        }

    def deliveries(self, delivery_id: int, outbox_id: int,
                   when: str) -> Iterator[tuple[str, tuple[object, ...]]]:  # fmt: skip
        """Every event to the ``log`` sink; about one in ten to ``alerts`` (a filter)."""
        done = self.at_plus(when, self.rng.uniform(0.05, 3))
        yield "deliveries", (None, 1, outbox_id, "[]", None, "delivered", 1, when, None, None,
                             when, done)  # fmt: skip
        yield "delivery_attempts", (None, None, 1, done, "delivered", None, None,
                                    self.rng.randint(1, 40))  # fmt: skip
        if self.rng.random() < 0.1:
            yield "deliveries", (None, 2, outbox_id, "[]", None, "delivered", 1, when, None, None,
                                 when, done)  # fmt: skip
            yield "delivery_attempts", (None, None, 2, done, "delivered", 200, None,
                                        self.rng.randint(40, 400))  # fmt: skip

    def at_plus(self, when: str, seconds: float) -> str:
        return self.at(from_db(when).timestamp() - self.epoch + seconds)

    def fetch_row(self, fetch_id: int, key: tuple[float, int], outcome: str,
                  changes: int) -> tuple[object, ...]:  # fmt: skip
        t, sid = key
        source = self.sources[sid]
        size = {"feed": 60000, "liveblog": 250000, "page": 120000}[source.kind]
        return (
            fetch_id, sid, self.at(t), source.url, source.url, 200, outcome,
            int(size * self.rng.uniform(0.5, 1.5)), self.rng.randint(40, 900),
            f'"{fetch_id:x}"', None, None, 40 if source.kind == "feed" else 1, changes,
            self.rng.randint(0, 50), self.rng.randint(2, 80),
        )  # fmt: skip

    def entry_rows(self) -> Iterator[tuple[object, ...]]:
        """Each entry's final state, consistent with its versions and changes."""
        listed: dict[int, list[Entry]] = {}
        for entry in self.plan.entries:
            if entry.gid in self.entry_ids and entry.gid not in self.removed_at:
                listed.setdefault(entry.source, []).append(entry)
        position: dict[int, int] = {}
        for entries in listed.values():  # top of the listing: last seen latest, newest first
            entries.sort(key=lambda e: (-e.last_seen, -e.first_seen))
            position.update((e.gid, i) for i, e in enumerate(entries))
        for entry in self.plan.entries:
            entry_id = self.entry_ids.get(entry.gid)
            if entry_id is None:
                continue
            vid, count, title = self.current[entry.gid]
            yield (
                entry_id, entry.source, entry.key, entry.url, title, self.at(entry.published),
                self.at(entry.first_seen), self.at(entry.last_seen),
                self.removed_at.get(entry.gid), position.get(entry.gid), count, vid,
            )  # fmt: skip


# -- loading -----------------------------------------------------------------------------

_BIG_TABLES = ("versions", "changes", "entries", "outbox", "fetches", "deliveries",
               "delivery_attempts")  # fmt: skip

_INSERTS = {
    "versions": 15,
    "changes": 10,
    "outbox": 8,
    "fetches": 16,
    "deliveries": 12,
    "delivery_attempts": 8,
}
_COLUMNS = {
    "versions": "id, entry_id, version, title, link, author, summary, content, summary_text,"
    " content_text, published_at, updated_at, content_hash, seen_at, fetch_id",
    "changes": "id, source_id, entry_id, kind, fields, edit, old_version_id, new_version_id,"
    " detected_at, fetch_id",
    "outbox": "id, event_id, type, source_id, entry_id, change_id, payload, created_at",
    "fetches": "id, source_id, started_at, url, final_url, status, outcome, bytes, duration_ms,"
    " etag, last_modified, error, entries, changes, queued_ms, parse_ms",
    "deliveries": "id, sink_id, outbox_id, folded, batch_key, status, attempts, due_at,"
    " next_attempt_at, last_error, created_at, updated_at",
    "delivery_attempts": "id, delivery_id, sink_id, at, status, code, error, duration_ms",
}


def drop_for_load(conn: sqlite3.Connection) -> list[str]:
    """Drop the big tables' secondary indexes and the FTS triggers; return their SQL."""
    marks = ",".join("?" * len(_BIG_TABLES))
    rows = conn.execute(
        f"SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ({marks})"
        " AND sql IS NOT NULL AND type IN ('index', 'trigger') ORDER BY type, name",
        _BIG_TABLES,
    ).fetchall()
    for kind, name, _sql in rows:
        conn.execute(f"DROP {kind.upper()} {name}")
    return [sql for _kind, _name, sql in rows]


def fts_tables(conn: sqlite3.Connection) -> list[str]:
    """FTS5 tables whose content is the ``versions`` table (rebuilt after the load)."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql LIKE '%fts5%'"
    ).fetchall()
    return [name for name, sql in rows if "content='versions'" in sql.replace('"', "'")]


def write_sources(conn: sqlite3.Connection, plan: Plan, rep: Replayer) -> None:
    rows = []
    for s in plan.sources:
        last_poll = rep.at(
            s.phase + math.floor((HISTORY_DAYS * DAY - s.phase) / s.interval) * s.interval
        )
        error = "HTTP 503 Service Unavailable" if s.failing else None
        rows.append((
            s.id, s.name, s.kind, s.url, s.url, f"{s.name.title()} news", s.interval, 1,
            rep.at(s.added), last_poll, rep.at_plus(last_poll, -s.failing * s.interval) if
            s.failing else last_poll, rep.at(s.last_change) if s.last_change >= 0 else None,
            error, last_poll if s.failing else None, s.failing, f'"{s.id}"', None, None,
            rep.at_plus(last_poll, s.interval), s.interval * (2 ** min(s.failing, 3)),
            f"backoff after {s.failing} failures" if s.failing else "active",
        ))  # fmt: skip
    conn.executemany(
        "INSERT INTO sources (id, name, kind, url, config_url, title, interval_seconds, active,"
        " added_at, last_fetch_at, last_success_at, last_change_at, last_error, last_error_at,"
        " consecutive_failures, etag, last_modified, body_sha256, next_check_at,"
        " interval_now_seconds, schedule_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    now = rep.at(HISTORY_DAYS * DAY)
    conn.executemany(
        "INSERT INTO sinks (id, name, kind, active, added_at, cursor) VALUES (?, ?, ?, 1, ?, ?)",
        [(1, "log", "jsonl", rep.at(0), 0), (2, "alerts", "webhook", rep.at(0), 0)],
    )
    conn.execute(
        "INSERT INTO daemon_state (id, pid, state, started_at, heartbeat_at, config_path,"
        " summary, inflight, network) VALUES (1, 4242, 'running', ?, ?, '/etc/aggregator.toml',"
        " '', '[]', 'up')",
        [rep.at(0), now],
    )


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low))


def unchanged_fetches(plan: Plan, rep: Replayer, days: float, first_id: int
                      ) -> Iterator[tuple[object, ...]]:  # fmt: skip
    """Unchanged polls of every source over the last ``days`` (the ones with changes are
    already logged); older unchanged rows are left out, as if pruned."""
    span = HISTORY_DAYS * DAY
    changed = {(ev[1], ev[0]) for ev in plan.events if ev[0] >= span - days * DAY}
    fid = first_id
    rng = rep.rng
    for s in plan.sources:
        k = math.ceil((span - days * DAY - s.phase) / s.interval)
        while (t := s.phase + k * s.interval) <= span:
            k += 1
            if (s.id, t) not in changed:
                fid += 1
                if s.failing and t > span - s.failing * s.interval:
                    yield (fid, s.id, rep.at(t), s.url, None, 503, "error", None,
                           _between(rng, 100, 3000), None, None, "HTTP 503 Service Unavailable",
                           None, 0, _between(rng, 0, 50), None)  # fmt: skip
                else:
                    outcome = "not_modified" if rng.random() < 0.6 else "same_body"
                    yield (fid, s.id, rep.at(t), s.url, s.url, 304 if outcome == "not_modified"
                           else 200, outcome, 0 if outcome == "not_modified" else 60000,
                           _between(rng, 30, 600), f'"{s.id}"', None, None, None, 0,
                           _between(rng, 0, 50), None)  # fmt: skip


def fill_entry_keys(conn: sqlite3.Connection) -> None:
    """Each entry's current key in ``entry_keys`` (schema 0007), as the pipeline records it."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entry_keys'").fetchone():
        conn.execute(
            "INSERT INTO entry_keys (entry_id, source_id, key, url, first_seen_at)"
            " SELECT id, source_id, key, url, first_seen_at FROM entries ORDER BY id"
        )


def load(path: Path, plan: Plan, rep: Replayer, fetch_days: float) -> dict[str, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    conn.execute("PRAGMA temp_store = MEMORY")
    saved = drop_for_load(conn)
    conn.execute("BEGIN")
    write_sources(conn, plan, rep)
    buffers: dict[str, list[tuple[object, ...]]] = {t: [] for t in _INSERTS}
    ids = {"deliveries": 0, "delivery_attempts": 0}
    pending = 0

    def flush() -> None:
        for table, rows in buffers.items():
            if rows:
                marks = ",".join("?" * _INSERTS[table])
                conn.executemany(f"INSERT INTO {table} ({_COLUMNS[table]}) VALUES ({marks})", rows)
                rows.clear()
        conn.execute("COMMIT")
        conn.execute("BEGIN")

    for table, row in rep.rows():
        if table == "deliveries":
            ids["deliveries"] += 1
            row = (ids["deliveries"], *row[1:])
        elif table == "delivery_attempts":
            ids["delivery_attempts"] += 1
            row = (ids["delivery_attempts"], ids["deliveries"], *row[2:])
        buffers[table].append(row)
        pending += 1
        if pending >= 200_000:
            flush()
            pending = 0
            print(f"  … {rep.counts['versions']:,} versions", file=sys.stderr, flush=True)
    flush()
    conn.executemany(
        "INSERT INTO entries (id, source_id, key, url, title, published_at, first_seen_at,"
        " last_seen_at, removed_at, position, version_count, current_version_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rep.entry_rows(),
    )
    fill_entry_keys(conn)
    conn.executemany(
        f"INSERT INTO fetches ({_COLUMNS['fetches']}) VALUES ({','.join('?' * 16)})",
        unchanged_fetches(plan, rep, fetch_days, rep.counts["fetches"]),
    )
    newest = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
    conn.execute("UPDATE sinks SET cursor = ?", [newest])
    conn.execute("COMMIT")
    print("  indexes and full-text index …", file=sys.stderr, flush=True)
    conn.execute("BEGIN")
    for name in fts_tables(conn):
        conn.execute(f"INSERT INTO {name} ({name}) VALUES ('rebuild')")
    for sql in saved:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {}
    for (table,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name NOT LIKE '%fts_%' ORDER BY name"
    ).fetchall():
        counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    conn.close()
    return counts


def table_sizes(path: Path) -> dict[str, int]:
    """Bytes per table and index (dbstat), or nothing where dbstat is not compiled in."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    except sqlite3.Error:
        rows = []
    conn.close()
    return dict(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="database file to create (replaced)")
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--recent", type=int, default=None,
        help="changes in the last 24 h (default: 0.6%% of --versions, at least 20)",
    )  # fmt: skip
    parser.add_argument("--fetch-days", type=float, default=1.0,
                        help="days of unchanged polls kept in fetches (default 1)")  # fmt: skip
    parser.add_argument("--now", help="end of the history (database time; default: now)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    recent = args.recent if args.recent is not None else max(20, round(args.versions * 0.006))
    now = from_db(args.now) if args.now else utcnow()
    start = now - timedelta(days=HISTORY_DAYS)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{args.out}{suffix}").unlink(missing_ok=True)
    Store.open(args.out).close()  # the real schema, every migration applied

    rng = random.Random(args.seed)
    plan = make_plan(rng, args.versions, min(args.sources, max(args.versions // 20, 1)), recent)
    corpus = Corpus(args.seed)
    rep = Replayer(plan, corpus, start, rng)
    planned = time.monotonic()
    print(
        f"planned {len(plan.events):,} changes of {len(plan.entries):,} entries in"
        f" {planned - started:.1f} s",
        file=sys.stderr,
    )
    counts = load(args.out, plan, rep, args.fetch_days)
    elapsed = time.monotonic() - started
    size = args.out.stat().st_size
    versions = counts.get("versions", 0)
    print(f"database        {args.out}")
    for table, n in counts.items():
        print(f"  {table:<22} {n:>12,} rows")
    print(f"file size       {size / 1e6:,.1f} MB")
    print(f"bytes/version   {size / max(versions, 1):,.0f}")
    print(f"build time      {elapsed:,.1f} s")
    sizes = table_sizes(args.out)
    if sizes:
        print("largest tables and indexes:")
        for name, n in list(sizes.items())[:12]:
            print(f"  {name:<28} {n / 1e6:>9,.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rekeying: the same story listed under a new key (a fixed slug, a new guid). Pure, no I/O.

Within one complete listing of one source, an entry the previous listing had
that is missing now (``M``) and an entry listed for the first time (``N``) are
one story moved to a new key when one of these rules holds:

``alias``
    ``N``'s key is a key ``M`` had before (a move undone).
``headline``
    Equal headlines (normalised: case, quotes, punctuation and spacing aside)
    and text similarity >= ``HEADLINE_TEXT``; not when that headline is
    recurring (another stored or listed entry of the source has it).
``slug``
    Links differ only in the last path segment (same host, same rest of
    path, same query) and not only in its digits (``525.html`` and
    ``526.html`` are two items of a catalogue, not a fixed slug); headline
    similarity >= ``SLUG_TITLE``, text similarity >= ``SLUG_TEXT`` and the two
    adding up to ``SLUG_SUM`` (an equal headline needs text >= 0.5, a headline
    0.8 alike text >= 0.7); not for a recurring headline. Items with too
    little text to compare need equal headlines and equal published times.
``text``
    Text similarity >= ``SAME_TEXT`` (whatever the headline), with at least
    ``SAME_TEXT_WORDS`` words on both sides (short templated texts look alike).

Text similarity is ``difflib``'s ratio over the words of summary and content
(case and punctuation aside; the first ``MAX_WORDS``), needing ``MIN_WORDS``
words on both sides; headline similarity is the same ratio over characters.
Only pairs found through indexes are scored: the new key is an old key of the
missing entry, equal headlines, or at least ``SHINGLE_SHARE`` of the shorter
text's word 3-grams shared. Never linked: a pair whose published times (both
known) are more than ``MAX_PUBLISHED_GAP`` apart (a daily edition), headline
equality alone, or a pair whose best score is tied with another candidate of
either side within ``TIE`` (ambiguous). Pairs are taken best score first, each
entry once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import SequenceMatcher
from functools import cached_property
from urllib.parse import urlsplit

from aggregator.models import Known, Snapshot
from aggregator.normalize import normal_title

HEADLINE_TEXT = 0.8
SLUG_TITLE = 0.6
SLUG_TEXT = 0.5
SLUG_SUM = 1.5
SAME_TEXT = 0.9
MIN_WORDS = 8
SAME_TEXT_WORDS = 20
MAX_WORDS = 400
MAX_PUBLISHED_GAP = 12 * 3600.0
TIE = 0.02
SHINGLE = 3
SHINGLE_SHARE = 0.2

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, slots=True)
class Link:
    """``old`` (missing) is listed again as ``new``, by ``rule`` with ``score``."""

    old: Known
    new: Snapshot
    rule: str
    score: float


@dataclass
class _Side:
    """What the rules compare of one entry (stored or just listed)."""

    key: str
    texts: Mapping[str, str]
    published: str | None
    aliases: tuple[str, ...] = ()

    @cached_property
    def title(self) -> str:
        return normal_title(self.texts.get("title", ""))

    @cached_property
    def words(self) -> list[str]:
        text = f"{self.texts.get('summary', '')}\n{self.texts.get('content', '')}"
        return _WORD.findall(text.casefold())[:MAX_WORDS]

    @cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    @cached_property
    def title_set(self) -> frozenset[str]:
        return frozenset(self.title)

    @cached_property
    def shingles(self) -> set[tuple[str, ...]]:
        w = self.words
        return {tuple(w[i : i + SHINGLE]) for i in range(max(len(w) - SHINGLE + 1, 0))}

    @cached_property
    def slot(self) -> tuple[str, str, str] | None:
        """(host, path without its last segment, query) of the link; ``None`` if no slug."""
        parts = urlsplit(self.texts.get("link", ""))
        head, _, slug = parts.path.rstrip("/").rpartition("/")
        if not parts.hostname or not slug:
            return None
        return (parts.hostname, head, parts.query)

    @cached_property
    def path(self) -> str:
        return urlsplit(self.texts.get("link", "")).path

    @cached_property
    def slug_words(self) -> tuple[str, ...]:
        """The letters of the link's last path segment, digits and separators aside."""
        return tuple(_LETTERS.findall(self.path.rstrip("/").rpartition("/")[2].casefold()))

    @cached_property
    def when(self) -> datetime | None:
        return _moment(self.published)


def text_similarity(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Word-level similarity of two texts (0..1); ``None`` when either is too short."""
    if len(a) < MIN_WORDS or len(b) < MIN_WORDS:
        return None
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def title_similarity(a: str, b: str) -> float:
    """Character-level similarity of two normalised headlines (0..1)."""
    if not a or not b:
        return 0.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def find_links(
    missing: Sequence[Known],
    fresh: Sequence[Snapshot],
    *,
    stored: Iterable[Known] = (),
    listed: Iterable[Snapshot] = (),
) -> list[Link]:
    """The one-to-one links between ``missing`` entries and ``fresh`` (never stored) items.

    Args:
        missing: entries the previous listing had and this one lacks (not removed).
        fresh: items of this listing whose key is not stored.
        stored: every stored entry of the source (to spot recurring headlines).
        listed: every item of this listing (idem).
    """
    if not missing or not fresh:
        return []
    olds = [_Side(k.key, k.texts, k.published, k.aliases) for k in missing]
    news = [_Side(s.item.key, s.texts, s.item.published) for s in fresh]
    pairs = _candidates(olds, news)
    if not pairs:  # the usual poll: what left and what arrived have nothing in common
        return []
    recurring = _recurring_titles(stored, listed, {olds[i].title for i, _ in pairs})
    scored: list[tuple[float, int, int, str]] = []
    for i, j in pairs:
        rule = _rule(olds[i], news[j], recurring)
        if rule is not None:
            scored.append((rule[0], i, j, rule[1]))
    return [
        Link(missing[i], fresh[j], rule, round(score, 3)) for score, i, j, rule in _match(scored)
    ]


def _recurring_titles(
    stored: Iterable[Known], listed: Iterable[Snapshot], titles: set[str]
) -> set[str]:
    """Those of ``titles`` held by more than one stored entry or more than one listed item."""
    recurring: set[str] = set()
    for texts in ([k.texts for k in stored], [s.texts for s in listed]):
        seen: set[str] = set()
        for text in texts:
            title = normal_title(text.get("title", ""))
            if title in titles and title in seen:
                recurring.add(title)
            seen.add(title)
    return recurring


def _candidates(olds: Sequence[_Side], news: Sequence[_Side]) -> set[tuple[int, int]]:
    """Pairs worth scoring: an old key as alias, the same headline, or shared text.

    Shared text means at least ``SHINGLE_SHARE`` of the shorter side's word 3-grams
    (and two); an edit that keeps half the words keeps far more of its phrases. Found
    through indexes, so a feed whose whole window turned over costs no all-pairs work.
    """
    by_alias: dict[str, list[int]] = defaultdict(list)
    by_title: dict[str, list[int]] = defaultdict(list)
    by_shingle: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, old in enumerate(olds):
        for alias in old.aliases:
            by_alias[alias].append(i)
        if old.title:
            by_title[old.title].append(i)
        for shingle in old.shingles:
            by_shingle[shingle].append(i)
    pairs: set[tuple[int, int]] = set()
    for j, new in enumerate(news):
        pairs.update((i, j) for i in by_alias.get(new.key, ()))
        pairs.update((i, j) for i in by_title.get(new.title, ()))
        shared: dict[int, int] = defaultdict(int)
        for shingle in new.shingles:
            for i in by_shingle.get(shingle, ()):
                shared[i] += 1
        for i, count in shared.items():
            if count >= max(2, SHINGLE_SHARE * min(len(olds[i].shingles), len(new.shingles))):
                pairs.add((i, j))
    return pairs


def _rule(old: _Side, new: _Side, recurring: set[str]) -> tuple[float, str] | None:
    """(score, rule name) when ``old`` and ``new`` are one story, else ``None``.

    Cheap upper bounds (shared words and characters) rule most pairs out before any
    ``difflib`` ratio is computed.
    """
    if new.key in old.aliases:
        return 3.0, "alias"
    if old.when and new.when and abs((old.when - new.when).total_seconds()) > MAX_PUBLISHED_GAP:
        return None
    fresh_title = bool(old.title) and old.title not in recurring
    same_title = fresh_title and old.title == new.title
    slot = fresh_title and old.slot is not None and old.slot == new.slot
    slot = slot and old.slug_words != new.slug_words  # not an id like 525.html -> 526.html
    slot = slot and _bound(old.title, new.title, old.title_set, new.title_set) >= SLUG_TITLE
    if len(old.words) < MIN_WORDS or len(new.words) < MIN_WORDS:  # too little text
        if slot and same_title and old.when is not None and old.when == new.when:
            return 2.0, "slug"
        return None
    need = min(HEADLINE_TEXT if same_title else SAME_TEXT, SLUG_TEXT if slot else SAME_TEXT)
    if _bound(old.words, new.words, old.word_set, new.word_set) < need:
        return None
    text = text_similarity(old.words, new.words) or 0.0
    title = title_similarity(old.title, new.title)
    score = title + text
    if same_title and text >= HEADLINE_TEXT:
        return score, "headline"
    if slot and title >= SLUG_TITLE and text >= SLUG_TEXT and title + text >= SLUG_SUM:
        return score, "slug"
    if text >= SAME_TEXT and min(len(old.words), len(new.words)) >= SAME_TEXT_WORDS:
        return score, "text"
    return None


def _bound(a: Sequence[str], b: Sequence[str], sa: frozenset[str], sb: frozenset[str]) -> float:
    """An upper bound of the ``difflib`` ratio of ``a`` and ``b`` (``sa``/``sb``: their sets).

    Each distinct element of one side that the other lacks is at least one unmatched
    element, so at most ``len(a) - len(sa - sb)`` elements match (and as much for ``b``).
    """
    if not a or not b:
        return 0.0
    shared = len(sa & sb)
    matched = min(len(a) - len(sa) + shared, len(b) - len(sb) + shared)
    return 2 * matched / (len(a) + len(b))


def _match(scored: list[tuple[float, int, int, str]]) -> list[tuple[float, int, int, str]]:
    """Best pairs first, each side once; a pair tied with a rival of either side links nothing."""
    scored.sort(key=lambda p: -p[0])
    used_old: set[int] = set()
    used_new: set[int] = set()
    chosen = []
    for score, i, j, rule in scored:
        if i in used_old or j in used_new:
            continue
        rivals = [
            p
            for p in scored
            if (p[1] == i) != (p[2] == j)
            and p[1] not in used_old
            and p[2] not in used_new
            and p[0] >= score - TIE
        ]
        used_old.add(i)
        used_new.add(j)
        if rivals:  # ambiguous: neither side is linked
            continue
        chosen.append((score, i, j, rule))
    return chosen


def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

"""Measure the rekey rules (aggregator/rekey.py) on real feeds: false links and moves found.

    python benchmarks/rekey_eval.py 'DIR/*.xml'       # any RSS/Atom files

Each file is read with the feed parser and normalised as a poll would. Then:

* false links: for every ordered pair of two different items of one feed (different
  links), the first is taken as the entry that left and the second as the one that
  arrived in the same poll; a link between them is a false link. Run with the items'
  published dates and again without any (dates are the daily-edition guard).
* moves found: every item whose link has a last path segment gets a new slug (``-x``
  appended), (a) its text unchanged, (b) the last fifth of its words replaced, (c) that
  and its headline edited; each should link back to the item.

The figures in docs/changes.md ("What counts as a change") come from chardet's test corpus of
real feeds (found on a machine with the Google Cloud SDK under
``.../gsutil/third_party/chardet/tests/*/*.xml``; 282 of its 314 files parse).
"""

from __future__ import annotations

import argparse
import glob
import random
import warnings
from collections import Counter
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from aggregator import rekey
from aggregator.models import Known, Snapshot
from aggregator.normalize import snapshot
from aggregator.parse import get_parser

FILLER = ("said", "officials", "new", "report", "later", "also")


def read_feeds(pattern: str) -> list[list[Snapshot]]:
    """The normalised items of every file that parses, for feeds with two items or more."""
    parser = get_parser("feed")
    feeds = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, "rb") as f:
                parsed = parser.parse(
                    f.read(), url="https://feed.example/", headers={}, options=None
                )
        except Exception:  # a file that is not a feed is skipped
            continue
        snaps = [snapshot(i) for i in parsed.items]
        snaps = [s for s in snaps if any(s.texts[f] for f in ("title", "summary", "content"))]
        if len(snaps) >= 2:
            feeds.append(snaps)
    return feeds


def known(s: Snapshot, i: int) -> Known:
    return Known(i, s.item.key, s.texts, s.content_hash, 1, False, i, s.item.published, "t")


def undated(s: Snapshot) -> Snapshot:
    return replace(s, item=replace(s.item, published=None))


def false_links(feeds: list[list[Snapshot]], dates: bool) -> tuple[int, int, Counter[str]]:
    pairs = links = 0
    rules: Counter[str] = Counter()
    for snaps in feeds:
        stored = [known(s, i) for i, s in enumerate(snaps)]
        for i, a in enumerate(snaps):
            for b in snaps:
                if a.item.key == b.item.key or a.texts["link"] == b.texts["link"]:
                    continue  # the same story listed twice is not a false link
                left, came = (a, b) if dates else (undated(a), undated(b))
                pairs += 1
                found = rekey.find_links([known(left, i)], [came], stored=stored, listed=snaps)
                if found:
                    links += 1
                    rules[found[0].rule] += 1
    return pairs, links, rules


def moved(s: Snapshot, rng: random.Random, rewrite: bool, retitle: bool) -> Snapshot | None:
    parts = urlsplit(s.item.link)
    head, _, slug = parts.path.rstrip("/").rpartition("/")
    if not slug or not parts.hostname:
        return None
    link = urlunsplit((parts.scheme, parts.netloc, f"{head}/{slug}-x", parts.query, ""))
    item = replace(s.item, key=link, link=link)
    words = (s.texts["summary"] or s.texts["content"]).split()
    if rewrite and words:
        keep = len(words) - max(1, len(words) // 5)
        tail = [rng.choice(FILLER) for _ in range(len(words) - keep)]
        item = replace(item, summary=" ".join(words[:keep] + tail), content="")
    if retitle:
        item = replace(item, title=item.title + " (updated)")
    return snapshot(item)


def moves_found(feeds: list[list[Snapshot]], rewrite: bool, retitle: bool) -> tuple[int, int, int]:
    rng = random.Random(7)
    total = found = short = 0
    for snaps in feeds:
        stored = [known(s, i) for i, s in enumerate(snaps)]
        for i, s in enumerate(snaps):
            m = moved(s, rng, rewrite, retitle)
            if m is None:
                continue
            total += 1
            short += len((s.texts["summary"] + " " + s.texts["content"]).split()) < rekey.MIN_WORDS
            listed = [*snaps[:i], m, *snaps[i + 1 :]]
            found += bool(rekey.find_links([known(s, i)], [m], stored=stored, listed=listed))
    return total, found, short


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pattern", help="glob of RSS/Atom files")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    feeds = read_feeds(args.pattern)
    print(f"{len(feeds)} feeds, {sum(map(len, feeds))} items")
    for dates in (True, False):
        pairs, links, rules = false_links(feeds, dates)
        label = "with" if dates else "without"
        print(f"false links {label} dates: {links} of {pairs} pairs ({dict(rules)})")
    for rewrite, retitle, label in (
        (False, False, "new slug"),
        (True, False, "new slug, last fifth of the text rewritten"),
        (True, True, "new slug, text rewritten, headline edited"),
    ):
        total, found, short = moves_found(feeds, rewrite, retitle)
        print(f"moves found ({label}): {found} of {total} ({short} have under 8 words of text)")


if __name__ == "__main__":
    main()

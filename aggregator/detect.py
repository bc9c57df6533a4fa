"""Decide what is new, changed, removed or restored. Pure functions, no I/O.

Removal policy (``removals`` option of a source):

``window`` (default)
    Feeds and live blogs show a window of their latest items. An entry that is
    missing is ``removed`` only when an entry *older* than it is still listed:
    older by published date when both have one, else lower in the previous
    listing. An entry that fell off the bottom of the window is left alone.
``all``
    The source lists everything it has (a complete feed): any missing entry
    is ``removed``.
``never``
    Entries are never marked removed.

A response that was not read completely (truncated XML, a failed parse)
never removes anything.

Rekeying (``rekey`` option of a source, ``auto`` by default): an entry the
previous listing had that is missing now, and an entry listed for the first
time, that are the same story (rules in ``aggregator.rekey``) give one
``moved`` change (fields ``key`` plus what else changed) instead of a removal
or silence plus ``new``. ``off`` keeps them apart. Only complete listings rekey.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from aggregator.diff import word_diff
from aggregator.models import TRACKED_FIELDS, Change, Known, Snapshot
from aggregator.rekey import Link, find_links

REMOVAL_POLICIES = ("window", "all", "never")
REKEY_POLICIES = ("auto", "off")
TEXT_FIELDS = ("summary", "content")


def detect(
    known: Mapping[str, Known],
    snapshots: Sequence[Snapshot],
    *,
    removals: str = "window",
    complete: bool = True,
    rekey: str = "auto",
) -> list[Change]:
    """Compare the current listing with what the store knows.

    Args:
        known: the store's entries for this source, by key.
        snapshots: the items just read, in the publisher's order.
        removals: the source's removal policy (see module docstring).
        complete: False when the listing may be partial; nothing is removed or rekeyed then.
        rekey: ``auto`` links a story listed under a new key to its entry; ``off`` does not.

    Returns:
        One ``Change`` per event, listing order first, then removals.
    """
    links = _links(known, snapshots) if complete and rekey == "auto" else {}
    changes = [c for s in snapshots if (c := _change(known, links, s)) is not None]
    if complete and snapshots and removals != "never":
        moved = {link.old.key for link in links.values()}
        changes.extend(_removals(known, snapshots, everything=removals == "all", moved=moved))
    return changes


def _links(known: Mapping[str, Known], snapshots: Sequence[Snapshot]) -> dict[str, Link]:
    """Rekey links by new key: entries of the previous listing missing now, to fresh items."""
    present = {s.item.key for s in snapshots}
    fresh = [s for s in snapshots if s.item.key not in known]
    gone = [k for k in known.values() if k.key not in present and not k.removed]
    if not fresh or not gone:
        return {}
    last = max((k.last_seen for k in known.values() if k.last_seen), default=None)
    missing = [k for k in gone if k.last_seen is not None and k.last_seen == last]
    links = find_links(missing, fresh, stored=known.values(), listed=snapshots)
    return {link.new.item.key: link for link in links}


def _change(
    known: Mapping[str, Known], links: Mapping[str, Link], current: Snapshot
) -> Change | None:
    link = links.get(current.item.key)
    return _moved(link) if link else _compare(known.get(current.item.key), current)


def _moved(link: Link) -> Change:
    """The change of an entry now listed under a new key."""
    before, current = link.old, link.new
    fields = ("key", *changed_fields(before.texts, current.texts))
    edit = classify_edit(before.texts, current.texts, fields)
    return Change("moved", current.item.key, fields, edit, current, before)


def _compare(previous: Known | None, current: Snapshot) -> Change | None:
    key = current.item.key
    if previous is None:
        return Change("new", key, snapshot=current)
    fields = changed_fields(previous.texts, current.texts)
    edit = classify_edit(previous.texts, current.texts, fields)
    if previous.removed:
        return Change("restored", key, fields, edit, current, previous)
    if previous.content_hash == current.content_hash or not fields:
        return None
    return Change("changed", key, fields, edit, current, previous)


def changed_fields(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...]:
    """The tracked fields whose normalised text differs (a link's ``#anchor`` aside)."""
    return tuple(
        f
        for f in TRACKED_FIELDS
        if (
            _link_changed(before.get(f, ""), after.get(f, ""))
            if f == "link"
            else before.get(f, "") != after.get(f, "")
        )
    )


def _link_changed(before: str, after: str) -> bool:
    """Links compared without their ``#anchor``, which only live-blog posts keep.

    A post stored before its link kept the anchor (the page's link, or none)
    is not changed by gaining it.
    """
    if not before and "#" in after:
        return False
    return before.split("#", 1)[0] != after.split("#", 1)[0]


def classify_edit(
    before: Mapping[str, str], after: Mapping[str, str], fields: Sequence[str]
) -> str | None:
    """``appended`` if text was only added, ``edited`` if any was removed or rewritten.

    Added means a sentence at the end of a paragraph, a new paragraph, words inserted
    anywhere: every word of the old text is still there, in order. ``None`` when
    neither summary nor content changed.
    """
    text_fields = [f for f in TEXT_FIELDS if f in fields]
    if not text_fields:
        return None
    if all(is_pure_addition(before.get(f, ""), after.get(f, "")) for f in text_fields):
        return "appended"
    return "edited"


def is_pure_addition(old: str, new: str) -> bool:
    """True when ``new`` is ``old`` with text added and none removed or rewritten.

    Judged on the word diff: every word of ``old`` (numbers like ``1.9.3`` are one word)
    is in ``new``, in order. Only whitespace may be taken away (a paragraph split in two).
    """
    if not old:
        return bool(new)
    if old == new:
        return False
    return not any(s.op == "delete" and s.text.strip() for s in word_diff(old, new))


def _removals(
    known: Mapping[str, Known],
    snapshots: Sequence[Snapshot],
    *,
    everything: bool,
    moved: Collection[str] = (),
) -> list[Change]:
    present = {s.item.key for s in snapshots} | moved
    missing = [k for k in known.values() if k.key not in present and not k.removed]
    if not everything:
        still = [known[key] for key in present if key in known]
        missing = [m for m in missing if any(_older(p, m) for p in still)]
    return [Change("removed", m.key, previous=m) for m in missing]


def _older(present: Known, missing: Known) -> bool:
    """Whether ``present`` is an older item than ``missing`` in the publisher's order."""
    if present.published and missing.published:
        return present.published < missing.published
    if present.position is not None and missing.position is not None:
        return present.position > missing.position
    return False

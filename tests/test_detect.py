"""Detection rules, as pure functions."""

from __future__ import annotations

from aggregator.detect import classify_edit, detect, is_pure_addition
from aggregator.models import Item, Known
from aggregator.normalize import snapshot


def known(
    key: str, *, position: int, published: str | None = None, removed: bool = False, **fields: str
) -> Known:
    snap = snapshot(Item(key=key, **fields))
    return Known(
        entry_id=position + 1,
        key=key,
        texts=snap.texts,
        content_hash=snap.content_hash,
        version=1,
        removed=removed,
        position=position,
        published=published,
    )


def snaps(*items: Item) -> list:
    return [snapshot(i) for i in items]


def test_reordering_is_not_a_change() -> None:
    """The same items in another order produce no event."""
    before = {"a": known("a", position=0, title="A"), "b": known("b", position=1, title="B")}
    assert detect(before, snaps(Item("b", title="B"), Item("a", title="A"))) == []


def test_falling_off_the_bottom_is_not_a_removal() -> None:
    """The oldest item leaving a windowed feed is not reported."""
    before = {"a": known("a", position=0, title="A"), "b": known("b", position=1, title="B")}
    kinds = [c.kind for c in detect(before, snaps(Item("new", title="N"), Item("a", title="A")))]
    assert kinds == ["new"]


def test_vanishing_while_older_items_stay_is_a_removal() -> None:
    """An item deleted from the middle of the window is removed."""
    before = {
        "a": known("a", position=0, title="A"),
        "b": known("b", position=1, title="B"),
        "c": known("c", position=2, title="C"),
    }
    changes = detect(before, snaps(Item("a", title="A"), Item("c", title="C")))
    assert [(c.kind, c.key) for c in changes] == [("removed", "b")]


def test_published_dates_decide_age_when_present() -> None:
    """With dates, an item newer than a still-listed one is removed even if it was lower."""
    before = {
        "old": known("old", position=0, published="2022-03-10 06:00:00.000", title="O"),
        "new": known("new", position=1, published="2022-03-10 09:00:00.000", title="N"),
    }
    changes = detect(before, snaps(Item("old", title="O", published="2022-03-10 06:00:00.000")))
    assert [(c.kind, c.key) for c in changes] == [("removed", "new")]


def test_partial_listing_removes_nothing() -> None:
    """When the response was incomplete, missing entries are left alone."""
    before = {"a": known("a", position=0, title="A"), "b": known("b", position=1, title="B")}
    assert detect(before, snaps(Item("b", title="B")), complete=False) == []


def test_removal_policies_all_and_never() -> None:
    """'all' removes every missing entry; 'never' none."""
    before = {"a": known("a", position=0, title="A"), "b": known("b", position=1, title="B")}
    listing = snaps(Item("a", title="A"))
    assert [c.key for c in detect(before, listing, removals="all")] == ["b"]
    assert detect(before, listing, removals="never") == []


def test_restored_entry_reports_changed_fields() -> None:
    """A removed entry that returns edited is restored, naming the fields that differ."""
    before = {"a": known("a", position=0, title="A", removed=True)}
    [change] = detect(before, snaps(Item("a", title="A2")))
    assert (change.kind, change.fields) == ("restored", ("title",))


def test_appended_versus_edited() -> None:
    """Text only added (a paragraph, a sentence at a paragraph's end, words inserted) is
    'appended'; anything removed or replaced, a number's digit included, is 'edited'."""
    assert is_pure_addition("One\n\nTwo", "One\n\nTwo\n\nThree")
    assert is_pure_addition("One\n\nTwo", "Zero\n\nOne\n\nTwo")
    assert is_pure_addition("Talks ended.\n\nMore.", "Talks ended. No deal.\n\nMore.")
    assert is_pure_addition("Talks ended today.", "Talks ended in Antalya today.")
    assert is_pure_addition("One two.", "One\n\ntwo.")  # a paragraph split: nothing removed
    assert not is_pure_addition("Talks ended today.", "Talks ended yesterday.")
    assert not is_pure_addition("Talks ended today.", "Talks ended.")
    assert not is_pure_addition("Upgrade to 1.9.3 now.", "Upgrade to 1.9.34 now.")
    assert not is_pure_addition("Upgrade to 1.9.3 now.", "Upgrade to 1.9.4 now; 1.9.3 was bad.")
    assert not is_pure_addition("Same.", "Same.")
    before = {"content": "One\n\nTwo"}
    assert classify_edit(before, {"content": "One\n\nTwo\n\nThree"}, ("content",)) == "appended"
    assert classify_edit(before, {"content": "One\n\nTwo more"}, ("content",)) == "appended"
    assert classify_edit(before, {"content": "One\n\nThree"}, ("content",)) == "edited"
    assert classify_edit(before, before, ("title",)) is None

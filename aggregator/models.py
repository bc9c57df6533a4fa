"""Plain data passed between the pipeline's stages.

Every stage takes and returns these frozen dataclasses; none of them does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The fields of an item that are compared between versions, in display order.
TRACKED_FIELDS: tuple[str, ...] = ("title", "link", "author", "summary", "content")


@dataclass(frozen=True, slots=True)
class Item:
    """One story item as a parser read it: a feed entry, a live-blog post, a page.

    ``summary`` and ``content`` keep the markup the publisher sent; ``normalize``
    derives the text that is compared.
    """

    key: str
    title: str = ""
    link: str = ""
    author: str = ""
    summary: str = ""
    content: str = ""
    published: str | None = None  # ISO 8601, UTC
    updated: str | None = None


@dataclass(frozen=True, slots=True)
class Hints:
    """What the publisher said about when to poll (kept across polls that parse nothing).

    Attributes:
        ttl_seconds: RSS ``<ttl>``.
        skip_hours: RSS ``<skipHours>``, UTC hours 0-23.
        skip_days: RSS ``<skipDays>``, weekdays (0 = Monday).
        update_period: RSS ``sy:updatePeriod`` / ``sy:updateFrequency``, in seconds.
        ends_at: a live blog's ``coverageEndTime`` (database time text).
        expired: JSON Feed ``expired: true`` (the feed will not be updated again).
    """

    ttl_seconds: int | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[int] = frozenset()
    update_period: float | None = None
    ends_at: str | None = None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser made of one response body.

    Attributes:
        items: the entries, in the order the publisher listed them.
        title: the source's own title (feed title, page headline).
        complete: False when the body was truncated or partly unreadable, so a
            missing item must not be taken as a removal.
        ttl_seconds: how long the publisher asked us to wait (RSS ``<ttl>``).
        skip_hours: UTC hours the publisher asked us not to poll (RSS ``<skipHours>``).
        skip_days: weekdays (0 = Monday) not to poll (RSS ``<skipDays>``).
        update_period: seconds between updates the publisher announces (``sy:``).
        ends_at: when a live blog's coverage ends (``coverageEndTime``).
        expired: a JSON Feed that will not be updated again.
        warnings: problems worth logging that did not stop parsing.
        hubs: WebSub hubs the document names (``atom:link rel="hub"``, JSON Feed ``hubs``).
        self_url: the URL the document names as its own (``rel="self"``, ``feed_url``).
    """

    items: list[Item]
    title: str = ""
    complete: bool = True
    ttl_seconds: int | None = None
    skip_hours: frozenset[int] = frozenset()
    warnings: list[str] = field(default_factory=list)
    hubs: tuple[str, ...] = ()
    self_url: str | None = None
    skip_days: frozenset[int] = frozenset()
    update_period: float | None = None
    ends_at: str | None = None
    expired: bool = False

    def hints(self) -> Hints:
        """The publisher's scheduling hints of this document."""
        return Hints(self.ttl_seconds, self.skip_hours, self.skip_days, self.update_period,
                     self.ends_at, self.expired)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An item reduced to what is compared: normalised text per tracked field."""

    item: Item
    texts: dict[str, str]
    content_hash: str


@dataclass(frozen=True, slots=True)
class Known:
    """What the store remembers of one entry, for detection."""

    entry_id: int
    key: str
    texts: dict[str, str]
    content_hash: str
    version: int
    removed: bool
    position: int | None
    published: str | None
    #: When a parsed poll last listed it (``entries.last_seen_at``); rekeying only
    #: considers entries the previous listing had.
    last_seen: str | None = None
    #: Keys it had before a rekey (``entry_keys``), oldest first.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One detected event for one entry.

    Attributes:
        kind: ``new``, ``changed``, ``removed``, ``restored`` or ``moved`` (the
            entry is listed under a new key: see ``aggregator.rekey``).
        key: the entry's key within its source (for ``moved``, the new key;
            ``previous.key`` is the old one).
        fields: the tracked fields that differ from the previous version.
        edit: for text edits, ``appended`` (text only added at the end),
            ``edited`` (text rewritten) or ``None``.
        snapshot: the new state (``None`` for ``removed``).
        previous: what the store knew before (``None`` for ``new``).
    """

    kind: str
    key: str
    fields: tuple[str, ...] = ()
    edit: str | None = None
    snapshot: Snapshot | None = None
    previous: Known | None = None

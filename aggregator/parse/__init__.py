"""Turn a response body into items. No network, no database.

Each source kind is one module with a parser class; register it in
``PARSERS`` below (one line) and it is available as ``kind = "..."``.
A parser declares its kind-specific config keys as a pydantic ``Options``
model (unknown keys are rejected at start-up) and implements ``parse``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from aggregator.errors import ConfigError
from aggregator.models import Parsed
from aggregator.options import register_validator, validate_plugin_options
from aggregator.parse.feed import FeedParser
from aggregator.parse.liveblog import LiveblogParser
from aggregator.parse.page import PageParser


class Parser(Protocol):
    """What a source kind provides."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def parse(self, body: bytes, *, url: str, headers: Mapping[str, str], options: Any) -> Parsed:
        """Read ``body`` (fetched from ``url`` with ``headers``) into items.

        Raises:
            ParseError: the body is not something this kind can read.
        """
        ...


PARSERS: dict[str, Parser] = {
    parser.kind: parser
    for parser in (
        FeedParser(),
        LiveblogParser(),
        PageParser(),
    )
}  # fmt: skip


def get_parser(kind: str) -> Parser:
    """The parser for ``kind``; ``ConfigError`` if there is none."""
    try:
        return PARSERS[kind]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ConfigError(f"kind: unknown source kind {kind!r} (known: {known})") from None


def volatile_patterns(kind: str) -> Sequence[re.Pattern[str]]:
    """Built-in volatile-text patterns of ``kind`` (a parser's optional ``volatile``).

    Web-page kinds strip relative timestamps and counters before comparing;
    feeds strip nothing beyond the source's ``ignore``.
    """
    return tuple(getattr(get_parser(kind), "volatile", ()))


def validate_options(kind: str, options: Mapping[str, Any]) -> BaseModel:
    """Check the kind-specific keys of a source; ``ConfigError`` names the bad key."""
    return validate_plugin_options(get_parser(kind).Options, options, f"kind {kind!r}")


register_validator("source", validate_options)  # so the config checks kinds' keys at load

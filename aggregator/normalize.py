"""Reduce items to what is compared, so that noise never makes a version.

Whitespace, entity spelling, markup, tracking parameters in links and
configured volatile text (``ignore`` patterns) are normalised away. The
original markup is kept by the store; only the comparison uses this text.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aggregator.models import TRACKED_FIELDS, Item, Snapshot

#: Query parameters that only track the reader and never change the story.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "igshid",
        "ref_src", "ref_url", "cmpid", "ocid", "smid", "smtyp", "_ga", "_gl", "mkt_tok",
        "spm", "share", "taid", "at_medium", "at_campaign", "at_custom1", "at_custom2",
        "at_custom3", "at_custom4", "wt.mc_id", "cid_source", "rss", "feed",
    }
)  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "hsa_", "__twitter", "oly_")

# Every pattern is linear in the input: a tag match stops at the next "<", and
# comments and script-like elements are removed by ``_cut_spans`` (str.find),
# because lazy ".*?" patterns are quadratic on hostile input such as a
# megabyte of unclosed "<!--" or "<script" (seen as a field of a feed).
_BLOCK = re.compile(
    r"<\s*/?\s*(?:p|div|br|li|ul|ol|h[1-6]|blockquote|tr|table|section|article|header"
    r"|footer|figure|figcaption|pre|hr|dd|dt|aside)\b[^<>]*>",
    re.IGNORECASE,
)
_DROPPED = ("script", "style", "template", "noscript")
_DROP_OPEN = re.compile(rf"<({'|'.join(_DROPPED)})\b", re.IGNORECASE)
_DROP_CLOSE = {name: re.compile(rf"</{name}\b[^<>]*>", re.IGNORECASE) for name in _DROPPED}
_TAG = re.compile(r"<[^<>]*>")
_SPACES = re.compile(r"[^\S\n]+")
_BLANKS = re.compile(r"\n\s*\n+")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))

_UNIT = r"(?:sec(?:ond)?s?|min(?:ute)?s?|h(?:ou)?rs?|hours?|days?|weeks?|mins?)"
#: Text that changes on every request of a web page and never is news:
#: relative timestamps ("Updated 3 minutes ago", "just now") and counters
#: ("1,234 views", "56 comments", "812 reading now"). Applied to the
#: ``liveblog`` and ``page`` kinds (see ``aggregator.parse.volatile_patterns``),
#: before the source's own ``ignore`` patterns.
VOLATILE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?i)\b(?:(?:last\s+)?(?:updated|posted|published|edited|modified)\s*:?\s*)?"
        rf"(?:\d+|an?|one|a\s+few)\s+{_UNIT}\s+ago\b"
    ),
    re.compile(r"(?i)\b(?:(?:updated|posted)\s+)?(?:just\s+now|moments\s+ago)\b"),
    re.compile(
        r"(?i)\b\d[\d,.]*\s*[km]?\s+(?:views?|reads?|comments?|shares?|likes?"
        r"|(?:people\s+)?(?:are\s+)?(?:reading|watching)(?:\s+now)?)\b"
    ),
)


def canonical_url(url: str, *, keep_fragment: bool = False) -> str:
    """Return ``url`` without tracking parameters, fragment or default port.

    Host and scheme are lower-cased and the remaining query parameters sorted,
    so a re-tagged link compares equal to the original. ``keep_fragment`` keeps
    the ``#anchor`` (a live-blog post's link is the page plus its anchor).
    """
    url = url.strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if _keeps(k)]
    fragment = parts.fragment if keep_fragment else ""
    return urlunsplit((scheme, host, parts.path or "/", urlencode(sorted(query)), fragment))


def _keeps(param: str) -> bool:
    low = param.lower()
    return low not in TRACKING_PARAMS and not low.startswith(TRACKING_PREFIXES)


def html_to_text(markup: str) -> str:
    """Turn an HTML fragment into plain text, one paragraph per block element.

    Entities are decoded, scripts and styles dropped, whitespace collapsed,
    and paragraphs separated by a blank line.
    """
    if "<" in markup:
        markup = _cut_comments(markup)
        markup = _cut_dropped(markup)
        markup = _BLOCK.sub("\n\n", markup)
        markup = _TAG.sub("", markup)
    if "&" in markup:
        markup = html.unescape(markup)
    return clean_text(markup)


def _cut_comments(markup: str) -> str:
    """Remove ``<!-- ... -->``; an unclosed comment runs to the end (as in browsers)."""
    out, pos = [], 0
    while (start := markup.find("<!--", pos)) != -1:
        out.append(markup[pos:start])
        end = markup.find("-->", start + 4)
        pos = len(markup) if end == -1 else end + 3
    out.append(markup[pos:])
    return "".join(out)


def _cut_dropped(markup: str) -> str:
    """Remove script/style/template/noscript elements; an unclosed one runs to the end."""
    out, pos = [], 0
    while match := _DROP_OPEN.search(markup, pos):
        out.append(markup[pos : match.start()])
        close = _DROP_CLOSE[match.group(1).lower()].search(markup, match.end())
        if close is None:
            pos = len(markup)
            break
        pos = close.end()
    out.append(markup[pos:])
    return "".join(out)


def clean_text(text: str) -> str:
    """Normalise Unicode and whitespace: NFC, no invisible characters, single spaces."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE).replace("\r", "")
    text = _SPACES.sub(" ", text)
    paragraphs = (line.strip() for line in _BLANKS.split(text))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def strip_patterns(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """Remove every match of ``patterns`` (volatile text) and re-clean the result."""
    if not patterns:
        return text
    for pattern in patterns:
        text = pattern.sub("", text)
    return clean_text(text)


def snapshot(
    item: Item, ignore: Sequence[re.Pattern[str]] = (), *, keep_fragment: bool = False
) -> Snapshot:
    """Reduce ``item`` to the normalised text of each tracked field and its hash.

    ``keep_fragment`` keeps the link's ``#anchor`` (a live-blog post's own place
    on the page); ``detect`` compares links without it.
    """
    texts = {
        "title": strip_patterns(html_to_text(item.title), ignore),
        "link": canonical_url(item.link, keep_fragment=keep_fragment),
        "author": clean_text(item.author),
        "summary": strip_patterns(html_to_text(item.summary), ignore),
        "content": strip_patterns(html_to_text(item.content), ignore),
    }
    if texts["summary"] == texts["content"]:
        texts["summary"] = ""  # RSS often repeats the body as summary; compare it once
    return Snapshot(item=item, texts=texts, content_hash=content_hash(texts))


def content_hash(texts: dict[str, str]) -> str:
    """A stable SHA-256 over the tracked fields' normalised text."""
    joined = "\x1f".join(texts.get(name, "") for name in TRACKED_FIELDS)
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()


def item_key(guid: str | None, link: str | None, title: str | None) -> str:
    """The stable identity of an item: its guid, else its canonical link, else a hash."""
    guid = (guid or "").strip()
    if guid:
        return canonical_url(guid) if guid.startswith(("http://", "https://")) else guid
    link = canonical_url(link or "")
    if link:
        return link
    digest = hashlib.sha256(f"{clean_text(title or '')}\x1f".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def unique_keys(keys: Iterable[str]) -> list[str]:
    """Make repeated keys in one response distinct, keeping the first as is."""
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        n = seen.get(key, 0)
        seen[key] = n + 1
        out.append(key if n == 0 else f"{key}#{n + 1}")
    return out


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_TITLE_WORD = re.compile(r"\w+")


def normal_title(title: str) -> str:
    """A headline compared loosely: case, quote style, punctuation and spacing aside."""
    text = unicodedata.normalize("NFKC", title).translate(_QUOTES).casefold()
    return " ".join(_TITLE_WORD.findall(text))

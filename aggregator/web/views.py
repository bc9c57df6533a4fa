"""The pages and endpoints. Every handler reads through ``Web.read`` (a worker thread)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from aggregator.digest import model
from aggregator.digest.feeds import render_atom
from aggregator.errors import StoreError
from aggregator.store import browse as queries
from aggregator.store.browse import ChangeFilter
from aggregator.store.queries import ChangeRow, Reader
from aggregator.timeutil import now_db, parse_duration, to_db, utcnow
from aggregator.web import render

if TYPE_CHECKING:
    from aggregator.web.state import Web

WINDOWS = ("1h", "24h", "7d", "30d")
#: The kinds a list can be filtered by: the digest's, and a story moving to a new key.
KINDS = (*model.KINDS, *(k for k in ("moved",) if k not in model.KINDS))
SOURCES_PAGE = 50
SOURCE_MENU = 200  # more sources than this: the filter is a text field, not a menu
FAILING_SHOWN = 100  # failing sources listed at the top of the sources page
ATOM_TYPE = "application/atom+xml"


@dataclass(frozen=True)
class Query:
    """The filters of a changes list, feed or stream, as given and as resolved."""

    source: str = ""
    kind: str = ""
    tag: str = ""
    since: str = ""
    story: int | None = None
    filt: ChangeFilter = field(default_factory=ChangeFilter)

    def params(self, **extra: Any) -> str:
        """The query string of these filters (plus ``extra``), for links."""
        pairs = {"source": self.source, "kind": self.kind, "tag": self.tag, "since": self.since}
        if self.story is not None:
            pairs["story"] = str(self.story)
        pairs.update({k: str(v) for k, v in extra.items() if v is not None})
        kept = {k: v for k, v in pairs.items() if v}
        return ("?" + urlencode(kept)) if kept else ""


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None
    if number < 0:
        raise HTTPException(400, f"{name} must not be negative")
    return number


def resolve_query(reader: Reader, web: Web, params: dict[str, str]) -> Query:
    """The request's filters resolved against the database (source names to ids)."""
    source, kind, tag = params.get("source", ""), params.get("kind", ""), params.get("tag", "")
    since, story = params.get("since", ""), _int(params.get("story"), "story")
    if kind and kind not in KINDS:
        raise HTTPException(400, f"kind must be one of {', '.join(KINDS)}")
    names: list[str] = []
    if source:
        names.append(source)
    if tag:
        if tag not in web.settings.tags:
            raise HTTPException(404, f"no source is tagged {tag!r}")
        names = [n for n in web.settings.tags[tag] if not source or n == source] or ["\0"]
    ids = queries.source_ids(reader, names) if names else {}
    if source and source not in ids:
        raise HTTPException(404, f"no source named {source!r}")
    since_at = ""
    if since:
        try:
            since_at = to_db(utcnow() - timedelta(seconds=parse_duration(since)))
        except ValueError:
            raise HTTPException(400, f"since: {since!r} is not a duration like 24h") from None
    filt = ChangeFilter(
        tuple(sorted(ids.values())) or ((-1,) if names else ()), kind, since_at, story
    )
    return Query(source, kind, tag, since, story, filt)


def routes(web: Web) -> list[Route]:
    """Every route of the app."""

    def page(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        template = web.templates.get_template(name)
        atom = context.pop("atom", f"{web.settings.root_path}/changes.atom")
        body = template.render(request=request, atom=atom, **context)
        return HTMLResponse(body, status_code=status)

    async def changes_page(request: Request) -> HTMLResponse:
        before = _int(request.query_params.get("before"), "before")
        data = await web.read(_changes_page_view, web, dict(request.query_params), before)
        query: Query = data["query"]
        return page(
            "changes.html",
            request,
            atom=f"{web.settings.root_path}/changes.atom{query.params()}",
            kinds=KINDS,
            windows=WINDOWS,
            menu=SOURCE_MENU,
            tags=sorted(web.settings.tags),
            **data,
        )

    async def story_page(request: Request) -> HTMLResponse:
        entry_id = request.path_params["entry_id"]
        before = _int(request.query_params.get("before"), "before")
        after = await web.read(queries.max_change_id)  # first: the stream sends anything newer
        data = await web.read(queries.story, entry_id, before=before)
        if data is None:
            raise HTTPException(404, f"no story {entry_id}")
        root = web.settings.root_path
        return page(
            "story.html",
            request,
            atom=f"{root}/changes.atom?story={entry_id}",
            story=data,
            events=render.events(data.changes),
            headlines=render.headline_history(data.versions),
            posts=[(post, render.events(rows)) for post, rows in data.posts],
            after=after,
            before=before,
        )

    async def version_page(request: Request) -> HTMLResponse:
        entry_id, number = request.path_params["entry_id"], request.path_params["number"]
        version, previous = await web.read(queries.version_pair, entry_id, number)
        entries = await web.read(queries.entries_by_id, [entry_id])
        if version is None or entry_id not in entries:
            raise HTTPException(404, f"story {entry_id} has no version {number}")
        return page(
            "version.html",
            request,
            atom=f"{web.settings.root_path}/changes.atom?story={entry_id}",
            entry=entries[entry_id],
            version=version,
            previous=previous,
        )

    async def sources_page(request: Request) -> HTMLResponse:
        after = request.query_params.get("after", "")
        data = await web.read(_sources_view, after, SOURCES_PAGE)
        return page("sources.html", request, after=after, **data)

    async def source_page(request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        before = _int(request.query_params.get("before"), "before")
        data = await web.read(_source_view, name, before, web.settings.page_size)
        if data is None:
            raise HTTPException(404, f"no source named {name!r}")
        root = web.settings.root_path
        return page(
            "source.html",
            request,
            atom=f"{root}/changes.atom?{urlencode({'source': name})}",
            **data,
        )

    async def search_page(request: Request) -> HTMLResponse:
        text = model.plain(request.query_params.get("q", "")).strip()  # no NUL for FTS5
        groups: list[dict[str, Any]] = []
        error = ""
        if text:
            try:
                hits = await web.read(queries.search, text, limit=50)
            except StoreError as exc:
                hits, error = [], str(exc)
            groups = _group_hits(hits)
        return page("search.html", request, q=text, groups=groups, error=error)

    async def atom_feed(request: Request) -> Response:
        data = await web.read(_changes_view, web, dict(request.query_params), None)
        rows: list[ChangeRow] = [row for row, _ in reversed(data["rows"])]
        until = now_db()
        since = rows[0].detected_at if rows else until
        digest = model.Digest(since, until, 0, Counter(r.kind for r in rows), [], [])
        digest.stories = model.group_stories(rows)
        feed_id = f"urn:aggregator:changes{data['query'].params()}"
        return Response(render_atom(digest, feed_id=feed_id), media_type=ATOM_TYPE)

    async def events_stream(request: Request) -> EventSourceResponse:
        query = await web.read(resolve_query, web, dict(request.query_params))
        after = _int(
            request.headers.get("last-event-id") or request.query_params.get("after"), "after"
        )
        start = web.live.last_id if after is None else after

        async def generate() -> Any:
            yield {"event": "hello", "data": json.dumps({"after": start})}
            async for payload in web.live.stream(query.filt, start):
                yield {"event": "change", "id": str(payload["id"]), "data": json.dumps(payload)}

        return EventSourceResponse(generate(), ping=15, send_timeout=30)

    async def api_changes(request: Request) -> JSONResponse:
        before = _int(request.query_params.get("before"), "before")
        data = await web.read(_changes_view, web, dict(request.query_params), before)
        root = web.settings.root_path
        nxt, limit = data["next"], request.query_params.get("limit") or None
        return JSONResponse(
            {
                "changes": [render.change_json(row, root) for row, _ in data["rows"]],
                "next": f"{root}/api/changes{data['query'].params(before=nxt, limit=limit)}"
                if nxt
                else None,
            }
        )

    async def api_sources(request: Request) -> JSONResponse:
        after = request.query_params.get("after", "")
        limit = _int(request.query_params.get("limit"), "limit") or SOURCES_PAGE
        if limit > 500:
            raise HTTPException(400, "limit: at most 500")
        data = await web.read(_sources_view, after, limit, with_failing=False)
        nxt = data["next"]
        root = web.settings.root_path
        return JSONResponse(
            {
                "sources": [_source_json(r) for r in data["sources"]],
                "next": f"{root}/api/sources?{urlencode({'after': nxt, 'limit': limit})}"
                if nxt
                else None,
            }
        )

    async def api_stories(request: Request) -> JSONResponse:
        name = request.query_params.get("source", "")
        if not name:
            raise HTTPException(400, "give ?source=NAME (see /api/sources)")
        before = _int(request.query_params.get("before"), "before")
        data = await web.read(_source_view, name, before, web.settings.page_size)
        if data is None:
            raise HTTPException(404, f"no source named {name!r}")
        root = web.settings.root_path
        nxt = data["next"]
        return JSONResponse(
            {
                "stories": [render.entry_json(e, root) for e in data["entries"]],
                "next": f"{root}/api/stories?{urlencode({'source': name, 'before': nxt})}"
                if nxt
                else None,
            }
        )

    async def api_story(request: Request) -> JSONResponse:
        entry_id = request.path_params["entry_id"]
        data = await web.read(queries.story, entry_id)
        if data is None:
            raise HTTPException(404, f"no story {entry_id}")
        root = web.settings.root_path
        return JSONResponse(
            {
                "story": render.entry_json(data.entry, root),
                "versions": [render.version_json(v, root) for v in data.versions],
                "changes": [render.change_json(c, root) for c in data.changes],
            }
        )

    async def api_version(request: Request) -> JSONResponse:
        entry_id, number = request.path_params["entry_id"], request.path_params["number"]
        version, _ = await web.read(queries.version_pair, entry_id, number)
        if version is None:
            raise HTTPException(404, f"story {entry_id} has no version {number}")
        return JSONResponse(render.version_json(version, web.settings.root_path, full=True))

    return [
        Route("/", changes_page),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/story/{entry_id:int}", story_page),
        Route("/story/{entry_id:int}/v/{number:int}", version_page),
        Route("/sources", sources_page),
        Route("/sources/{name:path}", source_page),
        Route("/search", search_page),
        Route("/changes.atom", atom_feed),
        Route("/events", events_stream),
        Route("/api/changes", api_changes),
        Route("/api/sources", api_sources),
        Route("/api/stories", api_stories),
        Route("/api/stories/{entry_id:int}", api_story),
        Route("/api/stories/{entry_id:int}/versions/{number:int}", api_version),
    ]


def _changes_view(
    reader: Reader, web: Web, params: dict[str, str], before: int | None
) -> dict[str, Any]:
    """One page of changes (newest first) and the id to continue from."""
    query = resolve_query(reader, web, params)
    after = queries.max_change_id(reader)  # before the rows: the stream sends anything newer
    size = _int(params.get("limit"), "limit") or web.settings.page_size
    if size > 500:
        raise HTTPException(400, "limit: at most 500")
    rows = queries.changes(reader, query.filt, before=before, limit=size + 1)
    more = len(rows) > size
    rows = rows[:size]
    return {
        "query": query,
        "rows": rows,
        "next": rows[-1][0].id if more else None,
        "before": before,
        "after": after,
    }


def _changes_page_view(
    reader: Reader, web: Web, params: dict[str, str], before: int | None
) -> dict[str, Any]:
    """``_changes_view`` plus what only the HTML page shows: the rendered events, the menu."""
    data = _changes_view(reader, web, params, before)
    data["events"] = render.events([r for r, _ in data["rows"]])
    data["sources"] = queries.source_names(reader, SOURCE_MENU + 1)
    return data


def _sources_view(
    reader: Reader, after: str, size: int, *, with_failing: bool = True
) -> dict[str, Any]:
    """A page of sources by name; on the HTML page the failing ones are listed once, first.

    With ``with_failing`` (the HTML page), the first page lists every source failing now
    (at most ``FAILING_SHOWN``) above the others, and the pages by name hold only the
    sources that are not failing, so no source is listed twice. The JSON pages list every
    source by name.
    """
    found = queries.sources(
        reader, after=after, limit=size + 1, failing=False if with_failing else None
    )
    more = len(found) > size
    found = found[:size]
    failing = (
        queries.sources(reader, limit=FAILING_SHOWN + 1, failing=True)
        if with_failing and not after
        else []
    )
    return {
        "sources": found,
        "failing": failing[:FAILING_SHOWN],
        "more_failing": len(failing) > FAILING_SHOWN,
        "next": found[-1]["name"] if more else None,
        "sinks": queries.sink_backlogs(reader) if with_failing and not after else [],
    }


def _source_view(reader: Reader, name: str, before: int | None, size: int) -> dict[str, Any] | None:
    found = queries.sources_named(reader, name)
    if not found:
        return None
    source = found[0]
    entries = queries.source_entries(reader, source["id"], before=before, limit=size + 1)
    more = len(entries) > size
    entries = entries[:size]
    return {
        "source": source,
        "entries": entries,
        "next": entries[-1].id if more else None,
        "before": before,
        "quoted": quote(name, safe="/"),
    }


def _group_hits(hits: list[Any]) -> list[dict[str, Any]]:
    groups: dict[int, dict[str, Any]] = {}
    for hit in hits:
        group = groups.setdefault(hit.entry.id, {"entry": hit.entry, "hits": []})
        group["hits"].append(hit)
    for group in groups.values():
        group["hits"].sort(key=lambda h: h.version)
        group["gone"] = not any(h.current for h in group["hits"])
    return list(groups.values())


def _source_json(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name", "kind", "url", "active", "interval_seconds", "last_fetch_at", "last_success_at",
        "last_change_at", "last_status", "last_error", "last_error_at", "consecutive_failures",
        "next_check_at", "moved_from", "moved_at", "gone_at", "entries",
    )  # fmt: skip
    return {k: row.get(k) for k in keys}


def handlers(web: Web) -> dict[Any, Any]:
    """Error pages: the status and the reason, as HTML (or JSON under /api)."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith(f"{web.settings.root_path}/api/"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        body = web.templates.get_template("error.html").render(
            request=request,
            atom=f"{web.settings.root_path}/changes.atom",
            status=exc.status_code,
            detail=exc.detail,
        )
        return HTMLResponse(body, status_code=exc.status_code)

    return {HTTPException: http_error}

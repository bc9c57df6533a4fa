"""Helpers for tests that run Debian's Chromium: availability, a scripted live blog, processes.

Where no Chromium is installed the tests skip with the reason, except in CI (``CI``
set), where they fail: a skipped browser test would hide a regression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aggregator.chromium import find_executable
from aggregator.chromium.process import descendants
from tests import liveblog_story as story

SHELL = (Path(__file__).parent / "fixtures" / "liveblog" / "scripted.html").read_text()


def require_chromium() -> str:
    """The Chromium executable, or skip (fail under CI) saying what to install."""
    found = find_executable(os.environ.get("CHROMIUM", ""))
    if found is None:
        reason = "no Chromium on $PATH (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    return found


def scripted_data(epoch: int) -> str:
    """The JSON the scripted live blog's page fetches at ``epoch`` of the static story.

    The same posts, headline and noise as ``liveblog_story.blog_epoch(epoch)``, but
    the page's HTML has none of it until its script has run.
    """
    headline, posts = story.BLOG_EPOCHS[epoch]
    graph = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "@id": story.BLOG_URL, "name": headline},
            {
                "@type": "LiveBlogPosting",
                "@id": f"{story.BLOG_URL}#blog",
                "headline": headline,
                "description": story.DESCRIPTION,
                "liveBlogUpdate": [story.post_jsonld(p, epoch) for p in posts],
            },
        ],
    }
    shown = [
        {"id": p.ident, "headline": p.headline, "paragraphs": list(p.paragraphs)} for p in posts
    ]
    return json.dumps({"headline": headline, "graph": graph, "posts": shown})


def chromium_processes() -> list[int]:
    """Our descendant processes that are Chromium (by executable name)."""
    found = []
    for pid in descendants(os.getpid())[1:]:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "chrom" in Path(exe).name:
            found.append(pid)
    return found

"""Headless Chromium driven over the DevTools protocol: page fetching and diff pictures.

Nothing here imports the rest of aggregator beyond ``errors``: ``fetch.browser``
(pages that build their posts with script) and ``digest.image`` (diff cards)
use it, and the config uses ``process.find_executable`` to check that Chromium
is installed when a source or sink needs it.
"""

from aggregator.chromium.browser import Chromium, shared
from aggregator.chromium.cdp import BrowserError, BrowserGone
from aggregator.chromium.process import (
    ChromiumSettings,
    ProcessUsage,
    find_executable,
    missing_message,
)
from aggregator.chromium.tab import Document, Tab

__all__ = [
    "BrowserError",
    "BrowserGone",
    "Chromium",
    "ChromiumSettings",
    "Document",
    "ProcessUsage",
    "Tab",
    "find_executable",
    "missing_message",
    "shared",
]

"""``aggregator serve``: the read-only web view of the history (``create_app``)."""

from __future__ import annotations

from aggregator.web.app import Settings, create_app

__all__ = ["Settings", "create_app"]

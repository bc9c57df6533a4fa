"""Fetching: HTTP with conditional GET, caps, deadlines and a network policy."""

from aggregator.fetch.http import Fetcher, Response, parse_retry_after

__all__ = ["Fetcher", "Response", "parse_retry_after"]

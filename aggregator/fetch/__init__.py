"""Fetching: HTTP with conditional GET, caps, deadlines and a network policy."""

from aggregator.fetch.http import Fetcher, Response, describe_httpx_error, parse_retry_after

__all__ = ["Fetcher", "Response", "describe_httpx_error", "parse_retry_after"]

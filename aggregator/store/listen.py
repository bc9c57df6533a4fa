"""Wake-ups from other nodes: PostgreSQL ``LISTEN aggregator_outbox``.

Every transaction that writes outbox events sends ``NOTIFY aggregator_outbox`` at
its commit (``PostgresDatabase._write_outbox``); a node's delivery worker listens
on a connection of its own, so events another node stored go out at once. A
notification is a hint only (not stored, lost while nobody listens): the worker
also looks on its own timer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aggregator.store.db import libpq_url


async def outbox_commits(url: str) -> AsyncIterator[None]:
    """Yield once per ``NOTIFY aggregator_outbox`` until the connection fails (it raises)."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
    async with conn:
        await conn.execute("LISTEN aggregator_outbox")
        async for _note in conn.notifies():
            yield None

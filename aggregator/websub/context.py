"""What the daemon's WebSub parts share: the pipeline, the node, the live sources."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aggregator.config import Config, SourceConfig, WebSubConfig
from aggregator.pipeline import Pipeline
from aggregator.store.thread import StoreThread

#: The longest wait before asking a hub again, however often it refused.
MAX_RETRY = 86400.0


@dataclass
class Context:
    """The daemon's pipeline and node, and the sources a hub pushes now."""

    pipeline: Pipeline
    node_id: str
    #: Make the daemon's claim loop look for due sources by this time (epoch seconds).
    wake: Callable[[float], None] = lambda at: None
    #: Make the subscription manager look again now (a verification changed its plans).
    kick: Callable[[], None] = lambda: None
    #: Sources with a live subscription, and when each lease lapses (epoch seconds).
    live: dict[int, float] = field(default_factory=dict)
    _index: dict[int, SourceConfig] = field(default_factory=dict, repr=False)
    _index_key: tuple[int, int] = (0, 0)

    @property
    def config(self) -> Config:
        """The config in force (the pipeline's, replaced by a reload)."""
        return self.pipeline.config

    @property
    def settings(self) -> WebSubConfig:
        """``[websub]``."""
        return self.pipeline.config.websub

    @property
    def store(self) -> StoreThread:
        """The store's thread."""
        return self.pipeline.store

    def source(self, source_id: int) -> SourceConfig | None:
        """The enabled source of the config with this id, if this node has it."""
        key = (id(self.pipeline.config), id(self.pipeline.source_ids))
        if key != self._index_key:  # a reload replaced the config or the ids
            names = {s.name: s for s in self.config.sources if s.enabled}
            ids = self.pipeline.source_ids
            self._index = {ids[n]: s for n, s in names.items() if n in ids}
            self._index_key = key
        return self._index.get(source_id)

    def name(self, source_id: int) -> str:
        """The source's name, for logs."""
        found = self.source(source_id)
        return found.name if found is not None else f"source {source_id}"

    def is_live(self, source_id: int) -> bool:
        """Whether a hub pushes this source now (a verified lease that has not lapsed)."""
        return self.live.get(source_id, 0.0) > time.time()

    def backoff(self, failures: int) -> float:
        """Seconds to wait before asking a hub again after ``failures`` refusals in a row."""
        first = self.settings.retry
        return min(first * 2 ** max(0, failures - 1), max(first, MAX_RETRY))

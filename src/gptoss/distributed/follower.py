"""Ranks other than 0: wait for rank 0's announcements and replay each call on their own slices and caches.

Rank 0 (whatever drives it: `generate`, `bench`, the server's batched engine) decides everything; a follower only
mirrors the caches rank 0 uses. While rank 0 is idle (a server without requests) a heartbeat keeps the followers'
waits shorter than the collective timeout, so that a timeout always means a dead or hung rank.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import torch

from gptoss.distributed.group import CollectiveError
from gptoss.distributed.messages import (
    CacheSpec,
    Forward,
    PagedCache,
    Ping,
    SequenceCache,
    Stop,
    Storage,
    Unembed,
)
from gptoss.distributed.transformer import DistributedTransformer
from gptoss.engine.blocks import SeqBlocks
from gptoss.engine.paged import BatchCache, PagedStorage, Segment
from gptoss.errors import InputError
from gptoss.kv_cache import AttentionCache, KVCache
from gptoss.runtime import Model


class Follower:
    def __init__(self, model: Model) -> None:
        t = model.transformer
        if not isinstance(t, DistributedTransformer) or t.comm.leader:
            raise ValueError("only a non-zero rank of a tensor-parallel model follows")
        self.model, self.t, self.comm = model, t, t.comm
        self.cache: KVCache | None = None
        self.cache_key: int | None = None
        self.storage: PagedStorage | None = None

    @torch.inference_mode()
    def run(self) -> None:
        """Replays rank 0's calls until it says Stop; DistributedError when rank 0 or a peer goes away."""
        while True:
            msg = self.comm.broadcast(None)
            if isinstance(msg, Stop):
                return
            if isinstance(msg, Forward):
                # rank 0 hits the same InputError (a full cache) at the same point: both go on
                with contextlib.suppress(InputError):
                    self.t.forward(msg.tokens, msg.positions, self._cache(msg.cache, msg.positions))
            elif isinstance(msg, Unembed):
                self.t.unembed(msg.h)
            elif isinstance(msg, Storage):
                self.storage = PagedStorage(self.model.config, msg.num_blocks, msg.block_size, self.model.dtype)
            elif not isinstance(msg, Ping):
                raise TypeError(f"rank {self.comm.rank}: unexpected message {msg!r} from rank 0")

    def _cache(self, spec: CacheSpec, positions: torch.Tensor) -> AttentionCache | None:
        if spec is None:
            return None
        if isinstance(spec, SequenceCache):
            if self.cache is None or spec.key != self.cache_key or int(positions[0]) == 0:
                self.cache = KVCache(self.model.config, spec.limit, self.model.dtype, self.model.device)
                self.cache_key = spec.key
            return self.cache
        assert isinstance(spec, PagedCache)
        if self.storage is None:
            raise RuntimeError(f"rank {self.comm.rank}: a batched step before rank 0 made its KV pool")
        layout = self.storage.layout
        segments = [Segment(SeqBlocks(layout, s.full, s.sliding), s.offset, s.start, s.n) for s in spec.segments]
        return BatchCache(self.storage, segments)


class Heartbeat:
    """On rank 0: a Ping whenever no step holds the group for `interval_s` (a thread; stop() ends it). A failed
    Ping goes to `on_error` (an idle server learns of a dead rank without waiting for a request)."""

    def __init__(
        self, t: DistributedTransformer, interval_s: float, on_error: Callable[[CollectiveError], None]
    ) -> None:
        self.t, self.interval_s, self.on_error = t, interval_s, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gptoss-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.t.lock.acquire(blocking=False):
                continue  # a step is running: the followers are busy with it
            try:
                self.t.comm.broadcast(Ping())
            except CollectiveError as e:
                self.on_error(e)
                return
            finally:
                self.t.lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def stop_followers(t: DistributedTransformer) -> None:
    with t.lock:
        t.comm.broadcast(Stop())

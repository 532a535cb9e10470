"""The KV wing: prefill, the stores that keep running rows' caches, and one forward over some rows."""

from __future__ import annotations

from aligned_llm.engine.kv.base import KVLane, KVStore
from aligned_llm.engine.kv.forward import adapter_routing, forward_rows, model_lock
from aligned_llm.engine.kv.padded import PREFILL_CHUNK, PaddedLane, PaddedStore, Prefill
from aligned_llm.engine.kv.slots import SlotLane, StaticStore

KV_STORES = ("padded", "static")
"""``padded``: ``DynamicCache`` lanes (shapes change every step); ``static``: a preallocated slot pool."""


def kv_store(name: str, pad_id: int, compiled: bool = False) -> KVStore:
    """The store called ``name`` (one of :data:`KV_STORES`); ``compiled`` (static only) compiles decode forwards."""
    return StaticStore(pad_id, compiled) if name == "static" else PaddedStore()


__all__ = [
    "KV_STORES",
    "PREFILL_CHUNK",
    "KVLane",
    "KVStore",
    "PaddedLane",
    "PaddedStore",
    "Prefill",
    "SlotLane",
    "StaticStore",
    "adapter_routing",
    "forward_rows",
    "kv_store",
    "model_lock",
]

"""Bounded caches: memory stays flat whatever the number of keys, the least recently used out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.lru import LruCache
from services.payment_reads import known_wallet


def test_the_least_recently_used_entry_leaves_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        LruCache(0)


class Views:
    """Stands in for the pool: counts the wallet lookups that reach PostgreSQL."""

    def __init__(self) -> None:
        self.queries = 0


def test_known_wallets_stay_within_the_configured_size(monkeypatch: pytest.MonkeyPatch) -> None:
    views = Views()

    async def get_wallet(_: Any, wallet_id: str) -> dict[str, str]:
        views.queries += 1
        return {"user_id": "u-" + wallet_id, "currency": "USD"}

    monkeypatch.setattr("services.payment_reads.wallet_views.get_wallet", get_wallet)
    known: LruCache[str, dict[str, Any]] = LruCache(100)

    async def look_up_all() -> None:
        for i in range(1_000):
            assert (await known_wallet(known, None, f"w{i}"))["user_id"] == f"u-w{i}"  # type: ignore[arg-type]
        await known_wallet(known, None, "w999")  # type: ignore[arg-type]

    asyncio.run(look_up_all())
    assert len(known) == 100
    assert views.queries == 1_000, "the most recent wallet is answered from the cache"

"""Reading a whole KV bucket at once: every current key, deletes left out, never an early end."""

from __future__ import annotations

import asyncio

from comfyline.runtime import Bus, scan


async def test_every_current_key_once_and_no_deleted_one(bus: Bus) -> None:
    kv = await bus.kv(bus.names.bucket("workers"))
    assert await scan(kv, ">") == []
    for n in range(50):
        await kv.put(f"w{n}", f"v{n}".encode())
    await kv.put("w7", b"again")
    await kv.delete("w3")
    found = dict(await scan(kv, ">"))
    assert len(found) == 49 and "w3" not in found and found["w7"] == b"again"
    assert dict(await scan(kv, "w1")) == {"w1": b"v1"}


async def test_many_reads_at_once_each_see_the_whole_bucket(bus: Bus) -> None:
    """Concurrent reads (each its own ordered consumer) all return the whole bucket."""
    kv = await bus.kv(bus.names.bucket("workers"))
    for n in range(20):
        await kv.put(f"w{n}", b"x")
    reads = await asyncio.gather(*(scan(kv, ">") for _ in range(30)))
    assert [len(r) for r in reads] == [20] * 30

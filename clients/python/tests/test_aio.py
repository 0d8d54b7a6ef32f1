"""The asyncio client: same answers as the blocking one, concurrent sessions on one stream, failover."""
import asyncio

import numpy as np
import pytest

import samplerd
from scripted import model

STEPS = 40


async def agenerate(session, steps, first_token=1, on_step=None):
    tokens, prev = [], first_token
    for i in range(steps):
        if on_step is not None:
            on_step(i)
        logits, attention = model(session.step_index, prev)
        prev = (await session.step(logits, attention)).token
        tokens.append(prev)
    return tokens


def sync_reference(address, sequence_id, seed, steps=STEPS):
    from scripted import generate

    with samplerd.Client(address) as c:
        return generate(c.session(sequence_id, seed=seed), steps)


def test_async_matches_blocking_client(server):
    async def main():
        async with samplerd.AsyncClient(server.address) as c:
            assert await c.health() == "SERVING"
            assert (await c.list_profiles()).default_profile == "entropix"
            sessions = [c.session(f"aio-{i}", seed=i + 1) for i in range(4)]
            return await asyncio.gather(*(agenerate(s, STEPS) for s in sessions))

    together = asyncio.run(main())
    assert together == [sync_reference(server.address, f"aio-{i}", i + 1) for i in range(4)]


def test_async_batch_and_rejection(server):
    async def main():
        async with samplerd.AsyncClient(server.address) as c:
            a, b = c.session("aio-a", seed=3), c.session("aio-b", seed=3)
            logits, attention = model(0, 1)
            rs = await c.sample_batch([(a, logits, attention), (b, logits)])
            assert [r.sequence_id for r in rs] == ["aio-a", "aio-b"]
            assert rs[0].metrics.attn_entropy is not None and rs[1].metrics.attn_entropy is None
            with pytest.raises(samplerd.StepError):
                await a.step(np.full(5, np.inf, np.float32))
            return a.step_index, b.step_index

    assert asyncio.run(main()) == (1, 1)


def test_async_failover(spawn):
    a, b = spawn("127.0.0.1:0"), spawn("127.0.0.1:0")
    expected = sync_reference(b.address, "aio-failover", 77)

    async def main():
        async with samplerd.AsyncClient([a.address, b.address], timeout=5) as c:
            s = c.session("aio-failover", seed=77)
            got = await agenerate(s, STEPS, on_step=lambda i: a.kill() if i == 15 else None)
            return got, c.failovers, c.active_endpoint

    got, failovers, active = asyncio.run(main())
    assert failovers >= 1 and active == b.address
    assert got == expected

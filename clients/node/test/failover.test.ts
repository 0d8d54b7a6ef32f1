// A session whose server dies mid-generation resumes on another one and draws the same tokens.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, Unavailable } from "../src";
import { generate } from "./generate";
import { Samplerd } from "./server";

const STEPS = 60;

async function reference(address: string): Promise<number[]> {
  const c = new Client(address);
  try {
    return await generate(c.session({ sequenceId: "failover", seed: 2024 }), STEPS);
  } finally {
    c.close();
  }
}

for (const signal of ["SIGKILL", "SIGTERM"] as const) {
  test(`an endpoint list survives ${signal} of the serving server`, async () => {
    const a = await Samplerd.start(["127.0.0.1:0"], ["--drain_seconds", "1"]);
    const b = await Samplerd.start();
    try {
      const expected = await reference(b.address);
      const c = new Client([a.address, b.address], { timeoutMs: 5000 });
      let code: number | null = null;
      const got = await generate(c.session({ sequenceId: "failover", seed: 2024 }), STEPS, 1, async (i) => {
        if (i === 20) {
          assert.equal(c.activeEndpoint, a.address);
          code = await a.kill(signal);
        }
      });
      assert.ok(c.failovers >= 1);
      assert.equal(c.activeEndpoint, b.address);
      c.close();
      assert.equal(code, signal === "SIGTERM" ? 0 : -1);
      assert.deepEqual(got, expected);
    } finally {
      await a.kill();
      await b.kill();
    }
  });
}

test("a round-robin target survives each of its servers dying in turn", async () => {
  const a = await Samplerd.start();
  const port = a.address.split(":").pop();
  const b = await Samplerd.start([`127.0.0.2:${port}`]);
  let restarted: Samplerd | undefined;
  try {
    const expected = await reference(a.address);
    const c = new Client(`ipv4:127.0.0.1:${port},127.0.0.2:${port}`, { timeoutMs: 5000 });
    const got = await generate(c.session({ sequenceId: "failover", seed: 2024 }), STEPS, 1, async (i) => {
      if (i === 15) await a.kill();
      if (i === 30) {
        restarted = await Samplerd.start([`127.0.0.1:${port}`]);
        await b.kill();
      }
    });
    // Every step answered, as one server would have: across two deaths. (No count of failovers is asserted: a
    // stream that breaks between two steps is reopened by the next one without a failed attempt, one that
    // breaks during a step is retried, and which happens is a race with the process's exit.)
    c.close();
    assert.equal(got.length, STEPS);
    assert.deepEqual(got, expected);
  } finally {
    await a.kill();
    await b.kill();
    await restarted?.kill();
  }
});

test("all endpoints dead: Unavailable within the failover timeout", async () => {
  const a = await Samplerd.start();
  const address = a.address;
  await a.kill();
  const c = new Client([address], { timeoutMs: 1000, failoverTimeoutMs: 1000 });
  const t0 = Date.now();
  await assert.rejects(generate(c.session({ sequenceId: "nobody", seed: 1 }), 1), Unavailable);
  assert.ok(Date.now() - t0 < 10_000);
  c.close();
});

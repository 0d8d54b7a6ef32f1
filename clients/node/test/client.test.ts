import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join } from "path";

import { BatchError, Client, StepError, StepResult } from "../src";
import { bf16Bits, stepInputs } from "../conformance/model";
import { readNpy } from "../conformance/npy";
import { generate, SHAPE } from "./generate";
import { GOLDEN, goldenCases, Samplerd, tempDir } from "./server";

const CLARIFY_TOKEN = 2564;
let server: Samplerd;
let client: Client;

before(async () => {
  server = await Samplerd.start();
  client = new Client(server.address);
});

after(async () => {
  client.close();
  assert.equal(await server.kill("SIGTERM"), 0, "samplerd did not exit 0 on SIGTERM");
});

test("health and profiles", async () => {
  assert.equal(await client.health(), "SERVING");
  const p = await client.listProfiles();
  assert.equal(p.defaultProfile, "entropix");
  for (const name of ["entropix", "entropix-frog", "fixed"])
    assert.ok(
      p.profiles.some((x) => x.name === name),
      name,
    );
});

test("health names the service's status through the generated grpc.health.v1 messages", async () => {
  assert.equal(await client.health("samplerd.v1.Sampler"), "SERVING");
  await assert.rejects(client.health("no.such.Service"), (e: { code?: number }) => e.code === 5 /* NOT_FOUND */);
});

test("step returns the result and the session keeps recent tokens", async () => {
  const s = client.session({
    sequenceId: "keeps-recent",
    seed: 11n,
    recentTokens: [5, 6, 7],
    maxRecent: 6,
    topLogprobs: 3,
  });
  const tokens: number[] = [];
  let prev = 1;
  for (let i = 0; i < 5; i++) {
    const x = stepInputs(SHAPE, 3, i, prev);
    const r: StepResult = await s.step(x.logits, { data: x.attention, shape: x.attentionShape });
    assert.equal(r.step, i);
    assert.equal(r.sequenceId, "keeps-recent");
    assert.ok(r.token >= 0 && r.token < SHAPE.vocab);
    assert.ok(r.logprob <= 0);
    assert.ok(["ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE"].includes(r.regime), r.regime);
    assert.notEqual(r.metrics.logitsEntropy, undefined);
    assert.notEqual(r.metrics.attnEntropy, undefined);
    assert.equal(r.top.length, 3);
    assert.ok(r.top[0].logprob >= r.top[1].logprob);
    assert.equal(r.seed, 11n);
    assert.equal(r.profile, "entropix");
    tokens.push(r.token);
    prev = r.token;
  }
  assert.equal(s.stepIndex, 5);
  assert.deepEqual(s.recentTokens, [5, 6, 7, ...tokens].slice(-6));
});

test("recent tokens reach the server (CLARIFY emits once, then draws)", async () => {
  const s = client.session({ sequenceId: "clarify", seed: 3 });
  const uniform = new Float32Array(32000);
  const r0 = await s.step(uniform);
  assert.deepEqual([r0.regime, r0.token], ["CLARIFY", CLARIFY_TOKEN]);
  const r1 = await s.step(uniform);
  assert.equal(r1.regime, "CLARIFY");
  assert.ok((r1.applied.temperature ?? 0) > 0);
  assert.deepEqual(s.recentTokens, [CLARIFY_TOKEN, r1.token]);
});

test("same seed gives the same tokens, another seed other tokens", async () => {
  const a = await generate(client.session({ sequenceId: "det", seed: 99 }), 30);
  const b = await generate(client.session({ sequenceId: "det", seed: 99 }), 30);
  const c = await generate(client.session({ sequenceId: "det", seed: 100 }), 30);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("uint64 seeds above 2^63 round-trip", async () => {
  const seed = 18446744073709551557n;
  const s = client.session({ sequenceId: "big-seed", seed });
  const r = await s.step(stepInputs(SHAPE, 1, 0, 1).logits);
  assert.equal(r.seed, seed);
  assert.equal(s.seed, seed);
});

test("seeds outside uint64 are refused locally, not wrapped", async () => {
  for (const seed of [2n ** 64n, 2n ** 64n + 5n, -1n, -1, "-5", "18446744073709551616", 1.5, "seven"]) {
    assert.throws(() => client.session({ sequenceId: "bad-seed", seed }), RangeError, String(seed));
  }
  for (const [seed, want] of [
    [2n ** 64n - 1n, 2n ** 64n - 1n],
    ["42", 42n],
    [0, 0n],
  ] as const) {
    assert.equal(client.session({ sequenceId: "seed", seed }).seed, want);
  }
  assert.throws(() => client.session({ sequenceId: "bad-start", startStep: -1 }), RangeError);
  // The batch path carries the session's seed: the largest one reaches the server unchanged.
  const s = client.session({ sequenceId: "max-seed", seed: 2n ** 64n - 1n });
  const [r] = await client.sampleBatch([[s, stepInputs(SHAPE, 1, 0, 1).logits]]);
  assert.equal(r.seed, 2n ** 64n - 1n);
});

test("bf16 and f32 of bfloat16-exact golden inputs agree with the golden metrics and regime", async () => {
  const c = goldenCases().find((x) => x.name === "bf16_exact_32k");
  const logits = readNpy(join(GOLDEN, c.logits));
  const attention = readNpy(join(GOLDEN, c.attention));
  const results: StepResult[] = [];
  for (const bf16 of [false, true]) {
    const s = client.session({ sequenceId: "bf16-exact", seed: BigInt(c.seed), recentTokens: c.recent_tokens });
    results.push(
      bf16
        ? await s.step(bf16Bits(logits.data), { data: bf16Bits(attention.data), shape: attention.shape })
        : await s.step(logits.data, { data: attention.data, shape: attention.shape }),
    );
  }
  assert.deepEqual({ ...results[0], serverMicros: 0 }, { ...results[1], serverMicros: 0 });
  assert.equal(results[0].regime, c.regimes.entropix.regime);
  const want: Record<string, number> = c.metrics;
  const got: Record<string, number | undefined> = {
    logits_entropy: results[0].metrics.logitsEntropy,
    logits_varentropy: results[0].metrics.logitsVarentropy,
    attn_entropy: results[0].metrics.attnEntropy,
    attn_varentropy: results[0].metrics.attnVarentropy,
    agreement: results[0].metrics.agreement,
    interaction_strength: results[0].metrics.interactionStrength,
  };
  for (const [k, v] of Object.entries(want)) {
    assert.ok(Math.abs((got[k] as number) - v) <= 1e-6 + 1e-4 * Math.abs(v), `${k}: ${got[k]} vs ${v}`);
  }
});

test("golden regimes and greedy tokens", async () => {
  let checked = 0;
  for (const c of goldenCases()) {
    if (c.expect_error) continue;
    const logits = readNpy(join(GOLDEN, c.logits));
    const attention = c.attention ? readNpy(join(GOLDEN, c.attention)) : undefined;
    const s = client.session({
      sequenceId: c.name,
      seed: BigInt(c.seed),
      recentTokens: c.recent_tokens,
      topLogprobs: 5,
    });
    const r = await s.step(logits.data, attention && { data: attention.data, shape: attention.shape });
    assert.equal(r.regime, c.regimes.entropix.regime, c.name);
    if (c.regimes.entropix.action === "greedy") assert.equal(r.token, c.argmax, c.name);
    r.top.forEach((t, i) => assert.ok(Math.abs(t.logprob - c.logprob_of[i].logprob) <= 1e-3, c.name));
    checked++;
  }
  assert.ok(checked >= 20);
});

test("a sequence_id over 256 bytes is a StepError, not a ProtocolError", async () => {
  // The server echoes only its first 256 bytes (cut at a character boundary: "é" is 2 bytes).
  const s = client.session({ sequenceId: "a".repeat(255) + "é".repeat(10), seed: 5 });
  await assert.rejects(s.step(new Float32Array(100)), (e: unknown) => {
    assert.ok(e instanceof StepError, String(e));
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    assert.equal(e.field, "sequence_id");
    return true;
  });
  assert.equal(s.stepIndex, 0);
});

test("a rejected step throws StepError and the session does not advance", async () => {
  const s = client.session({ sequenceId: "reject", seed: 5, recentTokens: [1] });
  await assert.rejects(s.step(new Float32Array(100).fill(-Infinity)), (e: unknown) => {
    assert.ok(e instanceof StepError);
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    assert.match(e.field, /logits/);
    return true;
  });
  assert.equal(s.stepIndex, 0);
  assert.deepEqual(s.recentTokens, [1]);
  const r = await s.step(new Float32Array(100));
  assert.equal(r.step, 0);
});

test("the server's seed is adopted when none is given", async () => {
  const s = client.session({ sequenceId: "seedless" });
  const x = stepInputs(SHAPE, 2, 0, 1).logits;
  const r0 = await s.step(x);
  assert.notEqual(r0.seed, 0n);
  assert.equal(s.seed, r0.seed);
  assert.equal((await s.step(x)).seed, r0.seed);
});

test("parameter overrides and the fixed profile", async () => {
  const logits = stepInputs(SHAPE, 5, 3, 4).logits;
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  const r = await client
    .session({ sequenceId: "greedy", seed: 1, profile: "fixed", params: { temperature: 0 } })
    .step(logits);
  assert.equal(r.regime, "FIXED");
  assert.equal(r.applied.temperature, 0);
  assert.equal(r.token, best);
  const k = await client
    .session({ sequenceId: "topk", seed: 1, profile: "fixed" })
    .step(logits, undefined, { params: { topK: 1 } });
  assert.equal(k.applied.topK, 1);
  assert.equal(k.token, best);
  assert.throws(() => client.session({ params: { temprature: 1 } as never }), /unknown sampling parameter/);
});

test("sampleBatch equals stepping each session, and reports partial rejection", async () => {
  const profiles = ["entropix", "entropix-frog", "fixed"];
  const batch = profiles.map((p, i) => client.session({ sequenceId: `b${i}`, seed: 7, profile: p }));
  const single = profiles.map((p, i) => client.session({ sequenceId: `b${i}`, seed: 7, profile: p }));
  let prev = [1, 2, 3];
  for (let step = 0; step < 10; step++) {
    const inputs = prev.map((t) => stepInputs(SHAPE, 9, step, t));
    const rb = await client.sampleBatch(
      batch.map((s, i) => [s, inputs[i].logits, { data: inputs[i].attention, shape: inputs[i].attentionShape }]),
    );
    const rs = await Promise.all(
      single.map((s, i) => s.step(inputs[i].logits, { data: inputs[i].attention, shape: inputs[i].attentionShape })),
    );
    assert.deepEqual(
      rb.map((r) => r.token),
      rs.map((r) => r.token),
    );
    assert.deepEqual(
      rb.map((r) => r.sequenceId),
      ["b0", "b1", "b2"],
    );
    prev = rb.map((r) => r.token);
  }
  const good = client.session({ sequenceId: "good", seed: 1 });
  const bad = client.session({ sequenceId: "bad", seed: 1 });
  await assert.rejects(
    client.sampleBatch([
      [good, new Float32Array(10)],
      [bad, new Float32Array(10).fill(NaN)],
    ]),
    (e: unknown) => {
      assert.ok(e instanceof BatchError);
      assert.ok(!(e.results[0] instanceof StepError) && e.results[1] instanceof StepError);
      return true;
    },
  );
  assert.equal(good.stepIndex, 1);
  assert.equal(bad.stepIndex, 0);
});

test("concurrent sessions pipelined on one stream equal sequential ones", async () => {
  const together = await Promise.all(
    [0, 1, 2, 3].map((i) => generate(client.session({ sequenceId: `c${i}`, seed: i + 1 }), 20)),
  );
  const alone: number[][] = [];
  for (const i of [0, 1, 2, 3]) alone.push(await generate(client.session({ sequenceId: `c${i}`, seed: i + 1 }), 20));
  assert.deepEqual(together, alone);
});

test("unix socket and dns:/// targets", async () => {
  const dir = tempDir();
  const srv = await Samplerd.start([`unix:${dir.path}/s.sock`, "127.0.0.1:0"]);
  try {
    const port = srv.addresses[1].split(":").pop();
    const runs: number[][] = [];
    for (const target of [`unix:${dir.path}/s.sock`, `dns:///localhost:${port}`]) {
      const c = new Client(target);
      runs.push(await generate(c.session({ sequenceId: "targets", seed: 4 }), 10));
      c.close();
    }
    assert.deepEqual(runs[0], runs[1]);
  } finally {
    await srv.kill();
    dir.remove();
  }
});

// The Node client's conformance driver: sends tests/conformance/requests.json through the samplerd Node client
// and writes one record per answered step in the suite's canonical format (tests/conformance/README.md).
//
//   node dist/conformance/driver.js --target 127.0.0.1:50051 --requests ../../tests/conformance/requests.json \
//        --golden ../../tests/golden --out node.txt
import { readFileSync, writeFileSync } from "fs";
import { join } from "path";

import { Client, Params, Session, StepError, StepResult, TensorInput } from "../src";
import { bf16Bits, f16Bits, stepInputs } from "./model";
import { readNpy } from "./npy";

interface WireParams {
  [k: string]: number;
}

interface GoldenRequest {
  id: string;
  logits: string;
  attention: string | null;
  dtype: "f32" | "bf16";
  recent_tokens: number[];
  seed: string;
  profile: string;
  params: WireParams | null;
  top_logprobs: number;
}

interface Generation {
  steps: number;
  vocab: number;
  layers: number;
  heads: number;
  kv_base: number;
  dtypes: ("f32" | "f16" | "bf16")[];
  sequences: { id: string; profile: string; seed: string; salt: number; prompt: number[]; params: WireParams | null }[];
}

const PARAM_NAMES: Record<string, keyof Params> = {
  temperature: "temperature",
  top_k: "topK",
  top_p: "topP",
  min_p: "minP",
  repetition_penalty: "repetitionPenalty",
  frequency_penalty: "frequencyPenalty",
  presence_penalty: "presencePenalty",
  n_adaptive_samples: "nAdaptiveSamples",
  clarifying_token: "clarifyingToken",
};

function toParams(p: WireParams | null): Params | undefined {
  if (!p) return undefined;
  const out: Params = {};
  for (const [k, v] of Object.entries(p)) (out as Record<string, number>)[PARAM_NAMES[k]] = v;
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function hex(v: number | undefined): string {
  if (v === undefined) return "-";
  f32[0] = v;
  return u32[0].toString(16).padStart(8, "0");
}

const int = (v: number | undefined) => (v === undefined ? "-" : String(v));

export function record(id: string, r: StepResult): string {
  const a = r.applied;
  const m = r.metrics;
  return [
    id,
    `step=${r.step}`,
    `token=${r.token}`,
    `regime=${r.regime}`,
    `logprob=${hex(r.logprob)}`,
    `applied=${[
      hex(a.temperature),
      int(a.topK),
      hex(a.topP),
      hex(a.minP),
      hex(a.repetitionPenalty),
      hex(a.frequencyPenalty),
      hex(a.presencePenalty),
      int(a.nAdaptiveSamples),
      int(a.clarifyingToken),
    ].join(",")}`,
    `metrics=${[
      m.logitsEntropy,
      m.logitsVarentropy,
      m.attnEntropy,
      m.attnVarentropy,
      m.agreement,
      m.interactionStrength,
    ]
      .map(hex)
      .join(",")}`,
    `top=${r.top.map((t) => `${t.token}:${hex(t.logprob)}`).join(",")}`,
    `seed=${r.seed}`,
    `profile=${r.profile}`,
  ].join(" ");
}

export function errorRecord(id: string, e: StepError): string {
  return `${id} step=${e.step} error=${e.code} field=${e.field}`;
}

function encode(values: Float32Array, shape: number[], dtype: string): TensorInput {
  if (dtype === "f32") return { data: values, shape, dtype: "f32" };
  if (dtype === "f16") return { data: f16Bits(values), shape, dtype: "f16" };
  return { data: bf16Bits(values), shape, dtype: "bf16" };
}

async function main(): Promise<void> {
  const args = new Map<string, string>();
  for (let i = 2; i + 1 < process.argv.length; i += 2)
    args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
  for (const k of ["target", "requests", "golden", "out"]) {
    if (!args.has(k))
      throw new Error(`usage: driver.js --target ADDR --requests FILE --golden DIR --out FILE (missing --${k})`);
  }
  const doc = JSON.parse(readFileSync(args.get("requests")!, "utf8"));
  const golden: GoldenRequest[] = doc.golden;
  const gen: Generation = doc.generation;
  const client = new Client(args.get("target")!);
  const lines: string[] = [];
  const cache = new Map<string, ReturnType<typeof readNpy>>();
  const load = (f: string) => {
    if (!cache.has(f)) cache.set(f, readNpy(join(args.get("golden")!, f)));
    return cache.get(f)!;
  };
  try {
    for (const g of golden) {
      const logits = load(g.logits);
      const attention = g.attention ? load(g.attention) : undefined;
      const s = client.session({
        sequenceId: g.id,
        seed: BigInt(g.seed),
        profile: g.profile,
        params: toParams(g.params),
        recentTokens: g.recent_tokens,
        topLogprobs: g.top_logprobs,
      });
      try {
        const r = await s.step(
          encode(logits.data, logits.shape, g.dtype),
          attention && encode(attention.data, attention.shape, g.dtype),
        );
        lines.push(record(g.id, r));
      } catch (e) {
        if (!(e instanceof StepError)) throw e;
        lines.push(errorRecord(g.id, e));
      }
    }
    const shape = { vocab: gen.vocab, layers: gen.layers, heads: gen.heads, kvBase: gen.kv_base };
    const sessions: Session[] = gen.sequences.map((q) =>
      client.session({
        sequenceId: q.id,
        seed: BigInt(q.seed),
        profile: q.profile,
        params: toParams(q.params),
        recentTokens: q.prompt,
      }),
    );
    const prev = gen.sequences.map((q) => q.prompt[q.prompt.length - 1]);
    for (let t = 0; t < gen.steps; t++) {
      const dtype = gen.dtypes[t % gen.dtypes.length];
      const items = sessions.map((s, i) => {
        const x = stepInputs(shape, gen.sequences[i].salt, t, prev[i]);
        return [s, encode(x.logits, [gen.vocab], dtype), encode(x.attention, x.attentionShape, dtype)] as [
          Session,
          TensorInput,
          TensorInput,
        ];
      });
      const results = await client.sampleBatch(items);
      results.forEach((r, i) => {
        lines.push(record(gen.sequences[i].id, r));
        prev[i] = r.token;
      });
    }
  } finally {
    client.close();
  }
  writeFileSync(args.get("out")!, lines.join("\n") + "\n");
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

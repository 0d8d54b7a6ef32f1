// Samples a few tokens from random logits and attention through the Node client (CommonJS).
//   node examples/example.cjs localhost:50051          (examples/example.mjs is the same as an ES module)
const { Client } = require("samplerd");

async function main() {
  const client = new Client(process.argv[2] ?? "localhost:50051");
  const session = client.session({ sequenceId: "demo", seed: 42n, profile: "entropix", recentTokens: [1, 2, 3] });
  const randn = () => Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  for (let i = 0; i < 5; i++) {
    const logits = Float32Array.from({ length: 32000 }, randn);
    const attention = { data: Float32Array.from({ length: 4 * 8 * 16 }, randn), shape: [4, 8, 16] };
    const r = await session.step(logits, attention);
    console.log(r.token, r.regime, r.applied.temperature, r.metrics.logitsEntropy);
  }
  client.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

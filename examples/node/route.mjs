// Route prompts with tier-router's text-in ONNX graph (`tier-router export-onnx`).
//
//   node route.mjs router.onnx < prompts.jsonl
//
// Reads one JSON object per line, {"id": ..., "prompt": "..."}, and prints one per line,
// {"id": ..., "tier": "<tier name>", "p_pass": {"<tier name>": p, ...}}, in input order.
// A line that is not such an object is reported on stderr (with its line number) and
// skipped; the exit status is then 1.
import { createInterface } from 'node:readline';
import ort from 'onnxruntime-node';

const BATCH = 32;

async function main() {
  const modelPath = process.argv[2];
  if (!modelPath) {
    console.error('usage: node route.mjs router.onnx < prompts.jsonl');
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  let names = null;
  let failed = false;
  let batch = [];

  async function flush() {
    if (batch.length === 0) return;
    const text = new ort.Tensor('string', batch.map((r) => r.prompt), [batch.length]);
    const out = await session.run({ text });
    names = names ?? Array.from(out.tier_names.data);
    const p = out.p_pass.data;
    const tier = out.tier.data;
    const width = names.length;
    const lines = batch.map((r, i) => {
      const pPass = {};
      names.forEach((name, j) => { pPass[name] = p[i * width + j]; });
      return JSON.stringify({ id: r.id, tier: names[Number(tier[i])], p_pass: pPass });
    });
    process.stdout.write(lines.join('\n') + '\n');
    batch = [];
  }

  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of rl) {
    lineNo += 1;
    if (!line.trim()) continue;
    let rec;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      console.error(`stdin:${lineNo}: invalid JSON: ${e.message}`);
      failed = true;
      continue;
    }
    if (rec === null || typeof rec !== 'object' || typeof rec.prompt !== 'string') {
      console.error(`stdin:${lineNo}: expected an object with a string "prompt"`);
      failed = true;
      continue;
    }
    // Lone surrogates cannot be UTF-8: U+FFFD stands in, as in the Python runner.
    batch.push({ id: rec.id ?? null, prompt: rec.prompt.toWellFormed() });
    if (batch.length >= BATCH) await flush();
  }
  await flush();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`route.mjs: ${e.message ?? e}`);
  process.exit(1);
});

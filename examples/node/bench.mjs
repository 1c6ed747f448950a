// Latency of the text graph from Node: one prompt per run, single thread.
//
//   node bench.mjs router.onnx < prompts.jsonl
//
// Prints {"runs", "p50_us", "p99_us"} after one warm-up pass over the prompts.
import { createInterface } from 'node:readline';
import ort from 'onnxruntime-node';

const session = await ort.InferenceSession.create(process.argv[2], {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
});
const prompts = [];
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim()) prompts.push(JSON.parse(line).prompt.toWellFormed());
}
const run = (p) => session.run({ text: new ort.Tensor('string', [p], [1]) });
for (const p of prompts) await run(p);
const us = [];
for (const p of prompts) {
  const t = process.hrtime.bigint();
  await run(p);
  us.push(Number(process.hrtime.bigint() - t) / 1e3);
}
us.sort((a, b) => a - b);
const at = (q) => us[Math.min(us.length - 1, Math.floor(q * us.length))];
console.log(JSON.stringify({ runs: us.length, p50_us: Math.round(at(0.5)), p99_us: Math.round(at(0.99)) }));

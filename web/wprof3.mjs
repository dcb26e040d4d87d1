// node wprof3.mjs model threads n : per-op wasm profile (30 runs after 5 warm-up)
import * as ort from 'onnxruntime-web';
import fs from 'node:fs';
const [model, threads, nStr] = process.argv.slice(2);
const n = Number(nStr);
ort.env.wasm.numThreads = Number(threads);
const sess = await ort.InferenceSession.create(fs.readFileSync(model), { executionProviders: ['wasm'], graphOptimizationLevel: 'all', enableProfiling: true });
const ids = BigInt64Array.from({ length: n }, (_, i) => BigInt(i === 0 ? 101 : i === n - 1 ? 102 : 2000 + 37 * i));
const feeds = {
  input_ids: new ort.Tensor('int64', ids, [1, n]),
  attention_mask: new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => 1n), [1, n]),
  token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [1, n]),
};
for (let i = 0; i < 5; i++) await sess.run(feeds);
const ts = [];
for (let i = 0; i < 30; i++) { const t = performance.now(); await sess.run(feeds); ts.push(performance.now() - t); }
ts.sort((a, b) => a - b);
console.error(`${model} threads=${threads} n=${n} median ${ts[15].toFixed(2)} ms`);
await sess.endProfiling();
process.exit(0);

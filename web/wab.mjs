// node wab.mjs threads rounds modelA modelB ... : interleaved wasm A/B over /tmp/s11/ids.json; per-sentence ratios vs the first
import * as ort from 'onnxruntime-web';
import fs from 'node:fs';
const [threads, rounds, ...models] = process.argv.slice(2);
ort.env.wasm.numThreads = Number(threads);
ort.env.logLevel = 'error';
const ids = JSON.parse(fs.readFileSync('/tmp/s11/ids.json', 'utf8'));
const sess = [];
for (const m of models) sess.push(await ort.InferenceSession.create(fs.readFileSync(m), { executionProviders: ['wasm'], graphOptimizationLevel: 'all', logSeverityLevel: 3 }));
const feeds = ids.map((x) => {
  const n = x.length;
  return {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(x.map(BigInt)), [1, n]),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => 1n), [1, n]),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [1, n]),
  };
});
for (const s of sess) for (let i = 0; i < 5; i++) await s.run(feeds[i]);
const tot = models.map(() => 0); const ratios = models.map(() => []);
for (let r = 0; r < Number(rounds); r++) {
  for (let i = 0; i < feeds.length; i++) {
    const order = (i + r) % 2 ? [...sess.keys()].reverse() : [...sess.keys()];
    const t = [];
    for (const k of order) { const t0 = performance.now(); await sess[k].run(feeds[i]); t[k] = performance.now() - t0; }
    t.forEach((x, k) => { tot[k] += x; ratios[k].push(t[0] / x); });
  }
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
models.forEach((m, k) => console.log(`${m}: mean ${(tot[k] / (feeds.length * Number(rounds))).toFixed(2)} ms/sentence, speed-up vs first (median per sentence) ${med(ratios[k]).toFixed(3)}`));
process.exit(0);

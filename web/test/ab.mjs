// Interleaved A/B of encoder bundles in headless Chromium: the same SST-2 dev sentences, one at
// a time as the page runs them, each sentence by every bundle in turn (the order rotating), so
// the machine's load hits all alike. After `warm-up` untimed passes (V8 optimizes the wasm while
// it runs), `rounds` timed passes. Prints each bundle's mean ms of `session.run` per sentence per
// round (no tokenizer or softmax, unlike bench.mjs: those are the same for every bundle) and the
// median [quartiles] of its per-sentence speed-up over the first bundle. Nothing is asserted;
// the sentences are built with the first bundle's text fields.
//
//   ADEPT_WEB_BUNDLES="exports/a exports/b" node web/test/ab.mjs
//
// Env: ADEPT_WEB_BUNDLES (space-separated bundle dirs relative to the repo root, the first is
// the reference), ADEPT_WEB_AB_THREADS (default 2), ADEPT_WEB_AB_ROUNDS (default 3),
// ADEPT_WEB_AB_WARMUP (untimed passes, default 1), ADEPT_WEB_BENCH_N (sentences, default 100),
// ADEPT_WEB_BENCH_DATA / ADEPT_DATA (see dev-sample.mjs), CHROMIUM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../serve.mjs';
import { devSample } from './dev-sample.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bundles = (process.env.ADEPT_WEB_BUNDLES ?? '').split(/\s+/).filter(Boolean);
const num = (name, dflt) => {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 0) {
    console.error(`error: ${name}=${process.env[name]}: expected a whole number`);
    process.exit(1);
  }
  return v;
};
const threads = Math.max(1, num('ADEPT_WEB_AB_THREADS', 2));
const rounds = Math.max(1, num('ADEPT_WEB_AB_ROUNDS', 3));
const warmup = num('ADEPT_WEB_AB_WARMUP', 1);
if (bundles.length < 2) {
  console.error('error: give at least two bundles in ADEPT_WEB_BUNDLES (the first is the reference)');
  process.exit(1);
}
const fields = [];
for (const b of bundles) {
  const file = path.join(root, b, 'adept.json');
  if (!fs.existsSync(file)) {
    console.error(`error: ${file} does not exist (ADEPT_WEB_BUNDLES takes bundle dirs relative to ${root})`);
    process.exit(1);
  }
  const m = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (m.decoder || !m.text_fields) {
    console.error(`error: ${b} is not an encoder bundle`);
    process.exit(1);
  }
  fields.push(m.text_fields);
}
const { sentences, source } = devSample(Number(process.env.ADEPT_WEB_BENCH_N ?? 100));
const records = sentences.map((s) => Object.fromEntries(fields[0].map((f, i) => [f, i === 0 ? s : 'and a second text'])));

const server = await startServer({ root, port: 0, quiet: true });
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
let rc = 0;
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/web/test/ab.html`);
  await page.waitForFunction(() => window.abReady, null, { timeout: 60_000 }).catch((e) => {
    throw new Error(`test/ab.html did not load: ${errors.join(' | ') || e.message}`);
  });
  const urls = bundles.map((b) => `${base}/${b.replace(/^\/+|\/+$/g, '')}/`);
  const load = os.loadavg();
  const r = await page.evaluate((a) => window.runAB(a), { bundles: urls, records, threads, rounds, warmup });
  if (errors.length) throw new Error(errors.join(' | '));
  const q = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(p * s.length))];
  };
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(
    `A/B in headless Chromium: ${r.threads} thread(s), cross-origin isolated: ${r.isolated}; ${source}; ` +
      `${warmup} untimed pass(es), then ${rounds} timed; load average ${load.map((x) => x.toFixed(2)).join(' ')} before, ` +
      `${os.loadavg().map((x) => x.toFixed(2)).join(' ')} after`,
  );
  const width = Math.max(...bundles.map((b) => b.length));
  for (const [k, b] of bundles.entries()) {
    const perRound = r.ms[k].map((m) => mean(m).toFixed(2)).join(' / ');
    const ratios = r.ms[0].flatMap((round, ri) => round.map((t, i) => t / r.ms[k][ri][i]));
    const cmp = k === 0 ? 'reference' : `speed-up ${q(ratios, 0.5).toFixed(3)} [${q(ratios, 0.25).toFixed(2)}, ${q(ratios, 0.75).toFixed(2)}]`;
    console.log(`  ${b.padEnd(width)}  session.run ms per sentence by round ${perRound}  ${cmp}`);
  }
} catch (e) {
  console.error(`error: ${e.stack ?? e}`);
  rc = 1;
} finally {
  await browser.close();
  server.close();
}
process.exit(rc);

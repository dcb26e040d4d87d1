// Headless Chromium (playwright-core) against the demo page with a decoder bundle:
//  1. the page loads the bundle as a decoder (manifest `decoder` section, prompt cache);
//  2. every DECODER_CASES completion (greedy; stop string; soft prompt as virtual tokens instead
//     of the prompt cache; repetition penalty; seeded sampling) has the token ids, text, finish
//     reason and prompt length of `adept generate --json`, and its streamed pieces concatenate to
//     the text;
//  3. tokens/second: a greedy completion of ADEPT_WEB_BENCH_TOKENS tokens, best of 3 runs after a
//     warm-up (printed and written to results.json);
//  4. the UI path (type a prompt, click Generate, read the streamed completion and the stats),
//     screenshots, the bundle picked from disk, no console errors;
//  5. a decoder bundle with a missing or corrupt prompt cache gives a clear message.
// Run through ./run.sh, which writes the native references (decoder-ref.mjs).
//
// Env: ADEPT_WEB_BUNDLE, ADEPT_WEB_REF (dir with native_generate.jsonl), ADEPT_WEB_TEST_OUT,
// CHROMIUM, ADEPT_WEB_BENCH_PROMPT (default "the sea"), ADEPT_WEB_BENCH_TOKENS (default 48).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../serve.mjs';
import { DECODER_CASES } from './cases.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bundle = process.env.ADEPT_WEB_BUNDLE;
const ref = process.env.ADEPT_WEB_REF;
const out = path.resolve(process.env.ADEPT_WEB_TEST_OUT ?? path.join(here, '../test-output'));
const exe = process.env.CHROMIUM ?? '/usr/bin/chromium';
const benchPrompt = process.env.ADEPT_WEB_BENCH_PROMPT ?? 'the sea';
const benchTokens = Number(process.env.ADEPT_WEB_BENCH_TOKENS ?? 48);
fs.mkdirSync(out, { recursive: true });

const readJsonl = (p) =>
  fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
const native = readJsonl(path.join(ref, 'native_generate.jsonl'));
const manifest = JSON.parse(fs.readFileSync(path.join(root, bundle, 'adept.json'), 'utf8'));
const spec = manifest.decoder;

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`FAIL ${msg}`);
};
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const server = await startServer({ root, port: 0, quiet: true });
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
const results = { bundle, base, kind: 'decoder' };

try {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await ctx.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(`${m.text()} (${m.location()?.url ?? ''})`));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // --- 1. load --------------------------------------------------------------------------------
  const url = `${base}/web/?bundle=/${bundle.replace(/^\/+|\/+$/g, '')}/`;
  const t0 = Date.now();
  await page.goto(url, { waitUntil: 'load' });
  const load = await page.evaluate(() => window.adept.ready);
  const kind = await page.evaluate(() => window.adept.kind);
  results.load = { ...load, page_to_ready_ms: Date.now() - t0 };
  console.log(`loaded ${bundle} (${spec.num_layers} layers, vocabulary ${spec.vocab_size}, soft prompt ${spec.prompt_len}, ${(load.model_bytes / 1e6).toFixed(1)} MB) in ${Date.now() - t0} ms; ${load.threads} ORT thread(s)`);
  if (kind !== 'decoder') fail(`the page loaded the bundle as ${kind}, expected decoder`);
  const visible = await page.evaluate(() => ({
    decoder: !document.getElementById('decoder-card').hidden,
    classifier: !document.getElementById('input-card').hidden,
  }));
  if (!visible.decoder || visible.classifier) fail(`decoder card shown: ${visible.decoder}, classifier cards shown: ${visible.classifier}`);

  // --- 2. completions vs adept generate ---------------------------------------------------------
  if (native.length !== DECODER_CASES.length) fail(`native_generate.jsonl has ${native.length} rows, expected ${DECODER_CASES.length}`);
  results.cases = [];
  let identical = 0;
  for (let i = 0; i < DECODER_CASES.length; i++) {
    const { prompt, options } = DECODER_CASES[i];
    const want = native[i];
    let got;
    try {
      got = await page.evaluate(([p, o]) => window.adept.generate(p, o), [prompt, options]);
    } catch (e) {
      fail(`case ${i} (${JSON.stringify(options)}): generation failed: ${e.message}`);
      continue;
    }
    const row = { prompt, options, token_ids: got.token_ids, native_token_ids: want.token_ids, text: got.text, native_text: want.text,
      finish_reason: got.finish_reason, native_finish_reason: want.finish_reason, tokens_per_s: got.timing.tokens_per_s };
    results.cases.push(row);
    const problems = [];
    if (!same(got.token_ids, want.token_ids)) problems.push(`token ids ${JSON.stringify(got.token_ids)} vs native ${JSON.stringify(want.token_ids)}`);
    if (got.text !== want.text) problems.push(`text ${JSON.stringify(got.text)} vs native ${JSON.stringify(want.text)}`);
    if (got.finish_reason !== want.finish_reason) problems.push(`finish ${got.finish_reason} vs native ${want.finish_reason}`);
    if (got.prompt_tokens !== want.prompt_tokens) problems.push(`prompt tokens ${got.prompt_tokens} vs native ${want.prompt_tokens}`);
    if (got.pieces.join('') !== got.text) problems.push(`streamed pieces ${JSON.stringify(got.pieces)} do not make the text`);
    if (problems.length) fail(`case ${i} ${JSON.stringify(prompt)} ${JSON.stringify(options)}: ${problems.join('; ')}\n  native: ${want.command}`);
    else identical++;
  }
  results.identical = identical;
  console.log(`${identical}/${DECODER_CASES.length} completions equal adept generate --json (token ids, text, finish reason; greedy, stop string, no prompt cache, repetition penalty, seeded sampling)`);

  // --- 3. tokens/second -----------------------------------------------------------------------
  const benchOpts = { max_new_tokens: benchTokens };
  await page.evaluate(([p, o]) => window.adept.generate(p, o), [benchPrompt, benchOpts]);
  const runs = [];
  for (let r = 0; r < 3; r++) runs.push((await page.evaluate(([p, o]) => window.adept.generate(p, o), [benchPrompt, benchOpts])).timing);
  const best = runs.reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a));
  results.speed = { prompt: benchPrompt, max_new_tokens: benchTokens, threads: load.threads, best, runs };
  console.log(
    `browser speed (${load.threads} thread(s), greedy, ${best.new_tokens} new tokens from ${JSON.stringify(benchPrompt)}, best of 3): ` +
      `${best.tokens_per_s.toFixed(1)} tokens/s, ${best.decode_tokens_per_s?.toFixed(1) ?? '—'} tokens/s after the first, ` +
      `time to first token ${best.time_to_first_token_ms.toFixed(1)} ms`,
  );

  // --- 4. UI ----------------------------------------------------------------------------------
  const uiCase = 0;
  const { prompt: uiPrompt, options: uiOpts } = DECODER_CASES[uiCase];
  await page.fill('#prompt', uiPrompt);
  await page.fill('#max-new-tokens', String(uiOpts.max_new_tokens));
  const before = await page.evaluate(() => window.adept.generations.length);
  await page.click('#generate');
  await page.waitForFunction(
    (n) => (window.adept.generations.length > n || document.getElementById('status').textContent) && !document.getElementById('generate').disabled,
    before,
  );
  const ui = await page.evaluate(() => ({
    completion: document.getElementById('completion').textContent,
    stats: document.getElementById('gen-stats').textContent,
    tokens: document.getElementById('gen-tokens').textContent,
    status: document.getElementById('status').textContent,
  }));
  results.ui = ui;
  if (ui.completion !== native[uiCase].text) fail(`UI completion ${JSON.stringify(ui.completion)} vs native ${JSON.stringify(native[uiCase].text)}`);
  if (!ui.tokens.includes(native[uiCase].token_ids.join(' '))) fail(`UI tokens ${JSON.stringify(ui.tokens)} do not show the native ids`);
  if (!/tokens\/s/.test(ui.stats) || !/time to first token/.test(ui.stats)) fail(`tokens/s not shown: ${ui.stats}`);
  if (ui.status) fail(`status shows ${JSON.stringify(ui.status)}`);
  await page.screenshot({ path: path.join(out, 'decoder.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: path.join(out, 'decoder-mobile.png'), fullPage: true });
  if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth)) fail('the decoder page scrolls horizontally at 390 px width');
  console.log(`UI: ${JSON.stringify(ui.completion.slice(0, 80))} | ${ui.stats.slice(0, 120)} | screenshots in ${out}`);
  // the same bundle picked "from disk" (four files: the prompt cache too), then generating again
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.setInputFiles('#pick-files', fs.readdirSync(path.join(root, bundle)).map((f) => path.join(root, bundle, f)));
  await page.waitForFunction(() => document.getElementById('bundle-info').textContent.includes('disk:') && !document.getElementById('generate').disabled, null, { timeout: 120000 });
  const picked = await page.evaluate(([p, o]) => window.adept.generate(p, o), [uiPrompt, uiOpts]);
  if (!same(picked.token_ids, native[uiCase].token_ids)) fail(`bundle picked from disk generates ${JSON.stringify(picked.token_ids)}, native ${JSON.stringify(native[uiCase].token_ids)}`);
  else console.log('picked from disk: the same completion');
  if (consoleErrors.length) fail(`console errors: ${consoleErrors.join(' | ')}`);

  // --- 5. broken prompt caches ----------------------------------------------------------------
  const outRel = path.relative(root, out);
  if (spec.prompt_len > 0 && !outRel.startsWith('..') && !path.isAbsolute(outRel)) {
    const bad = path.join(out, 'bad-decoder-bundles');
    fs.rmSync(bad, { recursive: true, force: true });
    const mk = (name, skip, patch) => {
      const d = path.join(bad, name);
      fs.mkdirSync(d, { recursive: true });
      for (const f of fs.readdirSync(path.join(root, bundle))) {
        if (f === skip) continue;
        let c = fs.readFileSync(path.join(root, bundle, f));
        if (f === patch) c = Buffer.from(c.toString('latin1').replace('past_key_values', 'past_key_valueZ'), 'latin1');
        fs.writeFileSync(path.join(d, f), c);
      }
      return path.relative(root, d);
    };
    const cf = spec.prompt_cache_file;
    const cases = [
      ['no prompt cache', mk('nocache', cf, null), new RegExp(`Bundle file missing: .*${cf.replace('.', '\\.')}`, 's')],
      ['corrupt prompt cache', mk('corruptcache', null, cf), new RegExp(`Invalid bundle.*checksum mismatch for ${cf.replace('.', '\\.')}`, 's')],
    ];
    results.error_messages = {};
    for (const [name, dir, re] of cases) {
      const p = await ctx.newPage();
      await p.goto(`${base}/web/?bundle=/${dir}/`);
      await p.waitForSelector('.status.error', { timeout: 30000 });
      const msg = await p.textContent('#status');
      results.error_messages[name] = msg;
      if (!re.test(msg)) fail(`${name}: message ${JSON.stringify(msg)} does not match ${re}`);
      else console.log(`${name} → ${msg.split('\n')[0].slice(0, 140)}`);
      await p.close();
    }
  }
} catch (e) {
  fail(`test crashed: ${e.stack ?? e}`);
} finally {
  await browser.close();
  server.close();
}

results.failures = failures;
fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2));
if (failures.length) {
  console.error(`\n${failures.length} failure(s); details in ${path.join(out, 'results.json')}`);
  process.exit(1);
}
console.log(`\nOK — results in ${path.join(out, 'results.json')}`);

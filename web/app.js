// ADePT browser demo: tokenizer + post-processing in Rust/wasm (crates/adept-wasm), model.onnx in
// onnxruntime-web. `window.adept` exposes the same steps to the browser test (web/test/).
// Encoder bundles are classified; decoder bundles (adept.json with a `decoder` section) stream a
// completion: the generation loop (sampling, EOS, stop strings, detokenisation) is the native
// runtime's, in wasm (`Decoder`), and this page only runs each ONNX step and carries the cache.
import init, { Classifier, Decoder, is_decoder_manifest, sha256_hex } from './pkg/adept_wasm.js';
import * as ort from './pkg/ort/ort.wasm.min.mjs';

const DEFAULT_BUNDLE = '../exports/quickstart-sst2-adept/';
const $ = (id) => document.getElementById(id);

ort.env.wasm.wasmPaths = new URL('./pkg/ort/', import.meta.url).href;
const params = new URLSearchParams(location.search);
/** Most threads the page asks for by default: ORT's own default cap; a batch-1 encoder of ~70-190
 *  positions gains little past 4 threads, and each thread is a Web Worker with its own stack. */
const MAX_DEFAULT_THREADS = 4;
// Threads need SharedArrayBuffer, i.e. a cross-origin isolated page (COOP/COEP headers, see
// serve.mjs); without them onnxruntime-web runs on one thread. ?threads=N overrides the default
// min(hardware concurrency, 4).
ort.env.wasm.numThreads = self.crossOriginIsolated
  ? Math.max(1, Math.floor(Number(params.get('threads'))) || Math.min(MAX_DEFAULT_THREADS, navigator.hardwareConcurrency || 1))
  : 1;
/** The onnxruntime-web wasm artefact: from 1.19 on npm ships only SIMD128 + threads builds
 *  (`ort-wasm-simd-threaded.wasm`, the one build.sh copies); it runs single-threaded when the page is
 *  not isolated. No relaxed-SIMD instructions (it compiles where relaxed SIMD is off). */
const ORT_WASM = 'ort-wasm-simd-threaded.wasm';
const runtimeInfo = () => ({
  ort_version: ort.env.versions?.web ?? ort.env.versions?.common ?? null,
  wasm: ORT_WASM,
  simd: true,
  threads: ort.env.wasm.numThreads,
  cross_origin_isolated: !!self.crossOriginIsolated,
  hardware_concurrency: navigator.hardwareConcurrency || null,
});

/**
 * A one-node ONNX model (y = Identity(x), x: float[1]), encoded here as protobuf: creating a session
 * from it starts onnxruntime-web (fetch + compile its 14 MB wasm, start the thread pool) while
 * the bundle's model.onnx is still downloading, instead of after it.
 */
function warmupModel() {
  const varint = (n) => {
    const b = [];
    for (; n > 0x7f; n >>>= 7) b.push((n & 0x7f) | 0x80);
    b.push(n);
    return b;
  };
  const field = (no, bytes) => [...varint((no << 3) | 2), ...varint(bytes.length), ...bytes];
  const num = (no, n) => [...varint(no << 3), ...varint(n)];
  const str = (no, text) => field(no, [...new TextEncoder().encode(text)]);
  // ValueInfoProto{name, type: TypeProto{tensor_type: {elem_type: FLOAT, shape: {dim: {dim_value: 1}}}}}
  const value = (name) => [...str(1, name), ...field(2, field(1, [...num(1, 1), ...field(2, field(1, num(1, 1)))]))];
  const node = [...str(1, 'x'), ...str(2, 'y'), ...str(4, 'Identity')];
  const graph = [...field(1, node), ...str(2, 'warmup'), ...field(11, value('x')), ...field(12, value('y'))];
  // ModelProto{ir_version: 8, graph, opset_import: {domain: "", version: 17}}
  return new Uint8Array([...num(1, 8), ...field(7, graph), ...field(8, [...str(1, ''), ...num(2, 17)])]);
}
const ortReady = ort.InferenceSession.create(warmupModel(), { executionProviders: ['wasm'] })
  .then((s) => s.release())
  .catch(() => {}); // a real error surfaces again when the bundle's session is created

const state = {
  classifier: null,
  decoder: null,
  /** The prompt cache's tensors `[{name, dims, data}]` (decoder bundles with a soft prompt). */
  promptCache: null,
  generations: [],
  session: null,
  manifest: null,
  source: null,
  load: null,
  latencies: [],
};

class BundleError extends Error {}

function status(kind, text) {
  const el = $('status');
  el.className = `status ${kind}`;
  el.textContent = text;
}

function stats(el, pairs) {
  el.replaceChildren(
    ...pairs.map(([k, v]) => {
      const d = document.createElement('div');
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = k;
      dd.textContent = v;
      d.append(dt, dd);
      return d;
    }),
  );
}

const ms = (x) => `${x.toFixed(x < 10 ? 2 : 1)} ms`;
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

async function sha256(bytes) {
  if (self.crypto?.subtle) {
    const h = await crypto.subtle.digest('SHA-256', bytes);
    return [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, '0')).join('');
  }
  return sha256_hex(new Uint8Array(bytes));
}

// --- loading ---------------------------------------------------------------------------------

async function fetchFile(base, name, kind) {
  const url = new URL(name, base).href;
  let res;
  try {
    res = await fetch(url, { cache: 'no-cache' });
  } catch (e) {
    throw new BundleError(`Cannot fetch ${url}: ${e.message}`);
  }
  if (!res.ok) {
    throw new BundleError(
      `Bundle file missing: ${url} (HTTP ${res.status}).\n` +
        `Export a bundle first (adept quickstart, or adept export --out <dir>), ` +
        `open the page with ?bundle=<bundle folder URL>, or pick a bundle folder from disk.`,
    );
  }
  return kind === 'text' ? res.text() : res.arrayBuffer();
}

/** The prompt cache's file name when `manifest` (text) is a decoder bundle with a soft prompt. */
function promptCacheFile(manifest) {
  if (!is_decoder_manifest(manifest)) return null;
  try {
    const d = JSON.parse(manifest).decoder;
    return d.prompt_len > 0 ? d.prompt_cache_file : null;
  } catch {
    return null;
  }
}

/**
 * Reads a bundle's files from a URL folder (three, and the prompt cache of a decoder). The three
 * downloads start at once, while the tokenizer's wasm is still compiling (`wasmReady`); the
 * manifest is awaited first, so a wrong folder is reported as a missing adept.json.
 */
async function filesFromUrl(base, wasmReady) {
  const baseUrl = new URL(base.endsWith('/') ? base : base + '/', location.href);
  const manifestP = fetchFile(baseUrl, 'adept.json', 'text');
  const tokenizerP = fetchFile(baseUrl, 'tokenizer.json', 'text');
  const modelP = fetchFile(baseUrl, 'model.onnx', 'bytes');
  // the others' errors are reported after the manifest's (no unhandled rejections meanwhile)
  tokenizerP.catch(() => {});
  modelP.catch(() => {});
  const manifest = await manifestP;
  await wasmReady;
  const cacheFile = promptCacheFile(manifest);
  const [tokenizer, model, promptCache] = await Promise.all([
    tokenizerP,
    modelP,
    cacheFile ? fetchFile(baseUrl, cacheFile, 'bytes') : null,
  ]);
  return { manifest, tokenizer, model, promptCache, cacheFile, source: baseUrl.href };
}

/** Reads a bundle's three files from a folder / files picked on disk. */
async function filesFromPicked(fileList) {
  const byName = new Map();
  for (const f of fileList) byName.set(f.name, f);
  const missing = ['adept.json', 'tokenizer.json', 'model.onnx'].filter((n) => !byName.has(n));
  if (missing.length) {
    throw new BundleError(
      `The selection is not an adept bundle: ${missing.join(', ')} missing ` +
        `(a bundle folder holds model.onnx, tokenizer.json and adept.json).`,
    );
  }
  const any = byName.get('adept.json');
  const folder = any.webkitRelativePath ? any.webkitRelativePath.split('/')[0] : 'picked files';
  const manifest = await byName.get('adept.json').text();
  const cacheFile = promptCacheFile(manifest);
  if (cacheFile && !byName.has(cacheFile)) {
    throw new BundleError(
      `The selection is a decoder bundle without its prompt cache: ${cacheFile} missing ` +
        `(a decoder bundle holds model.onnx, tokenizer.json, adept.json and ${cacheFile}).`,
    );
  }
  return {
    manifest,
    tokenizer: await byName.get('tokenizer.json').text(),
    model: await byName.get('model.onnx').arrayBuffer(),
    promptCache: cacheFile ? await byName.get(cacheFile).arrayBuffer() : null,
    cacheFile,
    source: `disk: ${folder}`,
  };
}

async function openBundle(getFiles) {
  $('run').disabled = true;
  $('generate').disabled = true;
  if (state.session) state.session.release?.().catch(() => {});
  state.classifier = state.decoder = state.promptCache = state.session = null;
  const t0 = performance.now();
  status('info', 'Loading bundle…');
  const files = await getFiles();
  const tFetch = performance.now();

  const isDecoder = is_decoder_manifest(files.manifest);
  let engine;
  try {
    engine = isDecoder ? new Decoder(files.manifest, files.tokenizer) : new Classifier(files.manifest, files.tokenizer);
  } catch (e) {
    throw new BundleError(`Invalid bundle (${files.source}): ${e.message ?? e}`);
  }
  const manifest = JSON.parse(engine.manifest_json());
  // The checksums (crypto.subtle hashes off the main thread) and the ONNX Runtime session (wasm
  // start-up and graph optimisation) are computed at the same time; the checksums are checked
  // first, so a corrupt model.onnx is reported as a checksum mismatch, not as an ORT error.
  const tokBytes = new TextEncoder().encode(files.tokenizer);
  const digests = Promise.all([
    sha256(tokBytes),
    sha256(files.model),
    isDecoder && files.promptCache ? sha256(files.promptCache) : null,
  ]).then((d) => ({ d, t: performance.now() }));
  status('info', 'Creating the ONNX Runtime session…');
  const sessionP = ortReady.then(() => ort.InferenceSession.create(new Uint8Array(files.model), {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  })).then((session) => ({ session, t: performance.now() }));
  sessionP.catch(() => {});
  let promptCache = null;
  let tVerify;
  try {
    const { d: [hTok, hModel, hCache], t } = await digests;
    tVerify = t;
    engine.check_file('tokenizer.json', hTok, tokBytes.length);
    engine.check_file('model.onnx', hModel, files.model.byteLength);
    if (isDecoder && files.promptCache) {
      engine.check_file(files.cacheFile, hCache, files.promptCache.byteLength);
      promptCache = engine.prompt_cache(new Uint8Array(files.promptCache));
    }
  } catch (e) {
    sessionP.then(({ session }) => session.release?.()).catch(() => {});
    throw new BundleError(`Invalid bundle (${files.source}): ${e.message ?? e}`);
  }

  let session;
  let tSession;
  try {
    ({ session, t: tSession } = await sessionP);
  } catch (e) {
    throw new BundleError(`onnxruntime-web cannot load model.onnx (${files.source}): ${e.message ?? e}`);
  }
  // The manifest lists the graph's inputs: token_type_ids only for backbones that read them;
  // decoders take position_ids and the key/value cache and return present.* too.
  const want = [...manifest.inputs];
  const wantOut = isDecoder ? [...manifest.outputs] : ['logits'];
  if ([...session.inputNames].sort().join() !== [...want].sort().join() || !wantOut.every((o) => session.outputNames.includes(o))) {
    throw new BundleError(
      `model.onnx takes ${JSON.stringify(session.inputNames)} → ${JSON.stringify(session.outputNames)}, ` +
        `the manifest expects ${JSON.stringify(want)} → ${JSON.stringify(wantOut)}: model and manifest do not match`,
    );
  }
  const tReady = performance.now();

  Object.assign(state, {
    classifier: isDecoder ? null : engine,
    decoder: isDecoder ? engine : null,
    promptCache,
    session,
    manifest,
    source: files.source,
    latencies: [],
    generations: [],
  });
  // *_ms: phases of this load (fetch, then checksums and session side by side);
  // since_navigation_ms: navigation start → model ready (performance.now()'s origin).
  state.load = {
    total_ms: tReady - t0,
    fetch_ms: tFetch - t0,
    verify_ms: tVerify - tFetch,
    session_ms: tSession - tFetch,
    since_navigation_ms: tReady,
    model_bytes: files.model.byteLength,
    dtype: manifest.dtype,
    int8_activations: manifest.int8_activations ?? null,
    ...runtimeInfo(),
  };
  renderBundle();
  status('', '');
  $('run').disabled = false;
  $('generate').disabled = false;
  return state.load;
}

/** The load figures and runtime shown for any bundle: dtype, threads, SIMD. */
function loadStats() {
  const L = state.load;
  return [
    ['load time', ms(L.total_ms)],
    ['fetch', ms(L.fetch_ms)],
    ['verify (sha256)', ms(L.verify_ms)],
    ['session', ms(L.session_ms)],
    ['model.onnx', mb(L.model_bytes)],
    ['dtype', L.int8_activations ? `${L.dtype} (${L.int8_activations} activations)` : L.dtype],
    ['ORT threads', `${L.threads}${L.cross_origin_isolated ? '' : ' (not cross-origin isolated)'}`],
    ['onnxruntime-web', `${L.ort_version ?? '?'} · SIMD128`],
  ];
}

function renderBundle() {
  const m = state.manifest;
  const isDecoder = !!state.decoder;
  $('input-card').hidden = $('result-card').hidden = isDecoder;
  $('decoder-card').hidden = !isDecoder;
  if (isDecoder) return renderDecoderBundle();
  $('bundle-info').innerHTML = '';
  const strong = document.createElement('strong');
  strong.textContent = `${m.task} · ${m.method}${m.fold !== 'none' ? ` (${m.fold})` : ''} · ${m.dtype}`;
  const src = document.createElement('div');
  src.className = 'muted small';
  src.textContent = `${state.source} — ${m.regression ? 'regression' : `${m.label_names.length} classes`}, max ${m.max_length} tokens, prompt ${m.prompt_length}`;
  $('bundle-info').append(strong, src);
  stats($('load-stats'), loadStats());
  const fields = $('fields');
  // keep what the user typed when another bundle with the same fields is loaded
  const previous = Object.fromEntries(
    [...fields.querySelectorAll('textarea')].map((ta) => [ta.dataset.field, ta.value]),
  );
  fields.replaceChildren(
    ...m.text_fields.map((name, i) => {
      const d = document.createElement('div');
      d.className = 'field';
      const label = document.createElement('label');
      label.textContent = name;
      label.htmlFor = `field-${name}`;
      const ta = document.createElement('textarea');
      ta.id = `field-${name}`;
      ta.dataset.field = name;
      ta.placeholder = i === 0 ? 'Type a sentence…' : '';
      ta.value = previous[name] ?? (i === 0 ? 'A gorgeous, witty, seductive movie.' : '');
      d.append(label, ta);
      return d;
    }),
  );
}

// --- inference -------------------------------------------------------------------------------

/** Classifies one record of named text fields; returns the prediction and its timings. */
async function classify(record) {
  if (!state.session) throw new Error('no bundle loaded');
  const t0 = performance.now();
  const [a, b] = state.classifier.segments(record);
  const enc = state.classifier.encode(a, b);
  const shape = [1, enc.length];
  const feeds = {
    input_ids: new ort.Tensor('int64', enc.input_ids, shape),
    attention_mask: new ort.Tensor('int64', enc.attention_mask, shape),
  };
  if (state.manifest.inputs.includes('token_type_ids')) {
    feeds.token_type_ids = new ort.Tensor('int64', enc.token_type_ids, shape);
  }
  const t1 = performance.now();
  const out = await state.session.run(feeds);
  const t2 = performance.now();
  // Every dtype's graph (f32, f16 storage, int8) returns float32 logits; anything else is a
  // bundle this page does not know.
  if (out.logits.type !== 'float32' && out.logits.type !== 'float64') {
    throw new Error(`model.onnx returns ${out.logits.type} logits; the page reads float32 (bundle dtype ${state.manifest.dtype})`);
  }
  const logits = out.logits.data;
  const pred = state.classifier.postprocess(logits instanceof Float32Array ? logits : Float32Array.from(logits));
  const t3 = performance.now();
  const timing = { total_ms: t3 - t0, tokenize_ms: t1 - t0, run_ms: t2 - t1, post_ms: t3 - t2 };
  state.latencies.push(timing.total_ms);
  return { ...pred, ids: [...enc.ids], truncated: enc.truncated, timing };
}

function renderPrediction(p) {
  const el = $('prediction');
  el.classList.remove('muted');
  el.replaceChildren();
  if (p.label !== null && p.label !== undefined) {
    el.textContent = p.label;
    const s = document.createElement('span');
    s.className = 'p';
    s.textContent = ` ${(p.probabilities[p.label] * 100).toFixed(1)}%`;
    el.append(s);
  } else {
    el.textContent = `score ${p.score.toFixed(4)}`;
  }
  const names = Object.keys(p.probabilities);
  $('bars').replaceChildren(
    ...names.map((name) => {
      const v = p.probabilities[name];
      const row = document.createElement('div');
      row.className = `bar${name === p.label ? ' top' : ''}`;
      row.innerHTML = '<span class="name"></span><div class="track"><div class="fill"></div></div><span class="val"></span>';
      row.querySelector('.name').textContent = name;
      row.querySelector('.fill').style.width = `${(v * 100).toFixed(2)}%`;
      row.querySelector('.val').textContent = v.toFixed(4);
      return row;
    }),
  );
  const lat = state.latencies;
  const steady = lat.slice(1).sort((x, y) => x - y);
  stats($('run-stats'), [
    ['latency', ms(p.timing.total_ms)],
    ['model run', ms(p.timing.run_ms)],
    ['tokenize', ms(p.timing.tokenize_ms)],
    ['first inference', ms(lat[0])],
    ['median (after first)', steady.length ? ms(steady[Math.floor(steady.length / 2)]) : '—'],
    ['tokens', `${p.ids.length}${p.truncated ? ' (truncated)' : ''}`],
  ]);
  $('tokens').textContent = p.ids.join(' ');
}

async function onSubmit(ev) {
  ev?.preventDefault();
  if (!state.session || !state.classifier) return;
  const record = {};
  for (const ta of document.querySelectorAll('#fields textarea')) record[ta.dataset.field] = ta.value;
  $('run').disabled = true;
  try {
    renderPrediction(await classify(record));
  } catch (e) {
    status('error', `Inference failed: ${e.message ?? e}`);
  } finally {
    $('run').disabled = false;
  }
}

async function load(getFiles) {
  try {
    return await openBundle(getFiles);
  } catch (e) {
    status('error', e instanceof BundleError ? e.message : `Unexpected error: ${e.message ?? e}`);
    $('bundle-info').textContent = 'No bundle loaded.';
    throw e;
  }
}

// --- generation (decoder bundles) ------------------------------------------------------------

function renderDecoderBundle() {
  const m = state.manifest;
  const d = m.decoder;
  const strong = document.createElement('strong');
  strong.textContent = `${m.task} · ${m.model_family} decoder · ${m.method}${m.fold !== 'none' ? ` (${m.fold})` : ''} · ${m.dtype}`;
  const src = document.createElement('div');
  src.className = 'muted small';
  src.textContent = `${state.source} — ${d.num_layers} layers, vocabulary ${d.vocab_size}, soft prompt ${d.prompt_len}` +
    `${state.promptCache ? ' (cached)' : ''}, at most ${d.max_sequence_len} positions`;
  $('bundle-info').replaceChildren(strong, src);
  stats($('load-stats'), loadStats());
}

/** The first step's cache: the prompt cache (past length l) or empty tensors (past length 0). */
function initialPast(pastLen) {
  const d = state.manifest.decoder;
  const past = {};
  if (pastLen > 0) {
    for (const t of state.promptCache) past[t.name] = new ort.Tensor('float32', t.data, t.dims);
    return past;
  }
  for (let i = 0; i < d.num_layers; i++) {
    for (const kind of ['key', 'value']) {
      past[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, d.kv_heads, 0, d.head_dim]);
    }
  }
  return past;
}

/**
 * Generates a completion of `prompt` (options: see the wasm `Decoder.start`; greedy unless
 * temperature/top_k/top_p is given). `onPiece(text)` receives each newly final piece. Returns
 * `{text, token_ids, finish_reason, prompt_tokens, prompt_ids, pieces, timing}`; timing has
 * `tokens_per_s` (new tokens over the whole call) and `decode_tokens_per_s` (after the first).
 */
async function generate(prompt, options = {}, onPiece = () => {}) {
  if (!state.decoder) throw new Error('no decoder bundle loaded');
  const dec = state.decoder;
  const spec = state.manifest.decoder;
  const vocab = spec.vocab_size;
  const t0 = performance.now();
  let x = dec.start(prompt, JSON.stringify(options));
  const promptIds = [...x.prompt_ids];
  let past = initialPast(x.past_len);
  const pieces = [];
  let tFirst = null;
  let runMs = 0;
  let steps = 0;
  try {
    while (!x.done) {
      const feeds = {
        input_ids: new ort.Tensor('int64', x.input_ids, [1, x.seq]),
        attention_mask: new ort.Tensor('int64', x.attention_mask, [1, x.total]),
        position_ids: new ort.Tensor('int64', x.position_ids, [1, x.seq]),
        ...past,
      };
      const tr = performance.now();
      const out = await state.session.run(feeds);
      runMs += performance.now() - tr;
      steps++;
      past = {};
      for (let i = 0; i < spec.num_layers; i++) {
        past[`past_key_values.${i}.key`] = out[`present.${i}.key`];
        past[`past_key_values.${i}.value`] = out[`present.${i}.value`];
      }
      const logits = out.logits.data;
      const r = dec.push_logits(logits.subarray(logits.length - vocab));
      tFirst ??= performance.now();
      if (r.piece) {
        pieces.push(r.piece);
        onPiece(r.piece);
      }
      x = r.done ? { done: true } : dec.inputs();
    }
  } catch (e) {
    try {
      dec.finish();
    } catch {}
    throw e;
  }
  const g = dec.finish();
  if (g.rest) {
    pieces.push(g.rest);
    onPiece(g.rest);
  }
  const t1 = performance.now();
  const n = g.token_ids.length;
  const timing = {
    total_ms: t1 - t0,
    time_to_first_token_ms: tFirst - t0,
    run_ms: runMs,
    steps,
    new_tokens: n,
    tokens_per_s: (n / (t1 - t0)) * 1000,
    decode_tokens_per_s: n > 1 ? ((n - 1) / (t1 - tFirst)) * 1000 : null,
  };
  const result = { ...g, prompt_ids: promptIds, pieces, timing };
  delete result.rest;
  state.generations.push(timing);
  return result;
}

/** The page's generation options (see `generate`). */
function readOptions() {
  const num = (id) => ($(id).value.trim() === '' ? undefined : Number($(id).value));
  const opts = { max_new_tokens: num('max-new-tokens'), seed: num('seed') };
  const stop = $('stop').value;
  if (stop) opts.stop_strings = [stop];
  if ($('mode').value === 'sample') {
    opts.do_sample = true;
    opts.temperature = num('temperature');
    opts.top_k = num('top-k');
    opts.top_p = num('top-p');
  }
  const rp = num('repetition-penalty');
  if (rp !== undefined && rp !== 1) opts.repetition_penalty = rp;
  for (const k of Object.keys(opts)) if (opts[k] === undefined) delete opts[k];
  return opts;
}

async function onGenerate(ev) {
  ev?.preventDefault();
  if (!state.decoder) return;
  $('generate').disabled = true;
  const outEl = $('completion');
  outEl.classList.remove('muted');
  outEl.textContent = '';
  const live = $('gen-live');
  let count = 0;
  const t0 = performance.now();
  try {
    const g = await generate($('prompt').value, readOptions(), (piece) => {
      outEl.textContent += piece;
      count++;
      live.textContent = `${count} pieces · ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    });
    const t = g.timing;
    live.textContent = '';
    stats($('gen-stats'), [
      ['tokens/s', t.tokens_per_s.toFixed(1)],
      ['tokens/s after the first', t.decode_tokens_per_s === null ? '—' : t.decode_tokens_per_s.toFixed(1)],
      ['time to first token', ms(t.time_to_first_token_ms)],
      ['new tokens', String(t.new_tokens)],
      ['prompt tokens', String(g.prompt_tokens)],
      ['finish', g.finish_reason],
    ]);
    $('gen-tokens').textContent = `prompt: ${g.prompt_ids.join(' ')}\ngenerated: ${g.token_ids.join(' ')}`;
  } catch (e) {
    status('error', `Generation failed: ${e.message ?? e}`);
  } finally {
    $('generate').disabled = false;
  }
}

// --- wiring ----------------------------------------------------------------------------------

$('form').addEventListener('submit', onSubmit);
$('gen-form').addEventListener('submit', onGenerate);
$('prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) onGenerate(e);
});
$('mode').addEventListener('change', () => {
  for (const el of document.querySelectorAll('.sampling')) el.disabled = $('mode').value !== 'sample';
});
$('fields').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) onSubmit(e);
});
for (const id of ['pick-dir', 'pick-files']) {
  $(id).addEventListener('change', (e) => {
    const files = [...e.target.files];
    if (files.length) load(() => filesFromPicked(files)).then(() => onSubmit()).catch(() => {});
    e.target.value = '';
  });
}

const wasmReady = init();
const bundleUrl = params.get('bundle') ?? DEFAULT_BUNDLE;
// The bundle downloads while the tokenizer's wasm compiles; the page then classifies the text box
// once (`first_result_ms`: navigation start → first prediction shown).
const ready = load(() => filesFromUrl(bundleUrl, wasmReady)).then(async (l) => {
  await onSubmit();
  l.first_result_ms = performance.now();
  return l;
});
ready.catch(() => {});

window.adept = {
  ready,
  wasmReady,
  classify,
  /** Token ids of `(a, b)` with the bundle's rules (wasm tokenizer). */
  encode(a, b) {
    const e = state.classifier.encode(a, b ?? undefined);
    return { ids: [...e.ids], type_ids: [...e.token_type_ids].map(Number), truncated: e.truncated };
  },
  get load() {
    return state.load;
  },
  /** dtype of the loaded bundle (and how an int8 one quantizes its activations: per-row,
   *  per-tensor, blocks-N), ORT threads, SIMD, cross-origin isolation, ORT version. */
  get runtime() {
    return {
      dtype: state.manifest?.dtype ?? null,
      int8_activations: state.manifest?.int8_activations ?? null,
      ...runtimeInfo(),
    };
  },
  get latencies() {
    return [...state.latencies];
  },
  Classifier,
  /** Decoder bundles: a streamed completion (see `generate`). */
  generate,
  /** `classifier` or `decoder`. */
  get kind() {
    return state.decoder ? 'decoder' : state.classifier ? 'classifier' : null;
  },
  /** Token ids of a prompt with the decoder bundle's rules (BOS added). */
  encodePrompt(text) {
    return [...state.decoder.encode_prompt(text)];
  },
  get generations() {
    return [...state.generations];
  },
  Decoder,
};

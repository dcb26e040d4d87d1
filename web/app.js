// ADePT browser demo: tokenizer + post-processing in Rust/wasm (crates/adept-wasm), model.onnx in
// onnxruntime-web. `window.adept` exposes the same steps to the browser test (web/test/).
import init, { Classifier, sha256_hex } from './pkg/adept_wasm.js';
import * as ort from './pkg/ort/ort.wasm.min.mjs';

const DEFAULT_BUNDLE = '../exports/quickstart-sst2-adept/';
const $ = (id) => document.getElementById(id);

ort.env.wasm.wasmPaths = new URL('./pkg/ort/', import.meta.url).href;
const params = new URLSearchParams(location.search);
// ?threads=N overrides; threads need cross-origin isolation (COOP/COEP headers, see serve.mjs).
ort.env.wasm.numThreads = self.crossOriginIsolated
  ? Number(params.get('threads')) || Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1))
  : 1;

const state = {
  classifier: null,
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

/** Reads a bundle's three files from a URL folder. */
async function filesFromUrl(base) {
  const baseUrl = new URL(base.endsWith('/') ? base : base + '/', location.href);
  // The manifest first: a wrong folder is reported as a missing adept.json.
  const manifest = await fetchFile(baseUrl, 'adept.json', 'text');
  const [tokenizer, model] = await Promise.all([
    fetchFile(baseUrl, 'tokenizer.json', 'text'),
    fetchFile(baseUrl, 'model.onnx', 'bytes'),
  ]);
  return { manifest, tokenizer, model, source: baseUrl.href };
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
  return {
    manifest: await byName.get('adept.json').text(),
    tokenizer: await byName.get('tokenizer.json').text(),
    model: await byName.get('model.onnx').arrayBuffer(),
    source: `disk: ${folder}`,
  };
}

async function openBundle(getFiles) {
  $('run').disabled = true;
  state.classifier = state.session = null;
  const t0 = performance.now();
  status('info', 'Loading bundle…');
  const files = await getFiles();
  const tFetch = performance.now();

  let classifier;
  try {
    classifier = new Classifier(files.manifest, files.tokenizer);
  } catch (e) {
    throw new BundleError(`Invalid bundle (${files.source}): ${e.message ?? e}`);
  }
  const manifest = JSON.parse(classifier.manifest_json());
  try {
    classifier.check_file('tokenizer.json', await sha256(new TextEncoder().encode(files.tokenizer)),
      new TextEncoder().encode(files.tokenizer).length);
    classifier.check_file('model.onnx', await sha256(files.model), files.model.byteLength);
  } catch (e) {
    throw new BundleError(`Invalid bundle (${files.source}): ${e.message ?? e}`);
  }
  const tVerify = performance.now();

  status('info', 'Creating the ONNX Runtime session…');
  let session;
  try {
    session = await ort.InferenceSession.create(new Uint8Array(files.model), {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    throw new BundleError(`onnxruntime-web cannot load model.onnx (${files.source}): ${e.message ?? e}`);
  }
  // The manifest lists the graph's inputs: token_type_ids only for backbones that read them.
  const want = [...manifest.inputs];
  if ([...session.inputNames].sort().join() !== [...want].sort().join() || !session.outputNames.includes('logits')) {
    throw new BundleError(
      `model.onnx takes ${JSON.stringify(session.inputNames)} → ${JSON.stringify(session.outputNames)}, ` +
        `the manifest expects ${JSON.stringify(want)} → ["logits"]: model and manifest do not match`,
    );
  }
  const tSession = performance.now();

  Object.assign(state, { classifier, session, manifest, source: files.source, latencies: [] });
  state.load = {
    total_ms: tSession - t0,
    fetch_ms: tFetch - t0,
    verify_ms: tVerify - tFetch,
    session_ms: tSession - tVerify,
    model_bytes: files.model.byteLength,
    threads: ort.env.wasm.numThreads,
  };
  renderBundle();
  status('', '');
  $('run').disabled = false;
  return state.load;
}

function renderBundle() {
  const m = state.manifest;
  $('bundle-info').innerHTML = '';
  const strong = document.createElement('strong');
  strong.textContent = `${m.task} · ${m.method}${m.fold !== 'none' ? ` (${m.fold})` : ''} · ${m.dtype}`;
  const src = document.createElement('div');
  src.className = 'muted small';
  src.textContent = `${state.source} — ${m.regression ? 'regression' : `${m.label_names.length} classes`}, max ${m.max_length} tokens, prompt ${m.prompt_length}`;
  $('bundle-info').append(strong, src);
  const L = state.load;
  stats($('load-stats'), [
    ['load time', ms(L.total_ms)],
    ['fetch', ms(L.fetch_ms)],
    ['verify (sha256)', ms(L.verify_ms)],
    ['session', ms(L.session_ms)],
    ['model.onnx', mb(L.model_bytes)],
    ['ORT threads', String(L.threads)],
  ]);
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
  if (!state.session) return;
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

// --- wiring ----------------------------------------------------------------------------------

$('form').addEventListener('submit', onSubmit);
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
const ready = wasmReady
  .then(() => load(() => filesFromUrl(bundleUrl)))
  .then(async (l) => {
    await onSubmit();
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
  get latencies() {
    return [...state.latencies];
  },
  Classifier,
};

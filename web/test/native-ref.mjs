// Writes the native-reference inputs: sentences.jsonl (for `adept infer`, with the bundle's first
// text field) and tricky.jsonl (for `cargo run -p adept-wasm --example native_ids`).
// Usage: node native-ref.mjs <bundle dir> <out dir>
import fs from 'node:fs';
import path from 'node:path';
import { SENTENCES, TRICKY, TRICKY_PAIRS } from './cases.mjs';

const [bundle, out] = process.argv.slice(2);
const manifest = JSON.parse(fs.readFileSync(path.join(bundle, 'adept.json'), 'utf8'));
const fields = manifest.text_fields;
fs.mkdirSync(out, { recursive: true });
const rec = (s) => {
  const r = { [fields[0]]: s };
  for (const f of fields.slice(1)) r[f] = 'and a second text';
  return r;
};
fs.writeFileSync(path.join(out, 'sentences.jsonl'), SENTENCES.map((s) => JSON.stringify(rec(s))).join('\n') + '\n');
const tricky = [...TRICKY.map((a) => ({ a, b: null })), ...TRICKY_PAIRS.map(([a, b]) => ({ a, b }))];
fs.writeFileSync(path.join(out, 'tricky.jsonl'), tricky.map((t) => JSON.stringify(t)).join('\n') + '\n');

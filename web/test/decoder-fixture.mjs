// Writes the inputs of the browser's decoder case (scripts/test.sh trains and exports them):
//   <out>/tiny-llama/   config.json + model.safetensors of tests/fixtures/tiny-llama-gqa-tied (a
//                       tiny random Llama: GQA, tied head, 96-token vocabulary) and a word-level
//                       tokenizer.json (<pad> 0, <s> 1, </s> 2, <unk> 3, then WORDS)
//   <out>/colours.jsonl prompt/completion pairs for `adept train`
// Usage: node decoder-fixture.mjs <out dir>
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = path.resolve(here, '../../tests/fixtures/tiny-llama-gqa-tied');
const out = process.argv[2];
if (!out) {
  console.error('usage: node decoder-fixture.mjs <out dir>');
  process.exit(2);
}

export const WORDS = ['red', 'blue', 'green', 'sky', 'grass', 'blood', 'is', 'the', 'colour', 'of', 'what', 'sea',
  'fire', 'leaf', 'snow', 'white', 'coal', 'black', 'night', 'day'];
const specials = ['<pad>', '<s>', '</s>'];
const vocab = Object.fromEntries([...specials, '<unk>', ...WORDS].map((w, i) => [w, i]));
const tokenizer = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: specials.map((t, id) => ({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
  normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null,
  model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
};
const model = path.join(out, 'tiny-llama');
fs.mkdirSync(model, { recursive: true });
for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(fixture, f), path.join(model, f));
fs.writeFileSync(path.join(model, 'tokenizer.json'), JSON.stringify(tokenizer));
const facts = [['sky', 'blue'], ['grass', 'green'], ['blood', 'red'], ['sea', 'blue'], ['fire', 'red'],
  ['leaf', 'green'], ['snow', 'white'], ['coal', 'black'], ['night', 'black'], ['day', 'white']];
const lines = [];
for (let r = 0; r < 2; r++) for (const [thing, colour] of facts) lines.push(JSON.stringify({ prompt: `what is the colour of ${thing}`, completion: ` ${colour}` }));
fs.writeFileSync(path.join(out, 'colours.jsonl'), lines.join('\n') + '\n');

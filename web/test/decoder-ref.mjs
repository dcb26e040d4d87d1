// Native references of the decoder case: `adept generate --json` on every DECODER_CASES entry,
// one prompt per call (batch of one, as the page generates), → <out>/native_generate.jsonl.
// Usage: node decoder-ref.mjs <bundle dir> <out dir> <adept binary>
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DECODER_CASES, cliArgs } from './cases.mjs';

const [bundle, out, bin] = process.argv.slice(2);
fs.mkdirSync(out, { recursive: true });
const rows = DECODER_CASES.map(({ prompt, options }) => {
  const args = ['generate', '--bundle', bundle, '--prompt', prompt, '--json', ...cliArgs(options)];
  const stdout = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ADEPT_LOG: 'warn' } });
  const last = stdout.trim().split('\n').pop();
  return { ...JSON.parse(last), command: `adept ${args.map((x) => (/[\s"]/.test(x) ? JSON.stringify(x) : x)).join(' ')}` };
});
fs.writeFileSync(path.join(out, 'native_generate.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
console.log(`${rows.length} native completions (adept generate --json) → ${path.join(out, 'native_generate.jsonl')}`);

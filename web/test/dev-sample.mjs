// The SST-2 dev sentences the browser figures use (test/bench.mjs, test/ab.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SENTENCES } from './cases.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `n` sentences spread evenly over SST-2 dev (rows 0, k, 2k, …; 0 = all), and where they came
 *  from. The file: $ADEPT_WEB_BENCH_DATA, else $ADEPT_DATA or <repo>/../shared/data/glue, then
 *  SST-2/dev.tsv; without it, the sentences of cases.mjs. */
export function devSample(n) {
  const file =
    process.env.ADEPT_WEB_BENCH_DATA ??
    path.join(process.env.ADEPT_DATA ?? path.join(root, '../shared/data/glue'), 'SST-2/dev.tsv');
  if (!fs.existsSync(file)) {
    return { sentences: SENTENCES.filter((s) => s), source: `test/cases.mjs (no SST-2 dev at ${file})` };
  }
  const rows = fs.readFileSync(file, 'utf8').split('\n').slice(1).filter((l) => l.trim());
  const all = rows.map((l) => l.split('\t')[0]);
  if (!(n > 0) || n >= all.length) return { sentences: all, source: `${file}, all ${all.length} sentences` };
  const sentences = Array.from({ length: n }, (_, i) => all[Math.floor((i * all.length) / n)]);
  return { sentences, source: `${file}, ${n} of ${all.length} sentences (every ${(all.length / n).toFixed(2)}th row)` };
}

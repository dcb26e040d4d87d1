// Inputs of the browser test (shared by run.sh's native reference step and the test itself).

/** Sentences classified in the browser and by `adept infer`. */
export const SENTENCES = [
  'A gorgeous, witty, seductive movie.',
  'The plot is thin and the acting is wooden.',
  'It is not a bad film, but it is not a good one either.',
  'An utterly charming and hilarious film that reminded me why I love the cinema.',
  'Boring. Predictable. Two hours I will never get back.',
  'Crème brûlée-level delicacy: a naïve, très charmant café romance 😍',
  'meh 🙄🙄🙄',
  '',
  'The cinematography is stunning, ' + 'and the score soars, '.repeat(40) + 'but the ending falls flat.',
  'UPPERCASE SHOUTING ABOUT HOW MUCH I LOVED IT!!!',
];

/** Strings where tokenizers tend to disagree (wasm ids must equal native ids). */
export const TRICKY = [
  '',
  ' ',
  'a',
  'Crème brûlée à la façon de Zoë, naïve café!',
  'ÀÉÎÕÜ ñ ß Ø å',
  'e\u0301 combining accent vs é precomposed',
  'I loved it 😍🔥👍🏽 — 10/10!!!',
  '👨‍👩‍👧‍👦 family emoji ZWJ',
  '日本語のテキストと中文字符',
  'tabs\tand\nnewlines\r\nand   runs   of spaces',
  'control\u0000chars\u0007\u200bzero width',
  "don't, won't, can't; it's \"quoted\" (parenthesised) [bracketed]",
  'UPPER lower MiXeD 12345 3.14159 $100 @user #tag http://example.com/a?b=c',
  'unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious',
  'a very long review that keeps going '.repeat(60),
  'é'.repeat(700),
  '😀'.repeat(300),
];

/** Pairs (text_b) exercise the pair template and token types even on single-text bundles. */
export const TRICKY_PAIRS = [
  ['premise with accents: déjà vu', 'hypothesis with emoji 🎬'],
  ['long first '.repeat(80), 'short second'],
  ['short first', 'long second '.repeat(80)],
  ['', ''],
];

/**
 * Decoder bundles: completions generated in the browser and by `adept generate --json` (the
 * browser's options; `cliArgs` turns them into the command's flags). Sized for the tiny Llama
 * bundle of scripts/test.sh (64 positions, a 7-row soft prompt).
 */
export const DECODER_CASES = [
  { prompt: 'what is the colour of sky', options: { max_new_tokens: 24 } },
  { prompt: 'the sea', options: { max_new_tokens: 24 } },
  { prompt: 'what is the colour of snow night day fire leaf coal', options: { max_new_tokens: 16 } },
  { prompt: 'what is the colour of sky', options: { max_new_tokens: 24, stop_strings: [' colour'] } },
  { prompt: 'what is the colour of grass', options: { max_new_tokens: 16, use_prompt_cache: false } },
  { prompt: 'what is the colour of fire', options: { max_new_tokens: 20, repetition_penalty: 1.3 } },
  { prompt: 'what is the colour of blood', options: { max_new_tokens: 20, temperature: 0.8, top_k: 20, top_p: 0.9, seed: 7 } },
];

/** `adept generate` flags for a case's options. */
export function cliArgs(o) {
  const a = ['--max-new-tokens', String(o.max_new_tokens ?? 128)];
  if (o.temperature !== undefined) a.push('--temperature', String(o.temperature));
  if (o.top_k !== undefined) a.push('--top-k', String(o.top_k));
  if (o.top_p !== undefined) a.push('--top-p', String(o.top_p));
  if (o.repetition_penalty !== undefined) a.push('--repetition-penalty', String(o.repetition_penalty));
  if (o.seed !== undefined) a.push('--seed', String(o.seed));
  for (const s of o.stop_strings ?? []) a.push('--stop', s);
  if (o.use_prompt_cache === false) a.push('--no-prompt-cache');
  return a;
}

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

//! Greedy and beam-search bookkeeping for encoder-decoder generation, independent of the engine
//! that computes the log-probabilities (candle's T5 in `adept_backbones::t5::generate`, ONNX
//! Runtime in `adept_runtime::seq2seq`). The engine runs the decoder on
//! [`next_tokens`](BeamSearch::next_tokens), hands each step's log-probabilities (`[rows][vocab]`)
//! to `step` and, for beam search, reorders its self-attention cache by the rows `step` returns;
//! this module chooses the tokens and keeps the hypotheses. Candle-free (builds for wasm).
//!
//! Beam search follows `transformers`' `_beam_search`: `2·num_beams` candidates per row from
//! the summed scores of every beam, those among the first `num_beams` that end in EOS (or reach
//! `max_new_tokens`) finish with `score / len^length_penalty` (the best `num_beams` kept), the
//! best `num_beams` that did not finish run on, and a row stops once its best running beam can
//! no longer beat its worst finished one (`early_stopping = False`).

/// A finished sequence: tokens (without the decoder start token) and its score.
pub type Scored = (Vec<u32>, f32);

/// Greedy decoding of `b` rows: each step appends every open row's argmax (the first among
/// equals) and adds its log-probability to the row's score; a row closes after EOS and is fed
/// `pad` from then on.
pub struct Greedy {
    out: Vec<Scored>,
    done: Vec<bool>,
    next: Vec<u32>,
    eos: u32,
    pad: u32,
}

impl Greedy {
    /// `b` empty rows whose first decoder input is `start`.
    pub fn new(b: usize, start: u32, eos: u32, pad: u32) -> Self {
        Self {
            out: vec![(Vec::new(), 0.0); b],
            done: vec![false; b],
            next: vec![start; b],
            eos,
            pad,
        }
    }

    /// The decoder input of each row for the next step (`[b]`).
    pub fn next_tokens(&self) -> &[u32] {
        &self.next
    }

    /// Takes one step's log-probabilities `logp [b][vocab]`; returns whether every row is done.
    pub fn step(&mut self, logp: &[Vec<f32>]) -> bool {
        for (r, row) in logp.iter().enumerate() {
            if self.done[r] {
                self.next[r] = self.pad;
                continue;
            }
            let mut best = 0usize;
            for (i, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = i;
                }
            }
            let tok = best as u32;
            self.out[r].0.push(tok);
            self.out[r].1 += row[best];
            self.next[r] = tok;
            self.done[r] = tok == self.eos;
        }
        self.done.iter().all(|&d| d)
    }

    /// Every row's tokens and summed log-probability.
    pub fn finish(self) -> Vec<Scored> {
        self.out
    }
}

/// A score that keeps a beam out of every comparison (`transformers` uses −1e9 likewise).
const NEG: f32 = -1.0e9;

/// Beam search over `b` rows with `k` beams each: the engine runs `b·k` decoder rows, row
/// `r·k + j` being beam `j` of row `r`.
pub struct BeamSearch {
    k: usize,
    eos: u32,
    max_new_tokens: usize,
    length_penalty: f32,
    /// Tokens generated so far (the candidates of the next step have one more).
    generated: usize,
    running: Vec<Vec<Vec<u32>>>,
    running_scores: Vec<Vec<f32>>,
    finished: Vec<Vec<Scored>>,
    /// Per row, `transformers`' `is_early_stop_heuristic_unsatisfied`.
    open: Vec<bool>,
    next: Vec<u32>,
}

impl BeamSearch {
    /// `b` rows of `num_beams` (at least 1) beams, each starting from `start`; only beam 0 of a
    /// row is live at first (the others score −1e9), so the first step does not pick one token
    /// `k` times.
    pub fn new(
        b: usize,
        num_beams: usize,
        start: u32,
        eos: u32,
        max_new_tokens: usize,
        length_penalty: f32,
    ) -> Self {
        let k = num_beams.max(1);
        Self {
            k,
            eos,
            max_new_tokens,
            length_penalty,
            generated: 0,
            running: vec![vec![Vec::new(); k]; b],
            running_scores: (0..b)
                .map(|_| (0..k).map(|j| if j == 0 { 0.0 } else { NEG }).collect())
                .collect(),
            finished: vec![Vec::new(); b],
            open: vec![true; b],
            next: vec![start; b * k],
        }
    }

    /// The decoder input of each of the `b·k` rows for the next step.
    pub fn next_tokens(&self) -> &[u32] {
        &self.next
    }

    /// Takes one step's log-probabilities `logp [b·k][vocab]`. Returns `None` when the search is
    /// over (every candidate finished, every row closed, or `max_new_tokens` reached), otherwise
    /// the decoder row (`r·k + beam`) each new beam continues, in beam order: the engine
    /// reorders its self-attention cache by them before the next step.
    pub fn step(&mut self, logp: &[Vec<f32>]) -> Option<Vec<usize>> {
        let k = self.k;
        self.generated += 1;
        let generated = self.generated;
        let last_step = generated >= self.max_new_tokens;
        let denom = (generated as f32).powf(self.length_penalty);
        let vocab = logp[0].len();
        let mut reorder = Vec::with_capacity(self.running.len() * k);
        let mut all_hit = true;
        for r in 0..self.running.len() {
            let mut flat = Vec::with_capacity(k * vocab);
            for j in 0..k {
                let base = self.running_scores[r][j];
                flat.extend(logp[r * k + j].iter().map(|x| x + base));
            }
            let cands: Vec<(usize, u32, f32, bool)> = top_k(&flat, 2 * k)
                .into_iter()
                .map(|i| {
                    let tok = (i % vocab) as u32;
                    (i / vocab, tok, flat[i], tok == self.eos || last_step)
                })
                .collect();
            all_hit &= cands.iter().all(|c| c.3);
            // Finished hypotheses: candidates in the top num_beams that hit EOS / the limit.
            if self.open[r] {
                for &(beam, tok, score, hit) in cands.iter().take(k) {
                    if hit {
                        let mut tokens = self.running[r][beam].clone();
                        tokens.push(tok);
                        self.finished[r].push((tokens, score / denom));
                    }
                }
                self.finished[r].sort_by(|a, b| b.1.total_cmp(&a.1));
                self.finished[r].truncate(k);
            }
            // Next running beams: the best candidates that did not finish.
            let penalised: Vec<f32> = cands
                .iter()
                .map(|c| c.2 + if c.3 { NEG } else { 0.0 })
                .collect();
            let mut new_running = Vec::with_capacity(k);
            let mut new_scores = Vec::with_capacity(k);
            for c in top_k(&penalised, k) {
                let (beam, tok, _, _) = cands[c];
                let mut tokens = self.running[r][beam].clone();
                tokens.push(tok);
                new_running.push(tokens);
                new_scores.push(penalised[c]);
                reorder.push(r * k + beam);
                self.next[r * k + new_running.len() - 1] = tok;
            }
            self.running[r] = new_running;
            self.running_scores[r] = new_scores;
            // Early-stop heuristic: can the best running beam still beat the worst finished?
            let best_possible = self.running_scores[r][0] / denom;
            let full = self.finished[r].len() >= k;
            let worst = self.finished[r]
                .iter()
                .map(|f| f.1)
                .fold(f32::MAX, f32::min);
            self.open[r] = self.open[r] && (!full || best_possible > worst);
        }
        if all_hit || !self.open.iter().any(|&o| o) {
            return None;
        }
        Some(reorder)
    }

    /// Each row's best finished hypothesis, or (none finished) its best running beam scored
    /// `score / len^length_penalty`.
    pub fn finish(self) -> Vec<Scored> {
        let lp = self.length_penalty;
        self.finished
            .into_iter()
            .zip(self.running.into_iter().zip(self.running_scores))
            .map(|(f, (run, scores))| match f.into_iter().next() {
                Some(best) => best,
                None => {
                    let score = scores[0] / (run[0].len().max(1) as f32).powf(lp);
                    (run.into_iter().next().unwrap_or_default(), score)
                }
            })
            .collect()
    }
}

/// Indices of the `k` largest values, largest first (the earlier index first among equals).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        values[b].total_cmp(&values[a]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        let v = [0.5, 2.0, 2.0, -1.0, 3.0];
        assert_eq!(top_k(&v, 3), vec![4, 1, 2]);
        assert_eq!(top_k(&v, 9), vec![4, 1, 2, 0, 3]);
        assert!(top_k(&v, 0).is_empty());
        assert!(top_k(&[], 2).is_empty());
    }

    #[test]
    fn greedy_stops_rows_at_eos_and_pads_them() {
        // vocab 3, eos 2, pad 0
        let mut g = Greedy::new(2, 1, 2, 0);
        assert!(!g.step(&[vec![-0.1, -3.0, -2.0], vec![-3.0, -2.0, -0.2]]));
        assert_eq!(g.next_tokens(), &[0, 2]);
        assert!(g.step(&[vec![-3.0, -2.0, -0.3], vec![-0.1, -3.0, -2.0]]));
        assert_eq!(g.next_tokens(), &[2, 0]);
        let out = g.finish();
        assert_eq!(out[0].0, vec![0, 2]);
        assert!((out[0].1 - (-0.4)).abs() < 1e-6);
        assert_eq!(out[1].0, vec![2]);
        assert!((out[1].1 - (-0.2)).abs() < 1e-6);
    }

    #[test]
    fn beam_search_finds_the_better_two_token_sequence() {
        // vocab 3 (eos 2), 1 row, 2 beams. Greedy takes 0 (−0.4) then EOS (−2.0): −2.4 in all;
        // the beam through 1 (−1.1) then EOS (−0.1) scores −1.2 and wins.
        let mut s = BeamSearch::new(1, 2, 0, 2, 5, 1.0);
        let step1 = vec![vec![-0.4, -1.1, -3.0], vec![-0.4, -1.1, -3.0]];
        let rows = s.step(&step1).expect("continues");
        assert_eq!(rows, vec![0, 0]);
        assert_eq!(s.next_tokens(), &[0, 1]);
        let step2 = vec![vec![-5.0, -5.0, -2.0], vec![-5.0, -5.0, -0.1]];
        let _ = s.step(&step2);
        let best = &s.finish()[0];
        assert_eq!(best.0, vec![1, 2]);
        assert!((best.1 - (-1.2 / 2.0)).abs() < 1e-5);
    }
}

use super::*;
use std::path::PathBuf;

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/generation_processors.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/reference/generation_processors.py)",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn num(v: &serde_json::Value) -> f32 {
    match v {
        serde_json::Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        v => v.as_f64().unwrap() as f32,
    }
}

/// Every case of the fixture: the same processors as transformers, within 1e-6, with `-inf` at
/// exactly the same positions.
#[test]
fn processors_match_transformers() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let mut logits: Vec<f32> = c["logits"].as_array().unwrap().iter().map(num).collect();
        let seen: Vec<u32> = c["seen_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let cfg = GenerationConfig {
            repetition_penalty: c["repetition_penalty"].as_f64().unwrap() as f32,
            temperature: c["temperature"].as_f64().unwrap() as f32,
            top_k: c["top_k"].as_u64().unwrap() as usize,
            top_p: c["top_p"].as_f64().unwrap() as f32,
            do_sample: true,
            ..Default::default()
        };
        process_logits(&mut logits, &seen, &cfg);
        let want: Vec<f32> = c["expected"].as_array().unwrap().iter().map(num).collect();
        assert_eq!(logits.len(), want.len(), "{name}");
        for (i, (g, w)) in logits.iter().zip(&want).enumerate() {
            if w.is_infinite() {
                assert_eq!(*g, f32::NEG_INFINITY, "{name}[{i}]: want -inf, got {g}");
            } else {
                assert!((g - w).abs() <= 1e-6, "{name}[{i}]: got {g}, want {w}");
            }
        }
        assert!(logits.iter().any(|v| v.is_finite()), "{name}: all removed");
    }
    // The fixture does exercise filtering.
    assert!(cases.iter().any(|c| c["expected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "-inf")));
}

#[test]
fn greedy_ignores_warpers_but_not_the_penalty() {
    let cfg = GenerationConfig {
        temperature: 0.5,
        top_k: 1,
        repetition_penalty: 4.0,
        ..Default::default()
    };
    let mut l = vec![1.0, 3.0, 2.0];
    process_logits(&mut l, &[1], &cfg);
    assert_eq!(l, vec![1.0, 0.75, 2.0]);
    let mut rng = StdRng::seed_from_u64(0);
    assert_eq!(choose_token(&l, false, &mut rng).unwrap(), 2);
    assert!(choose_token(&[f32::NEG_INFINITY; 3], true, &mut rng).is_err());
    assert!(choose_token(&[f32::NAN, 1.0], false, &mut rng).is_err());
}

#[test]
fn config_validation_names_the_field() {
    let bad = [
        GenerationConfig {
            temperature: 0.0,
            ..Default::default()
        },
        GenerationConfig {
            top_p: 1.5,
            ..Default::default()
        },
        GenerationConfig {
            repetition_penalty: -1.0,
            ..Default::default()
        },
        GenerationConfig {
            max_new_tokens: 0,
            ..Default::default()
        },
    ];
    for (cfg, field) in bad.iter().zip([
        "temperature",
        "top_p",
        "repetition_penalty",
        "max_new_tokens",
    ]) {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn positions_count_attended_rows() {
    assert_eq!(
        positions_from_mask(&[1, 1, 0, 0, 1, 1]),
        vec![0, 1, 1, 1, 2, 3]
    );
    assert_eq!(positions_from_mask(&[0, 1, 1]), vec![1, 0, 1]);
}

/// Ids below 256 are bytes (UTF-8 decoded lossily, so a split character ends in U+FFFD); ids
/// at or above 256 are special and skipped.
struct Bytes;
impl Detokenizer for Bytes {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let b: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
}

const VOCAB: usize = 257;
const PREFIX_L: usize = 3;
/// The soft prompt's virtual ids (as a bundle's `virtual_token_base`).
const VIRTUAL_BASE: i64 = 1000;

/// A deterministic fake LM whose next token depends on every attended token and its position:
/// `target = 32 + (Σ id·(pos+1) + 3) mod 95` (printable ASCII); logits fall off linearly
/// around it. It keeps its own cache of `(id, position)` rows and checks that the mask covers
/// exactly the rows it has seen. With `cached`, the cache starts with the soft prompt's rows;
/// otherwise it asks the loop to feed them as virtual ids.
struct ArithLm {
    cached: bool,
    rows: Vec<Vec<(i64, i64)>>,
    calls: usize,
}

impl ArithLm {
    fn new(cached: bool) -> Self {
        Self {
            cached,
            rows: Vec::new(),
            calls: 0,
        }
    }
}

fn prefix_rows() -> Vec<(i64, i64)> {
    (0..PREFIX_L as i64)
        .map(|k| (VIRTUAL_BASE + k, k))
        .collect()
}

fn target_of(rows: &[(i64, i64)]) -> u32 {
    let s: i64 = rows.iter().map(|&(id, pos)| id * (pos + 1)).sum();
    32 + ((s + 3).rem_euclid(95)) as u32
}

fn logits_around(target: u32) -> Vec<f32> {
    (0..VOCAB)
        .map(|v| -0.4 * (v as f32 - target as f32).abs())
        .collect()
}

impl DecoderStep for ArithLm {
    fn step(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        pos: &[i64],
        b: usize,
        s: usize,
    ) -> Result<Vec<f32>> {
        assert_eq!(ids.len(), b * s);
        assert_eq!(pos.len(), b * s);
        let past = self.rows[0].len();
        assert_eq!(mask.len(), b * (past + s), "mask must cover past + s");
        self.calls += 1;
        let mut out = Vec::new();
        for r in 0..b {
            for j in 0..s {
                self.rows[r].push((ids[r * s + j], pos[r * s + j]));
            }
            let m = &mask[r * (past + s)..(r + 1) * (past + s)];
            let attended: Vec<(i64, i64)> = self.rows[r]
                .iter()
                .zip(m)
                .filter(|(_, &m)| m == 1)
                .map(|(x, _)| *x)
                .collect();
            out.extend(logits_around(target_of(&attended)));
        }
        Ok(out)
    }
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn cached_prefix_len(&self) -> usize {
        if self.cached {
            PREFIX_L
        } else {
            0
        }
    }
    fn prefix_ids(&self) -> Vec<i64> {
        if self.cached {
            Vec::new()
        } else {
            prefix_rows().iter().map(|r| r.0).collect()
        }
    }
    fn start(&mut self, batch: usize) -> Result<()> {
        self.rows = vec![
            if self.cached {
                prefix_rows()
            } else {
                Vec::new()
            };
            batch
        ];
        Ok(())
    }
}

/// The reference: greedy continuation of one unpadded prompt, positions 0.. over
/// `[soft prompt | prompt | generated]`.
fn reference_greedy(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut rows = prefix_rows();
    for &t in prompt {
        rows.push((t as i64, rows.len() as i64));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let t = target_of(&rows);
        out.push(t);
        rows.push((t as i64, rows.len() as i64));
    }
    out
}

fn prompts() -> Vec<Vec<u32>> {
    ["Hi there", "a", "The quick brown"]
        .iter()
        .map(|s| s.bytes().map(u32::from).collect())
        .collect()
}

fn run(
    step: &mut dyn DecoderStep,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
) -> (Vec<Generation>, Vec<String>) {
    let mut pieces = vec![String::new(); prompts.len()];
    let mut count = vec![0usize; prompts.len()];
    let gens = generate(step, prompts, 0, cfg, &Bytes, &mut |row, p| {
        assert!(!p.is_empty());
        pieces[row].push_str(p);
        count[row] += 1;
    })
    .unwrap();
    (gens, pieces)
}

/// A left-padded batch of different lengths gives each row exactly its unpadded greedy
/// continuation, in prompt order, with the soft prompt from the cache or as virtual ids.
#[test]
fn batch_with_padding_matches_each_prompt_alone() {
    let cfg = GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    for cached in [true, false] {
        let mut lm = ArithLm::new(cached);
        let (gens, pieces) = run(&mut lm, &prompts(), &cfg);
        assert_eq!(lm.calls, 10);
        for (i, p) in prompts().iter().enumerate() {
            let want = reference_greedy(p, 10);
            assert_eq!(gens[i].token_ids, want, "row {i} (cached {cached})");
            assert_eq!(gens[i].finish_reason, FinishReason::Length);
            assert_eq!(gens[i].prompt_tokens, p.len());
            let text: String = want.iter().map(|&t| t as u8 as char).collect();
            assert_eq!(gens[i].text, text);
            assert_eq!(pieces[i], text, "streamed pieces concatenate to the text");
        }
    }
}

/// Padding really matters to the fake LM: counting the pads as positions changes its output
/// (so the test above can fail).
#[test]
fn the_fake_lm_is_sensitive_to_positions() {
    let p = &prompts()[1];
    let mut shifted = prefix_rows();
    shifted.push((p[0] as i64, PREFIX_L as i64 + 5));
    let mut right = prefix_rows();
    right.push((p[0] as i64, PREFIX_L as i64));
    assert_ne!(target_of(&shifted), target_of(&right));
}

/// An EOS id ends its row only; the other rows run to max_new_tokens.
#[test]
fn eos_stops_one_row() {
    let ps = prompts();
    let refs: Vec<Vec<u32>> = ps.iter().map(|p| reference_greedy(p, 12)).collect();
    // An id row 0 produces at its 4th step and the other rows never produce.
    let eos = (0..12)
        .map(|k| refs[0][k])
        .enumerate()
        .find(|&(k, t)| {
            k >= 2 && !refs[1].contains(&t) && !refs[2].contains(&t) && !refs[0][..k].contains(&t)
        })
        .expect("the fake LM produces a usable EOS id")
        .1;
    let k = refs[0].iter().position(|&t| t == eos).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 12,
        eos_token_ids: vec![999, eos],
        ..Default::default()
    };
    let (gens, pieces) = run(&mut ArithLm::new(true), &ps, &cfg);
    assert_eq!(gens[0].finish_reason, FinishReason::Eos);
    assert_eq!(gens[0].token_ids, refs[0][..=k]);
    let text: String = refs[0][..k].iter().map(|&t| t as u8 as char).collect();
    assert_eq!(gens[0].text, text, "the EOS id is not part of the text");
    assert_eq!(pieces[0], text);
    for r in 1..3 {
        assert_eq!(gens[r].finish_reason, FinishReason::Length);
        assert_eq!(gens[r].token_ids, refs[r]);
    }
}

/// Same seed → same samples; different seeds → different samples; and sampling is not greedy.
#[test]
fn seeded_sampling_is_reproducible() {
    let cfg = |seed| GenerationConfig {
        max_new_tokens: 16,
        do_sample: true,
        temperature: 1.5,
        top_k: 40,
        top_p: 0.95,
        seed,
        ..Default::default()
    };
    let a = run(&mut ArithLm::new(true), &prompts(), &cfg(7)).0;
    let b = run(&mut ArithLm::new(true), &prompts(), &cfg(7)).0;
    let c = run(&mut ArithLm::new(true), &prompts(), &cfg(8)).0;
    assert_eq!(a, b);
    assert_ne!(a[0].token_ids, c[0].token_ids);
    assert_ne!(a[0].token_ids, reference_greedy(&prompts()[0], 16));
    // A row samples the same alone as in the batch (its own generator).
    let alone = run(&mut ArithLm::new(true), &prompts()[2..], &cfg(7)).0;
    assert_eq!(alone[0].token_ids, a[2].token_ids);
    // top_k 1 makes sampling greedy.
    let k1 = GenerationConfig { top_k: 1, ..cfg(3) };
    let g = run(&mut ArithLm::new(false), &prompts(), &k1).0;
    assert_eq!(g[0].token_ids, reference_greedy(&prompts()[0], 16));
}

/// Emits a fixed script per row (the row's k-th generated token is `script[k]`, then EOS 256).
struct ScriptLm {
    scripts: Vec<Vec<u32>>,
    step: usize,
}

impl DecoderStep for ScriptLm {
    fn step(
        &mut self,
        _ids: &[i64],
        _m: &[i64],
        _p: &[i64],
        b: usize,
        _s: usize,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for r in 0..b {
            let t = self.scripts[r].get(self.step).copied().unwrap_or(256);
            let mut l = vec![0.0; VOCAB];
            l[t as usize] = 10.0;
            out.extend(l);
        }
        self.step += 1;
        Ok(out)
    }
    fn vocab_size(&self) -> usize {
        VOCAB
    }
}

fn script(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// Multi-byte characters split over tokens are held back until complete; stop strings cut the
/// text (the held-back prefix of a stop string never leaks); EOS and max tokens end rows.
#[test]
fn streaming_holds_back_partial_characters_and_stop_prefixes() {
    let scripts = vec![
        script("héllo wörld ✓ done"),
        script("abc STOx STOP def"),
        script("no stop here at all"),
    ];
    let mut lm = ScriptLm {
        scripts: scripts.clone(),
        step: 0,
    };
    let cfg = GenerationConfig {
        max_new_tokens: 40,
        eos_token_ids: vec![256],
        stop_strings: vec!["STOP".into(), "here".into()],
        ..Default::default()
    };
    let mut pieces: Vec<Vec<String>> = vec![Vec::new(); 3];
    let gens = generate(
        &mut lm,
        &[vec![1], vec![2, 3], vec![4]],
        0,
        &cfg,
        &Bytes,
        &mut |r, p| pieces[r].push(p.to_owned()),
    )
    .unwrap();
    assert_eq!(gens[0].text, "héllo wörld ✓ done");
    assert_eq!(gens[0].finish_reason, FinishReason::Eos);
    assert_eq!(gens[1].text, "abc STOx ");
    assert_eq!(gens[1].finish_reason, FinishReason::Stop);
    assert_eq!(gens[1].token_ids.len(), "abc STOx STOP".len());
    assert_eq!(gens[2].text, "no stop ");
    assert_eq!(gens[2].finish_reason, FinishReason::Stop);
    for r in 0..3 {
        assert_eq!(pieces[r].concat(), gens[r].text, "row {r}");
        for p in &pieces[r] {
            assert!(
                !p.contains('\u{FFFD}'),
                "row {r}: piece {p:?} has a partial character"
            );
        }
    }
    // Bytes arrive one per token, yet 'é' (2 bytes) and '✓' (3 bytes) come out whole.
    // ("h" is held as a possible start of "here", so 'é' arrives as "hé".)
    assert!(pieces[0].iter().any(|p| p == "hé"), "{:?}", pieces[0]);
    assert!(pieces[0].iter().any(|p| p == "✓"), "{:?}", pieces[0]);
    assert!(pieces[0].len() > 10);
    // "STO" was held back while it could become "STOP", and released with the 'x'.
    assert!(pieces[1]
        .iter()
        .all(|p| !p.ends_with("ST") && !p.ends_with("STO")));
    assert!(pieces[1].iter().any(|p| p == "STOx"));

    // max_new_tokens cuts a row whose stop string is still a possible prefix: the held text
    // comes out at the end.
    let mut lm = ScriptLm {
        scripts: vec![script("abc ST")],
        step: 0,
    };
    let cfg = GenerationConfig {
        max_new_tokens: 6,
        stop_strings: vec!["STOP".into()],
        ..Default::default()
    };
    let (gens, pieces) = run(&mut lm, &[vec![1]], &cfg);
    assert_eq!(gens[0].finish_reason, FinishReason::Length);
    assert_eq!(gens[0].text, "abc ST");
    assert_eq!(pieces[0], "abc ST");
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = GenerationConfig::default();
    let e = generate(
        &mut ArithLm::new(true),
        &[vec![]],
        0,
        &cfg,
        &Bytes,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prompt 0 has no tokens"), "{e}");
    let e = check_fits(100, 10, 64, 128, 3).unwrap_err().to_string();
    assert!(
        e.contains("prompt 3") && e.contains("max_sequence_len 128"),
        "{e}"
    );
    assert!(check_fits(50, 10, 64, 128, 0).is_ok());
}

/// A bigram model for scoring: the logits at a position favour `id + 1` (logit 2, others 0),
/// and padding/virtual positions must never be read as a predecessor.
struct Bigram {
    vocab: usize,
    prefix: usize,
    cached: usize,
    seen: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)>,
}

impl DecoderStep for Bigram {
    fn step(&mut self, _: &[i64], _: &[i64], _: &[i64], _: usize, _: usize) -> Result<Vec<f32>> {
        unreachable!("scoring calls step_all")
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn cached_prefix_len(&self) -> usize {
        self.cached
    }
    fn prefix_ids(&self) -> Vec<i64> {
        (0..self.prefix as i64).map(|k| 100 + k).collect()
    }
    fn step_all(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        pos: &[i64],
        b: usize,
        s: usize,
    ) -> Result<Vec<f32>> {
        self.seen.push((ids.to_vec(), mask.to_vec(), pos.to_vec()));
        let mut out = Vec::with_capacity(b * s * self.vocab);
        for &id in ids {
            let mut l = vec![0f32; self.vocab];
            if id >= 0 && (id as usize) + 1 < self.vocab {
                l[id as usize + 1] = 2.0;
            }
            out.extend(l);
        }
        Ok(out)
    }
}

#[test]
fn continuation_logprobs_sum_the_targets_of_left_padded_rows() {
    let hit = (2f32.exp() / (2f32.exp() + 4.0)).ln();
    let miss = (1.0 / (2f32.exp() + 4.0)).ln();
    for (prefix, cached) in [(0, 0), (2, 0), (0, 3)] {
        let mut lm = Bigram {
            vocab: 5,
            prefix,
            cached,
            seen: Vec::new(),
        };
        let long: &[u32] = &[0, 1, 2, 3];
        let short: &[u32] = &[2, 0];
        let got = continuation_logprobs(&mut lm, &[(long, 2), (short, 1)], 4).unwrap();
        // long: 1→2 hit, 2→3 hit; short: 2→0 miss.
        assert!((got[0] - 2.0 * hit).abs() < 1e-6, "{got:?}");
        assert!((got[1] - miss).abs() < 1e-6, "{got:?}");
        let (ids, mask, pos) = &lm.seen[0];
        let seq = prefix + 4;
        assert_eq!(ids.len(), 2 * seq);
        assert_eq!(mask.len(), 2 * (cached + seq));
        // The short row: prefix, two pads, then its ids; positions count attended rows only.
        assert_eq!(&ids[seq + prefix..2 * seq], &[4, 4, 2, 0]);
        assert_eq!(pos[2 * seq - 1], (cached + prefix + 1) as i64);
        assert_eq!(pos[seq - 1], (cached + prefix + 3) as i64);
    }
    let mut lm = Bigram {
        vocab: 5,
        prefix: 0,
        cached: 0,
        seen: Vec::new(),
    };
    let err = continuation_logprobs(&mut lm, &[(&[1, 2][..], 0)], 4).unwrap_err();
    assert!(err.to_string().contains("target start 0"), "{err}");
}

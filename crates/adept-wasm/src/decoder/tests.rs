//! The browser's decoder loop (driven step by step, as `web/app.js` drives it around
//! onnxruntime-web) against the native runtime's `adept_bundle::generate::generate` on the same
//! model, with the tiny decoder bundle fixture's manifest, tokenizer and prompt cache.

use super::*;
use adept_bundle::generate::{generate, DecoderStep};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(adept_testkit::repo_file(&format!(
        "tests/fixtures/tiny-decoder/{name}"
    )))
    .unwrap()
}

fn engine() -> DecoderEngine {
    DecoderEngine::new(&fixture("adept.json"), &fixture("tokenizer.json")).unwrap()
}

/// A deterministic stand-in for the graph: the last row's logits are a hash of every attended
/// row's `(id, position)`, cached prefix included. With the prompt cache the first `l` rows are
/// the soft prompt's virtual ids at positions `0..l`, exactly what feeding them as tokens gives,
/// so both paths must generate the same text. It checks the contract's inputs as it goes
/// (mask length = rows seen, positions = attended rows before).
struct FakeLm {
    vocab: usize,
    l: usize,
    cached: bool,
    /// `(id, position, mask)` of every row seen.
    rows: Vec<(i64, i64, i64)>,
}

impl FakeLm {
    fn new(spec: &DecoderSpec, cached: bool) -> Self {
        Self {
            vocab: spec.vocab_size,
            l: spec.prompt_len,
            cached,
            rows: Vec::new(),
        }
    }
}

impl DecoderStep for FakeLm {
    fn step(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        pos: &[i64],
        b: usize,
        s: usize,
    ) -> Result<Vec<f32>> {
        assert_eq!(b, 1);
        assert_eq!(
            mask.len(),
            self.rows.len() + s,
            "mask must cover every row seen"
        );
        for j in 0..s {
            let m = mask[self.rows.len()];
            if m == 1 {
                let attended = self.rows.iter().filter(|r| r.2 == 1).count() as i64;
                assert_eq!(pos[j], attended, "position of an attended row");
            }
            self.rows.push((ids[j], pos[j], m));
        }
        let h = self
            .rows
            .iter()
            .filter(|r| r.2 == 1)
            .fold(17u64, |h, &(id, p, _)| {
                h.wrapping_mul(1_000_003)
                    .wrapping_add((id as u64 + 1) * (p as u64 + 7))
            });
        Ok((0..self.vocab)
            .map(|v| {
                let x = h
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(v as u64 * 40_503)
                    % 1000;
                x as f32 / 100.0
            })
            .collect())
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn cached_prefix_len(&self) -> usize {
        if self.cached {
            self.l
        } else {
            0
        }
    }
    fn prefix_ids(&self) -> Vec<i64> {
        if self.cached {
            Vec::new()
        } else {
            (0..self.l as i64)
                .map(|k| (self.vocab + k as usize) as i64)
                .collect()
        }
    }
    fn start(&mut self, _b: usize) -> Result<()> {
        self.rows = if self.cached {
            (0..self.l as i64)
                .map(|k| (self.vocab as i64 + k, k, 1))
                .collect()
        } else {
            Vec::new()
        };
        Ok(())
    }
}

/// The browser's way: start → (inputs → graph → push_logits)* → finish; returns the generation
/// and the streamed pieces (finish's rest included).
fn browser(e: &DecoderEngine, prompt: &str, opts: &GenerateOptions) -> (Generation, Vec<String>) {
    let mut run = e.start(prompt, opts).unwrap();
    let cached = opts.use_prompt_cache.unwrap_or(true);
    let mut lm = FakeLm::new(&e.spec, cached);
    lm.start(1).unwrap();
    assert_eq!(run.past_len, if cached { e.spec.prompt_len } else { 0 });
    let mut pieces = Vec::new();
    while !run.is_done() {
        let x = run.inputs().unwrap();
        let logits = lm
            .step(&x.ids, &x.mask, &x.positions, x.batch, x.seq)
            .unwrap();
        // the graph's whole [1, seq, vocab] output: push_logits takes the last row
        let mut all = vec![f32::NAN; (x.seq - 1) * e.spec.vocab_size];
        all.extend(logits);
        let p = run.push_logits(e, &all).unwrap();
        if !p.piece.is_empty() {
            pieces.push(p.piece);
        }
    }
    let (rest, g) = run.finish(e).unwrap();
    if !rest.is_empty() {
        pieces.push(rest);
    }
    (g, pieces)
}

/// The native runtime's way: `generate` over the same fake graph.
fn native(e: &DecoderEngine, prompt: &str, opts: &GenerateOptions) -> (Generation, Vec<String>) {
    let ids = e.encode_prompt(prompt).unwrap();
    let mut lm = FakeLm::new(&e.spec, opts.use_prompt_cache.unwrap_or(true));
    let mut pieces = Vec::new();
    let g = generate(
        &mut lm,
        &[ids],
        e.spec.pad_token_id,
        &opts.config(&e.spec),
        &Tok(&e.tokenizer),
        &mut |_, p| pieces.push(p.to_owned()),
    )
    .unwrap();
    (g.into_iter().next().unwrap(), pieces)
}

#[test]
fn step_driven_generation_equals_the_native_loop() {
    let e = engine();
    let prompt = "w5 w9 w12 w3";
    let greedy = GenerateOptions::from_json(r#"{"max_new_tokens": 30}"#).unwrap();
    let (g, pieces) = browser(&e, prompt, &greedy);
    assert_eq!((g.clone(), pieces.clone()), native(&e, prompt, &greedy));
    assert!(!g.token_ids.is_empty() && g.prompt_tokens == 5, "{g:?}");
    assert_eq!(pieces.concat(), g.text);

    // the soft prompt fed as virtual tokens gives what the prompt cache gives
    let uncached =
        GenerateOptions::from_json(r#"{"max_new_tokens": 30, "use_prompt_cache": false}"#).unwrap();
    assert_eq!(browser(&e, prompt, &uncached).0, g);

    // a stop string taken from the greedy text: cut there, both ways
    let words: Vec<&str> = g.text.split(' ').collect();
    if words.len() > 2 {
        let stop = format!(" {}", words[2]);
        let o = GenerateOptions {
            max_new_tokens: Some(30),
            stop_strings: vec![stop.clone()],
            ..Default::default()
        };
        let (s, sp) = browser(&e, prompt, &o);
        assert_eq!((s.clone(), sp), native(&e, prompt, &o));
        assert_eq!(s.finish_reason, adept_bundle::generate::FinishReason::Stop);
        assert!(
            !s.text.contains(&stop) && g.text.starts_with(&s.text),
            "{s:?}"
        );
    }

    // seeded sampling with every processor, and a repetition penalty
    for json in [
        r#"{"max_new_tokens": 25, "temperature": 0.7, "top_k": 10, "top_p": 0.9, "seed": 3}"#,
        r#"{"max_new_tokens": 25, "repetition_penalty": 1.5}"#,
        r#"{"max_new_tokens": 25, "eos_token_ids": [7, 9]}"#,
    ] {
        let o = GenerateOptions::from_json(json).unwrap();
        assert_eq!(browser(&e, prompt, &o), native(&e, prompt, &o), "{json}");
    }
}

#[test]
fn options_follow_adept_generate() {
    let spec = engine().spec;
    let c = GenerateOptions::from_json("").unwrap().config(&spec);
    assert!(!c.do_sample && c.max_new_tokens == 128 && c.eos_token_ids == spec.eos_token_ids);
    let c = GenerateOptions::from_json(r#"{"top_k": 5}"#)
        .unwrap()
        .config(&spec);
    assert!(c.do_sample && c.top_k == 5 && c.temperature == 1.0);
    let c = GenerateOptions::from_json(r#"{"temperature": 0.5, "do_sample": false}"#)
        .unwrap()
        .config(&spec);
    assert!(!c.do_sample);
    let err = GenerateOptions::from_json(r#"{"max_tokens": 5}"#).unwrap_err();
    assert!(format!("{err:#}").contains("max_tokens"), "{err:#}");
    let e = engine();
    let bad = GenerateOptions::from_json(r#"{"temperature": 0}"#).unwrap();
    let err = e.start("w3", &bad).err().unwrap();
    assert!(format!("{err:#}").contains("temperature"), "{err:#}");
    let long = GenerateOptions::from_json(r#"{"max_new_tokens": 60}"#).unwrap();
    let err = e.start("w3 w4 w5", &long).err().unwrap();
    assert!(
        format!("{err:#}").contains("max_sequence_len 64"),
        "{err:#}"
    );
}

#[test]
fn prompt_cache_is_parsed_and_checked() {
    let e = engine();
    let bytes = std::fs::read(adept_testkit::repo_file(
        "tests/fixtures/tiny-decoder/prompt_cache.safetensors",
    ))
    .unwrap();
    let cache = e.prompt_cache(&bytes).unwrap();
    let s = &e.spec;
    assert_eq!(cache.len(), 2 * s.num_layers);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (t, name) in cache.iter().zip(s.input_names()[3..].iter()) {
        assert_eq!(&t.name, name);
        assert_eq!(t.dims, vec![1, s.kv_heads, s.prompt_len, s.head_dim]);
        let raw = st.tensor(name).unwrap();
        assert_eq!(t.data.len() * 4, raw.data().len());
        assert_eq!(t.data[1].to_le_bytes(), raw.data()[4..8]);
    }
    let err = e.prompt_cache(b"not safetensors").unwrap_err();
    assert!(
        format!("{err:#}").contains("prompt_cache.safetensors is not a safetensors file"),
        "{err:#}"
    );
    // a manifest that says 4 soft-prompt rows: the 3-row cache is refused with both shapes
    let m = fixture("adept.json").replace("\"prompt_len\": 3", "\"prompt_len\": 4");
    let m = m.replace("\"prompt_length\": 3", "\"prompt_length\": 4");
    let e4 = DecoderEngine::new(&m, &fixture("tokenizer.json")).unwrap();
    let err = e4.prompt_cache(&bytes).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("past_key_values.0.key is F32 [1, 2, 3, 4], expected F32 [1, 2, 4, 4]"),
        "{err:#}"
    );
}

#[test]
fn encoder_bundles_and_bad_logits_are_refused() {
    let mut enc: serde_json::Value = serde_json::from_str(&fixture("adept.json")).unwrap();
    // the fixture as a two-class classifier: no decoder section
    let o = enc.as_object_mut().unwrap();
    o.remove("decoder");
    o.insert("label_names".into(), serde_json::json!(["no", "yes"]));
    o.insert("num_outputs".into(), serde_json::json!(2));
    o.insert(
        "inputs".into(),
        serde_json::json!(["input_ids", "attention_mask"]),
    );
    o.insert("outputs".into(), serde_json::json!(["logits"]));
    let err = DecoderEngine::new(&enc.to_string(), &fixture("tokenizer.json"))
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("is an encoder bundle (task causal-lm), not a decoder bundle"),
        "{err:#}"
    );
    let e = engine();
    let opts = GenerateOptions::from_json(r#"{"max_new_tokens": 8}"#).unwrap();
    let mut run = e.start("w3 w4", &opts).unwrap();
    let err = run.push_logits(&e, &[0.0; 7]).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a multiple of the vocabulary (40"),
        "{err:#}"
    );
    let mut nan = vec![0.0; 40];
    nan[3] = f32::NAN;
    let err = run.push_logits(&e, &nan).unwrap_err();
    assert!(format!("{err:#}").contains("NaN"), "{err:#}");
    assert_eq!(e.encode_prompt("w3 w4").unwrap(), vec![1, 3, 4]);
}

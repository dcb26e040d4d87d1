//! T5 through the seq2seq seam, against Hugging Face `transformers` on two tiny random models
//! built by `tests/reference/tiny_t5.py` (committed with its output, `tests/fixtures/tiny-t5-v1/`
//! — ReLU feed-forward, tied head — and `tiny-t5-v11/` — gated GELU, untied head, 3 decoder
//! blocks over 2 encoder blocks, inner width 24 ≠ d_model 16): encoder outputs (from ids and
//! with four soft-prompt rows in front), teacher-forced logits, greedy and beam-search tokens.

use adept_backbones::t5::generate::{beam_search, generate, greedy, GenerateOptions};
use adept_backbones::{load_seq2seq, registry, Seq2SeqCache, Seq2SeqLm};
use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-4;
const VARIANTS: [&str; 2] = ["tiny-t5-v1", "tiny-t5-v11"];

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn expected(name: &str) -> Value {
    let p = fixture_dir(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture present")).expect("JSON")
}

fn load(name: &str) -> Box<dyn Seq2SeqLm> {
    load_seq2seq(&fixture_dir(name), &Device::Cpu).expect("fixture loads")
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("integer matrix")
}

fn inputs(fx: &Value) -> (Tensor, Tensor, Vec<Vec<u32>>) {
    let ids = matrix_u32(&fx["input_ids"]);
    let mask = matrix_u32(&fx["attention_mask"]);
    (
        Tensor::new(ids, &Device::Cpu).unwrap(),
        Tensor::new(mask.clone(), &Device::Cpu).unwrap(),
        mask,
    )
}

/// Largest |got − want| over rows `[b][t]` where `keep(b, t)`.
fn max_diff3(got: &Tensor, want: &Value, keep: impl Fn(usize, usize) -> bool) -> f32 {
    let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (b, (gb, wb)) in got.iter().zip(&want).enumerate() {
        assert_eq!(gb.len(), wb.len());
        for (t, (g, w)) in gb.iter().zip(wb).enumerate() {
            if keep(b, t) {
                assert_eq!(g.len(), w.len());
                for (x, y) in g.iter().zip(w) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

/// HF's sequences without the decoder start token, cut after the first EOS (what follows is
/// padding: pad id for greedy, EOS for beam search).
fn hf_tokens(seqs: &Value, eos: u32) -> Vec<Vec<u32>> {
    matrix_u32(seqs)
        .into_iter()
        .map(|row| {
            let mut out = Vec::new();
            for &t in &row[1..] {
                out.push(t);
                if t == eos {
                    break;
                }
            }
            out
        })
        .collect()
}

#[test]
fn registry_routes_t5_to_the_seq2seq_loader() {
    let fam = registry::family_for("t5").expect("t5 registered");
    assert_eq!(fam.name, "t5");
    assert_eq!(fam.load.kind(), "seq2seq");
    let err = format!(
        "{:#}",
        adept_backbones::load_encoder(&fixture_dir("tiny-t5-v1"), &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(err.contains("seq2seq"), "{err}");
    let err = format!(
        "{:#}",
        load_seq2seq(&fixture_dir("tiny-roberta"), &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(err.contains("not an encoder-decoder"), "{err}");
}

#[test]
fn encoder_outputs_match_transformers() {
    for name in VARIANTS {
        let fx = expected(name);
        let model = load(name);
        let (ids, mask_t, mask) = inputs(&fx);
        let embeds = model.word_embeddings(&ids).unwrap();
        let out = model.encode(&embeds, &mask_t).unwrap();
        let d = max_diff3(&out, &fx["encoder_last_hidden_state"], |b, t| {
            mask[b][t] == 1
        });
        eprintln!("{name}: encoder from ids, max |Δ| = {d:.2e}");
        assert!(d < TOLERANCE, "{name}: encoder max |Δ| = {d}");

        // Four soft-prompt rows in front, mask prepended with ones; the relative position bias
        // covers prompt and input.
        let prompt: Vec<Vec<f32>> =
            serde_json::from_value(fx["prompt"]["prompt_embeds"].clone()).unwrap();
        let l = prompt.len();
        let prompt = Tensor::new(prompt, &Device::Cpu).unwrap();
        let b = embeds.dims()[0];
        let p = prompt
            .unsqueeze(0)
            .unwrap()
            .broadcast_as((b, l, model.hidden_size()))
            .unwrap();
        let full = Tensor::cat(&[&p, &embeds], 1).unwrap();
        let pmask = Tensor::cat(
            &[
                &Tensor::ones((b, l), DType::U32, &Device::Cpu).unwrap(),
                &mask_t,
            ],
            1,
        )
        .unwrap();
        let out = model.encode(&full, &pmask).unwrap();
        let d = max_diff3(&out, &fx["prompt"]["encoder_last_hidden_state"], |b, t| {
            t < l || mask[b][t - l] == 1
        });
        eprintln!("{name}: encoder with prompt, max |Δ| = {d:.2e}");
        assert!(d < TOLERANCE, "{name}: prompt encoder max |Δ| = {d}");
    }
}

#[test]
fn teacher_forced_logits_match_and_the_cache_changes_nothing() {
    for name in VARIANTS {
        let fx = expected(name);
        let model = load(name);
        let (ids, mask_t, _) = inputs(&fx);
        let enc = model
            .encode(&model.word_embeddings(&ids).unwrap(), &mask_t)
            .unwrap();
        let dec: Vec<Vec<u32>> = matrix_u32(&fx["decoder_input_ids"]);
        let t = dec[0].len();
        let dec_t = Tensor::new(dec, &Device::Cpu).unwrap();
        let logits = model
            .logits(&model.decode(&dec_t, &enc, &mask_t, None).unwrap())
            .unwrap();
        let d = max_diff3(&logits, &fx["logits"], |_, _| true);
        eprintln!("{name}: logits max |Δ| = {d:.2e}");
        assert!(d < TOLERANCE, "{name}: logits max |Δ| = {d}");

        // Same positions decoded one (then two) at a time through the cache.
        let mut cache = Seq2SeqCache::new();
        let mut steps = Vec::new();
        let mut from = 0;
        for len in [1, 2, 1, t - 4] {
            let chunk = dec_t.narrow(1, from, len).unwrap();
            let h = model
                .decode(&chunk, &enc, &mask_t, Some(&mut cache))
                .unwrap();
            steps.push(model.logits(&h).unwrap());
            from += len;
            assert_eq!(cache.past_len(), from);
        }
        assert_eq!(cache.self_attn.len(), model.cache_shape().decoder_layers);
        assert_eq!(
            cache.self_attn[0].0.dims(),
            &[
                2,
                model.cache_shape().heads,
                t,
                model.cache_shape().head_dim
            ]
        );
        let cached = Tensor::cat(&steps, 1).unwrap();
        let diff = (cached - &logits)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("{name}: cached vs uncached logits max |Δ| = {diff:.2e}");
        assert!(diff < TOLERANCE, "{name}: cached logits differ by {diff}");
    }
}

#[test]
fn greedy_and_beam_search_match_transformers_generate() {
    for name in VARIANTS {
        let fx = expected(name);
        let model = load(name);
        let eos = model.eos_token_id();
        let (ids, mask_t, _) = inputs(&fx);
        let embeds = model.word_embeddings(&ids).unwrap();
        let enc = model.encode(&embeds, &mask_t).unwrap();

        let got: Vec<Vec<u32>> = greedy(model.as_ref(), &enc, &mask_t, 8)
            .unwrap()
            .into_iter()
            .map(|h| h.tokens)
            .collect();
        let want = hf_tokens(&fx["greedy"]["sequences"], eos);
        eprintln!("{name}: greedy {got:?}");
        assert_eq!(got, want, "{name}: greedy");

        let opts = GenerateOptions {
            max_new_tokens: 8,
            num_beams: 3,
            length_penalty: 1.0,
        };
        let hyps = generate(model.as_ref(), &embeds, &mask_t, &opts).unwrap();
        let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
        let want = hf_tokens(&fx["beam"]["sequences"], eos);
        eprintln!("{name}: beam {got:?}");
        assert_eq!(got, want, "{name}: beam search");
        let scores: Vec<f32> =
            serde_json::from_value(fx["beam"]["sequences_scores"].clone()).unwrap();
        for (h, s) in hyps.iter().zip(&scores) {
            assert!(
                (h.score - s).abs() < TOLERANCE,
                "{name}: beam score {} vs {s}",
                h.score
            );
        }
        // Four beams, length penalty 0.5, 10 tokens: rows finish at EOS and the search stops
        // before the limit (the early-stop heuristic).
        let case = &fx["beam_lp"];
        let k = case["num_beams"].as_u64().unwrap() as usize;
        let lp = case["length_penalty"].as_f64().unwrap() as f32;
        let max_new = case["max_new_tokens"].as_u64().unwrap() as usize;
        let hyps = beam_search(model.as_ref(), &enc, &mask_t, k, max_new, lp).unwrap();
        let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
        let want = hf_tokens(&case["sequences"], eos);
        eprintln!("{name}: beam (k {k}, lp {lp}) {got:?}");
        assert_eq!(got, want, "{name}: beam search, k {k}, length penalty {lp}");
        assert!(
            got.iter().any(|t| t.last() == Some(&eos)),
            "{name}: no row ends at EOS"
        );
        let scores: Vec<f32> = serde_json::from_value(case["sequences_scores"].clone()).unwrap();
        for (h, s) in hyps.iter().zip(&scores) {
            assert!(
                (h.score - s).abs() < TOLERANCE,
                "{name}: beam score {} vs {s}",
                h.score
            );
        }
    }
}

#[test]
fn relative_position_buckets_match_transformers() {
    let fx = expected("tiny-t5-v1");
    let rb = &fx["relative_position_buckets"];
    let rel: Vec<i64> = serde_json::from_value(rb["relative_position"].clone()).unwrap();
    for case in rb["cases"].as_array().unwrap() {
        let bi = case["bidirectional"].as_bool().unwrap();
        let nb = case["num_buckets"].as_u64().unwrap() as usize;
        let md = case["max_distance"].as_u64().unwrap() as usize;
        let want: Vec<u32> = serde_json::from_value(case["buckets"].clone()).unwrap();
        let got: Vec<u32> = rel
            .iter()
            .map(|&r| adept_backbones::t5::relative_position_bucket(r, bi, nb, md))
            .collect();
        assert_eq!(
            got, want,
            "bidirectional {bi}, {nb} buckets, max distance {md}"
        );
    }
}

#[test]
fn beam_search_with_one_row_at_a_time_equals_the_batch() {
    let fx = expected("tiny-t5-v11");
    let model = load("tiny-t5-v11");
    let (ids, mask_t, _) = inputs(&fx);
    let enc = model
        .encode(&model.word_embeddings(&ids).unwrap(), &mask_t)
        .unwrap();
    let batch = beam_search(model.as_ref(), &enc, &mask_t, 3, 8, 1.0).unwrap();
    for (r, whole) in batch.iter().enumerate() {
        let one = beam_search(
            model.as_ref(),
            &enc.narrow(0, r, 1).unwrap(),
            &mask_t.narrow(0, r, 1).unwrap(),
            3,
            8,
            1.0,
        )
        .unwrap();
        assert_eq!(one[0].tokens, whole.tokens, "row {r} alone vs in the batch");
        assert!(
            (one[0].score - whole.score).abs() < TOLERANCE,
            "row {r} score"
        );
    }
}

#[test]
fn gradients_reach_the_encoder_input_embeddings() {
    for name in VARIANTS {
        let fx = expected(name);
        let model = load(name);
        let (ids, mask_t, _) = inputs(&fx);
        let embeds = Var::from_tensor(&model.word_embeddings(&ids).unwrap()).unwrap();
        let enc = model.encode(embeds.as_tensor(), &mask_t).unwrap();
        let dec = Tensor::new(matrix_u32(&fx["decoder_input_ids"]), &Device::Cpu).unwrap();
        let logits = model
            .logits(&model.decode(&dec, &enc, &mask_t, None).unwrap())
            .unwrap();
        // Next-token loss on the teacher-forced inputs shifted by one.
        let t = dec.dims()[1];
        let targets = dec.narrow(1, 1, t - 1).unwrap().contiguous().unwrap();
        let lp = adept_backbones::t5::generate::target_log_probs(
            &logits.narrow(1, 0, t - 1).unwrap(),
            &targets,
        )
        .unwrap();
        let loss = lp.mean_all().unwrap().neg().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(embeds.as_tensor())
            .expect("gradient for the embeddings");
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        eprintln!("{name}: |∂loss/∂inputs_embeds| = {norm:.3e}");
        assert!(norm > 1e-6, "{name}: zero gradient");
        // Padded input rows (row 1, positions 5 and 6) get none: the mask stops them.
        let d = model.hidden_size();
        let padded = &g[(7 + 5) * d..(7 + 7) * d];
        assert!(
            padded.iter().all(|x| x.abs() < 1e-12),
            "{name}: padded rows"
        );
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir(name).join(f), d.path().join(f)).unwrap();
    }
    d
}

#[test]
fn loading_errors_name_the_file_and_the_problem() {
    // Unknown feed_forward_proj.
    let d = copy_fixture("tiny-t5-v1");
    let cfg = d.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "\"feed_forward_proj\": \"relu\"",
            "\"feed_forward_proj\": \"gated-tanhx\"",
        ),
    )
    .unwrap();
    let err = format!("{:#}", load_seq2seq(d.path(), &Device::Cpu).err().unwrap());
    assert!(
        err.contains("config.json") && err.contains("\"gated-tanhx\""),
        "{err}"
    );
    assert!(err.contains("t5 family"), "{err}");

    // A max_distance where the logarithmic buckets would start (16 of 32): refused, not a
    // negative bucket id at run time.
    std::fs::write(
        &cfg,
        text.replace(
            "\"relative_attention_max_distance\": 20",
            "\"relative_attention_max_distance\": 16",
        ),
    )
    .unwrap();
    let err = format!("{:#}", load_seq2seq(d.path(), &Device::Cpu).err().unwrap());
    assert!(
        err.contains("config.json") && err.contains("relative_attention_max_distance 16"),
        "{err}"
    );

    // An untied config whose checkpoint lacks lm_head.weight.
    std::fs::write(
        &cfg,
        text.replace(
            "\"tie_word_embeddings\": true",
            "\"tie_word_embeddings\": false",
        ),
    )
    .unwrap();
    let err = format!("{:#}", load_seq2seq(d.path(), &Device::Cpu).err().unwrap());
    assert!(
        err.contains("model.safetensors") && err.contains("missing tensor lm_head.weight"),
        "{err}"
    );

    // A config promising more decoder blocks than the checkpoint has.
    std::fs::write(
        &cfg,
        text.replace("\"num_decoder_layers\": 2", "\"num_decoder_layers\": 3"),
    )
    .unwrap();
    let err = format!("{:#}", load_seq2seq(d.path(), &Device::Cpu).err().unwrap());
    assert!(
        err.contains("model.safetensors")
            && err.contains("missing tensor decoder.block.2.layer.0.layer_norm.weight"),
        "{err}"
    );

    // A width that disagrees with the tensors: the shape is named.
    std::fs::write(&cfg, text.replace("\"d_ff\": 32", "\"d_ff\": 30")).unwrap();
    let err = format!("{:#}", load_seq2seq(d.path(), &Device::Cpu).err().unwrap());
    assert!(
        err.contains("DenseReluDense.wo.weight") && err.contains("[16, 32]"),
        "{err}"
    );
}

#[test]
fn the_fixture_tokenizer_encodes_as_the_reference_and_feeds_generation() {
    let fx = expected("tiny-t5-v1");
    let tok = tokenizers::Tokenizer::from_file(fixture_dir("tiny-t5-v1").join("tokenizer.json"))
        .expect("tokenizer.json loads");
    let texts: Vec<String> = serde_json::from_value(fx["tokenizer"]["texts"].clone()).unwrap();
    let want = matrix_u32(&fx["tokenizer"]["input_ids"]);
    let model = load("tiny-t5-v1");
    for (text, ids) in texts.iter().zip(&want) {
        let enc = tok.encode(text.as_str(), true).unwrap();
        assert_eq!(enc.get_ids(), ids.as_slice(), "{text:?}");
        assert_eq!(*ids.last().unwrap(), model.eos_token_id(), "ends with </s>");
        assert!(ids.iter().all(|&i| (i as usize) < model.vocab_size()));
        assert_eq!(tok.decode(ids, true).unwrap(), *text);
    }
    // Text in, text out: the pieces run through the model and back through the decoder.
    let ids = Tensor::new(want[0].clone(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones(ids.dims(), DType::U32, &Device::Cpu).unwrap();
    let embeds = model.word_embeddings(&ids).unwrap();
    let out = generate(model.as_ref(), &embeds, &mask, &GenerateOptions::default()).unwrap();
    assert!(!out[0].tokens.is_empty());
    tok.decode(&out[0].tokens, true)
        .expect("generated ids decode");
}

/// The fused CPU ops (RMS norm, softmax with position and padding biases, ReLU / gated GELU)
/// give the composite ops' logits and input-embedding gradients on both fixtures, and no
/// gradient is computed for any frozen matrix (the shared table under the tied or untied head,
/// the decoder's embedding lookup, the position-bias table).
#[test]
fn fused_layers_match_composite_ops_and_frozen_tensors_get_no_gradient() {
    use adept_backbones::T5Model;
    for name in VARIANTS {
        let fx = expected(name);
        let boxed = load(name);
        let fused = boxed
            .as_any()
            .downcast_ref::<T5Model>()
            .expect("a T5 model")
            .clone();
        assert!(fused.fused_layers());
        let mut plain = fused.clone();
        plain.set_fused_layers(false);
        let (ids, mask_t, _) = inputs(&fx);
        let dec = Tensor::new(matrix_u32(&fx["decoder_input_ids"]), &Device::Cpu).unwrap();
        let emb = boxed.word_embeddings(&ids).unwrap();
        let run = |m: &T5Model| {
            let x = Var::from_tensor(&emb).unwrap();
            let enc = m.encode(x.as_tensor(), &mask_t).unwrap();
            let logits = m
                .logits(&m.decode(&dec, &enc, &mask_t, None).unwrap())
                .unwrap();
            let loss = logits.sqr().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            let mut frozen = vec![("shared", m.shared.clone())];
            if let Some(h) = &m.lm_head {
                frozen.push(("lm_head", h.clone()));
            }
            for (stack, blk) in [
                ("encoder", &m.encoder[0].attention),
                ("decoder", &m.decoder[0].self_attention),
            ] {
                frozen.push((stack, blk.relative_attention_bias.clone().unwrap()));
            }
            for (what, t) in frozen {
                assert!(
                    grads.get(&t).is_none(),
                    "{name}: a gradient was computed for {what}"
                );
            }
            // Nor for any view of the table (candle's matmul backward would leave a [d, vocab]
            // gradient for `sharedᵀ` in the store).
            let (v, d) = m.shared.dims2().unwrap();
            for id in grads.get_ids() {
                let dims = grads.get_id(*id).unwrap().dims().to_vec();
                assert!(
                    !(dims.contains(&v) && dims.contains(&d) && dims.len() == 2),
                    "{name}: a table-sized gradient {dims:?} was computed"
                );
            }
            (logits, grads.get(x.as_tensor()).unwrap().clone())
        };
        let (lf, gf) = run(&fused);
        let (lp, gp) = run(&plain);
        let d = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let scale = gp
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!(
            "{name}: fused vs composite logits {:.1e}, input gradient {:.1e} (max {scale:.1e})",
            d(&lf, &lp),
            d(&gf, &gp)
        );
        assert!(
            d(&lf, &lp) < TOLERANCE,
            "{name}: fused logits differ by {}",
            d(&lf, &lp)
        );
        assert!(scale > 0.0, "{name}: zero gradient");
        assert!(
            d(&gf, &gp) < 1e-4 * scale,
            "{name}: fused input gradient differs by {} (max {scale})",
            d(&gf, &gp)
        );
    }
}

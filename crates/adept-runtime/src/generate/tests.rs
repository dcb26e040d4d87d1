use super::*;
use adept_bundle::generate::generate;
use std::path::{Path, PathBuf};

#[test]
fn chat_templates_render_like_transformers() {
    // SmolLM2-Instruct's template (ChatML with a default system message).
    let t = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let got = render_chat_template(t, "Hi!", "<s>", "</s>").unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    // Python string methods and bos_token, as Llama templates use them.
    let t = "{{ bos_token }}{{ messages[0]['content'].strip() }}";
    assert_eq!(render_chat_template(t, "  x ", "<s>", "").unwrap(), "<s>x");
    // A conversation: the system message replaces the default one.
    let t0 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let got = render_chat_messages(
        t0,
        &[
            ("system", "Be brief."),
            ("user", "Hi!"),
            ("assistant", "Hello."),
            ("user", "Bye"),
        ],
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    let t = "{{ raise_exception('only user messages') }}";
    let e = render_chat_template(t, "x", "", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("only user messages"), "{e}");
}

#[test]
fn prompts_from_lines_or_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("p.txt");
    std::fs::write(&lines, "first\n\n{not json} second\n").unwrap();
    assert_eq!(
        read_prompts(&lines).unwrap(),
        ["first", "{not json} second"]
    );
    let jl = dir.path().join("p.jsonl");
    std::fs::write(&jl, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"id\": 2}\n").unwrap();
    assert_eq!(read_prompts(&jl).unwrap(), ["a", "b"]);
    std::fs::write(&jl, "{\"text\": \"a\"}\n").unwrap();
    let e = format!("{:#}", read_prompts(&jl).unwrap_err());
    assert!(e.contains("p.jsonl:1") && e.contains("prompt"), "{e}");
}

use adept_bundle::{
    DecoderTask, FoldMode, InputTemplate, Method, OverLength, Pooling, Provenance, WeightDtype,
    FORMAT, FORMAT_VERSION, PROMPT_CACHE_FILE,
};

fn fixture_dir() -> PathBuf {
    adept_testkit::repo_file("tests/fixtures/tiny-decoder")
}

fn expected() -> serde_json::Value {
    let p = fixture_dir().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Copies the tiny decoder (tests/reference/tiny_decoder.py) into a bundle folder with its
/// manifest; `edit` changes the decoder section before the manifest is written.
fn tiny_bundle(dir: &Path, edit: impl FnOnce(&mut DecoderSpec)) {
    for f in [MODEL_FILE, TOKENIZER_FILE, PROMPT_CACHE_FILE] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
    let x = expected();
    let n = |k: &str| x[k].as_u64().unwrap() as usize;
    let mut d = DecoderSpec {
        task_kind: DecoderTask::CausalLm,
        num_layers: n("num_layers"),
        kv_heads: n("kv_heads"),
        head_dim: n("head_dim"),
        vocab_size: n("vocab_size"),
        prompt_len: n("prompt_len"),
        bos_token_id: Some(n("bos_token_id") as u32),
        eos_token_ids: vec![2],
        pad_token_id: 0,
        max_sequence_len: 64,
        chat_template: None,
        prompt_cache_file: PROMPT_CACHE_FILE.into(),
        virtual_token_base: n("vocab_size"),
    };
    edit(&mut d);
    let mut m = BundleManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        adept_version: "test".into(),
        model_family: "llama".into(),
        task: "causal-lm".into(),
        label_names: vec![],
        regression: false,
        text_fields: vec!["prompt".into()],
        input_template: InputTemplate::from_fields(&["prompt".into()]),
        prompt_length: d.prompt_len,
        max_length: 32,
        over_length: OverLength::Truncate,
        pad_token_id: d.pad_token_id,
        vocab_size: d.vocab_size,
        hidden_size: d.kv_heads * d.head_dim,
        num_outputs: d.vocab_size,
        opset: 17,
        dtype: WeightDtype::F32,
        int8_keep_float: Vec::new(),
        int8_per_row: Vec::new(),
        int8_activations: None,
        fold: FoldMode::Folded,
        method: Method::Adept,
        pooling: Pooling::Mean,
        inputs: d.input_names(),
        outputs: d.output_names(),
        files: Default::default(),
        provenance: Provenance::default(),
        decoder: Some(d),
    };
    m.record_files(dir).unwrap();
    m.write(dir).unwrap();
}

fn options(lib: PathBuf, batch_size: usize) -> RuntimeOptions {
    RuntimeOptions {
        ort_library: Some(lib),
        batch_size,
        ..Default::default()
    }
}

/// The ort step against numpy on the full unpadded sequences: each step's last-row logits
/// (1e-4) for a left-padded batch of three lengths, starting from the prompt cache and from the
/// virtual ids; greedy ids equal; then the Generator end to end with text.
#[test]
fn ort_step_keeps_the_cache_and_matches_the_reference() {
    let Some(lib) =
        adept_testkit::ort_library("ort_step_keeps_the_cache_and_matches_the_reference")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tiny_bundle(dir.path(), |_| {});
    let x = expected();
    let cases = x["cases"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            c["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let max_new = x["max_new_tokens"].as_u64().unwrap() as usize;
    let mut g = Generator::open(dir.path(), &options(lib.clone(), 8)).unwrap();
    let model = dir.path().join(MODEL_FILE);
    let vocab = g.spec.vocab_size;
    for use_cache in [true, false] {
        // Record the logits the loop sees at every step.
        struct Rec<'a, 'b>(&'b mut OrtDecoderStep<'a>, Vec<Vec<f32>>);
        impl DecoderStep for Rec<'_, '_> {
            fn step(
                &mut self,
                i: &[i64],
                m: &[i64],
                p: &[i64],
                b: usize,
                s: usize,
            ) -> Result<Vec<f32>> {
                let out = self.0.step(i, m, p, b, s)?;
                self.1.push(out.clone());
                Ok(out)
            }
            fn vocab_size(&self) -> usize {
                self.0.vocab_size()
            }
            fn cached_prefix_len(&self) -> usize {
                self.0.cached_prefix_len()
            }
            fn prefix_ids(&self) -> Vec<i64> {
                self.0.prefix_ids()
            }
            fn start(&mut self, b: usize) -> Result<()> {
                self.0.start(b)
            }
        }
        let cache = if use_cache {
            g.prompt_cache.as_ref()
        } else {
            None
        };
        let mut step = OrtDecoderStep::new(&mut g.session, &g.spec, cache, &model);
        let mut rec = Rec(&mut step, Vec::new());
        let cfg = GenerationConfig {
            max_new_tokens: max_new,
            eos_token_ids: vec![999],
            ..Default::default()
        };
        let gens = generate(
            &mut rec,
            &prompts,
            0,
            &cfg,
            &Tok(&g.tokenizer),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(rec.1.len(), max_new);
        for (r, c) in cases.iter().enumerate() {
            let want_ids: Vec<u32> = c["generated"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                gens[r].token_ids, want_ids,
                "row {r}, prompt cache {use_cache}"
            );
            for (k, want) in c["logits"].as_array().unwrap().iter().enumerate() {
                let got = &rec.1[k][r * vocab..(r + 1) * vocab];
                for (v, w) in got.iter().zip(want.as_array().unwrap()) {
                    let w = w.as_f64().unwrap() as f32;
                    assert!(
                        (v - w).abs() < 1e-4,
                        "row {r} step {k} (cache {use_cache}): {v} vs {w}"
                    );
                }
            }
        }
    }
    // End to end from text, batches of 2 (so two batches), order kept, streaming.
    let mut g = Generator::open(dir.path(), &options(lib, 2)).unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["prompt"].as_str().unwrap().to_owned())
        .collect();
    let mut streamed = vec![String::new(); texts.len()];
    let cfg = GenerationConfig {
        max_new_tokens: max_new,
        ..Default::default()
    };
    let (gens, stats) = g
        .generate(&texts, &cfg, true, &mut |r, p| streamed[r].push_str(p))
        .unwrap();
    assert_eq!(stats.batches, 2);
    assert!(stats.time_to_first_token_s > 0.0 && stats.tokens_per_s > 0.0);
    for (r, c) in cases.iter().enumerate() {
        let want_ids: Vec<u32> = c["generated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // The bundle's EOS (2) ends a row early if the reference produced it.
        let cut = want_ids
            .iter()
            .position(|&t| t == 2)
            .map_or(want_ids.len(), |p| p + 1);
        assert_eq!(gens[r].token_ids, want_ids[..cut], "row {r}");
        assert_eq!(
            gens[r].prompt_tokens,
            c["prompt_ids"].as_array().unwrap().len()
        );
        assert_eq!(streamed[r], gens[r].text);
        let words: Vec<String> = want_ids[..cut]
            .iter()
            .filter(|&&t| t != 2)
            .map(|t| format!("w{t}"))
            .collect();
        assert_eq!(gens[r].text, words.join(" "));
    }
}

/// A manifest that does not describe the graph, a broken prompt cache, an encoder bundle and a
/// prompt too long for the model are refused with errors that say what is wrong.
#[test]
fn decoder_bundle_mismatches_are_clear_errors() {
    let Some(lib) = adept_testkit::ort_library("decoder_bundle_mismatches_are_clear_errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tiny_bundle(dir.path(), |d| d.num_layers = 3);
    let e = format!(
        "{:#}",
        Generator::open(dir.path(), &options(lib.clone(), 4)).unwrap_err()
    );
    assert!(e.contains("past_key_values.2.key"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    tiny_bundle(dir.path(), |d| d.head_dim = 2);
    let e = format!(
        "{:#}",
        Generator::open(dir.path(), &options(lib.clone(), 4)).unwrap_err()
    );
    assert!(
        e.contains("prompt_cache.safetensors") && e.contains("[1, 2, 3, 2]"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    tiny_bundle(dir.path(), |d| d.max_sequence_len = 8);
    let mut g = Generator::open(dir.path(), &options(lib.clone(), 4)).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 4,
        ..Default::default()
    };
    let e = format!(
        "{:#}",
        g.generate(&["w3 w4 w5".into()], &cfg, true, &mut |_, _| {})
            .unwrap_err()
    );
    assert!(e.contains("max_sequence_len 8"), "{e}");
    let e = format!("{:#}", g.apply_chat_template("hi").unwrap_err());
    assert!(e.contains("no chat template"), "{e}");
}

/// The fixture folder is itself a complete decoder bundle (its adept.json written by the
/// Python script): the Rust reader accepts it, the chat template renders, and the soft prompt
/// as virtual ids gives the same completion as the prompt cache.
#[test]
fn the_fixture_folder_is_a_bundle() {
    let Some(lib) = adept_testkit::ort_library("the_fixture_folder_is_a_bundle") else {
        return;
    };
    let mut g = Generator::open(&fixture_dir(), &options(lib, 4)).unwrap();
    let prompt = g.apply_chat_template("  w5 w7 w9 ").unwrap();
    assert_eq!(prompt, "w5 w7 w9");
    let cfg = GenerationConfig {
        max_new_tokens: 6,
        ..Default::default()
    };
    let (a, _) = g
        .generate(std::slice::from_ref(&prompt), &cfg, true, &mut |_, _| {})
        .unwrap();
    let (b, _) = g.generate(&[prompt], &cfg, false, &mut |_, _| {}).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].token_ids, [21; 6]);
}

//! Generation speed of an ADePT causal-LM bundle, side by side in one run: ONNX Runtime (the
//! bundle, starting from the shipped prompt cache and, for comparison, running the soft prompt
//! as virtual tokens), candle (`generate::greedy` with the KV cache), and Python `transformers`'
//! `generate` on the same weights (tests/reference/hf_generate_bench.py) when torch is available.
//!
//! ```sh
//! cargo run --release -p adept-e2e --example decoder_bench -- [--model DIR] [--out DIR] \
//!     [--threads N] [--new-tokens N] [--prompt-len L] [--rank R] [--dtype f32|f16] [--no-torch]
//! ```
//!
//! The model defaults to the cached SmolLM2-135M-Instruct (`adept fetch --model smollm2`). The
//! adapter is random (speed depends on shapes only) with a non-zero offset MLP so the fold is
//! real. Greedy decoding, fixed prompts (batch 1: one; batch 8: eight of different lengths),
//! `--new-tokens` new tokens with EOS ignored. Prints a table and writes `<out>/results.json`.

use adept_adapters::{Adapter, AdapterConfig, MethodKind, PromptInit};
use adept_bundle::generate::GenerationConfig;
use adept_bundle::WeightDtype;
use adept_export::decoder::{export_causal_lm, DecoderExportOptions, GenerationInfo};
use adept_runtime::{Generator, RuntimeOptions, SessionConfig};
use adept_train::CausalLmModel;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const PROMPTS: [&str; 8] = [
    "Review: a gorgeous, witty, seductive movie.\nSentiment:",
    "The capital of France is",
    "Write a haiku about the sea:",
    "Q: What is two plus three?\nA:",
    "Once upon a time, in a small village by the mountains, there lived an old clockmaker who",
    "List three colours:",
    "Translate to French: good morning",
    "The best way to learn a language is",
];

struct Opts {
    model: PathBuf,
    out: PathBuf,
    threads: usize,
    new_tokens: usize,
    prompt_len: usize,
    rank: usize,
    dtype: WeightDtype,
    torch: bool,
}

fn parse() -> Result<Opts> {
    let root = adept_cache::cache_root(None)?;
    let mut o = Opts {
        model: adept_cache::smollm2_model_dir(&root),
        out: PathBuf::from("target/decoder-bench"),
        threads: 2,
        new_tokens: 32,
        prompt_len: 7,
        rank: 1,
        dtype: WeightDtype::F32,
        torch: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => o.model = PathBuf::from(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            "--threads" => o.threads = val()?.parse()?,
            "--new-tokens" => o.new_tokens = val()?.parse()?,
            "--prompt-len" => o.prompt_len = val()?.parse()?,
            "--rank" => o.rank = val()?.parse()?,
            "--dtype" => o.dtype = val()?.parse()?,
            "--no-torch" => o.torch = false,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = parse()?;
    if !o.model.join("config.json").exists() {
        bail!(
            "no causal LM at {}: run `adept fetch --model smollm2` or pass --model DIR",
            o.model.display()
        );
    }
    std::fs::create_dir_all(&o.out)?;
    let dev = Device::Cpu;
    let backbone = adept_backbones::load_causal_lm(&o.model, &dev)?;
    let table = backbone.word_embedding_table().clone();
    let d = table.dims()[1];
    let mut cfg = AdapterConfig::new(MethodKind::Adept, d, o.prompt_len, o.rank);
    cfg.prompt_init = PromptInit::SampleVocab { seed: 1 };
    let adapter = Adapter::init(cfg, &table, 3)?;
    // Non-zero W_up/b2 so the folded table differs from the original.
    let mut values = HashMap::new();
    for (name, t) in adapter.tensors() {
        let v = if name == adept_adapters::PROMPT {
            t.copy()?
        } else {
            (Tensor::randn(0f32, 0.02, t.dims(), &dev)? + &t)?
        };
        values.insert(name, v);
    }
    adapter.set_values(&values)?;
    let model = CausalLmModel { backbone, adapter };

    let bundle = o.out.join("bundle");
    let t0 = Instant::now();
    let gen_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.model.join("generation_config.json"))?)?;
    let eos = gen_cfg["eos_token_id"].as_u64().unwrap_or(2) as u32;
    export_causal_lm(
        &model,
        &o.model.join("tokenizer.json"),
        &bundle,
        &DecoderExportOptions {
            dtype: o.dtype,
            overwrite: true,
            generation: GenerationInfo {
                bos_token_id: None,
                eos_token_ids: vec![eos],
                pad_token_id: Some(eos),
                chat_template: None,
            },
            ..Default::default()
        },
    )?;
    eprintln!(
        "exported {} in {:.1}s",
        bundle.display(),
        t0.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let gcfg = GenerationConfig {
        max_new_tokens: o.new_tokens,
        eos_token_ids: vec![u32::MAX], // never stop early: every run makes the same number
        ..Default::default()
    };
    for batch in [1usize, 8] {
        let prompts: Vec<String> = PROMPTS[..batch].iter().map(|s| s.to_string()).collect();
        for use_cache in [true, false] {
            let opts = RuntimeOptions {
                session: SessionConfig {
                    intra_threads: Some(o.threads),
                    ..Default::default()
                },
                batch_size: batch,
                ..Default::default()
            };
            let mut g = Generator::open(&bundle, &opts)?;
            g.generate(&prompts, &gcfg, use_cache, &mut |_, _| {})?; // warm-up
            let (_, st) = g.generate(&prompts, &gcfg, use_cache, &mut |_, _| {})?;
            rows.push(
                serde_json::json!({"impl": "ort", "prompt_cache": use_cache, "batch": batch,
                "ttft_ms": st.time_to_first_token_s * 1e3, "tokens_per_s": st.tokens_per_s,
                "decode_tokens_per_s": st.decode_tokens_per_s}),
            );
        }
        // candle: greedy with the KV cache, offsets on every token, soft prompt as prefix.
        let tok = tokenizers::Tokenizer::from_file(o.model.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| tok.encode(p.as_str(), false).map(|e| e.get_ids().to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let embed = |t: &Tensor| model.embed_tokens(t, None);
        let gopts = adept_backbones::generate::GreedyOptions::new(o.new_tokens, &[]);
        let one = adept_backbones::generate::GreedyOptions::new(1, &[]);
        let prefix = model.adapter.prompt();
        adept_backbones::generate::greedy(model.backbone.as_ref(), &embed, prefix, &ids, &one)?;
        let t = Instant::now();
        adept_backbones::generate::greedy(model.backbone.as_ref(), &embed, prefix, &ids, &one)?;
        let ttft = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = adept_backbones::generate::greedy(
            model.backbone.as_ref(),
            &embed,
            prefix,
            &ids,
            &gopts,
        )?;
        let secs = t.elapsed().as_secs_f64();
        let n: usize = out.iter().map(Vec::len).sum();
        rows.push(
            serde_json::json!({"impl": "candle", "batch": batch, "ttft_ms": ttft * 1e3,
            "tokens_per_s": n as f64 / secs}),
        );
        if o.torch {
            if let Some(r) = torch_row(&o, batch)? {
                rows.push(r);
            }
        }
    }
    println!(
        "{:<8} {:>6} {:>13} {:>10} {:>12}",
        "impl", "batch", "prompt cache", "TTFT ms", "tokens/s"
    );
    for r in &rows {
        println!(
            "{:<8} {:>6} {:>13} {:>10.1} {:>12.1}",
            r["impl"].as_str().unwrap_or(""),
            r["batch"],
            r.get("prompt_cache")
                .map(|v| v.to_string())
                .unwrap_or("-".into()),
            r["ttft_ms"].as_f64().unwrap_or(f64::NAN),
            r["tokens_per_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let report = serde_json::json!({"model": o.model, "threads": o.threads,
        "new_tokens": o.new_tokens, "prompt_len": o.prompt_len, "rank": o.rank,
        "dtype": o.dtype.to_string(), "rows": rows});
    std::fs::write(
        o.out.join("results.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::remove_dir_all(&bundle).ok();
    Ok(())
}

/// transformers `generate` (greedy, KV cache, same weights, the soft prompt and offsets as
/// `inputs_embeds` for the prefill) via tests/reference/hf_generate_bench.py.
fn torch_row(o: &Opts, batch: usize) -> Result<Option<serde_json::Value>> {
    let py = std::env::var("ADEPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference/hf_generate_bench.py");
    let prompts = serde_json::to_string(&PROMPTS[..batch])?;
    let out = Command::new(&py)
        .arg(&script)
        .args(["--model", &o.model.display().to_string()])
        .args(["--threads", &o.threads.to_string()])
        .args(["--new-tokens", &o.new_tokens.to_string()])
        .args(["--prompt-len", &o.prompt_len.to_string()])
        .args(["--prompts", &prompts])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "transformers column skipped: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return Ok(None);
        }
        Err(e) => {
            eprintln!("transformers column skipped: cannot run {py}: {e}");
            return Ok(None);
        }
    };
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or("{}"))?;
    Ok(Some(v))
}

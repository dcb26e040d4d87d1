//! The adapter stage in the graph: word embeddings with ADePT/DePT offsets, the soft prompt, and
//! the attention mask / token types extended over the prompt rows. Mirrors
//! `adept_adapters::Adapter::{apply, extend}`.

use adept_adapters::{Adapter, MethodKind};
use adept_backbones::onnx::{values, EncoderInputs};
use adept_bundle::FoldMode;
use adept_onnx::GraphBuilder;
use adept_train::Classifier;
use anyhow::{bail, Context, Result};

/// PEFT names of the adapter tensors (as in `adapter_model.safetensors`).
pub const PROMPT: &str = "prompt_embeddings";
pub const W_DOWN: &str = "prompt_encoder.lora_embedding_A";
pub const B1: &str = "prompt_encoder.lora_embedding_a";
pub const W_UP: &str = "prompt_encoder.lora_embedding_B";
pub const B2: &str = "prompt_encoder.lora_embedding_b";

/// The fold mode a method gets when the user does not choose: ADePT folds, the rest have
/// nothing to fold.
pub fn default_fold(method: MethodKind) -> FoldMode {
    match method {
        MethodKind::Adept => FoldMode::Folded,
        _ => FoldMode::None,
    }
}

/// Checks that `fold` makes sense for `method`.
pub fn check_fold(method: MethodKind, fold: FoldMode) -> Result<()> {
    match (method, fold) {
        (MethodKind::Adept, FoldMode::None) => {
            bail!("an ADePT adapter is exported folded or unfolded, not without its offsets")
        }
        (MethodKind::Adept, _) | (_, FoldMode::None) => Ok(()),
        (m, f) => bail!(
            "only ADePT's token-wise offsets fold into the vocabulary table; {m} has none ({f} requested)"
        ),
    }
}

fn adapter_tensor(adapter: &Adapter, name: &str) -> Result<Vec<f32>> {
    let tensors = adapter.tensors();
    let t = tensors
        .get(name)
        .with_context(|| format!("the {} adapter has no tensor {name}", adapter.method()))?;
    values(t)
}

/// `ids [batch, s]` → `E + offsets(E)`, `float [batch, s, d]`, by method and fold mode:
///
/// * ADePT folded: one `Gather` on the table `E + f(E)` ([`Adapter::fold_table`]);
/// * ADePT unfolded: `Gather` on `E`, then `f(e) = ReLU(e·W_down + b1)·W_up + b2` added
///   ([`token_offsets_mlp`]);
/// * DePT: `Gather` on `E`, then `(α/√r)·(A·B)[:s]` added ([`position_offsets`]);
/// * PT, head-only: `Gather` on `E`.
pub fn input_embeddings(
    g: &mut GraphBuilder,
    model: &Classifier,
    ids: &str,
    fold: FoldMode,
) -> Result<String> {
    let adapter = &model.adapter;
    check_fold(adapter.method(), fold)?;
    let table = model.backbone.word_embedding_table();
    let (vocab, d) = table.dims2()?;
    if fold == FoldMode::Folded {
        let folded = adapter.fold_table(table)?;
        return g.embedding(
            "adapter.folded_word_embeddings",
            ids,
            &values(&folded)?,
            [vocab, d],
        );
    }
    let e = g.embedding(
        "embeddings.word_embeddings",
        ids,
        &values(table)?,
        [vocab, d],
    )?;
    match adapter.method() {
        MethodKind::Adept => {
            let f = token_offsets_mlp(g, adapter, &e)?;
            Ok(g.add(&e, &f))
        }
        MethodKind::Dept => {
            let off = position_offsets(g, adapter, ids)?;
            Ok(g.add(&e, &off))
        }
        MethodKind::Pt | MethodKind::HeadOnly => Ok(e),
    }
}

/// ADePT's token-wise MLP on gathered rows `e [..., d]` (eval mode: no dropout), the graph form
/// of `Adapter::token_offsets`: `MatMul`, `Add`, `Relu`, `MatMul`, `Add`. `W_down [d, r]` and
/// `W_up [r, d]` are already `[in, out]`, so they are stored as they are.
pub fn token_offsets_mlp(g: &mut GraphBuilder, adapter: &Adapter, e: &str) -> Result<String> {
    let (d, r) = (adapter.config.token_dim, adapter.config.rank);
    let w_down = adapter_tensor(adapter, W_DOWN)?;
    let b1 = adapter_tensor(adapter, B1)?;
    let w_up = adapter_tensor(adapter, W_UP)?;
    let b2 = adapter_tensor(adapter, B2)?;
    let w_down = g.weight(W_DOWN, &[d, r], &w_down)?;
    let b1 = g.weight(B1, &[r], &b1)?;
    let w_up = g.weight(W_UP, &[r, d], &w_up)?;
    let b2 = g.weight(B2, &[d], &b2)?;
    g.scope("prompt_encoder", |g| {
        let hidden = g.linear_from(e, &w_down, Some(&b1));
        let hidden = g.relu(&hidden);
        Ok(g.linear_from(&hidden, &w_up, Some(&b2)))
    })
}

/// DePT's position offsets `(α/√r)·(A·B)[:s]`, `float [s, d]`, for `ids [batch, s]`.
///
/// The product is a constant, so it is computed once at export (by `Adapter::position_offsets`,
/// the same code training runs) and stored as `prompt_encoder.position_offsets [max_len, d]`;
/// the graph slices its first `s` rows. Inputs longer than `max_len` fail in the `Add`, as
/// they fail in candle.
pub fn position_offsets(g: &mut GraphBuilder, adapter: &Adapter, ids: &str) -> Result<String> {
    let max_len = adapter.config.max_length;
    let d = adapter.config.token_dim;
    let table = values(&adapter.position_offsets(max_len)?)?;
    let table = g.weight("prompt_encoder.position_offsets", &[max_len, d], &table)?;
    g.scope("prompt_encoder", |g| {
        let s = sequence_len(g, ids);
        let zero = g.const_i64(&[0]);
        Ok(g.slice_dynamic(&table, &zero, &s, &[0]))
    })
}

/// The length of axis 1 of `x` as a 1-element `int64` vector.
pub fn sequence_len(g: &mut GraphBuilder, x: &str) -> String {
    g.dim(x, 1)
}

/// The batch size of `x` (axis 0) as a 1-element `int64` vector.
pub fn batch_len(g: &mut GraphBuilder, x: &str) -> String {
    g.dim(x, 0)
}

/// `[batch, l]` filled with `value` (an `int64` scalar), for the prompt's mask/type entries.
fn prompt_fill(g: &mut GraphBuilder, ids: &str, l: usize, value: i64) -> String {
    let batch = batch_len(g, ids);
    let l = g.const_i64(&[l as i64]);
    let shape = g.concat(&[&batch, &l], 0);
    let v = g.scalar_i64(value);
    g.expand(&v, &shape)
}

/// Prepends the soft prompt: `embeds [batch, s, d]` → `[P; embeds] [batch, l + s, d]`, and
/// extends the mask with ones and the token types (if the family reads them) with zeros
/// (`Adapter::apply`/`extend`). Without a prompt the inputs pass through.
pub fn extend_with_prompt(
    g: &mut GraphBuilder,
    adapter: &Adapter,
    ids: &str,
    embeds: &str,
    mask: &str,
    types: Option<&str>,
) -> Result<EncoderInputs> {
    let Some(prompt) = adapter.prompt() else {
        return Ok(EncoderInputs {
            embeds: embeds.to_owned(),
            attention_mask: mask.to_owned(),
            token_type_ids: types.map(str::to_owned),
        });
    };
    let (l, d) = prompt.dims2()?;
    let p = g.weight(PROMPT, &[l, d], &values(prompt)?)?;
    g.scope("prompt", |g| {
        let p = g.unsqueeze(&p, &[0]);
        let batch = batch_len(g, ids);
        let rest = g.const_i64(&[l as i64, d as i64]);
        let shape = g.concat(&[&batch, &rest], 0);
        let p = g.expand(&p, &shape);
        let embeds = g.concat(&[&p, embeds], 1);
        let ones = prompt_fill(g, ids, l, 1);
        let mask = g.concat(&[&ones, mask], 1);
        let types = types.map(|types| {
            let zeros = prompt_fill(g, ids, l, 0);
            g.concat(&[&zeros, types], 1)
        });
        Ok(EncoderInputs {
            embeds,
            attention_mask: mask,
            token_type_ids: types,
        })
    })
}

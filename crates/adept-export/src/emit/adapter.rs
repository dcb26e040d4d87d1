//! The adapter stage in the graph: word embeddings with the method's offsets (or its folded
//! table), the soft prompt, and the attention mask / token types extended over the prompt rows.
//! Mirrors `adept_adapters::Adapter::{apply, extend}`.
//!
//! What to emit comes from the adapter itself ([`Adapter::graph_stage`]): each method says,
//! with its own tensors and their PEFT names, what it adds to the gathered rows
//! ([`GraphOffset`]: a token-wise MLP, rows of a position table), and whether it folds. This
//! module turns each kind of addition into nodes, and never asks which method it is; a new
//! method that adds one of these kinds needs nothing here. (The emission stays in adept-export,
//! so that adept-adapters does not depend on the ONNX builder.)

use adept_adapters::{Adapter, GraphOffset, MethodKind, PositionRows, TokenMlp};
use adept_backbones::onnx::{values, EncoderInputs};
use adept_bundle::FoldMode;
use adept_onnx::GraphBuilder;
use adept_train::Classifier;
use anyhow::{bail, Result};

/// PEFT names of the adapter tensors, as `adept_adapters` defines them.
pub use adept_adapters::adept::{B1, B2, W_DOWN, W_UP};
pub use adept_adapters::PROMPT;

/// The initializer of the folded table `E + f(E)` (`.weight` is appended).
pub const FOLDED_TABLE: &str = "adapter.folded_word_embeddings";
/// The initializer of the frozen word-embedding table (`.weight` is appended).
pub const WORD_TABLE: &str = "embeddings.word_embeddings";

/// The fold mode a method gets when the user does not choose: a method that folds
/// ([`adept_adapters::AdapterMethod::folds`]: ADePT) is folded, the rest have nothing to fold.
pub fn default_fold(method: MethodKind) -> FoldMode {
    if method.imp().folds() {
        FoldMode::Folded
    } else {
        FoldMode::None
    }
}

/// Checks that `fold` makes sense for `method`.
pub fn check_fold(method: MethodKind, fold: FoldMode) -> Result<()> {
    match (method.imp().folds(), fold) {
        (true, FoldMode::None) => {
            bail!("a {method} adapter is exported folded or unfolded, not without its offsets")
        }
        (true, _) | (false, FoldMode::None) => Ok(()),
        (false, f) => bail!(
            "only ADePT's token-wise offsets fold into the vocabulary table; {method} has none ({f} requested)"
        ),
    }
}

/// `ids [batch, s]` → `E + offsets(E)`, `float [batch, s, d]`, as the adapter's
/// [`graph_stage`](Adapter::graph_stage) says:
///
/// * folded (ADePT): one `Gather` on the table `E + f(E)` ([`Adapter::fold_table`]);
/// * otherwise `Gather` on `E`, then each [`GraphOffset`] added: a token-wise MLP
///   ([`token_mlp`], ADePT unfolded), rows of a position table ([`position_rows`], DePT);
///   nothing for PT and head-only.
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
    let stage = adapter.graph_stage(table, fold == FoldMode::Folded)?;
    let mut e = match &stage.folded_table {
        Some(folded) => g.embedding(FOLDED_TABLE, ids, &values(folded)?, [vocab, d])?,
        None => g.embedding(WORD_TABLE, ids, &values(table)?, [vocab, d])?,
    };
    for offset in &stage.offsets {
        let off = match offset {
            GraphOffset::TokenMlp(mlp) => token_mlp(g, mlp, &e)?,
            GraphOffset::PositionRows(rows) => position_rows(g, rows, ids)?,
        };
        e = g.add(&e, &off);
    }
    Ok(e)
}

/// A token-wise MLP on gathered rows `e [..., d]` (eval mode: no dropout), the graph form of
/// `adept_adapters::adept::token_offsets`: `MatMul`, `Add`, `Relu`, `MatMul`, `Add`. `W_down
/// [d, r]` and `W_up [r, d]` are already `[in, out]`, so they are stored as they are, under
/// their PEFT names.
pub fn token_mlp(g: &mut GraphBuilder, mlp: &TokenMlp, e: &str) -> Result<String> {
    let mut weight = |t: &adept_adapters::NamedTensor| -> Result<String> {
        g.weight(t.name, t.tensor.dims(), &values(&t.tensor)?)
    };
    let w_down = weight(&mlp.w_down)?;
    let b1 = weight(&mlp.b1)?;
    let w_up = weight(&mlp.w_up)?;
    let b2 = weight(&mlp.b2)?;
    g.scope(mlp.scope, |g| {
        let hidden = g.linear_from(e, &w_down, Some(&b1));
        let hidden = g.relu(&hidden);
        Ok(g.linear_from(&hidden, &w_up, Some(&b2)))
    })
}

/// The first `s` rows of a constant `[max_len, d]` table, `float [s, d]`, for `ids [batch, s]`
/// (DePT's `(α/√r)·(A·B)`, computed at export by the code training runs). Inputs longer than
/// `max_len` fail in the `Add`, as they fail in candle.
pub fn position_rows(g: &mut GraphBuilder, rows: &PositionRows, ids: &str) -> Result<String> {
    let t = &rows.table;
    let table = g.weight(t.name, t.tensor.dims(), &values(&t.tensor)?)?;
    g.scope(rows.scope, |g| {
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
            keep_from: 0,
            constant_prompt: None,
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
            keep_from: 0,
            constant_prompt: None,
        })
    })
}

/// The lean form of [`extend_with_prompt`] (see `EncoderInputs::constant_prompt`): the
/// embeddings `[batch, s, d]` and token types stay the input rows', the mask is extended with
/// ones over the prompt (`[batch, l + s]`), and the prompt `P [l, d]` goes to the encoder's
/// emission as a constant, which computes the prompt rows' input-independent values at export
/// instead of concatenating `P` in the graph. The prompt rows are the same whatever the method
/// (PT, DePT, ADePT folded or unfolded): their offsets act on the input rows only. Without a
/// prompt the inputs pass through.
pub fn constant_prompt_inputs(
    g: &mut GraphBuilder,
    adapter: &Adapter,
    ids: &str,
    embeds: &str,
    mask: &str,
    types: Option<&str>,
) -> Result<EncoderInputs> {
    let prompt = adapter.prompt();
    let mask = match prompt {
        Some(p) => {
            let (l, _) = p.dims2()?;
            g.scope("prompt", |g| {
                let ones = prompt_fill(g, ids, l, 1);
                g.concat(&[&ones, mask], 1)
            })
        }
        None => mask.to_owned(),
    };
    Ok(EncoderInputs {
        embeds: embeds.to_owned(),
        attention_mask: mask,
        token_type_ids: types.map(str::to_owned),
        keep_from: 0,
        constant_prompt: prompt.cloned(),
    })
}

//! Side-by-side exports of one trained classifier for serving benchmarks: the same frozen
//! backbone and head, with the adapter stage swapped.
//!
//! | name              | what the graph runs                                   |
//! |-------------------|-------------------------------------------------------|
//! | `frozen`          | the bare model + head (no prompt): the floor of any method |
//! | `frozen-prompt{l}`| plus an `l`-row prompt (the cost every prompt method pays) |
//! | `adept-folded`    | ADePT with `E + f(E)` folded into the table             |
//! | `adept-unfolded`  | ADePT with the MLP in the graph                         |
//! | `dept`            | DePT (`l` rows, rank from the budget)                   |
//! | `pt100`           | prompt tuning with 100 rows (the paper's PT baseline)   |
//!
//! The model's own adapter is used where its method matches (ADePT variants of an ADePT run,
//! the prompt rows of any prompt method); otherwise a freshly initialised adapter of the
//! right shape stands in. Latency does not depend on the values, only on the shapes.

use crate::bundle::{export_classifier, ExportOptions, TaskInfo};
use adept_adapters::{default_budget, solve_rank, Adapter, AdapterConfig, MethodKind, PROMPT};
use adept_bundle::{FoldMode, WeightDtype};
use adept_train::{Classifier, TextEncoder};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One exported variant.
#[derive(Clone, Debug)]
pub struct BenchVariant {
    pub name: String,
    pub dir: PathBuf,
    pub method: MethodKind,
    pub prompt_len: usize,
    pub fold: FoldMode,
}

fn fresh_adapter(
    model: &Classifier,
    method: MethodKind,
    l: usize,
    max_len: usize,
    seed: u64,
) -> Result<Adapter> {
    let d = model.backbone.hidden_size();
    let budget = default_budget(d);
    // 0 for a method without a rank.
    let rank = solve_rank(method, d, l, budget, max_len)?;
    let mut cfg = AdapterConfig::new(method, d, l, rank);
    cfg.max_length = max_len;
    cfg.budget = budget;
    Adapter::init(cfg, model.backbone.word_embedding_table(), seed)
}

fn with_adapter(model: &Classifier, adapter: Adapter) -> Classifier {
    Classifier {
        backbone: model.backbone.clone(),
        adapter,
        head: model.head.clone(),
        pooling: model.pooling,
    }
}

/// A PT adapter whose prompt is the model's own prompt when it has `l` rows.
fn prompt_only(model: &Classifier, l: usize, max_len: usize) -> Result<Adapter> {
    let adapter = fresh_adapter(model, MethodKind::Pt, l, max_len, 7)?;
    if let Some(p) = model.adapter.prompt().filter(|p| p.dims()[0] == l) {
        let values = std::collections::HashMap::from([(PROMPT.to_string(), p.clone())]);
        adapter.set_values(&values)?;
    }
    Ok(adapter)
}

/// The classifiers of the table above, named, for a prompt length `l`.
pub fn bench_classifiers(
    model: &Classifier,
    l: usize,
    max_len: usize,
) -> Result<Vec<(String, Classifier, FoldMode)>> {
    let adept = if model.adapter.method() == MethodKind::Adept && model.adapter.prompt_len() == l {
        model.adapter.clone()
    } else {
        fresh_adapter(model, MethodKind::Adept, l, max_len, 11)?
    };
    let dept = if model.adapter.method() == MethodKind::Dept && model.adapter.prompt_len() == l {
        model.adapter.clone()
    } else {
        fresh_adapter(model, MethodKind::Dept, l, max_len, 13)?
    };
    Ok(vec![
        (
            "frozen".into(),
            with_adapter(
                model,
                fresh_adapter(model, MethodKind::HeadOnly, 0, max_len, 0)?,
            ),
            FoldMode::None,
        ),
        (
            format!("frozen-prompt{l}"),
            with_adapter(model, prompt_only(model, l, max_len)?),
            FoldMode::None,
        ),
        (
            "adept-folded".into(),
            with_adapter(model, adept.clone()),
            FoldMode::Folded,
        ),
        (
            "adept-unfolded".into(),
            with_adapter(model, adept),
            FoldMode::Unfolded,
        ),
        ("dept".into(), with_adapter(model, dept), FoldMode::None),
        (
            "pt100".into(),
            with_adapter(
                model,
                fresh_adapter(model, MethodKind::Pt, 100, max_len, 17)?,
            ),
            FoldMode::None,
        ),
    ])
}

/// Exports every variant of [`bench_classifiers`] under `out_root/<name>/` (replacing old ones).
pub fn export_bench_variants(
    model: &Classifier,
    enc: &TextEncoder,
    tokenizer_json: &Path,
    info: &TaskInfo,
    out_root: &Path,
    prompt_len: usize,
    dtype: WeightDtype,
) -> Result<Vec<BenchVariant>> {
    let mut out = Vec::new();
    for (name, clf, fold) in bench_classifiers(model, prompt_len, enc.max_len)? {
        let dir = out_root.join(&name);
        let opts = ExportOptions {
            fold: Some(fold),
            dtype,
            overwrite: true,
            ..Default::default()
        };
        export_classifier(&clf, enc, tokenizer_json, info, &opts, &dir)
            .with_context(|| format!("exporting bench variant {name}"))?;
        out.push(BenchVariant {
            name,
            dir,
            method: clf.adapter.method(),
            prompt_len: clf.adapter.prompt_len(),
            fold,
        });
    }
    Ok(out)
}

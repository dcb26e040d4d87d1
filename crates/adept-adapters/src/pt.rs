//! Vanilla prompt tuning (PT): the soft prompt alone, nothing added to the word embeddings. Its
//! files are a PEFT `PROMPT_TUNING` adapter (`prompt_embeddings [l, d]`) that Python PEFT loads.
//!
//! Head-only (the baseline where only the classification head trains) is the method with no
//! adapter tensors at all: no prompt, no offsets.

use crate::{Adapter, AdapterConfig, AdapterMethod, GraphOffset, MethodKind};
use candle_core::{Device, Result, Tensor, Var};
use rand::rngs::StdRng;

pub struct PromptTuning;

pub struct HeadOnly;

impl AdapterMethod for PromptTuning {
    fn kind(&self) -> MethodKind {
        MethodKind::Pt
    }
    fn name(&self) -> &'static str {
        "pt"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["prompt-tuning"]
    }
    fn peft_type(&self) -> &'static str {
        "PROMPT_TUNING"
    }
    fn offset_shapes(&self, _: usize, _: usize, _: usize) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }
    fn init_offsets(&self, _: &AdapterConfig, _: &mut StdRng, _: &Device) -> Result<Vec<Var>> {
        Ok(Vec::new())
    }
    fn add_offsets(&self, _: &Adapter, e: &Tensor, _: Option<&mut StdRng>) -> Result<Tensor> {
        Ok(e.clone())
    }
    fn graph_offsets(&self, _: &Adapter) -> anyhow::Result<Vec<GraphOffset>> {
        Ok(Vec::new())
    }
}

impl AdapterMethod for HeadOnly {
    fn kind(&self) -> MethodKind {
        MethodKind::HeadOnly
    }
    fn name(&self) -> &'static str {
        "head-only"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["head", "none"]
    }
    /// Not a PEFT type: there is nothing for PEFT to load.
    fn peft_type(&self) -> &'static str {
        "HEAD_ONLY"
    }
    fn has_prompt(&self) -> bool {
        false
    }
    fn offset_shapes(&self, _: usize, _: usize, _: usize) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }
    fn init_offsets(&self, _: &AdapterConfig, _: &mut StdRng, _: &Device) -> Result<Vec<Var>> {
        Ok(Vec::new())
    }
    fn add_offsets(&self, _: &Adapter, e: &Tensor, _: Option<&mut StdRng>) -> Result<Tensor> {
        Ok(e.clone())
    }
    fn graph_offsets(&self, _: &Adapter) -> anyhow::Result<Vec<GraphOffset>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cfg, table};

    #[test]
    fn pt_is_the_prompt_alone_and_head_only_has_no_tensors() -> anyhow::Result<()> {
        let t = table();
        let pt = Adapter::init(cfg(MethodKind::Pt, 3, 0), &t, 1)?;
        assert_eq!(pt.tensors().keys().collect::<Vec<_>>(), [crate::PROMPT]);
        assert_eq!(pt.param_count(), 3 * 8);
        let e = Tensor::randn(0f32, 1., (2, 4, 8), &Device::Cpu)?;
        let out = pt.apply(&e, None)?;
        assert_eq!(out.dims(), &[2, 7, 8]);
        let diff = (out.narrow(1, 3, 4)? - &e)?.abs()?.max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        let stage = pt.graph_stage(&t, false)?;
        assert!(stage.offsets.is_empty() && stage.folded_table.is_none());
        assert_eq!(stage.prompt.unwrap().tensor.dims(), &[3, 8]);

        let head = Adapter::init(cfg(MethodKind::HeadOnly, 3, 0), &t, 1)?;
        assert_eq!(head.config.prompt_len, 0);
        assert!(head.tensors().is_empty() && head.prompt().is_none());
        assert_eq!(head.apply(&e, None)?.dims(), &[2, 4, 8]);
        assert!(head.graph_stage(&t, false)?.prompt.is_none());
        Ok(())
    }
}

//! Encoded examples → padded batches (dynamic padding: each batch is as long as its longest input).
//! The layout is the contract crate's ([`adept_bundle::PaddedBatch`]), the one the exported graph
//! is fed with; here it becomes candle tensors.

use crate::tokenize::Encoded;
use adept_bundle::PaddedBatch;
use candle_core::{Device, Result, Tensor};

/// A padded batch: `ids`, `mask` (1 = real token) and `type_ids`, all `[b, s]` u32.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub type_ids: Tensor,
}

impl Batch {
    pub fn collate(items: &[&Encoded], pad_id: u32, device: &Device) -> Result<Self> {
        let p = PaddedBatch::<u32>::collate(items, pad_id);
        let shape = p.shape();
        Ok(Self {
            ids: Tensor::from_vec(p.input_ids, shape, device)?,
            mask: Tensor::from_vec(p.attention_mask, shape, device)?,
            type_ids: Tensor::from_vec(p.token_type_ids, shape, device)?,
        })
    }

    pub fn size(&self) -> usize {
        self.ids.dims()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_longest_item() -> Result<()> {
        let a = Encoded {
            ids: vec![101, 7, 102],
            type_ids: vec![0, 0, 0],
            truncated: false,
        };
        let b = Encoded {
            ids: vec![101, 102],
            type_ids: vec![0, 0],
            truncated: false,
        };
        let batch = Batch::collate(&[&a, &b], 0, &Device::Cpu)?;
        assert_eq!(
            batch.ids.to_vec2::<u32>()?,
            vec![vec![101, 7, 102], vec![101, 102, 0]]
        );
        assert_eq!(
            batch.mask.to_vec2::<u32>()?,
            vec![vec![1, 1, 1], vec![1, 1, 0]]
        );
        assert_eq!(batch.size(), 2);
        Ok(())
    }

    /// The tensors hold exactly the contract's layout (what the exported graph is fed).
    #[test]
    fn tensors_are_the_contract_layout() -> Result<()> {
        let a = Encoded {
            ids: vec![2, 4, 3, 5, 3],
            type_ids: vec![0, 0, 0, 1, 1],
            truncated: false,
        };
        let b = Encoded {
            ids: vec![2, 3],
            type_ids: vec![0, 0],
            truncated: false,
        };
        let batch = Batch::collate(&[&a, &b], 9, &Device::Cpu)?;
        let p = PaddedBatch::<i64>::collate(&[&a, &b], 9);
        let flat = |t: &Tensor| -> Result<Vec<i64>> {
            Ok(t.flatten_all()?
                .to_vec1::<u32>()?
                .into_iter()
                .map(i64::from)
                .collect())
        };
        assert_eq!(batch.ids.dims2()?, p.shape());
        // Written out by hand: right padding with the pad id, mask 1 on real tokens, type 0 on pads.
        assert_eq!(flat(&batch.ids)?, [2, 4, 3, 5, 3, 2, 3, 9, 9, 9]);
        assert_eq!(flat(&batch.mask)?, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(flat(&batch.type_ids)?, [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        // The same layout as the graph's int64 inputs.
        assert_eq!(flat(&batch.ids)?, p.input_ids);
        assert_eq!(flat(&batch.mask)?, p.attention_mask);
        assert_eq!(flat(&batch.type_ids)?, p.token_type_ids);
        Ok(())
    }
}

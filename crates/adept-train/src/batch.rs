//! Encoded examples → padded batches (dynamic padding: each batch is as long as its longest input).

use crate::tokenize::Encoded;
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
        let b = items.len();
        let s = items.iter().map(|e| e.ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id; b * s];
        let mut mask = vec![0u32; b * s];
        let mut types = vec![0u32; b * s];
        for (row, e) in items.iter().enumerate() {
            let base = row * s;
            ids[base..base + e.ids.len()].copy_from_slice(&e.ids);
            types[base..base + e.type_ids.len()].copy_from_slice(&e.type_ids);
            mask[base..base + e.ids.len()].fill(1);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, s), device)?,
            mask: Tensor::from_vec(mask, (b, s), device)?,
            type_ids: Tensor::from_vec(types, (b, s), device)?,
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
        Ok(())
    }
}

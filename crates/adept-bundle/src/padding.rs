//! Encoded inputs → one padded batch (dynamic padding: each batch is as long as its longest
//! input). The layout training feeds candle and every runtime feeds the graph.

use crate::tokenize::Encoded;

/// A right-padded batch, row-major `[batch, seq]` each:
///
/// * `seq` is the longest input's length (at least 1, so that an empty batch or input still
///   has a shape);
/// * `input_ids`: the ids, then `pad_id` to the end of the row;
/// * `attention_mask`: 1 over the ids, 0 over the padding;
/// * `token_type_ids`: the token types, then 0.
///
/// `T` is the element type: `i64` for the graph's inputs (the default), `u32` for candle's.
#[derive(Clone, Debug, PartialEq)]
pub struct PaddedBatch<T = i64> {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<T>,
    pub attention_mask: Vec<T>,
    pub token_type_ids: Vec<T>,
}

impl<T: Copy + From<u32>> PaddedBatch<T> {
    /// Pads `items` to the longest one with `pad_id`.
    pub fn collate(items: &[&Encoded], pad_id: u32) -> Self {
        let batch = items.len();
        let seq = items.iter().map(|e| e.ids.len()).max().unwrap_or(0).max(1);
        let (zero, one) = (T::from(0), T::from(1));
        let mut b = Self {
            batch,
            seq,
            input_ids: vec![T::from(pad_id); batch * seq],
            attention_mask: vec![zero; batch * seq],
            token_type_ids: vec![zero; batch * seq],
        };
        for (row, e) in items.iter().enumerate() {
            let base = row * seq;
            for (i, &id) in e.ids.iter().enumerate() {
                b.input_ids[base + i] = T::from(id);
                b.attention_mask[base + i] = one;
            }
            for (i, &t) in e.type_ids.iter().take(seq).enumerate() {
                b.token_type_ids[base + i] = T::from(t);
            }
        }
        b
    }

    /// `[batch, seq]`.
    pub fn shape(&self) -> (usize, usize) {
        (self.batch, self.seq)
    }

    /// Real (unpadded) tokens in the batch.
    pub fn tokens(&self) -> usize
    where
        T: PartialEq,
    {
        let one = T::from(1);
        self.attention_mask.iter().filter(|&&m| m == one).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ids: &[u32], types: &[u32]) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            type_ids: types.to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn right_pads_to_the_longest_input() {
        let a = enc(&[101, 7, 8, 102, 9, 102], &[0, 0, 0, 0, 1, 1]);
        let b = enc(&[101, 102], &[0, 0]);
        let c = enc(&[101, 5, 102], &[0, 0, 0]);
        let p = PaddedBatch::<i64>::collate(&[&a, &b, &c], 3);
        assert_eq!(p.shape(), (3, 6));
        #[rustfmt::skip]
        assert_eq!(p.input_ids, [
            101, 7, 8, 102, 9, 102,
            101, 102, 3, 3, 3, 3,
            101, 5, 102, 3, 3, 3,
        ]);
        #[rustfmt::skip]
        assert_eq!(p.attention_mask, [
            1, 1, 1, 1, 1, 1,
            1, 1, 0, 0, 0, 0,
            1, 1, 1, 0, 0, 0,
        ]);
        #[rustfmt::skip]
        assert_eq!(p.token_type_ids, [
            0, 0, 0, 0, 1, 1,
            0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(p.tokens(), 11);

        // The candle layout is the same numbers as u32.
        let q = PaddedBatch::<u32>::collate(&[&a, &b, &c], 3);
        assert_eq!(q.shape(), p.shape());
        let widen = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        assert_eq!(widen(&q.input_ids), p.input_ids);
        assert_eq!(widen(&q.attention_mask), p.attention_mask);
        assert_eq!(widen(&q.token_type_ids), p.token_type_ids);
    }

    #[test]
    fn one_row_is_not_padded_and_empty_inputs_keep_a_shape() {
        let a = enc(&[2, 4, 3], &[0, 0, 0]);
        let p = PaddedBatch::<i64>::collate(&[&a], 0);
        assert_eq!(p.shape(), (1, 3));
        assert_eq!(p.input_ids, [2, 4, 3]);
        assert_eq!(p.attention_mask, [1, 1, 1]);

        let empty = enc(&[], &[]);
        let p = PaddedBatch::<i64>::collate(&[&empty], 7);
        assert_eq!(p.shape(), (1, 1));
        assert_eq!((p.input_ids[0], p.attention_mask[0]), (7, 0));

        let p = PaddedBatch::<u32>::collate(&[], 0);
        assert_eq!(p.shape(), (0, 1));
        assert!(p.input_ids.is_empty());
    }

    #[test]
    fn ids_above_i32_survive_the_widening() {
        let a = enc(&[u32::MAX], &[1]);
        let p = PaddedBatch::<i64>::collate(&[&a], 0);
        assert_eq!(p.input_ids, [u32::MAX as i64]);
        assert_eq!(p.token_type_ids, [1]);
    }
}

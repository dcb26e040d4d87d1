//! Frozen backbones written from differentiable candle ops, loaded from Hugging Face-layout folders.
//!
//! A backbone takes *input embeddings* (not token ids): the adapter stage sits between the word
//! embedding lookup and the backbone, so the data flow is
//! `tokens → word_embeddings() → adapter → forward_embeds() → hidden states`.
//! All weights are plain (non-`Var`) tensors; linear layers use [`adept_nn::FrozenLinear`] so the
//! backward pass computes activation gradients only.
//!
//! Families: [`bert`] (BERT, MiniLM, RoBERTa-style encoders). T5 and Llama come next and follow
//! the same contract ([`Backbone`]).

pub mod bert;
mod weights;

pub use bert::{BertConfig, BertEncoder};
pub use weights::Weights;

use candle_core::{Result, Tensor};

/// What the adapter and training code need from any backbone.
pub trait Backbone {
    /// Hidden size `d` of the embeddings the backbone consumes.
    fn hidden_size(&self) -> usize;
    /// Rows of the word-embedding table.
    fn vocab_size(&self) -> usize;
    /// The word-embedding table `[vocab, d]` (the table ADePT folds into).
    fn word_embedding_table(&self) -> &Tensor;
    /// Looks up `ids [b, s]` in the word-embedding table, giving `[b, s, d]`.
    fn word_embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let rows = self.word_embedding_table().index_select(&flat, 0)?;
        rows.reshape((b, s, self.hidden_size()))
    }
}

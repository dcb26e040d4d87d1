//! Adapter methods for a frozen model: ADePT, DePT and vanilla prompt tuning (PT).
//!
//! One type, [`Adapter`], is the seam shared by training, export and analysis. It owns its
//! parameters, their initialisation and their on-disk (PEFT-style) names, and offers three
//! operations:
//! - [`Adapter::apply`]: word embeddings `E [b, s, d]` → `[P, E + offsets(E)] [b, l + s, d]`
//!   (training and evaluation in candle);
//! - [`Adapter::fold_table`]: ADePT's token-wise offsets folded into the vocabulary table
//!   (`E + f(E)` for every row), exact because `f` sees only the token's own embedding;
//! - the parameters themselves ([`Adapter::tensors`]) for whatever is left to put into a graph
//!   (prompt rows, the unfolded MLP, DePT's position offsets).
//!
//! | method | prompt | offsets | parameters |
//! |---|---|---|---|
//! | ADePT | `P [l, d]` | `ReLU(E·W_down + b1)·W_up + b2` per token (dropout 0.1 before the ReLU) | `l·d + 2·r·d + r + d` |
//! | DePT  | `P [l, d]` | `(α/√r)·(A·B)[:s]` per position | `l·d + max_len·r + r·d` |
//! | PT    | `P [l, d]` | none | `l·d` |
//!
//! [`budget`] picks `r` for a prompt length under a parameter budget (default `100·d`).

pub mod budget;
mod config;
mod method;

pub use budget::{default_budget, solve_rank};
pub use config::{AdapterConfig, MethodKind, PromptInit};
pub use method::{write_atomic, Adapter, TensorRole};

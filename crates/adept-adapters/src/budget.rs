//! Equal-parameter-budget solver: the paper compares methods at the parameter count of PT with 100
//! prompt tokens, `100·d`.

use crate::MethodKind;
use anyhow::{bail, Result};

/// The paper's budget: vanilla prompt tuning with 100 tokens.
pub fn default_budget(hidden: usize) -> usize {
    100 * hidden
}

/// Number of trainable parameters of a method (the classification head is not counted):
/// [`AdapterMethod::param_count`](crate::AdapterMethod::param_count), from the method's tensor
/// shapes.
pub fn param_count(
    method: MethodKind,
    hidden: usize,
    prompt_len: usize,
    rank: usize,
    max_len: usize,
) -> usize {
    method.imp().param_count(hidden, prompt_len, rank, max_len)
}

/// The largest rank `r` whose method fits `budget` with a prompt of `prompt_len` rows.
/// ADePT: `l·d + 2·r·d + r + d ≤ budget` (d = 384, l = 60, budget 38,400 → r = 19).
/// DePT: `l·d + max_len·r + r·d ≤ budget`. PT and head-only have no rank (returns 0).
///
/// Solved from [`param_count`], which is affine in `r` for every method: `count(r) = count(0) +
/// r·(count(1) − count(0))`.
pub fn solve_rank(
    method: MethodKind,
    hidden: usize,
    prompt_len: usize,
    budget: usize,
    max_len: usize,
) -> Result<usize> {
    let d = hidden;
    let count = |r| param_count(method, d, prompt_len, r, max_len);
    let (base, per_rank) = (count(0), count(1) - count(0));
    if per_rank == 0 {
        return Ok(0);
    }
    let r = if budget < base {
        0
    } else {
        (budget - base) / per_rank
    };
    if r == 0 {
        bail!(
            "a {prompt_len}-token prompt (d = {d}) leaves no room for {method:?} offsets under a budget of {budget} parameters; shorten the prompt or raise --budget"
        );
    }
    debug_assert_eq!(count(r), base + r * per_rank, "{method} is not affine in r");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_settings() {
        // The paper: T5-base d = 768, l = 60 → r = 19 (76,051 parameters ≤ 76,800).
        assert_eq!(
            solve_rank(MethodKind::Adept, 768, 60, default_budget(768), 256).unwrap(),
            19
        );
        assert_eq!(param_count(MethodKind::Adept, 768, 60, 19, 0), 76_051);
        // MiniLM d = 384, l = 60: (38,400 − 23,040 − 384) / 769 = 19.47 → 19.
        assert_eq!(
            solve_rank(MethodKind::Adept, 384, 60, default_budget(384), 128).unwrap(),
            19
        );
        // DePT d = 384, l = 60, max_len 128: 15,360 / 512 = 30.
        assert_eq!(
            solve_rank(MethodKind::Dept, 384, 60, default_budget(384), 128).unwrap(),
            30
        );
        assert!(param_count(MethodKind::Dept, 384, 60, 30, 128) <= 38_400);
        assert_eq!(
            solve_rank(MethodKind::Pt, 384, 100, 38_400, 128).unwrap(),
            0
        );
    }

    #[test]
    fn over_budget_prompt_is_an_error() {
        let err = solve_rank(MethodKind::Adept, 384, 100, 38_400, 128).unwrap_err();
        assert!(err.to_string().contains("no room"), "{err}");
    }

    /// The counts from the shapes equal the paper's formulas, for every method.
    #[test]
    fn counts_follow_the_formulas() {
        for (d, l, r, max_len) in [(384, 60, 19, 128), (768, 60, 19, 256), (8, 3, 2, 12)] {
            assert_eq!(
                param_count(MethodKind::Adept, d, l, r, max_len),
                l * d + 2 * r * d + r + d
            );
            assert_eq!(
                param_count(MethodKind::Dept, d, l, r, max_len),
                l * d + max_len * r + r * d
            );
            assert_eq!(param_count(MethodKind::Pt, d, l, r, max_len), l * d);
            assert_eq!(param_count(MethodKind::HeadOnly, d, l, r, max_len), 0);
        }
        // Every r up to the budget, and not one more.
        for method in [MethodKind::Adept, MethodKind::Dept] {
            let r = solve_rank(method, 384, 40, 38_400, 128).unwrap();
            assert!(param_count(method, 384, 40, r, 128) <= 38_400);
            assert!(param_count(method, 384, 40, r + 1, 128) > 38_400);
        }
    }
}

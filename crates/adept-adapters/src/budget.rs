//! Equal-parameter-budget solver: the paper compares methods at the parameter count of PT with 100
//! prompt tokens, `100·d`.

use crate::MethodKind;
use anyhow::{bail, Result};

/// The paper's budget: vanilla prompt tuning with 100 tokens.
pub fn default_budget(hidden: usize) -> usize {
    100 * hidden
}

/// Number of trainable parameters of a method (the classification head is not counted).
pub fn param_count(
    method: MethodKind,
    hidden: usize,
    prompt_len: usize,
    rank: usize,
    max_len: usize,
) -> usize {
    let d = hidden;
    match method {
        MethodKind::Adept => prompt_len * d + 2 * rank * d + rank + d,
        MethodKind::Dept => prompt_len * d + max_len * rank + rank * d,
        MethodKind::Pt => prompt_len * d,
        MethodKind::HeadOnly => 0,
    }
}

/// The largest rank `r` whose method fits `budget` with a prompt of `prompt_len` rows.
/// ADePT: `l·d + 2·r·d + r + d ≤ budget` (d = 384, l = 60, budget 38,400 → r = 19).
/// DePT: `l·d + max_len·r + r·d ≤ budget`. PT and head-only have no rank (returns 0).
pub fn solve_rank(
    method: MethodKind,
    hidden: usize,
    prompt_len: usize,
    budget: usize,
    max_len: usize,
) -> Result<usize> {
    let d = hidden;
    let prompt = prompt_len * d;
    let r = match method {
        MethodKind::Pt | MethodKind::HeadOnly => return Ok(0),
        MethodKind::Adept => {
            if budget < prompt + d {
                0
            } else {
                (budget - prompt - d) / (2 * d + 1)
            }
        }
        MethodKind::Dept => {
            if budget < prompt {
                0
            } else {
                (budget - prompt) / (max_len + d)
            }
        }
    };
    if r == 0 {
        bail!(
            "a {prompt_len}-token prompt (d = {d}) leaves no room for {method:?} offsets under a budget of {budget} parameters; shorten the prompt or raise --budget"
        );
    }
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
}

//! Causal-LM tokenisation and batches on the repository's tiny byte-level BPE
//! (tests/fixtures/tiny-roberta/tokenizer.json: `<s>` = 0, `<pad>` = 1, `</s>` = 2, ByteLevel
//! pre-tokenizer without prefix space). Token ids below were read off that tokenizer
//! (`Tokenizer.encode(text, add_special_tokens=False)` in Python `tokenizers`); boundaries,
//! truncation, masks and log-probabilities are worked out by hand from them.

use std::path::Path;

use adept_data::causal::LmExample;
use adept_train::lm_batch::{shared_first_tokens, LmBatch, LmEncoder, LmFeatures, ScoreBatch};
use adept_train::tokenize::load_tokenizer;
use candle_core::{Device, Tensor, Var};

/// "Review: a movie\nSentiment:" = R e v ie w : Ġa Ġmovie Ċ S en t i m en t :
const PROMPT: &str = "Review: a movie\nSentiment:";
const PROMPT_IDS: [u32; 17] = [
    54, 73, 90, 334, 91, 30, 263, 364, 203, 55, 292, 88, 77, 81, 292, 88, 30,
];
/// " positive" = Ġp o s it ive; " negative" = Ġne g at ive.
const POSITIVE: [u32; 5] = [287, 83, 87, 309, 379];
const NEGATIVE: [u32; 4] = [329, 75, 276, 379];
const BOS: u32 = 0;
const PAD: u32 = 1;
const EOS: u32 = 2;

fn encoder(max_len: usize) -> LmEncoder {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-roberta/tokenizer.json");
    LmEncoder::new(load_tokenizer(&path).unwrap(), max_len, Some(EOS)).unwrap()
}

fn cat(parts: &[&[u32]]) -> Vec<u32> {
    parts.concat()
}

#[test]
fn prompt_and_completion_boundary_is_exact() {
    let enc = encoder(64);
    assert_eq!(enc.pad_id, PAD);
    let f = enc
        .encode(&LmExample::new(PROMPT, " positive"), "ex")
        .unwrap();
    assert_eq!(f.ids, cat(&[&PROMPT_IDS, &POSITIVE, &[EOS]]));
    assert_eq!((f.target_start, f.truncated), (17, 0));
    // Tokenising the two parts separately gives the tokens of the joined text.
    let joint = enc.tokens(&format!("{PROMPT} positive")).unwrap();
    assert_eq!(joint, f.ids[..f.ids.len() - 1]);
    // Without EOS, with BOS.
    let enc = encoder(64).with_append_eos(false).with_bos(Some(BOS));
    let f = enc
        .encode(&LmExample::new(PROMPT, " negative"), "ex")
        .unwrap();
    assert_eq!(f.ids, cat(&[&[BOS], &PROMPT_IDS, &NEGATIVE]));
    assert_eq!(f.target_start, 18);
    // A completion that already ends with the EOS (a chat end of turn) gets no second one.
    let f = encoder(64)
        .encode(&LmExample::new(PROMPT, " bad</s>"), "ex")
        .unwrap();
    assert_eq!(f.ids[17..], [271, 306, EOS]);
}

#[test]
fn long_prompts_lose_tokens_from_the_left() {
    // BOS + 3 prompt tokens + 5 completion tokens + EOS = 10.
    let enc = encoder(10).with_bos(Some(BOS));
    let f = enc
        .encode(&LmExample::new(PROMPT, " positive"), "ex")
        .unwrap();
    assert_eq!(f.ids, [BOS, 292, 88, 30, 287, 83, 87, 309, 379, EOS]);
    assert_eq!((f.target_start, f.truncated), (4, 14));
    // No BOS, max 7: one prompt token (the last, ":") is kept.
    let f = encoder(7)
        .encode(&LmExample::new(PROMPT, " positive"), "ex")
        .unwrap();
    assert_eq!(f.ids, [30, 287, 83, 87, 309, 379, EOS]);
    assert_eq!((f.target_start, f.truncated), (1, 16));
    // BOS, max 7: the whole prompt goes, the BOS predicts the first completion token.
    let f = encoder(7)
        .with_bos(Some(BOS))
        .encode(&LmExample::new(PROMPT, " positive"), "ex")
        .unwrap();
    assert_eq!(f.ids, [BOS, 287, 83, 87, 309, 379, EOS]);
    assert_eq!(f.target_start, 1);
}

#[test]
fn completions_that_cannot_fit_are_errors_naming_the_example() {
    let xs = [
        LmExample::new(PROMPT, " bad"),
        LmExample::new(PROMPT, " positive"),
    ];
    // " positive" + EOS = 6 tokens + 1 context token > 6.
    let err = encoder(6).encode_all(&xs).unwrap_err().to_string();
    assert!(
        err.contains("example 1") && err.contains("6 tokens") && err.contains("maximum of 6"),
        "{err}"
    );
    let err = encoder(16)
        .encode(&LmExample::new("", " bad"), "example 9")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 9") && err.contains("prompt is empty"),
        "{err}"
    );
    let err = encoder(16)
        .encode(&LmExample::new(PROMPT, ""), "example 4")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 4") && err.contains("no tokens"),
        "{err}"
    );
    // With a BOS an empty prompt is fine.
    let f = encoder(16)
        .with_bos(Some(BOS))
        .encode(&LmExample::new("", " bad"), "e")
        .unwrap();
    assert_eq!((f.ids, f.target_start), (vec![BOS, 271, 306, EOS], 1));
}

#[test]
fn collate_pads_right_and_marks_completion_tokens() {
    let a = LmFeatures {
        ids: vec![10, 11, 12, 13, 14],
        target_start: 3,
        truncated: 0,
    };
    let b = LmFeatures {
        ids: vec![20, 21, 22],
        target_start: 1,
        truncated: 0,
    };
    let batch = LmBatch::collate(&[&a, &b], PAD, &Device::Cpu).unwrap();
    assert_eq!(
        batch.ids.to_vec2::<u32>().unwrap(),
        [[10, 11, 12, 13, 14], [20, 21, 22, PAD, PAD]]
    );
    assert_eq!(
        batch.mask.to_vec2::<u32>().unwrap(),
        [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    );
    assert_eq!(
        batch.target_mask.to_vec2::<u32>().unwrap(),
        [[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]]
    );
    let bad = LmFeatures {
        ids: vec![1, 2],
        target_start: 0,
        truncated: 0,
    };
    assert!(LmBatch::collate(&[&bad], PAD, &Device::Cpu).is_err());
}

/// Logits that put `a` on the token that follows each position (`logits[t − 1, ids[t]] = a`),
/// 0 elsewhere: each predicted token then has log-probability `a − ln(e^a + v − 1)`.
fn next_token_logits(ids: &[Vec<u32>], v: usize, a: &[f32]) -> Tensor {
    let s = ids[0].len();
    let mut data = vec![0f32; ids.len() * s * v];
    for (r, row) in ids.iter().enumerate() {
        for t in 1..s {
            data[(r * s + t - 1) * v + row[t] as usize] = a[r];
        }
    }
    Tensor::from_vec(data, (ids.len(), s, v), &Device::Cpu).unwrap()
}

#[test]
fn label_word_scoring_sums_log_probs_of_each_word() {
    let enc = encoder(64);
    let words = vec![" negative".to_string(), " positive".to_string()];
    let label_ids = enc.label_word_ids(&words).unwrap();
    assert_eq!(label_ids, [NEGATIVE.to_vec(), POSITIVE.to_vec()]);
    let xs = [
        LmExample::new(PROMPT, " positive"),
        LmExample::new("a movie", ""),
    ];
    let sb = ScoreBatch::build(&enc, &xs, &label_ids, 0, &Device::Cpu).unwrap();
    assert_eq!(
        (sb.example.clone(), sb.label.clone()),
        (vec![0, 0, 1, 1], vec![0, 1, 0, 1])
    );
    // "a movie" = a (69) Ġmovie.
    let ids = sb.batch.ids.to_vec2::<u32>().unwrap();
    assert_eq!(ids[0][..21], cat(&[&PROMPT_IDS, &NEGATIVE])[..]);
    assert_eq!(ids[1][..22], cat(&[&PROMPT_IDS, &POSITIVE])[..]);
    assert_eq!(ids[3][..7], [69, 364, 287, 83, 87, 309, 379]);
    let tm = sb.batch.target_mask.to_vec2::<u32>().unwrap();
    assert_eq!(tm[0].iter().sum::<u32>(), 4);
    assert_eq!(
        tm[3],
        [0, 0, 1, 1, 1, 1, 1]
            .iter()
            .copied()
            .chain([0; 15])
            .collect::<Vec<_>>()
    );

    // Uniform logits over the 400 tokens: every token has log-prob −ln 400, so a word scores
    // −(its token count)·ln 400 and the shorter " negative" (4 tokens) wins.
    let v = 400;
    let s = ids[0].len();
    let uniform = Tensor::zeros((4, s, v), candle_core::DType::F32, &Device::Cpu).unwrap();
    let sums = sb
        .batch
        .target_logprob_sums(&uniform)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let l = (v as f32).ln();
    for (got, want) in sums.iter().zip([-4.0 * l, -5.0 * l, -4.0 * l, -5.0 * l]) {
        assert!((got - want).abs() < 1e-4, "{sums:?}");
    }
    assert_eq!(sb.predict(&sums).unwrap(), [0, 0]);
    let loss = sb.batch.loss(&uniform).unwrap().to_scalar::<f32>().unwrap();
    assert!((loss - l).abs() < 1e-5, "{loss}");

    // Logits favouring each row's own next token by a = 3 (rows 1 and 3: " positive") or 0:
    // " positive" then scores 5·(3 − ln(e³ + 399)) = −14.67 > −4·ln 400 = −23.97.
    let a = [0.0, 3.0, 0.0, 3.0];
    let logits = next_token_logits(&ids, v, &a);
    let sums = sb
        .batch
        .target_logprob_sums(&logits)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let pos = 5.0 * (3.0 - (3f32.exp() + 399.0).ln());
    assert!(
        (sums[1] - pos).abs() < 1e-4 && (sums[0] + 4.0 * l).abs() < 1e-4,
        "{sums:?}"
    );
    assert_eq!(sb.predict(&sums).unwrap(), [1, 1]);
    // The same boost one position late (on logits[t] instead of logits[t − 1]) is the wrong
    // shift and must not count: every completion token keeps −ln 400 except where the late
    // boost lands on a position that also predicts, which only lowers it.
    let mut late = vec![0f32; 4 * s * v];
    for (r, row) in ids.iter().enumerate() {
        for t in 0..s {
            late[(r * s + t) * v + row[t] as usize] = 3.0;
        }
    }
    let late = Tensor::from_vec(late, (4, s, v), &Device::Cpu).unwrap();
    let sums = sb
        .batch
        .target_logprob_sums(&late)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(sums[1] < -5.0 * l + 1e-4, "{sums:?}");
}

#[test]
fn loss_gradient_reaches_the_logits_at_predicting_positions_only() {
    let a = LmFeatures {
        ids: vec![5, 6, 7, 8],
        target_start: 2,
        truncated: 0,
    };
    let b = LmFeatures {
        ids: vec![5, 9],
        target_start: 1,
        truncated: 0,
    };
    let batch = LmBatch::collate(&[&a, &b], PAD, &Device::Cpu).unwrap();
    let logits = Var::zeros((2, 4, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let loss = batch.loss(logits.as_tensor()).unwrap();
    // Three completion tokens (7, 8 | 9), uniform over 16 → loss ln 16.
    assert!((loss.to_scalar::<f32>().unwrap() - 16f32.ln()).abs() < 1e-5);
    let g = loss.backward().unwrap();
    let g = g
        .get(logits.as_tensor())
        .unwrap()
        .abs()
        .unwrap()
        .sum(2)
        .unwrap();
    let g = g.to_vec2::<f32>().unwrap();
    // Row 0: positions 1 and 2 predict tokens 2 and 3; row 1: position 0 predicts token 1.
    let nonzero: Vec<Vec<bool>> = g
        .iter()
        .map(|r| r.iter().map(|&x| x > 0.0).collect())
        .collect();
    assert_eq!(
        nonzero,
        [[false, true, true, false], [true, false, false, false]]
    );
}

#[test]
fn shared_first_token_is_detected() {
    assert_eq!(
        shared_first_tokens(&[vec![287, 1], vec![5], vec![287, 2]]),
        [(0, 2)]
    );
    assert!(shared_first_tokens(&[NEGATIVE.to_vec(), POSITIVE.to_vec()]).is_empty());
    let enc = encoder(64);
    // " positive" and " pos" both start with Ġp.
    let ids = enc
        .label_word_ids(&[" positive".into(), " pos".into()])
        .unwrap();
    assert_eq!(ids[0][0], 287);
    assert_eq!(shared_first_tokens(&ids), [(0, 1)]);
    assert!(enc.label_word_ids(&["".into()]).is_err());
}

//! Every metric against values worked out by hand (arithmetic in the comments).

use adept_data::metrics::{
    accuracy, average_ranks, exact_match_by_group, f1_binary, f1a, macro_f1, matthews_corrcoef,
    pearson, spearman,
};
use adept_data::{score, Example, Metric, MetricError, Target, TaskKind};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

// preds  [1,0,1,1,0]
// golds  [1,1,1,0,0]
// TP = idx 0,2 = 2; TN = idx 4 = 1; FP = idx 3 = 1; FN = idx 1 = 1.
const P: [usize; 5] = [1, 0, 1, 1, 0];
const G: [usize; 5] = [1, 1, 1, 0, 0];

#[test]
fn accuracy_by_hand() {
    // Correct at idx 0, 2, 4: 3 / 5.
    close(accuracy(&P, &G).unwrap(), 0.6);
}

#[test]
fn binary_f1_by_hand() {
    // 2·TP / (2·TP + FP + FN) = 4 / (4 + 1 + 1) = 2/3.
    close(f1_binary(&P, &G).unwrap(), 2.0 / 3.0);
    // No positives anywhere: denominator 0 → 0.
    close(f1_binary(&[0, 0], &[0, 0]).unwrap(), 0.0);
}

#[test]
fn mcc_binary_by_hand() {
    // (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    // = (2·1 − 1·1) / √(3·3·2·2) = 1 / 6.
    close(matthews_corrcoef(&P, &G).unwrap(), 1.0 / 6.0);

    // A 2×2 confusion matrix TP = 6, TN = 3, FP = 1, FN = 2:
    // (6·3 − 1·2) / √((6+1)(6+2)(3+1)(3+2)) = 16 / √1120 = 0.478091…
    let mut p = Vec::new();
    let mut g = Vec::new();
    for (pp, gg, n) in [(1, 1, 6), (0, 0, 3), (1, 0, 1), (0, 1, 2)] {
        for _ in 0..n {
            p.push(pp);
            g.push(gg);
        }
    }
    close(matthews_corrcoef(&p, &g).unwrap(), 16.0 / 1120f64.sqrt());
    close(16.0 / 1120f64.sqrt(), 0.478_091_443_733_757);

    // Perfect and inverted.
    close(matthews_corrcoef(&[0, 1, 1], &[0, 1, 1]).unwrap(), 1.0);
    close(matthews_corrcoef(&[1, 0, 0], &[0, 1, 1]).unwrap(), -1.0);
    // Constant prediction [1,1,1]: TN = FN = 0, so the margin TN+FN is 0 → 0 by convention.
    close(matthews_corrcoef(&[1, 1, 1], &[0, 1, 1]).unwrap(), 0.0);
}

#[test]
fn mcc_multiclass_by_hand() {
    // preds [0,1,2,2], golds [0,1,1,2]: c = 3 correct, s = 4.
    // predicted counts p = (1,1,2), true counts t = (1,2,1).
    // Σ p_k t_k = 1 + 2 + 2 = 5; Σ p² = 6; Σ t² = 6.
    // (c·s − Σ p t) / √((s² − Σp²)(s² − Σt²)) = (12 − 5) / √(10·10) = 0.7.
    close(
        matthews_corrcoef(&[0, 1, 2, 2], &[0, 1, 1, 2]).unwrap(),
        0.7,
    );
}

#[test]
fn macro_f1_by_hand() {
    // preds [0,0,0,1,2,2], golds [0,0,1,1,2,1]
    // class 0: TP 2 (idx 0,1), FP 1 (idx 2), FN 0 → 4/5
    // class 1: TP 1 (idx 3), FP 0, FN 2 (idx 2, 5) → 2/4
    // class 2: TP 1 (idx 4), FP 1 (idx 5), FN 0 → 2/3
    // mean = (24/30 + 15/30 + 20/30) / 3 = 59/90
    let p = [0, 0, 0, 1, 2, 2];
    let g = [0, 0, 1, 1, 2, 1];
    close(macro_f1(&p, &g, 3).unwrap(), 59.0 / 90.0);
    // A fourth class nobody uses contributes 0: (59/30) / 4.
    close(macro_f1(&p, &g, 4).unwrap(), 59.0 / 120.0);
}

#[test]
fn pearson_by_hand() {
    // x = [1,2,3,4] (mean 2.5), y = [2,4,5,9] (mean 5)
    // dx = [-1.5,-0.5,0.5,1.5], dy = [-3,-1,0,4]
    // Σdxdy = 4.5 + 0.5 + 0 + 6 = 11; Σdx² = 5; Σdy² = 26
    // r = 11 / √130 = 0.964763…
    let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 5.0, 9.0]).unwrap();
    close(r, 11.0 / 130f64.sqrt());
    close(11.0 / 130f64.sqrt(), 0.964_763_821_238_359_1);
    // Constant side: 0 by convention (scipy: NaN).
    close(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap(), 0.0);
}

#[test]
fn spearman_with_ties_by_hand() {
    // x = [1,2,2,3] → average ranks [1, 2.5, 2.5, 4]; y = [1,3,2,4] → ranks [1,3,2,4]
    // both rank means 2.5; dx = [-1.5,0,0,1.5], dy = [-1.5,0.5,-0.5,1.5]
    // Σdxdy = 2.25 + 2.25 = 4.5; Σdx² = 4.5; Σdy² = 5
    // ρ = 4.5 / √(4.5·5) = √0.9 = 0.948683…
    assert_eq!(
        average_ranks(&[1.0, 2.0, 2.0, 3.0]),
        vec![1.0, 2.5, 2.5, 4.0]
    );
    assert_eq!(average_ranks(&[5.0, 5.0, 5.0]), vec![2.0, 2.0, 2.0]);
    assert_eq!(average_ranks(&[30.0, 10.0, 20.0]), vec![3.0, 1.0, 2.0]);
    let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
    close(rho, 0.9f64.sqrt());
    // Monotone but non-linear: ρ = 1.
    close(
        spearman(&[1.0, 2.0, 3.0], &[1.0, 10.0, 100.0]).unwrap(),
        1.0,
    );
    close(spearman(&[2.0, 2.0], &[1.0, 3.0]).unwrap(), 0.0);
}

#[test]
fn multirc_f1a_and_em_by_hand() {
    // groups   a a a b b c
    // preds    1 0 1 1 0 0
    // golds    1 0 0 1 0 1
    // F1a: TP idx 0,3 = 2; FP idx 2 = 1; FN idx 5 = 1 → 4/6.
    // EM: a wrong at idx 2, b all right, c wrong → 1/3.
    let p = [1, 0, 1, 1, 0, 0];
    let g = [1, 0, 0, 1, 0, 1];
    let groups = ["a", "a", "a", "b", "b", "c"];
    close(f1a(&p, &g).unwrap(), 2.0 / 3.0);
    close(exact_match_by_group(&p, &g, &groups).unwrap(), 1.0 / 3.0);

    // Through `score` with Examples carrying groups.
    let golds: Vec<Example> = g
        .iter()
        .zip(groups)
        .map(|(&l, grp)| Example::new(vec![], Target::Class(l)).with_group(grp))
        .collect();
    let preds: Vec<Target> = p.iter().map(|&c| Target::Class(c)).collect();
    let s = score(TaskKind::Multirc, &preds, &golds).unwrap();
    close(s.values["f1a"], 2.0 / 3.0);
    close(s.values["em"], 1.0 / 3.0);
    assert_eq!(s.primary, Metric::F1a);
    close(s.primary_value(), 2.0 / 3.0);

    // Missing group → error.
    let no_group = vec![Example::new(vec![], Target::Class(1))];
    assert_eq!(
        score(TaskKind::Multirc, &[Target::Class(1)], &no_group).unwrap_err(),
        MetricError::MissingGroup { index: 0 }
    );
}

fn golds(labels: &[Target]) -> Vec<Example> {
    labels
        .iter()
        .map(|&l| Example::new(vec![("sentence".into(), "x".into())], l))
        .collect()
}

#[test]
fn score_binary_with_invalid_prediction() {
    // SST-2: the invalid middle prediction is flipped to 1 − gold = 0, i.e. wrong → 2/3.
    let g = golds(&[Target::Class(1), Target::Class(1), Target::Class(0)]);
    let preds = [Target::Class(1), Target::None, Target::Class(0)];
    let s = score(TaskKind::Sst2, &preds, &g).unwrap();
    close(s.primary_value(), 2.0 / 3.0);
    assert_eq!(s.values.len(), 1);

    // MRPC: preds become [1,0,0]; golds [1,1,0] → acc 2/3, F1 = 2·1/(2+0+1) = 2/3.
    let s = score(TaskKind::Mrpc, &preds, &g).unwrap();
    close(s.values["accuracy"], 2.0 / 3.0);
    close(s.values["f1"], 2.0 / 3.0);
    assert_eq!(s.primary, Metric::Accuracy);

    // CoLA: an out-of-range class is invalid too → [1,0,0] vs [1,1,0]:
    // TP 1, TN 1, FP 0, FN 1 → (1·1 − 0) / √(1·2·2·1) = 1/2.
    let s = score(
        TaskKind::Cola,
        &[Target::Class(1), Target::Class(7), Target::Class(0)],
        &g,
    )
    .unwrap();
    close(s.values["mcc"], 0.5);
    assert_eq!(s.primary, Metric::Mcc);
}

#[test]
fn score_multiclass_with_invalid_prediction() {
    // CB: preds [0, invalid, 2], golds [0,1,2]; classes 0 and 2 perfect (F1 1), class 1 has
    // only a FN (F1 0) → macro 2/3; accuracy 2/3.
    let g = golds(&[Target::Class(0), Target::Class(1), Target::Class(2)]);
    let s = score(
        TaskKind::Cb,
        &[Target::Class(0), Target::None, Target::Class(2)],
        &g,
    )
    .unwrap();
    close(s.values["macro_f1"], 2.0 / 3.0);
    close(s.values["accuracy"], 2.0 / 3.0);
    assert_eq!(s.primary, Metric::Accuracy);
}

#[test]
fn score_regression() {
    // STS-B: the unparsable prediction scores −1 → p = [1, 2, −1], g = [1, 2, 3].
    // mean p = 2/3; dx = [1/3, 4/3, −5/3]; dy = [−1, 0, 1]
    // Σdxdy = −1/3 − 5/3 = −2; Σdx² = 42/9; Σdy² = 2 → r = −2 / √(84/9) = −0.654654…
    let g = golds(&[Target::Score(1.0), Target::Score(2.0), Target::Score(3.0)]);
    let preds = [Target::Score(1.0), Target::Score(2.0), Target::None];
    let s = score(TaskKind::Stsb, &preds, &g).unwrap();
    close(s.values["pearson"], -2.0 / (84.0f64 / 9.0).sqrt());
    // Ranks p = [2, 3, 1], g = [1, 2, 3]: dx = [0, 1, −1], dy = [−1, 0, 1] → −1 / √(2·2) = −0.5.
    close(s.values["spearman"], -0.5);
    assert_eq!(s.primary, Metric::Pearson);
}

#[test]
fn score_errors() {
    assert_eq!(
        score(TaskKind::Sst2, &[], &[]).unwrap_err(),
        MetricError::Empty
    );
    assert_eq!(accuracy(&[], &[]).unwrap_err(), MetricError::Empty);
    assert_eq!(pearson(&[], &[]).unwrap_err(), MetricError::Empty);
    assert_eq!(
        accuracy(&[1], &[1, 0]).unwrap_err(),
        MetricError::LengthMismatch { preds: 1, golds: 2 }
    );
    let unlabelled = golds(&[Target::None]);
    assert!(matches!(
        score(TaskKind::Rte, &[Target::Class(0)], &unlabelled).unwrap_err(),
        MetricError::MissingGold { index: 0, .. }
    ));
    let err = score(
        TaskKind::Stsb,
        &[Target::Score(1.0)],
        &golds(&[Target::Class(1)]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("score"), "{err}");
}

#[test]
fn parse_prediction_round_trip() {
    let spec = TaskKind::Mnli.spec();
    assert_eq!(spec.parse_prediction("2"), Target::Class(2));
    assert_eq!(spec.parse_prediction("neutral"), Target::Class(1));
    assert_eq!(spec.parse_prediction("3"), Target::None);
    let stsb = TaskKind::Stsb.spec();
    assert_eq!(stsb.parse_prediction("3.8"), Target::Score(3.8));
    assert_eq!(
        stsb.parse_prediction(&Target::Score(3.75).to_text().unwrap()),
        Target::Score(3.8)
    );
}

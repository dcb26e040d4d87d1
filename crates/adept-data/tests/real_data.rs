//! The real GLUE/SuperGLUE files, when present: counts from their SOURCES.md and the paper's
//! split sizes (Table 16). Looks in `$ADEPT_DATA`, else `../shared/data/glue` beside the
//! checkout; skips when neither exists, or fails under `ADEPT_REQUIRE_MODEL=1` (CI).

use std::collections::BTreeSet;
use std::path::PathBuf;

use adept_data::{load_official, load_task, DataError, OfficialSplit, Target, TaskKind};

fn data_root(test: &str) -> Option<PathBuf> {
    adept_testkit::glue_dir(test)
}

#[test]
fn official_counts_match_sources_md() {
    let Some(root) = data_root("official_counts_match_sources_md") else {
        return;
    };
    use OfficialSplit::{Dev, Test, Train};
    let expected: &[(TaskKind, OfficialSplit, usize)] = &[
        (TaskKind::Sst2, Train, 67349),
        (TaskKind::Sst2, Dev, 872),
        (TaskKind::Sst2, Test, 1821),
        (TaskKind::Cola, Train, 8551),
        (TaskKind::Cola, Dev, 1043),
        (TaskKind::Stsb, Train, 5749),
        (TaskKind::Stsb, Dev, 1500),
        (TaskKind::Stsb, Test, 1379),
        (TaskKind::Rte, Train, 2490),
        (TaskKind::Rte, Dev, 277),
        (TaskKind::Rte, Test, 3000),
        (TaskKind::Boolq, Dev, 3270),
        (TaskKind::Boolq, Test, 3245),
        (TaskKind::Cb, Train, 250),
        (TaskKind::Cb, Dev, 56),
        (TaskKind::Cb, Test, 250),
        // MultiRC: answer options (456 / 83 / 166 passages).
        (TaskKind::Multirc, Train, 27243),
        (TaskKind::Multirc, Dev, 4848),
        (TaskKind::Multirc, Test, 9693),
        (TaskKind::Wsc, Train, 554),
        (TaskKind::Wsc, Dev, 104),
        (TaskKind::Wsc, Test, 146),
    ];
    for &(task, split, n) in expected {
        let xs =
            load_official(task, &root, split).unwrap_or_else(|e| panic!("{task} {split}: {e}"));
        assert_eq!(xs.len(), n, "{task} {split}");
        if split == Test {
            assert!(
                xs.iter().all(|e| e.label == Target::None),
                "{task} test is unlabelled"
            );
        } else {
            assert!(
                xs.iter().all(|e| e.label.is_some()),
                "{task} {split} is labelled"
            );
            if let Some(k) = (!task.spec().is_regression).then(|| task.spec().num_labels()) {
                let seen: BTreeSet<usize> = xs.iter().filter_map(|e| e.label.class()).collect();
                assert_eq!(seen, (0..k).collect(), "{task} {split}: every class occurs");
            }
        }
        for e in &xs {
            assert_eq!(e.fields.len(), task.spec().fields.len(), "{task}");
            assert!(!e.text_a().is_empty(), "{task} {split}: empty first field");
        }
    }
}

#[test]
fn real_details() {
    let Some(root) = data_root("real_details") else {
        return;
    };
    let stsb = load_official(TaskKind::Stsb, &root, OfficialSplit::Train).unwrap();
    assert!(stsb
        .iter()
        .all(|e| matches!(e.label, Target::Score(s) if (0.0..=5.0).contains(&s))));
    assert_eq!(stsb[1].target_text().as_deref(), Some("3.8"));

    let mrc = load_official(TaskKind::Multirc, &root, OfficialSplit::Dev).unwrap();
    let groups: BTreeSet<&str> = mrc.iter().filter_map(|e| e.group.as_deref()).collect();
    assert_eq!(groups.len(), 953, "MultiRC val questions");

    let wsc = load_official(TaskKind::Wsc, &root, OfficialSplit::Train).unwrap();
    assert_eq!(
        wsc[0].text_a(),
        "* Mark * told Pete many lies about himself, which Pete included in his book. # He # should have been more skeptical."
    );
    let marked = wsc.iter().filter(|e| e.text_a().contains("# ")).count();
    assert!(
        marked * 10 >= wsc.len() * 9,
        "most WSC spans are found: {marked}"
    );

    let cola = load_official(TaskKind::Cola, &root, OfficialSplit::Dev).unwrap();
    assert_eq!(
        cola[0].template_text(),
        "sentence: The sailors rode the breeze clear of the rocks."
    );
}

#[test]
fn paper_split_sizes_match_table_16() {
    let Some(root) = data_root("paper_split_sizes_match_table_16") else {
        return;
    };
    // (task, train, validation, test) from the paper's Table 16.
    let expected = [
        (TaskKind::Sst2, 66_349, 1_000, 872),
        (TaskKind::Stsb, 5_749, 750, 750),
        (TaskKind::Rte, 2_490, 138, 139),
        (TaskKind::Cola, 8_551, 521, 522),
        (TaskKind::Multirc, 27_243, 2_424, 2_424),
        (TaskKind::Wsc, 554, 52, 52),
        (TaskKind::Cb, 250, 28, 28),
    ];
    for (task, tr, va, te) in expected {
        let s = load_task(task, &root, 42).unwrap_or_else(|e| panic!("{task}: {e}"));
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (tr, va, te),
            "{task}"
        );
    }
}

/// A task folder without its training file (a partial download) is refused with the missing
/// file's path. Built in a temporary copy, whatever the real folder holds.
#[test]
fn a_task_folder_without_its_train_file_is_named_in_the_error() {
    let Some(root) = data_root("a_task_folder_without_its_train_file_is_named_in_the_error") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let boolq = tmp.path().join("BoolQ");
    std::fs::create_dir_all(&boolq).unwrap();
    for f in ["val.jsonl", "test.jsonl"] {
        std::fs::copy(root.join("BoolQ").join(f), boolq.join(f)).unwrap();
    }
    let err = load_task(TaskKind::Boolq, tmp.path(), 42).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("BoolQ/train.jsonl"), "{err}");
    // With the file in place the same folder loads (so the error was about that file alone).
    let copy_train = root.join("BoolQ/train.jsonl");
    if copy_train.is_file() {
        std::fs::copy(&copy_train, boolq.join("train.jsonl")).unwrap();
        load_task(TaskKind::Boolq, tmp.path(), 42).unwrap();
    }
}

#[test]
fn paper_split_is_deterministic_under_a_seed() {
    let Some(root) = data_root("paper_split_is_deterministic_under_a_seed") else {
        return;
    };
    let a = load_task(TaskKind::Sst2, &root, 1).unwrap();
    let b = load_task(TaskKind::Sst2, &root, 1).unwrap();
    let c = load_task(TaskKind::Sst2, &root, 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.validation, c.validation);
    // Held-out validation examples are not in train (compare by text; SST-2 has a few
    // duplicate sentences, so allow those).
    let train: BTreeSet<&str> = a.train.iter().map(|e| e.text_a()).collect();
    let leaked = a
        .validation
        .iter()
        .filter(|e| train.contains(e.text_a()))
        .count();
    assert!(leaked < 50, "{leaked} validation sentences also in train");

    let r1 = load_task(TaskKind::Rte, &root, 5).unwrap();
    let r2 = load_task(TaskKind::Rte, &root, 5).unwrap();
    assert_eq!(r1, r2);
}

//! Built-in task loaders on small fixtures written in the official formats
//! (`tests/fixtures/glue`, `tests/fixtures/superglue`), the split rules, and bad-input errors.

use std::path::{Path, PathBuf};

use adept_data::{
    load_file, load_official, load_splits, load_task, DataError, Example, OfficialSplit, SplitMode,
    Target, TaskKind,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn glue() -> PathBuf {
    fixtures().join("glue")
}

fn superglue() -> PathBuf {
    fixtures().join("superglue")
}

fn root_of(task: TaskKind) -> PathBuf {
    match task.spec().benchmark {
        adept_data::Benchmark::Glue => glue(),
        adept_data::Benchmark::SuperGlue => superglue(),
    }
}

fn labels(xs: &[Example]) -> Vec<Target> {
    xs.iter().map(|e| e.label).collect()
}

fn classes(ids: &[usize]) -> Vec<Target> {
    ids.iter().map(|&c| Target::Class(c)).collect()
}

fn names(e: &Example) -> Vec<&str> {
    e.fields.iter().map(|(n, _)| n.as_str()).collect()
}

fn all_unlabelled(xs: &[Example]) -> bool {
    !xs.is_empty() && xs.iter().all(|e| e.label == Target::None)
}

#[test]
fn sst2() {
    let train = load_file(TaskKind::Sst2, &glue().join("SST-2/train.tsv")).unwrap();
    assert_eq!(train.len(), 4);
    assert_eq!(labels(&train), classes(&[1, 0, 1, 0]));
    assert_eq!(names(&train[0]), ["sentence"]);
    // Unquoted TSV: the lone `"` stays in the text; trailing spaces are kept.
    assert_eq!(train[1].text_a(), "tedious and \" overlong ");
    assert_eq!(train[0].template_text(), "sentence: a warm , funny film ");
    assert_eq!(train[0].target_text().as_deref(), Some("1"));
    let test = load_official(TaskKind::Sst2, &glue(), OfficialSplit::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert!(all_unlabelled(&test));
    assert_eq!(test[0].text_a(), "an odd little movie .");
}

#[test]
fn cola_headerless_train_and_headed_test() {
    let train = load_official(TaskKind::Cola, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(train.len(), 4, "no header line is skipped");
    assert_eq!(labels(&train), classes(&[1, 0, 1, 0]));
    assert_eq!(train[0].text_a(), "The cat sat on the mat.");
    assert_eq!(train[2].text_a(), "She said \"hello\" to us.");
    let dev = load_official(TaskKind::Cola, &glue(), OfficialSplit::Dev).unwrap();
    assert_eq!(dev.len(), 6);
    let test = load_official(TaskKind::Cola, &glue(), OfficialSplit::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert!(all_unlabelled(&test));
    assert_eq!(test[1].text_a(), "Flew bird.");
}

#[test]
fn mrpc_with_bom_header() {
    let train = load_official(TaskKind::Mrpc, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(labels(&train), classes(&[1, 0, 1]));
    assert_eq!(names(&train[0]), ["sentence1", "sentence2"]);
    assert_eq!(train[1].text_a(), "He said \" no comment \" and left .");
    assert_eq!(
        train[0].template_text(),
        "sentence1: The firm posted a profit of $ 3 million . sentence2: The company reported a $ 3 million profit ."
    );
    let test = load_official(TaskKind::Mrpc, &glue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
    assert_eq!(test[0].text_b().as_deref(), Some("Costs went up ."));
}

#[test]
fn stsb_scores() {
    let train = load_official(TaskKind::Stsb, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(
        labels(&train),
        vec![Target::Score(5.0), Target::Score(3.75), Target::Score(0.0)]
    );
    let targets: Vec<String> = train.iter().filter_map(|e| e.target_text()).collect();
    assert_eq!(targets, ["5.0", "3.8", "0.0"]);
    assert_eq!(train[1].text_a(), "A man plays a flute.");
    assert_eq!(
        train[1].text_b().as_deref(),
        Some("A man plays a large flute.")
    );
    let test = load_official(TaskKind::Stsb, &glue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
}

#[test]
fn qqp() {
    let train = load_official(TaskKind::Qqp, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(labels(&train), classes(&[1, 0, 0]));
    assert_eq!(names(&train[0]), ["question1", "question2"]);
    assert_eq!(train[2].text_a(), "What is \"quoting\"?");
    let test = load_official(TaskKind::Qqp, &glue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
    assert_eq!(test[0].text_a(), "How old is the moon?");
}

#[test]
fn mnli() {
    let train = load_official(TaskKind::Mnli, &glue(), OfficialSplit::Train).unwrap();
    // contradiction = 2, entailment = 0, neutral = 1.
    assert_eq!(labels(&train), classes(&[2, 0, 1]));
    assert_eq!(
        train[0].template_text(),
        "premise: A man sleeps. hypothesis: A man is awake."
    );
    let matched = load_official(TaskKind::Mnli, &glue(), OfficialSplit::Dev).unwrap();
    assert_eq!(labels(&matched), classes(&[2, 0]), "gold_label, not label1");
    let mismatched = load_official(TaskKind::Mnli, &glue(), OfficialSplit::DevMismatched).unwrap();
    assert_eq!(labels(&mismatched), classes(&[0, 1, 2]));
    let test = load_official(TaskKind::Mnli, &glue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
    let err = load_official(TaskKind::Mnli, &glue(), OfficialSplit::TestMismatched)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test_mismatched.tsv") && err.contains("does not exist"),
        "{err}"
    );
    let err = load_official(TaskKind::Rte, &glue(), OfficialSplit::DevMismatched)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rte") && err.contains("dev_mismatched"),
        "{err}"
    );
}

#[test]
fn qnli_and_rte_string_labels() {
    let qnli = load_official(TaskKind::Qnli, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(labels(&qnli), classes(&[0, 1]));
    assert_eq!(
        qnli[0].template_text(),
        "question: When was it built? sentence: The bridge was built in 1932."
    );
    assert!(all_unlabelled(
        &load_official(TaskKind::Qnli, &glue(), OfficialSplit::Test).unwrap()
    ));
    let rte = load_official(TaskKind::Rte, &glue(), OfficialSplit::Train).unwrap();
    assert_eq!(labels(&rte), classes(&[0, 1, 1]));
    assert!(all_unlabelled(
        &load_official(TaskKind::Rte, &glue(), OfficialSplit::Test).unwrap()
    ));
}

#[test]
fn boolq() {
    let val = load_official(TaskKind::Boolq, &superglue(), OfficialSplit::Dev).unwrap();
    assert_eq!(labels(&val), classes(&[1, 0, 1, 0]));
    assert_eq!(names(&val[0]), ["question", "passage"]);
    assert!(val[0]
        .template_text()
        .starts_with("question: is the sky blue passage: Sky -- "));
    let test = load_official(TaskKind::Boolq, &superglue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
    assert_eq!(test[0].text_a(), "does water boil at 100 degrees");
}

#[test]
fn cb() {
    let train = load_official(TaskKind::Cb, &superglue(), OfficialSplit::Train).unwrap();
    // entailment 0, contradiction 1, neutral 2.
    assert_eq!(labels(&train), classes(&[0, 1, 2, 0]));
    assert_eq!(
        train[1].template_text(),
        "premise: She doubted that he came. hypothesis: he came"
    );
    assert!(all_unlabelled(
        &load_official(TaskKind::Cb, &superglue(), OfficialSplit::Test).unwrap()
    ));
}

#[test]
fn wic() {
    let train = load_official(TaskKind::Wic, &superglue(), OfficialSplit::Train).unwrap();
    assert_eq!(labels(&train), classes(&[0, 1]));
    assert_eq!(
        train[0].template_text(),
        "sentence1: He sat on the bank of the river. sentence2: She went to the bank to get cash. word: bank"
    );
    assert_eq!(
        train[0].text_b().as_deref(),
        Some("She went to the bank to get cash. bank")
    );
    let val = load_official(TaskKind::Wic, &superglue(), OfficialSplit::Dev).unwrap();
    assert_eq!(val.len(), 4);
    assert!(all_unlabelled(
        &load_official(TaskKind::Wic, &superglue(), OfficialSplit::Test).unwrap()
    ));
}

#[test]
fn wsc() {
    let train = load_official(TaskKind::Wsc, &superglue(), OfficialSplit::Train).unwrap();
    assert_eq!(labels(&train), classes(&[1, 0]));
    assert_eq!(names(&train[0]), ["text", "reference"]);
    assert_eq!(
        train[0].text_a(),
        "Anna thanked * Beth * because # she # had helped."
    );
    assert_eq!(train[0].text_b().as_deref(), Some("she refers to Beth"));
    assert!(all_unlabelled(
        &load_official(TaskKind::Wsc, &superglue(), OfficialSplit::Test).unwrap()
    ));
}

#[test]
fn multirc_flattening() {
    let train = load_official(TaskKind::Multirc, &superglue(), OfficialSplit::Train).unwrap();
    assert_eq!(train.len(), 7, "one example per answer option");
    assert_eq!(labels(&train), classes(&[1, 0, 1, 1, 0, 1, 0]));
    let groups: Vec<&str> = train.iter().filter_map(|e| e.group.as_deref()).collect();
    assert_eq!(groups, ["0-0", "0-0", "0-0", "0-1", "0-1", "1-2", "1-2"]);
    assert_eq!(names(&train[0]), ["question", "answer", "paragraph"]);
    assert_eq!(
        train[3].template_text(),
        "question: Where does Tom ride? answer: To school paragraph: Sent 1: Tom has a red bike.<br>Sent 2: He rides it to school."
    );
    let test = load_official(TaskKind::Multirc, &superglue(), OfficialSplit::Test).unwrap();
    assert!(all_unlabelled(&test));
    assert_eq!(test[0].group.as_deref(), Some("0-0"));
}

#[test]
fn every_task_has_a_fixture_dev_set() {
    for task in TaskKind::ALL {
        let dev = load_official(task, &root_of(task), OfficialSplit::Dev)
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        assert!(dev.iter().all(|e| e.label.is_some()), "{task}");
        for e in &dev {
            assert_eq!(names(e), task.spec().fields, "{task}");
        }
    }
}

// ---------------------------------------------------------------- splits

#[test]
fn paper_split_halves_small_dev_sets() {
    let s = load_task(TaskKind::Rte, &glue(), 7).unwrap();
    // RTE dev has 5 rows: ⌊5/2⌋ = 2 validation, 3 test; train untouched.
    assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (3, 2, 3));
    let dev = load_official(TaskKind::Rte, &glue(), OfficialSplit::Dev).unwrap();
    let mut both: Vec<String> = s
        .validation
        .iter()
        .chain(&s.test)
        .map(|e| e.text_a().to_string())
        .collect();
    both.sort();
    let mut expected: Vec<String> = dev.iter().map(|e| e.text_a().to_string()).collect();
    expected.sort();
    assert_eq!(both, expected, "validation ∪ test = official dev, disjoint");
    assert_eq!(
        s,
        load_task(TaskKind::Rte, &glue(), 7).unwrap(),
        "deterministic"
    );
    let distinct: std::collections::BTreeSet<Vec<String>> = (0..20)
        .map(|seed| {
            load_task(TaskKind::Rte, &glue(), seed)
                .unwrap()
                .validation
                .iter()
                .map(|e| e.text_a().to_string())
                .collect()
        })
        .collect();
    assert!(distinct.len() > 1, "the seed changes the split");

    let cola = load_task(TaskKind::Cola, &glue(), 1).unwrap();
    assert_eq!(
        (cola.train.len(), cola.validation.len(), cola.test.len()),
        (4, 3, 3)
    );
    let multirc = load_task(TaskKind::Multirc, &superglue(), 1).unwrap();
    assert_eq!(
        (
            multirc.train.len(),
            multirc.validation.len(),
            multirc.test.len()
        ),
        (7, 3, 4)
    );
    for task in [
        TaskKind::Cb,
        TaskKind::Wic,
        TaskKind::Wsc,
        TaskKind::Stsb,
        TaskKind::Mrpc,
    ] {
        let s = load_task(task, &root_of(task), 3).unwrap();
        let n = load_official(task, &root_of(task), OfficialSplit::Dev)
            .unwrap()
            .len();
        assert_eq!(s.validation.len(), n / 2, "{task}");
        assert_eq!(s.test.len(), n - n / 2, "{task}");
    }
}

#[test]
fn paper_split_mnli_uses_mismatched_then_matched() {
    let s = load_task(TaskKind::Mnli, &glue(), 0).unwrap();
    assert_eq!(s.train.len(), 3);
    assert_eq!(s.validation.len(), 3, "dev_mismatched");
    assert_eq!(s.test.len(), 2, "dev_matched");
    assert_eq!(s.validation[0].text_a(), "A letter came.");
}

#[test]
fn paper_split_hold_out_needs_enough_training_data() {
    for task in [TaskKind::Sst2, TaskKind::Qqp, TaskKind::Qnli] {
        let err = load_task(task, &glue(), 0).unwrap_err().to_string();
        assert!(
            err.contains("train.tsv") && err.contains("hold out 1000"),
            "{err}"
        );
    }
}

#[test]
fn official_mode_returns_files_unchanged() {
    let s = load_splits(TaskKind::Sst2, &glue(), SplitMode::Official).unwrap();
    assert_eq!(
        s.train,
        load_official(TaskKind::Sst2, &glue(), OfficialSplit::Train).unwrap()
    );
    assert_eq!(
        s.validation,
        load_official(TaskKind::Sst2, &glue(), OfficialSplit::Dev).unwrap()
    );
    assert_eq!(s.test.len(), 2);
    assert!(all_unlabelled(&s.test));
    // The task directory itself works as well as the benchmark root.
    let direct = load_splits(TaskKind::Sst2, &glue().join("SST-2"), SplitMode::Official).unwrap();
    assert_eq!(direct, s);
    let mnli = load_splits(TaskKind::Mnli, &glue(), SplitMode::Official).unwrap();
    assert_eq!(mnli.validation.len(), 2, "dev_matched");
}

#[test]
fn missing_train_file_is_named() {
    let err = load_task(TaskKind::Boolq, &superglue(), 0).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("BoolQ/train.jsonl") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(msg.contains("BoolQ train"), "{msg}");
}

// ---------------------------------------------------------------- bad input

struct Tmp {
    dir: tempfile::TempDir,
}

impl Tmp {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

fn err_of(task: TaskKind, path: &Path) -> String {
    load_file(task, path).unwrap_err().to_string()
}

#[test]
fn missing_column_lists_the_header() {
    let t = Tmp::new();
    let p = t.write(
        "rte_bad.tsv",
        "index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n",
    );
    let msg = err_of(TaskKind::Rte, &p);
    assert!(msg.contains("rte_bad.tsv"), "{msg}");
    assert!(msg.contains("missing column `sentence1`"), "{msg}");
    assert!(
        msg.contains("available: index, premise, hypothesis, label"),
        "{msg}"
    );
}

#[test]
fn unknown_label_names_file_and_line() {
    let t = Tmp::new();
    let p = t.write(
        "rte_label.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n",
    );
    let msg = err_of(TaskKind::Rte, &p);
    assert!(msg.contains("rte_label.tsv:3"), "{msg}");
    assert!(msg.contains("unknown label `maybe`"), "{msg}");
    assert!(msg.contains("entailment (0), not_entailment (1)"), "{msg}");
    let p = t.write("sst_label.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n");
    let msg = err_of(TaskKind::Sst2, &p);
    assert!(
        msg.contains("sst_label.tsv:3") && msg.contains("`2`"),
        "{msg}"
    );
}

#[test]
fn short_row_and_bad_score() {
    let t = Tmp::new();
    let p = t.write(
        "short.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly one\n",
    );
    let msg = err_of(TaskKind::Rte, &p);
    assert!(msg.contains("short.tsv:3"), "{msg}");
    assert!(
        msg.contains("expected at least 3 tab-separated columns, found 2"),
        "{msg}"
    );

    let p = t.write(
        "stsb.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tg\tf\t2012\t1\tnone\tnone\ta\tb\thigh\n",
    );
    let msg = err_of(TaskKind::Stsb, &p);
    assert!(
        msg.contains("stsb.tsv:2") && msg.contains("score `high`"),
        "{msg}"
    );
}

#[test]
fn empty_and_missing_files() {
    let t = Tmp::new();
    let p = t.write("empty.tsv", "sentence\tlabel\n");
    let msg = err_of(TaskKind::Sst2, &p);
    assert!(
        msg.contains("empty.tsv") && msg.contains("empty dataset"),
        "{msg}"
    );
    let p = t.write("empty.jsonl", "\n\n");
    let msg = err_of(TaskKind::Cb, &p);
    assert!(
        msg.contains("empty.jsonl") && msg.contains("empty dataset"),
        "{msg}"
    );
    let msg = err_of(TaskKind::Sst2, &t.dir.path().join("nope.tsv"));
    assert!(
        msg.contains("nope.tsv") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn bad_json_lines() {
    let t = Tmp::new();
    let p = t.write(
        "cb.jsonl",
        "{\"premise\": \"a\", \"hypothesis\": \"b\", \"label\": \"neutral\"}\n{\"premise\": \"a\",\n",
    );
    let msg = err_of(TaskKind::Cb, &p);
    assert!(
        msg.contains("cb.jsonl:2") && msg.contains("invalid JSON"),
        "{msg}"
    );

    let p = t.write(
        "cb2.jsonl",
        "{\"premise\": \"a\", \"label\": \"neutral\"}\n",
    );
    let msg = err_of(TaskKind::Cb, &p);
    assert!(msg.contains("cb2.jsonl:1"), "{msg}");
    assert!(
        msg.contains("missing column `hypothesis` (available: label, premise)"),
        "{msg}"
    );

    let p = t.write(
        "cb3.jsonl",
        "{\"premise\": \"a\", \"hypothesis\": \"b\", \"label\": \"maybe\"}\n",
    );
    let msg = err_of(TaskKind::Cb, &p);
    assert!(
        msg.contains("cb3.jsonl:1") && msg.contains("unknown label `maybe`"),
        "{msg}"
    );

    let p = t.write("arr.jsonl", "[1, 2]\n");
    let msg = err_of(TaskKind::Cb, &p);
    assert!(
        msg.contains("arr.jsonl:1") && msg.contains("expected a JSON object"),
        "{msg}"
    );

    let p = t.write(
        "mrc.jsonl",
        "{\"idx\": 0, \"passage\": {\"text\": \"t\"}}\n",
    );
    let msg = err_of(TaskKind::Multirc, &p);
    assert!(
        msg.contains("mrc.jsonl:1") && msg.contains("`questions`"),
        "{msg}"
    );
}

#[test]
fn unlabelled_file_cannot_be_a_training_split() {
    let t = Tmp::new();
    std::fs::write(t.dir.path().join("train.tsv"), "index\tsentence\n0\tx\n").unwrap();
    std::fs::write(t.dir.path().join("dev.tsv"), "sentence\tlabel\ny\t1\n").unwrap();
    let err = load_splits(TaskKind::Sst2, t.dir.path(), SplitMode::Official)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.tsv") && err.contains("has no labels"),
        "{err}"
    );
}

#[test]
fn a_root_without_the_task_folder_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_task(TaskKind::Mrpc, tmp.path(), 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("no MRPC data in {}", tmp.path().display()))
            && msg.contains("MRPC/")
            && msg.contains("train.tsv"),
        "{msg}"
    );
}

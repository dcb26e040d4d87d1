//! The built-in GLUE and SuperGLUE tasks: names, labels, templates, files, metrics, split rules.
//!
//! [`TaskKind`] names a task; [`TaskKind::spec`] gives its static [`TaskSpec`]. Names parse
//! case-insensitively with punctuation ignored: `"sst-2"`, `"SST2"`, `"sst2"`, `"STS-B"`,
//! `"superglue-boolq"` and `"wsc.fixed"` all work.
//!
//! | task | labels (id order) | template fields | metrics (primary first) | split rule |
//! |---|---|---|---|---|
//! | sst2 | negative, positive | sentence | accuracy | hold out 1,000 train |
//! | cola | unacceptable, acceptable | sentence | **mcc**, accuracy | halve dev |
//! | mrpc | not_equivalent, equivalent | sentence1, sentence2 | **accuracy**, f1 | halve dev |
//! | stsb | (score 0–5) | sentence1, sentence2 | **pearson**, spearman | halve dev |
//! | qqp | not_duplicate, duplicate | question1, question2 | **accuracy**, f1 | hold out 1,000 train |
//! | mnli | entailment, neutral, contradiction | premise, hypothesis | accuracy | mismatched / matched |
//! | qnli | entailment, not_entailment | question, sentence | accuracy | hold out 1,000 train |
//! | rte | entailment, not_entailment | sentence1, sentence2 | accuracy | halve dev |
//! | boolq | False, True | question, passage | accuracy | halve dev |
//! | cb | entailment, contradiction, neutral | premise, hypothesis | **accuracy**, macro_f1 | halve dev |
//! | wic | False, True | sentence1, sentence2, word | accuracy | halve dev |
//! | wsc | False, True | text, reference | accuracy | halve dev |
//! | multirc | False, True | question, answer, paragraph | **f1a**, em | halve dev |
//!
//! Primary metrics follow the paper's tables: "We report Pearson correlation for STS-B, F1 for
//! MultiRC (Multi), and accuracy for other tasks as test metrics" (ADePT, Table 3), with CoLA
//! reported as Matthews correlation as in DePT and GLUE. So STS-B's primary metric is
//! **Pearson** (not the mean of Pearson and Spearman), and CB's, MRPC's and QQP's is accuracy.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::example::Target;
use crate::metrics::{Metric, MetricSpec};

/// The built-in tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Sst2,
    Cola,
    Mrpc,
    Stsb,
    Qqp,
    Mnli,
    Qnli,
    Rte,
    Boolq,
    Cb,
    Wic,
    Wsc,
    Multirc,
}

/// Which benchmark a task belongs to (and so which file format it ships in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Benchmark {
    /// GLUE: tab-separated files, no quoting.
    Glue,
    /// SuperGLUE: JSON lines.
    SuperGlue,
}

/// On-disk format of a dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated with RFC 4180 quoting (custom datasets).
    Csv,
    /// Tab-separated, **no quoting** (GLUE files contain unbalanced `"`).
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl FileFormat {
    /// Format from a name: `csv`, `tsv`, `jsonl` (also `json`, `ndjson`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        match name
            .trim()
            .trim_start_matches('.')
            .to_ascii_lowercase()
            .as_str()
        {
            "csv" => Some(Self::Csv),
            "tsv" | "tab" => Some(Self::Tsv),
            "jsonl" | "json" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// Format from a path's extension (`.csv`, `.tsv`, `.jsonl`, `.json`, `.ndjson`).
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Self::from_name)
    }
}

/// An official file of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OfficialSplit {
    Train,
    /// The official validation ("dev") set; for MNLI `dev_matched.tsv`.
    Dev,
    /// The official (unlabelled) test set; for MNLI `test_matched.tsv`.
    Test,
    /// MNLI only: `dev_mismatched.tsv`.
    DevMismatched,
    /// MNLI only: `test_mismatched.tsv`.
    TestMismatched,
}

impl fmt::Display for OfficialSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Dev => "dev",
            Self::Test => "test",
            Self::DevMismatched => "dev_mismatched",
            Self::TestMismatched => "test_mismatched",
        })
    }
}

/// How the paper builds train / validation / test from the official files (see
/// [`crate::split`] for the quote and details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitRule {
    /// Small tasks: train = official train; the official dev set is shuffled (seeded) and
    /// halved: first `n / 2` → validation, the rest → test.
    HalveDev,
    /// Large tasks: `size` (1,000) shuffled training examples become the validation set, the
    /// rest stay train; the official dev set is the test set.
    HoldOutTrain { size: usize },
    /// MNLI: train = official train; validation = `dev_mismatched`, test = `dev_matched`
    /// (the paper's 9,832 / 9,815, Table 16).
    MnliMismatchedMatched,
}

/// Default file names of a task's official splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFiles {
    pub train: &'static str,
    pub dev: &'static str,
    pub test: &'static str,
    /// MNLI only.
    pub dev_mismatched: Option<&'static str>,
    /// MNLI only.
    pub test_mismatched: Option<&'static str>,
}

const GLUE_FILES: TaskFiles = TaskFiles {
    train: "train.tsv",
    dev: "dev.tsv",
    test: "test.tsv",
    dev_mismatched: None,
    test_mismatched: None,
};

const MNLI_FILES: TaskFiles = TaskFiles {
    train: "train.tsv",
    dev: "dev_matched.tsv",
    test: "test_matched.tsv",
    dev_mismatched: Some("dev_mismatched.tsv"),
    test_mismatched: Some("test_mismatched.tsv"),
};

const SUPERGLUE_FILES: TaskFiles = TaskFiles {
    train: "train.jsonl",
    dev: "val.jsonl",
    test: "test.jsonl",
    dev_mismatched: None,
    test_mismatched: None,
};

const BINARY_BOOL: &[&str] = &["False", "True"];
const HOLD_OUT_1000: SplitRule = SplitRule::HoldOutTrain { size: 1000 };

/// Everything static about a built-in task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// Canonical lower-case name, e.g. `"sst2"`.
    pub name: &'static str,
    /// Directory name in the GLUE/SuperGLUE distributions, e.g. `"SST-2"`, `"BoolQ"`.
    pub dir_name: &'static str,
    pub benchmark: Benchmark,
    /// Label names in class-id order; empty for regression.
    pub label_names: &'static [&'static str],
    /// STS-B.
    pub is_regression: bool,
    /// Template field names in order (`"sentence1: … sentence2: …"`).
    pub fields: &'static [&'static str],
    /// All metrics reported for the task.
    pub metrics: &'static [Metric],
    /// The metric used for model selection and reported in the paper's tables.
    pub primary_metric: Metric,
    pub files: TaskFiles,
    pub split_rule: SplitRule,
}

impl TaskSpec {
    /// Number of classes (1 for regression, like a regression head's output width).
    pub fn num_labels(&self) -> usize {
        if self.is_regression {
            1
        } else {
            self.label_names.len()
        }
    }

    /// File format of the official files.
    pub fn format(&self) -> FileFormat {
        match self.benchmark {
            Benchmark::Glue => FileFormat::Tsv,
            Benchmark::SuperGlue => FileFormat::Jsonl,
        }
    }

    /// Default file name of an official split (`None`: the split does not exist for the task,
    /// i.e. the mismatched sets of tasks other than MNLI).
    pub fn file_name(&self, split: OfficialSplit) -> Option<&'static str> {
        match split {
            OfficialSplit::Train => Some(self.files.train),
            OfficialSplit::Dev => Some(self.files.dev),
            OfficialSplit::Test => Some(self.files.test),
            OfficialSplit::DevMismatched => self.files.dev_mismatched,
            OfficialSplit::TestMismatched => self.files.test_mismatched,
        }
    }

    /// Metrics, primary metric and label space, for [`crate::metrics::score_with`].
    pub fn metric_spec(&self) -> MetricSpec {
        MetricSpec {
            metrics: self.metrics.to_vec(),
            primary: self.primary_metric,
            num_labels: self.num_labels(),
            regression: self.is_regression,
        }
    }

    /// Parses a generated string into a prediction (see [`Target::parse_text`]).
    pub fn parse_prediction(&self, text: &str) -> Target {
        Target::parse_text(text, self.label_names, self.is_regression)
    }
}

static SPECS: [TaskSpec; 13] = [
    TaskSpec {
        kind: TaskKind::Sst2,
        name: "sst2",
        dir_name: "SST-2",
        benchmark: Benchmark::Glue,
        label_names: &["negative", "positive"],
        is_regression: false,
        fields: &["sentence"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: GLUE_FILES,
        split_rule: HOLD_OUT_1000,
    },
    TaskSpec {
        kind: TaskKind::Cola,
        name: "cola",
        dir_name: "CoLA",
        benchmark: Benchmark::Glue,
        label_names: &["unacceptable", "acceptable"],
        is_regression: false,
        fields: &["sentence"],
        metrics: &[Metric::Mcc, Metric::Accuracy],
        primary_metric: Metric::Mcc,
        files: GLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Mrpc,
        name: "mrpc",
        dir_name: "MRPC",
        benchmark: Benchmark::Glue,
        label_names: &["not_equivalent", "equivalent"],
        is_regression: false,
        fields: &["sentence1", "sentence2"],
        metrics: &[Metric::Accuracy, Metric::F1],
        primary_metric: Metric::Accuracy,
        files: GLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Stsb,
        name: "stsb",
        dir_name: "STS-B",
        benchmark: Benchmark::Glue,
        label_names: &[],
        is_regression: true,
        fields: &["sentence1", "sentence2"],
        metrics: &[Metric::Pearson, Metric::Spearman],
        primary_metric: Metric::Pearson,
        files: GLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Qqp,
        name: "qqp",
        dir_name: "QQP",
        benchmark: Benchmark::Glue,
        label_names: &["not_duplicate", "duplicate"],
        is_regression: false,
        fields: &["question1", "question2"],
        metrics: &[Metric::Accuracy, Metric::F1],
        primary_metric: Metric::Accuracy,
        files: GLUE_FILES,
        split_rule: HOLD_OUT_1000,
    },
    TaskSpec {
        kind: TaskKind::Mnli,
        name: "mnli",
        dir_name: "MNLI",
        benchmark: Benchmark::Glue,
        label_names: &["entailment", "neutral", "contradiction"],
        is_regression: false,
        fields: &["premise", "hypothesis"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: MNLI_FILES,
        split_rule: SplitRule::MnliMismatchedMatched,
    },
    TaskSpec {
        kind: TaskKind::Qnli,
        name: "qnli",
        dir_name: "QNLI",
        benchmark: Benchmark::Glue,
        label_names: &["entailment", "not_entailment"],
        is_regression: false,
        fields: &["question", "sentence"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: GLUE_FILES,
        split_rule: HOLD_OUT_1000,
    },
    TaskSpec {
        kind: TaskKind::Rte,
        name: "rte",
        dir_name: "RTE",
        benchmark: Benchmark::Glue,
        label_names: &["entailment", "not_entailment"],
        is_regression: false,
        fields: &["sentence1", "sentence2"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: GLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Boolq,
        name: "boolq",
        dir_name: "BoolQ",
        benchmark: Benchmark::SuperGlue,
        label_names: BINARY_BOOL,
        is_regression: false,
        fields: &["question", "passage"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: SUPERGLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Cb,
        name: "cb",
        dir_name: "CB",
        benchmark: Benchmark::SuperGlue,
        label_names: &["entailment", "contradiction", "neutral"],
        is_regression: false,
        fields: &["premise", "hypothesis"],
        metrics: &[Metric::Accuracy, Metric::MacroF1],
        primary_metric: Metric::Accuracy,
        files: SUPERGLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Wic,
        name: "wic",
        dir_name: "WiC",
        benchmark: Benchmark::SuperGlue,
        label_names: BINARY_BOOL,
        is_regression: false,
        fields: &["sentence1", "sentence2", "word"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: SUPERGLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Wsc,
        name: "wsc",
        dir_name: "WSC",
        benchmark: Benchmark::SuperGlue,
        label_names: BINARY_BOOL,
        is_regression: false,
        fields: &["text", "reference"],
        metrics: &[Metric::Accuracy],
        primary_metric: Metric::Accuracy,
        files: SUPERGLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
    TaskSpec {
        kind: TaskKind::Multirc,
        name: "multirc",
        dir_name: "MultiRC",
        benchmark: Benchmark::SuperGlue,
        label_names: BINARY_BOOL,
        is_regression: false,
        fields: &["question", "answer", "paragraph"],
        metrics: &[Metric::F1a, Metric::Em],
        primary_metric: Metric::F1a,
        files: SUPERGLUE_FILES,
        split_rule: SplitRule::HalveDev,
    },
];

impl TaskKind {
    /// All built-in tasks (GLUE first, then SuperGLUE).
    pub const ALL: [TaskKind; 13] = [
        TaskKind::Sst2,
        TaskKind::Cola,
        TaskKind::Mrpc,
        TaskKind::Stsb,
        TaskKind::Qqp,
        TaskKind::Mnli,
        TaskKind::Qnli,
        TaskKind::Rte,
        TaskKind::Boolq,
        TaskKind::Cb,
        TaskKind::Wic,
        TaskKind::Wsc,
        TaskKind::Multirc,
    ];

    /// The task's static description.
    pub fn spec(self) -> &'static TaskSpec {
        let spec = &SPECS[self as usize];
        debug_assert_eq!(spec.kind, self);
        spec
    }

    /// Canonical lower-case name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parses a task name; see the module docs for the accepted spellings.
    pub fn parse(name: &str) -> Result<Self, DataError> {
        let mut key: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        for prefix in ["superglue", "glue"] {
            if key.len() > prefix.len() && key.starts_with(prefix) {
                key.drain(..prefix.len());
                break;
            }
        }
        let kind = match key.as_str() {
            "sst2" | "sst" => TaskKind::Sst2,
            "cola" => TaskKind::Cola,
            "mrpc" => TaskKind::Mrpc,
            "stsb" | "sts" => TaskKind::Stsb,
            "qqp" => TaskKind::Qqp,
            "mnli" => TaskKind::Mnli,
            "qnli" => TaskKind::Qnli,
            "rte" => TaskKind::Rte,
            "boolq" => TaskKind::Boolq,
            "cb" => TaskKind::Cb,
            "wic" => TaskKind::Wic,
            "wsc" | "wscfixed" => TaskKind::Wsc,
            "multirc" => TaskKind::Multirc,
            _ => {
                return Err(DataError::UnknownTask {
                    name: name.to_string(),
                    known: Self::ALL.map(|k| k.name()).join(", "),
                })
            }
        };
        Ok(kind)
    }
}

impl FromStr for TaskKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for s in ["sst-2", "SST2", "sst2", "SST-2", "glue-sst2", "sst_2"] {
            assert_eq!(s.parse::<TaskKind>().unwrap(), TaskKind::Sst2, "{s}");
        }
        assert_eq!(TaskKind::parse("STS-B").unwrap(), TaskKind::Stsb);
        assert_eq!(TaskKind::parse("superglue-boolq").unwrap(), TaskKind::Boolq);
        assert_eq!(TaskKind::parse("wsc.fixed").unwrap(), TaskKind::Wsc);
        assert_eq!(TaskKind::parse("MultiRC").unwrap(), TaskKind::Multirc);
        let err = TaskKind::parse("squad").unwrap_err().to_string();
        assert!(err.contains("squad") && err.contains("multirc"), "{err}");
        for k in TaskKind::ALL {
            assert_eq!(k.spec().kind, k);
            assert_eq!(TaskKind::parse(k.name()).unwrap(), k);
            assert_eq!(TaskKind::parse(k.spec().dir_name).unwrap(), k);
            assert!(k.spec().metrics.contains(&k.spec().primary_metric));
        }
    }

    #[test]
    fn label_spaces() {
        assert_eq!(TaskKind::Sst2.spec().label_names, ["negative", "positive"]);
        assert_eq!(
            TaskKind::Cb.spec().label_names,
            ["entailment", "contradiction", "neutral"]
        );
        assert_eq!(
            TaskKind::Mnli.spec().label_names,
            ["entailment", "neutral", "contradiction"]
        );
        assert_eq!(TaskKind::Stsb.spec().num_labels(), 1);
        assert!(TaskKind::Stsb.spec().is_regression);
        assert_eq!(TaskKind::Mnli.spec().num_labels(), 3);
        assert_eq!(TaskKind::Cola.spec().primary_metric, Metric::Mcc);
        assert_eq!(TaskKind::Stsb.spec().primary_metric, Metric::Pearson);
        assert_eq!(TaskKind::Multirc.spec().primary_metric, Metric::F1a);
    }

    #[test]
    fn formats() {
        use std::path::Path;
        assert_eq!(
            FileFormat::from_path(Path::new("a/b.CSV")),
            Some(FileFormat::Csv)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.tsv")),
            Some(FileFormat::Tsv)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.jsonl")),
            Some(FileFormat::Jsonl)
        );
        assert_eq!(FileFormat::from_path(Path::new("b.txt")), None);
        assert_eq!(
            TaskKind::Mnli
                .spec()
                .file_name(OfficialSplit::DevMismatched),
            Some("dev_mismatched.tsv")
        );
        assert_eq!(
            TaskKind::Rte.spec().file_name(OfficialSplit::DevMismatched),
            None
        );
        assert_eq!(
            TaskKind::Cb.spec().file_name(OfficialSplit::Dev),
            Some("val.jsonl")
        );
    }
}

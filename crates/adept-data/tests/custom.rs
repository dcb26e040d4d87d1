//! Custom CSV / TSV / JSONL datasets and their error messages.

use std::path::{Path, PathBuf};

use adept_data::{load_custom, CustomSpec, FileFormat, Metric, Target};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/custom")
        .join(name)
}

fn labels(ds: &adept_data::CustomDataset) -> Vec<Target> {
    ds.examples.iter().map(|e| e.label).collect()
}

#[test]
fn csv_classification_discovers_sorted_labels() {
    let spec = CustomSpec::classification(&["review", "summary"], "sentiment");
    let ds = load_custom(&fixture("reviews.csv"), &spec).unwrap();
    assert_eq!(ds.labels, ["neg", "neutral", "pos"]);
    assert_eq!(
        labels(&ds),
        vec![
            Target::Class(2),
            Target::Class(0),
            Target::Class(1),
            Target::Class(2)
        ]
    );
    assert_eq!(ds.examples.len(), 4);
    // RFC 4180 quoting: commas, doubled quotes and newlines inside quotes.
    assert_eq!(ds.examples[0].text_a(), "Great phone, fast and light");
    assert_eq!(ds.examples[1].text_a(), "Battery dies; \"meh\" overall");
    assert_eq!(ds.examples[3].text_a(), "Multi-line\nreview text");
    assert_eq!(
        ds.examples[0].template_text(),
        "review: Great phone, fast and light summary: Loved it"
    );
    assert_eq!(ds.examples[0].text_b().as_deref(), Some("Loved it"));
    let m = ds.metric_spec();
    assert_eq!(m.primary, Metric::Accuracy);
    assert_eq!(m.num_labels, 3);
    assert!(!m.metrics.contains(&Metric::F1), "F1 only for two classes");
}

#[test]
fn csv_regression() {
    let spec = CustomSpec::regression(&["review"], "rating");
    let ds = load_custom(&fixture("reviews.csv"), &spec).unwrap();
    assert!(ds.labels.is_empty());
    assert_eq!(
        labels(&ds),
        vec![
            Target::Score(4.5),
            Target::Score(1.0),
            Target::Score(3.0),
            Target::Score(4.0)
        ]
    );
    assert_eq!(ds.num_labels(), 1);
    assert_eq!(ds.metric_spec().primary, Metric::Pearson);
}

#[test]
fn tsv_is_unquoted_and_takes_explicit_labels() {
    let train_spec = CustomSpec::classification(&["review", "summary"], "sentiment");
    let train = load_custom(&fixture("reviews.csv"), &train_spec).unwrap();
    let spec = train_spec.clone().with_labels(train.labels.clone());
    let ds = load_custom(&fixture("reviews.tsv"), &spec).unwrap();
    assert_eq!(ds.labels, ["neg", "neutral", "pos"], "training ids kept");
    assert_eq!(labels(&ds), vec![Target::Class(2), Target::Class(0)]);
    assert_eq!(ds.examples[0].field("summary"), Some("Loved \"it"));
    let binary = load_custom(&fixture("reviews.tsv"), &train_spec).unwrap();
    assert_eq!(binary.labels, ["neg", "pos"]);
    assert!(binary.metric_spec().metrics.contains(&Metric::F1));
}

#[test]
fn jsonl_nested_keys_numbers_and_blank_lines() {
    let spec = CustomSpec::classification(&["review", "meta.title"], "sentiment");
    let ds = load_custom(&fixture("reviews.jsonl"), &spec).unwrap();
    assert_eq!(ds.examples.len(), 2, "blank line skipped");
    assert_eq!(
        ds.examples[0].template_text(),
        "review: Great phone meta.title: Loved it"
    );
    assert_eq!(labels(&ds), vec![Target::Class(1), Target::Class(0)]);

    // Numeric labels sort numerically and keep their JSON text.
    let stars = load_custom(
        &fixture("reviews.jsonl"),
        &CustomSpec::classification(&["review"], "stars"),
    )
    .unwrap();
    assert_eq!(stars.labels, ["1", "5"]);
    assert_eq!(labels(&stars), vec![Target::Class(1), Target::Class(0)]);

    let reg = load_custom(
        &fixture("reviews.jsonl"),
        &CustomSpec::regression(&["review"], "rating"),
    )
    .unwrap();
    assert_eq!(labels(&reg), vec![Target::Score(4.5), Target::Score(1.0)]);
}

#[test]
fn unlabelled_custom_data() {
    let spec = CustomSpec {
        label_field: None,
        ..CustomSpec::classification(&["review"], "unused")
    };
    let ds = load_custom(&fixture("reviews.csv"), &spec).unwrap();
    assert!(ds.examples.iter().all(|e| e.label == Target::None));
}

// ---------------------------------------------------------------- errors

struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

fn err(path: &Path, spec: &CustomSpec) -> String {
    load_custom(path, spec).unwrap_err().to_string()
}

fn cls() -> CustomSpec {
    CustomSpec::classification(&["text"], "y")
}

#[test]
fn unknown_label_against_explicit_list() {
    let spec = CustomSpec::classification(&["review"], "sentiment")
        .with_labels(vec!["neg".into(), "pos".into()]);
    let msg = err(&fixture("reviews.csv"), &spec);
    assert!(msg.contains("reviews.csv:4"), "{msg}");
    assert!(msg.contains("unknown label `neutral`"), "{msg}");
    assert!(msg.contains("neg, pos"), "{msg}");
}

#[test]
fn missing_file() {
    let msg = err(Path::new("/nonexistent/data.csv"), &cls());
    assert!(
        msg.contains("/nonexistent/data.csv") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn missing_column_lists_available() {
    let msg = err(
        &fixture("reviews.csv"),
        &CustomSpec::classification(&["body"], "sentiment"),
    );
    assert!(msg.contains("reviews.csv"), "{msg}");
    assert!(msg.contains("missing column `body`"), "{msg}");
    assert!(
        msg.contains("available: id, review, summary, sentiment, rating"),
        "{msg}"
    );

    let msg = err(
        &fixture("reviews.jsonl"),
        &CustomSpec::classification(&["review"], "label"),
    );
    assert!(
        msg.contains("reviews.jsonl:1") && msg.contains("missing column `label`"),
        "{msg}"
    );
    assert!(
        msg.contains("meta, rating, review, sentiment, stars"),
        "{msg}"
    );
}

#[test]
fn unparsable_rows() {
    let t = Tmp::new();
    let p = t.write("short.csv", "text,y\nhello,1\nno label here\n");
    let msg = err(&p, &cls());
    assert!(msg.contains("short.csv:3"), "{msg}");
    assert!(
        msg.contains("expected at least 2 comma-separated columns, found 1"),
        "{msg}"
    );

    let p = t.write("reg.tsv", "text\ty\na\t0.5\nb\tabc\n");
    let msg = err(&p, &CustomSpec::regression(&["text"], "y"));
    assert!(
        msg.contains("reg.tsv:3") && msg.contains("score `abc`"),
        "{msg}"
    );

    let p = t.write("bad.jsonl", "{\"text\": \"a\", \"y\": 1}\nnot json\n");
    let msg = err(&p, &cls());
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("invalid JSON"),
        "{msg}"
    );

    let p = t.write("nested.jsonl", "{\"text\": {\"a\": 1}, \"y\": 1}\n");
    let msg = err(&p, &cls());
    assert!(
        msg.contains("nested.jsonl:1") && msg.contains("`text`"),
        "{msg}"
    );

    let p = t.write("emptylabel.csv", "text,y\na,\n");
    let msg = err(&p, &cls());
    assert!(
        msg.contains("emptylabel.csv:2") && msg.contains("empty label"),
        "{msg}"
    );

    let p = t.write("quote.csv", "text,y\n\"unterminated,1\n");
    let msg = err(&p, &cls());
    assert!(msg.contains("quote.csv"), "{msg}");
}

/// Lines are file lines, whatever the line ends: the first row after the header is line 2 in a
/// CRLF file too, and a quoted field spanning lines moves the next record's line on.
#[test]
fn errors_name_file_lines_with_crlf_and_multiline_fields() {
    let t = Tmp::new();
    for (name, content, line) in [
        ("crlf.csv", "text,y\r\nhello,\r\nx,1\r\n", 2),
        ("lf.csv", "text,y\nhello,\nx,1\n", 2),
        ("multi.csv", "text,y\n\"a\nb\",1\n\"c\r\nd\",0\nx,\n", 6),
        ("multi-crlf.csv", "text,y\r\n\"a\r\nb\",1\r\nx,\r\n", 4),
        ("bom.csv", "\u{feff}text,y\nok,1\nhello,\n", 3),
    ] {
        let p = t.write(name, content);
        let msg = err(&p, &cls());
        assert!(
            msg.contains(&format!("{name}:{line}:")) && msg.contains("empty label"),
            "{name}: expected line {line}: {msg}"
        );
    }
}

#[test]
fn a_single_label_is_refused_and_rare_labels_are_found() {
    let t = Tmp::new();
    let p = t.write("one.csv", "text,y\na,pos\nb,pos\nc,pos\n");
    let msg = err(&p, &cls());
    assert!(msg.contains("one.csv"), "{msg}");
    assert!(
        msg.contains("single label (`pos`) in all 3 rows") && msg.contains("--regression"),
        "{msg}"
    );
    // With an explicit label list (a validation file) one label present is fine.
    let spec = cls().with_labels(vec!["neg".into(), "pos".into()]);
    assert_eq!(load_custom(&p, &spec).unwrap().examples.len(), 3);

    let mut rows = String::from("text,y\n");
    for i in 0..30 {
        rows.push_str(&format!("t{i},{}\n", if i < 2 { "rare" } else { "common" }));
    }
    let p = t.write("rare.csv", &rows);
    let ds = load_custom(&p, &cls()).unwrap();
    assert_eq!(
        adept_data::custom::rare_labels(&ds.labels, &ds.examples),
        vec![("rare".to_string(), 2)]
    );
}

#[test]
fn empty_dataset() {
    let t = Tmp::new();
    for (name, content) in [
        ("h.csv", "text,y\n"),
        ("h.tsv", "text\ty\n"),
        ("nothing.csv", ""),
        ("blank.jsonl", "\n"),
    ] {
        let p = t.write(name, content);
        let msg = err(&p, &cls());
        assert!(msg.contains(name) && msg.contains("empty dataset"), "{msg}");
    }
}

#[test]
fn format_from_extension_or_explicit() {
    let t = Tmp::new();
    let p = t.write("data.txt", "text,y\nhi,a\nho,b\n");
    let msg = err(&p, &cls());
    assert!(
        msg.contains("data.txt") && msg.contains("extension"),
        "{msg}"
    );
    let ds = load_custom(&p, &cls().with_format(FileFormat::Csv)).unwrap();
    assert_eq!(ds.labels, ["a", "b"]);
    assert_eq!(FileFormat::from_name("JSONL"), Some(FileFormat::Jsonl));
}

#[test]
fn invalid_specs() {
    let t = Tmp::new();
    let p = t.write("d.csv", "text,y\nhi,a\n");
    let spec = CustomSpec {
        text_fields: vec![],
        ..cls()
    };
    assert!(err(&p, &spec).contains("no text fields"));
    let spec = cls().with_labels(vec!["a".into(), "a".into()]);
    assert!(err(&p, &spec).contains("duplicates"));
    let spec = CustomSpec::regression(&["text"], "y").with_labels(vec!["a".into()]);
    assert!(err(&p, &spec).contains("regression"));
}

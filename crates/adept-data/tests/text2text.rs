//! Text-to-text templates and targets per task (hand-made examples, exact strings), strict
//! scoring of generated strings, and custom source/target files with file:line errors.

use adept_data::text2text::{
    exact_match_score, load_text2text, parse_generated, score_generated, template, template_string,
    to_text2text, Text2TextExample, Text2TextSpec,
};
use adept_data::{Example, FileFormat, Target, TaskKind};

fn ex(fields: &[(&str, &str)], label: Target) -> Example {
    Example::new(
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        label,
    )
}

#[test]
fn every_task_renders_the_authors_template_and_target() {
    let cases: Vec<(TaskKind, Example, &str, &str)> = vec![
        (
            TaskKind::Rte,
            ex(
                &[
                    ("sentence1", "It rained."),
                    ("sentence2", "The ground is wet."),
                ],
                Target::Class(0),
            ),
            "sentence1: It rained. sentence2: The ground is wet.",
            "0",
        ),
        (
            TaskKind::Mrpc,
            ex(
                &[("sentence1", "A b."), ("sentence2", "B a.")],
                Target::Class(1),
            ),
            "sentence1: A b. sentence2: B a.",
            "1",
        ),
        (
            TaskKind::Stsb,
            ex(
                &[("sentence1", "x"), ("sentence2", "y")],
                Target::Score(3.75),
            ),
            "sentence1: x sentence2: y",
            "3.8",
        ),
        (
            TaskKind::Stsb,
            ex(
                &[("sentence1", "x"), ("sentence2", "y")],
                Target::Score(5.0),
            ),
            "sentence1: x sentence2: y",
            "5.0",
        ),
        (
            TaskKind::Sst2,
            ex(&[("sentence", "a great movie")], Target::Class(1)),
            "sentence: a great movie",
            "1",
        ),
        (
            TaskKind::Cola,
            ex(&[("sentence", "Him went.")], Target::Class(0)),
            "sentence: Him went.",
            "0",
        ),
        (
            TaskKind::Qnli,
            ex(
                &[("question", "Who?"), ("sentence", "Me.")],
                Target::Class(1),
            ),
            "question: Who? sentence: Me.",
            "1",
        ),
        (
            TaskKind::Mnli,
            ex(&[("premise", "P."), ("hypothesis", "H.")], Target::Class(2)),
            "premise: P. hypothesis: H.",
            "2",
        ),
        (
            TaskKind::Cb,
            ex(&[("premise", "P."), ("hypothesis", "H.")], Target::Class(2)),
            "premise: P. hypothesis: H.",
            "2",
        ),
        (
            TaskKind::Boolq,
            ex(
                &[("question", "is it"), ("passage", "It is.")],
                Target::Class(1),
            ),
            "question: is it passage: It is.",
            "1",
        ),
        (
            TaskKind::Multirc,
            ex(
                &[("question", "Q?"), ("answer", "A"), ("paragraph", "Para.")],
                Target::Class(0),
            ),
            "question: Q? answer: A paragraph: Para.",
            "0",
        ),
        (
            TaskKind::Wic,
            ex(
                &[
                    ("sentence1", "a bank"),
                    ("sentence2", "the bank"),
                    ("word", "bank"),
                ],
                Target::Class(1),
            ),
            "sentence1: a bank sentence2: the bank word: bank",
            "1",
        ),
        (
            TaskKind::Qqp,
            ex(
                &[("question1", "Why?"), ("question2", "How?")],
                Target::Class(0),
            ),
            "question1: Why? question2: How?",
            "0",
        ),
    ];
    for (kind, e, source, target) in cases {
        let t = to_text2text(kind, &e, "hand example").unwrap();
        assert_eq!(t.source, source, "{kind}");
        assert_eq!(t.target, target, "{kind}");
        assert_eq!(t.label, e.label);
    }
    // Fields are rendered in template order, whatever order the example holds them in.
    let swapped = ex(&[("hypothesis", "H."), ("premise", "P.")], Target::Class(0));
    assert_eq!(
        to_text2text(TaskKind::Mnli, &swapped, "x").unwrap().source,
        "premise: P. hypothesis: H."
    );
    // A missing field names the task, the example and the field.
    let err = to_text2text(
        TaskKind::Rte,
        &ex(&[("sentence1", "a")], Target::Class(0)),
        "rte train example 4",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("rte train example 4") && err.contains("sentence2"),
        "{err}"
    );
    assert_eq!(template(TaskKind::Wic), ["sentence1", "sentence2", "word"]);
    assert_eq!(
        template_string(template(TaskKind::Rte)),
        "sentence1: {sentence1} sentence2: {sentence2}"
    );
}

fn gold(label: Target) -> Text2TextExample {
    Text2TextExample {
        source: String::new(),
        target: label.to_text().unwrap_or_default(),
        label,
        group: None,
        origin: "g".into(),
    }
}

#[test]
fn generated_strings_are_scored_strictly() {
    let rte = TaskKind::Rte.spec().metric_spec();
    assert_eq!(parse_generated(" 1 ", &rte), Target::Class(1));
    // Label names, other numbers and empty outputs are invalid.
    for bad in ["entailment", "2", "01", "", "1.0"] {
        assert_eq!(parse_generated(bad, &rte), Target::None, "{bad:?}");
    }
    // Binary: invalid = wrong. Golds 0, 1, 1, 0; outputs right, right, invalid, invalid.
    let golds: Vec<_> = [0, 1, 1, 0].map(|c| gold(Target::Class(c))).to_vec();
    let out: Vec<String> = ["0", "1", "entailment", ""].map(String::from).to_vec();
    let s = score_generated(&rte, &out, &golds).unwrap();
    assert_eq!(s.primary_value(), 0.5);
    // MNLI (multiclass): "2" right, "3" invalid, "1" wrong.
    let mnli = TaskKind::Mnli.spec().metric_spec();
    let golds: Vec<_> = [2, 0, 0].map(|c| gold(Target::Class(c))).to_vec();
    let out: Vec<String> = ["2", "3", "1"].map(String::from).to_vec();
    let s = score_generated(&mnli, &out, &golds).unwrap();
    assert!((s.primary_value() - 1.0 / 3.0).abs() < 1e-12);
    // STS-B: floats parsed; an unparsable output scores −1 (the metrics module's rule).
    let stsb = TaskKind::Stsb.spec().metric_spec();
    assert_eq!(parse_generated("3.8", &stsb), Target::Score(3.8));
    assert_eq!(parse_generated("three", &stsb), Target::None);
    let golds: Vec<_> = [1.0, 2.0, 3.0].map(|s| gold(Target::Score(s))).to_vec();
    let out: Vec<String> = ["1.0", "2.0", "3.0"].map(String::from).to_vec();
    let s = score_generated(&stsb, &out, &golds).unwrap();
    assert!((s.primary_value() - 1.0).abs() < 1e-12);
    // "x" → −1: predictions (−1, 2, 3) against (1, 2, 3): Pearson by hand = 0.9608.
    let out: Vec<String> = ["x", "2.0", "3.0"].map(String::from).to_vec();
    let s = score_generated(&stsb, &out, &golds).unwrap();
    // mean p = 4/3; dp = (-7/3, 2/3, 5/3); dg = (-1, 0, 1); sxy = 4; sxx = 78/9; syy = 2.
    let expected = 4.0 / ((78.0f64 / 9.0) * 2.0).sqrt();
    assert!(
        (s.primary_value() - expected).abs() < 1e-6,
        "{}",
        s.primary_value()
    );
    // Exact match (custom data), trimmed.
    let golds = vec![
        Text2TextExample {
            target: "sky".into(),
            ..gold(Target::None)
        },
        Text2TextExample {
            target: "the cat".into(),
            ..gold(Target::None)
        },
    ];
    let out: Vec<String> = [" sky", "cat"].map(String::from).to_vec();
    assert_eq!(exact_match_score(&out, &golds).unwrap(), 0.5);
    assert!(exact_match_score(&out[..1], &golds).is_err());
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn custom_files_load_with_file_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Text2TextSpec {
        format: None,
        source_field: "question".into(),
        target_field: "meta.answer".into(),
    };
    let good = write(
        &dir,
        "ok.jsonl",
        "{\"question\": \"2+2?\", \"meta\": {\"answer\": 4}}\n\n{\"question\": \"sky?\", \"meta\": {\"answer\": \"blue\"}}\n",
    );
    let rows = load_text2text(&good, &spec).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].source.as_str(), rows[0].target.as_str()),
        ("2+2?", "4")
    );
    assert_eq!(rows[1].target, "blue");
    assert!(rows[1].origin.ends_with("ok.jsonl:3"), "{}", rows[1].origin);

    let cases = [
        (
            "bad_json.jsonl",
            "{\"question\": \"a\", \"meta\": {\"answer\": \"b\"}}\n{oops\n",
            ":2",
            "invalid JSON",
        ),
        (
            "missing.jsonl",
            "{\"question\": \"a\", \"meta\": {\"answer\": \"b\"}}\n{\"question\": \"a\"}\n",
            ":2",
            "meta.answer",
        ),
        (
            "empty_target.jsonl",
            "{\"question\": \"a\", \"meta\": {\"answer\": \"  \"}}\n",
            ":1",
            "empty target",
        ),
        (
            "array.jsonl",
            "{\"question\": [1], \"meta\": {\"answer\": \"b\"}}\n",
            ":1",
            "should be a string",
        ),
        (
            "not_object.jsonl",
            "[1, 2]\n",
            ":1",
            "expected a JSON object",
        ),
    ];
    for (name, text, line, what) in cases {
        let p = write(&dir, name, text);
        let err = load_text2text(&p, &spec).unwrap_err().to_string();
        let at = format!("{}{line}", p.display());
        assert!(err.contains(&at) && err.contains(what), "{name}: {err}");
    }
    let p = write(&dir, "blank.jsonl", "\n\n");
    assert!(load_text2text(&p, &spec)
        .unwrap_err()
        .to_string()
        .contains("empty dataset"));

    // CSV with quoting; a missing column names the header line and the columns present.
    let csv_spec = Text2TextSpec {
        format: None,
        source_field: "src".into(),
        target_field: "tgt".into(),
    };
    let p = write(&dir, "d.csv", "src,tgt\n\"a, b\",c\nd,\n");
    let err = load_text2text(&p, &csv_spec).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:3", p.display())) && err.contains("empty target"),
        "{err}"
    );
    let p = write(&dir, "ok.csv", "src,tgt\n\"a, b\",c\n");
    let rows = load_text2text(&p, &csv_spec).unwrap();
    assert_eq!(
        (rows[0].source.as_str(), rows[0].target.as_str()),
        ("a, b", "c")
    );
    let p = write(&dir, "nocol.csv", "src,label\na,b\n");
    let err = load_text2text(&p, &csv_spec).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:1", p.display()))
            && err.contains("`tgt`")
            && err.contains("label"),
        "{err}"
    );
    // Format from the spec overrides the extension.
    let p = write(&dir, "data.txt", "src\ttgt\na\tb\n");
    assert!(load_text2text(&p, &csv_spec).is_err());
    let tsv = Text2TextSpec {
        format: Some(FileFormat::Tsv),
        ..csv_spec
    };
    assert_eq!(load_text2text(&p, &tsv).unwrap()[0].target, "b");
}

//! Prompt → completion pairs for causal LMs: verbalisers over the real loaders, custom JSONL
//! files and their errors, chat templates against transformers, and metrics on generations.

use std::path::{Path, PathBuf};

use adept_data::causal::{
    exact_match, load_prompt_completion, parse_generated, parse_generated_score, score_generated,
    ChatError, ChatMessage, ChatTemplate, LmExample, PromptCompletionSpec, Verbalizer,
};
use adept_data::{load_file, load_official, DataError, Example, OfficialSplit, Target, TaskKind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|w| w.to_string()).collect()
}

// ---------------------------------------------------------------- verbalisers

#[test]
fn sst2_dev_file_becomes_prompt_completion_pairs() {
    let dev = load_official(TaskKind::Sst2, &fixtures().join("glue"), OfficialSplit::Dev).unwrap();
    let v = Verbalizer::for_task(TaskKind::Sst2);
    let lm = v.verbalize_all(&dev).unwrap();
    assert_eq!(lm.len(), dev.len());
    // The first two rows of tests/fixtures/glue/SST-2/dev.tsv: "a small gem \t1", "flat and lifeless \t0".
    assert_eq!(
        lm[0],
        LmExample {
            prompt: "Review: a small gem \nSentiment:".into(),
            completion: " positive".into(),
            label: Some(1),
            target: None,
        }
    );
    assert_eq!(lm[1].prompt, "Review: flat and lifeless \nSentiment:");
    assert_eq!(lm[1].completion, " negative");
    assert_eq!(lm[1].label, Some(0));
}

#[test]
fn pair_tasks_fill_every_field_in_template_order() {
    let cb = load_official(
        TaskKind::Cb,
        &fixtures().join("superglue"),
        OfficialSplit::Dev,
    )
    .unwrap();
    let lm = Verbalizer::for_task(TaskKind::Cb)
        .verbalize(&cb[0])
        .unwrap();
    assert_eq!(
        lm.prompt,
        "Premise: It was raining, so I stayed in.\nHypothesis: I stayed in\nDoes the premise entail the hypothesis? Answer:"
    );
    // CB's class order is entailment, contradiction, neutral → yes, no, maybe.
    assert_eq!(lm.completion, " yes");
    let v = Verbalizer::for_task(TaskKind::Cb);
    assert_eq!(v.completion(&Target::Class(1)).unwrap(), " no");
    assert_eq!(v.completion(&Target::Class(2)).unwrap(), " maybe");
    // MNLI's order differs: entailment, neutral, contradiction.
    let m = Verbalizer::for_task(TaskKind::Mnli);
    assert_eq!(m.label_words, words(&[" yes", " maybe", " no"]));
}

#[test]
fn stsb_completion_is_the_score_with_one_decimal() {
    let dev = load_official(TaskKind::Stsb, &fixtures().join("glue"), OfficialSplit::Dev).unwrap();
    let v = Verbalizer::for_task(TaskKind::Stsb);
    assert!(v.is_regression());
    let lm = v.verbalize(&dev[0]).unwrap();
    assert_eq!(
        lm.prompt,
        "Sentence 1: Sentence 0 a.\nSentence 2: Sentence 0 b.\nSimilarity from 0 to 5:"
    );
    assert_eq!(lm.completion, " 4.0");
    assert_eq!((lm.label, lm.target), (None, Some(4.0)));
    assert_eq!(v.completion(&Target::Score(3.75)).unwrap(), " 3.8");
    assert_eq!(v.completion(&Target::Score(2.5)).unwrap(), " 2.5");
    // A class on a regression verbaliser is refused.
    assert!(v.completion(&Target::Class(1)).is_err());
}

#[test]
fn unlabelled_examples_get_an_empty_completion() {
    let test = load_file(TaskKind::Sst2, &fixtures().join("glue/SST-2/test.tsv")).unwrap();
    let lm = Verbalizer::for_task(TaskKind::Sst2)
        .verbalize(&test[0])
        .unwrap();
    assert_eq!(lm.prompt, "Review: an odd little movie .\nSentiment:");
    assert_eq!(
        (lm.completion.as_str(), lm.label, lm.target),
        ("", None, None)
    );
}

#[test]
fn verbaliser_errors_name_the_problem() {
    let e = Example::new(vec![("sentence".into(), "x".into())], Target::Class(5));
    let err = Verbalizer::for_task(TaskKind::Sst2)
        .verbalize_all(&[e])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("example 0") && msg.contains("class 5"),
        "{msg}"
    );
    let v = Verbalizer::new("Q: {question}\nA:", words(&[" no", " yes"])).unwrap();
    let e = Example::new(vec![("sentence".into(), "x".into())], Target::Class(0));
    let msg = v.verbalize(&e).unwrap_err().to_string();
    assert!(
        msg.contains("`question`") && msg.contains("sentence"),
        "{msg}"
    );
    // Field text with braces is inserted verbatim, never treated as a placeholder.
    let e = Example::new(vec![("question".into(), "{x}".into())], Target::Class(1));
    assert_eq!(v.verbalize(&e).unwrap().prompt, "Q: {x}\nA:");
    assert!(Verbalizer::new("{a", vec![]).is_err());
}

#[test]
fn custom_dataset_verbaliser() {
    let spec = adept_data::CustomSpec::classification(&["review", "summary"], "sentiment");
    let ds = adept_data::load_custom(&fixtures().join("custom/reviews.csv"), &spec).unwrap();
    let v = Verbalizer::for_custom(&ds, &spec.text_fields).unwrap();
    assert_eq!(v.template, "Review: {review}\nSummary: {summary}\nAnswer:");
    assert_eq!(v.label_words, words(&[" neg", " neutral", " pos"]));
    let lm = v.verbalize(&ds.examples[0]).unwrap();
    assert_eq!(
        lm.prompt,
        "Review: Great phone, fast and light\nSummary: Loved it\nAnswer:"
    );
    assert_eq!(lm.completion, " pos");
}

// ---------------------------------------------------------------- custom JSONL

#[test]
fn jsonl_pairs_with_crlf_bom_blank_lines_and_renamed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "pairs.jsonl",
        "\u{feff}{\"prompt\": \"Translate: chat\", \"completion\": \" cat\"}\r\n\r\n{\"prompt\": \"\", \"completion\": \"héllo\\nworld\", \"extra\": 1}\r\n"
            .as_bytes(),
    );
    let xs = load_prompt_completion(&p, &PromptCompletionSpec::default()).unwrap();
    assert_eq!(
        xs,
        vec![
            LmExample::new("Translate: chat", " cat"),
            LmExample::new("", "héllo\nworld"),
        ]
    );
    let q = write(
        &dir,
        "qa.jsonl",
        b"{\"input\": {\"q\": \"2+2?\"}, \"output\": \" 4\"}\n",
    );
    let spec = PromptCompletionSpec {
        prompt_field: "input.q".into(),
        completion_field: "output".into(),
    };
    assert_eq!(
        load_prompt_completion(&q, &spec).unwrap(),
        vec![LmExample::new("2+2?", " 4")]
    );
}

fn jsonl_error(body: &[u8]) -> (String, DataError) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "bad.jsonl", body);
    let err = load_prompt_completion(&p, &PromptCompletionSpec::default()).unwrap_err();
    (p.display().to_string(), err)
}

#[test]
fn jsonl_errors_name_file_and_line() {
    let ok = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            format!("{ok}{{\"prompt\": \"a\"}}\n").into_bytes(),
            ":2: missing column `completion` (available: prompt)",
        ),
        (
            format!("{ok}\n{{\"prompt\": \"a\", \"completion\": 3}}\n").into_bytes(),
            ":3: field `completion` should be a string, found a number",
        ),
        (
            format!("{ok}{{\"prompt\": null, \"completion\": \"x\"}}").into_bytes(),
            ":2: field `prompt` should be a string, found null",
        ),
        (
            format!("{ok}{{\"prompt\": \"a\", \"completion\": \"  \"}}\r\n").into_bytes(),
            ":2: empty completion",
        ),
        (
            format!("{ok}{ok}{{\"prompt\": \"a\", \"completion\": \"b\"\n").into_bytes(),
            ":3: invalid JSON",
        ),
        (
            format!("{ok}[1, 2]\n").into_bytes(),
            ":2: expected a JSON object, found an array",
        ),
    ];
    for (body, want) in cases {
        let (path, err) = jsonl_error(&body);
        let msg = err.to_string();
        assert!(msg.starts_with(&path), "{msg}");
        assert!(msg.contains(want), "want {want:?} in {msg}");
    }
    // Invalid UTF-8 on line 2 (a Latin-1 "é").
    let mut body = ok.as_bytes().to_vec();
    body.extend_from_slice(b"{\"prompt\": \"caf\xe9\", \"completion\": \"x\"}\n");
    let (path, err) = jsonl_error(&body);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{path}:2: invalid UTF-8 at byte 16")),
        "{msg}"
    );
    // Empty and missing files.
    let (_, err) = jsonl_error(b"\n\r\n");
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
    let err = load_prompt_completion(Path::new("/nonexistent/x.jsonl"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/x.jsonl") && err.contains("does not exist"),
        "{err}"
    );
}

// ---------------------------------------------------------------- chat templates

fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/chat_templates/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn template(r: &serde_json::Value, name: &str) -> ChatTemplate {
    ChatTemplate::new(
        r["templates"][name].as_str().unwrap(),
        r["bos_token"].as_str(),
        r["eos_token"].as_str(),
    )
    .unwrap()
}

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// Every (template, conversation, add_generation_prompt) rendering equals transformers'
/// `apply_chat_template(…, tokenize=False)` byte for byte.
#[test]
fn renderings_match_transformers() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 15);
    for c in cases {
        let t = template(&r, c["template"].as_str().unwrap());
        let got = t
            .render(
                &messages(&c["messages"]),
                c["add_generation_prompt"].as_bool().unwrap(),
            )
            .unwrap();
        assert_eq!(
            got,
            c["expected"].as_str().unwrap(),
            "{} / {}",
            c["template"],
            c["case"]
        );
    }
}

#[test]
fn raise_exception_surfaces_the_templates_message() {
    let r = reference();
    let t = template(&r, "llama2_style");
    let err = t
        .render(&messages(&r["raises"]["messages"]), false)
        .unwrap_err();
    let ChatError::Render(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains(r["raises"]["message"].as_str().unwrap()),
        "{msg}"
    );
}

#[test]
fn smollm2_prompt_and_completion() {
    let r = reference();
    let t = template(&r, "smollm2");
    assert_eq!(t.end_of_turn(), "<|im_end|>");
    let ex = LmExample {
        prompt: "Review: a gorgeous, witty, seductive movie.\nSentiment:".into(),
        completion: " positive".into(),
        label: Some(1),
        target: None,
    };
    let chat = t.apply(&ex, None).unwrap();
    let case = |name: &str| -> String {
        r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["template"] == "smollm2" && c["case"] == name)
            .unwrap()["expected"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The prompt is transformers' rendering with the generation prompt ...
    assert_eq!(chat.prompt, case("user_gen"));
    // ... and prompt + completion is its rendering of the conversation with the reply
    // (content without the leading space), minus the "\n" between turns.
    assert_eq!(chat.completion, "positive<|im_end|>");
    let mut with_reply = r["cases"].as_array().unwrap()[0]["messages"].clone();
    with_reply
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"role": "assistant", "content": "positive"}));
    let full = t.render(&messages(&with_reply), false).unwrap();
    assert_eq!(format!("{}{}\n", chat.prompt, chat.completion), full);
    assert_eq!(chat.label, Some(1));
    assert_eq!(
        t.label_words(&words(&[" negative", " positive"])).unwrap(),
        words(&["negative", "positive"])
    );
    // With a system message the default one is not inserted.
    let p = t
        .prompt(Some("Answer with one word."), "Is it? ünïcödé ✓")
        .unwrap();
    assert_eq!(
        p,
        r["cases"].as_array().unwrap()[3]["expected"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn end_of_turn_of_other_templates() {
    let r = reference();
    // Llama-2 style: " </s>" closes the turn, the content is trimmed by the template.
    let t = template(&r, "llama2_style");
    assert_eq!(t.end_of_turn(), " </s>");
    let ex = LmExample::new(
        "Review: a gorgeous, witty, seductive movie.\nSentiment:",
        " positive",
    );
    let chat = t.apply(&ex, None).unwrap();
    let expected_full = r["cases"].as_array().unwrap()[7]["expected"]
        .as_str()
        .unwrap();
    assert_eq!(format!("{}{}", chat.prompt, chat.completion), expected_full);
    assert_eq!(chat.completion, " positive </s>");
    // Zephyr style: "</s>" then "\n" between turns.
    let z = template(&r, "zephyr_style");
    assert_eq!(z.end_of_turn(), "</s>");
    assert_eq!(z.apply(&ex, None).unwrap().completion, "positive</s>");
    // Unlabelled: no completion.
    assert_eq!(
        z.apply(&LmExample::new("q", ""), None).unwrap().completion,
        ""
    );
}

#[test]
fn unusable_templates_are_refused() {
    let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
    assert!(matches!(err, ChatError::Syntax(_)), "{err}");
    // A template that ignores the assistant's content.
    let err = ChatTemplate::new(
        "{% for m in messages %}[{{ m.role }}]{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
        None,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unusable"), "{err}");
    // Python string methods (pycompat) and loop controls, as HF templates use them.
    let t = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}",
        None,
        None,
    )
    .unwrap();
    let got = t
        .render(
            &[
                ChatMessage::new("system", "s"),
                ChatMessage::new("user", "  hi  "),
            ],
            false,
        )
        .unwrap();
    assert_eq!(got, "HI|");
}

#[test]
fn tokenizer_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference();
    let cfg = serde_json::json!({
        "chat_template": [{"name": "default", "template": r["templates"]["llama2_style"]}],
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
    });
    let p = write(&dir, "tokenizer_config.json", cfg.to_string().as_bytes());
    let t = ChatTemplate::from_tokenizer_config(&p).unwrap();
    assert!(t.prompt(None, "x").unwrap().starts_with("<s>[INST] x"));
    let p = write(&dir, "none.json", b"{\"eos_token\": \"</s>\"}");
    let err = ChatTemplate::from_tokenizer_config(&p)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none.json") && err.contains("no `chat_template`"),
        "{err}"
    );
}

// ---------------------------------------------------------------- generations → metrics

#[test]
fn generated_text_to_class() {
    let w = words(&[" negative", " positive"]);
    assert_eq!(parse_generated(" positive", &w), Some(1));
    assert_eq!(parse_generated("Negative\nReview: next", &w), Some(0));
    assert_eq!(parse_generated("  POSITIVE  \n", &w), Some(1));
    assert_eq!(parse_generated(" positively", &w), None);
    assert_eq!(
        parse_generated("\npositive", &w),
        None,
        "first line is empty"
    );
    assert_eq!(parse_generated("", &w), None);
    assert_eq!(parse_generated_score(" 3.8\n"), Some(3.8));
    assert_eq!(parse_generated_score("4"), Some(4.0));
    assert_eq!(parse_generated_score("3.8 out of 5"), None);
    assert_eq!(parse_generated_score("NaN"), None);
}

#[test]
fn generated_text_scored_by_hand() {
    // SST-2, 4 golds [1, 0, 1, 0]; generations: right, right, not a label word, wrong.
    let gold = |c| Example::new(vec![("sentence".into(), "s".into())], Target::Class(c));
    let golds = [gold(1), gold(0), gold(1), gold(0)];
    let gens = words(&[" positive", " Negative.\n", " great", " positive"]);
    let v = Verbalizer::for_task(TaskKind::Sst2);
    let spec = TaskKind::Sst2.spec().metric_spec();
    let s = score_generated(&v, &spec, &gens, &golds).unwrap();
    // "Negative." is not "negative": only one of four right → 0.25.
    assert_eq!(s.values["accuracy"], 0.25);
    let gens = words(&[" positive", " Negative\n", " great", " positive"]);
    assert_eq!(
        score_generated(&v, &spec, &gens, &golds).unwrap().values["accuracy"],
        0.5
    );

    // MNLI (3 classes): golds [0, 1, 2]; " maybe" → 1 right, "unknown" invalid, " no" → 2 right.
    let golds: Vec<Example> = (0..3)
        .map(|c| {
            Example::new(
                vec![
                    ("premise".into(), "p".into()),
                    ("hypothesis".into(), "h".into()),
                ],
                Target::Class(c),
            )
        })
        .collect();
    let gens = words(&["unknown", " maybe", " no"]);
    let s = score_generated(
        &Verbalizer::for_task(TaskKind::Mnli),
        &TaskKind::Mnli.spec().metric_spec(),
        &gens,
        &golds,
    )
    .unwrap();
    assert!((s.values["accuracy"] - 2.0 / 3.0).abs() < 1e-12);

    // STS-B: golds [1, 2, 3, 4]; generations 1.0, 2.0, 3.0, and "four" (unparsable → −1).
    let golds: Vec<Example> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .map(|&s| {
            Example::new(
                vec![
                    ("sentence1".into(), "a".into()),
                    ("sentence2".into(), "b".into()),
                ],
                Target::Score(s),
            )
        })
        .collect();
    let gens = words(&[" 1.0", " 2.0", " 3.0", "four"]);
    let s = score_generated(
        &Verbalizer::for_task(TaskKind::Stsb),
        &TaskKind::Stsb.spec().metric_spec(),
        &gens,
        &golds,
    )
    .unwrap();
    // Pearson of x = [1, 2, 3, −1], y = [1, 2, 3, 4]: mean x 1.25, mean y 2.5;
    // Σdxdy = (−.25)(−1.5)+(.75)(−.5)+(1.75)(.5)+(−2.25)(1.5) = .375−.375+.875−3.375 = −2.5;
    // Σdx² = .0625+.5625+3.0625+5.0625 = 8.75; Σdy² = 5 → r = −2.5/√43.75.
    let want = -2.5 / 43.75f64.sqrt();
    assert!((s.values["pearson"] - want).abs() < 1e-6, "{:?}", s.values);
    // Spearman: ranks x [2, 3, 4, 1] vs y [1, 2, 3, 4], both mean 2.5:
    // Σdxdy = (−.5)(−1.5)+(.5)(−.5)+(1.5)(.5)+(−1.5)(1.5) = −1, Σdx² = Σdy² = 5 → −0.2.
    assert!((s.values["spearman"] + 0.2).abs() < 1e-12, "{:?}", s.values);

    // Custom pairs: exact match of first lines.
    assert_eq!(
        exact_match(&words(&[" cat\nmore", "dog"]), &words(&[" cat", "Dog"])).unwrap(),
        0.5
    );
    assert!(exact_match(&[], &[]).is_err());
}

// ---------------------------------------------------------------- real data

/// Every task whose official dev file is in the real GLUE/SuperGLUE folder verbalises in full:
/// prompts are the template filled in, completions the class's label word or the score.
/// Skips without the data (fails under `ADEPT_REQUIRE_MODEL=1`).
#[test]
fn real_dev_files_verbalise() {
    let Some(root) = adept_testkit::glue_dir("real_dev_files_verbalise") else {
        return;
    };
    let mut done = Vec::new();
    for task in TaskKind::ALL {
        let dir = adept_data::resolve_task_dir(task, &root);
        let file = dir.join(task.spec().file_name(OfficialSplit::Dev).unwrap());
        if !file.is_file() {
            continue;
        }
        let dev = load_official(task, &root, OfficialSplit::Dev).unwrap();
        let v = Verbalizer::for_task(task);
        let lm = v
            .verbalize_all(&dev)
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        for (e, x) in dev.iter().zip(&lm) {
            let last_field = e.fields.last().unwrap().1.as_str();
            assert!(x.prompt.contains(last_field), "{task}: {x:?}");
            match e.label {
                Target::Class(c) => assert_eq!(x.completion, v.label_words[c]),
                Target::Score(s) => assert_eq!(x.completion, format!(" {s:.1}")),
                Target::None => panic!("{task}: unlabelled dev example"),
            }
        }
        done.push(task);
    }
    assert!(
        done.len() >= 5,
        "only {done:?} have dev files under {}",
        root.display()
    );
}

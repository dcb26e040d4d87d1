//! Prompt templates and label words: the table [`VERBALIZERS`] and its renderer.

use crate::custom::CustomDataset;
use crate::error::{DataError, Result};
use crate::example::{Example, Target};
use crate::task::TaskKind;

use super::LmExample;

/// `(task, prompt template, label words in class-id order)`. Templates name the task's fields
/// ([`TaskSpec::fields`](crate::TaskSpec::fields)) as `{field}`; every label word starts with a
/// space (see the module docs) and is one word, so that a word's first token rarely starts
/// another. STS-B has no label words: its completion is the score (see [`Verbalizer`]).
///
/// | task | label words (class order) |
/// |---|---|
/// | sst2 | negative, positive |
/// | cola | no, yes (unacceptable, acceptable) |
/// | mrpc, qqp | no, yes |
/// | mnli | yes, maybe, no (entailment, neutral, contradiction) |
/// | qnli, rte | yes, no (entailment, not_entailment) |
/// | cb | yes, no, maybe (entailment, contradiction, neutral) |
/// | boolq, wic, wsc, multirc | no, yes (False, True) |
pub static VERBALIZERS: [(TaskKind, &str, &[&str]); 13] = [
    (
        TaskKind::Sst2,
        "Review: {sentence}\nSentiment:",
        &[" negative", " positive"],
    ),
    (
        TaskKind::Cola,
        "Sentence: {sentence}\nIs this sentence grammatical? Answer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Mrpc,
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDo both sentences mean the same thing? Answer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Stsb,
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nSimilarity from 0 to 5:",
        &[],
    ),
    (
        TaskKind::Qqp,
        "Question 1: {question1}\nQuestion 2: {question2}\nDo both questions ask the same thing? Answer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Mnli,
        "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis? Answer:",
        &[" yes", " maybe", " no"],
    ),
    (
        TaskKind::Qnli,
        "Question: {question}\nSentence: {sentence}\nDoes the sentence answer the question? Answer:",
        &[" yes", " no"],
    ),
    (
        TaskKind::Rte,
        "Premise: {sentence1}\nHypothesis: {sentence2}\nDoes the premise entail the hypothesis? Answer:",
        &[" yes", " no"],
    ),
    (
        TaskKind::Boolq,
        "Passage: {passage}\nQuestion: {question}?\nAnswer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Cb,
        "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis? Answer:",
        &[" yes", " no", " maybe"],
    ),
    (
        TaskKind::Wic,
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nIs the word \"{word}\" used with the same meaning in both sentences? Answer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Wsc,
        "Text: {text}\nClaim: {reference}.\nIs the claim true? Answer:",
        &[" no", " yes"],
    ),
    (
        TaskKind::Multirc,
        "Paragraph: {paragraph}\nQuestion: {question}\nCandidate answer: {answer}\nIs the candidate answer correct? Answer:",
        &[" no", " yes"],
    ),
];

/// A prompt template and the label words of a classification task, or a regression task's
/// score completion.
///
/// * **Template**: `{name}` is replaced by the example's field `name`; every other character
///   is copied (field texts are inserted verbatim, never re-scanned). A name that the example
///   lacks is an error naming the template, the field and the fields available.
/// * **Classification**: the completion is `label_words[class]`.
/// * **Regression** (`label_words` empty): the completion is `" "` + the score with one
///   decimal (`3.75` → `" 3.8"`, [`Target::to_text`]'s rounding). It is scored by generation
///   only ([`score_generated`](super::score_generated)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbalizer {
    pub template: String,
    /// One per class, in class-id order; empty for regression.
    pub label_words: Vec<String>,
}

impl Verbalizer {
    /// A verbaliser of the caller's: `label_words` empty means regression. Refuses a template
    /// with an unclosed `{`, an empty `{}`, duplicate label words (after trimming, ignoring case,
    /// since generated text is compared that way) or an empty one.
    pub fn new(template: impl Into<String>, label_words: Vec<String>) -> Result<Self> {
        let template = template.into();
        placeholders(&template)?;
        let mut seen: Vec<String> = Vec::new();
        for w in &label_words {
            let key = w.trim().to_lowercase();
            if key.is_empty() {
                return Err(DataError::Invalid(format!(
                    "label word {w:?} is empty: every class needs a non-empty word"
                )));
            }
            if seen.contains(&key) {
                return Err(DataError::Invalid(format!(
                    "label word {w:?} appears twice (label words are compared trimmed and \
                     case-insensitively): give every class its own word"
                )));
            }
            seen.push(key);
        }
        Ok(Self {
            template,
            label_words,
        })
    }

    /// The built-in verbaliser of a task (the row of [`VERBALIZERS`]).
    pub fn for_task(task: TaskKind) -> Self {
        let (_, template, words) = VERBALIZERS
            .iter()
            .find(|(k, _, _)| *k == task)
            .expect("every task has a row in VERBALIZERS");
        Self {
            template: template.to_string(),
            label_words: words.iter().map(|w| w.to_string()).collect(),
        }
    }

    /// A verbaliser for a custom CSV/TSV/JSONL dataset ([`crate::load_custom`]): the text
    /// fields as `"{Field}: {field}"` lines, then `"Answer:"`; label words are `" "` + the
    /// dataset's label names (regression: the score).
    pub fn for_custom(data: &CustomDataset, text_fields: &[String]) -> Result<Self> {
        let mut template = String::new();
        for f in text_fields {
            if f.contains(['{', '}']) {
                return Err(DataError::Invalid(format!(
                    "text field name `{f}` contains a brace; it cannot be a template placeholder"
                )));
            }
            template.push_str(&format!("{}: {{{f}}}\n", capitalise(f)));
        }
        template.push_str("Answer:");
        let words = if data.regression {
            Vec::new()
        } else {
            data.labels.iter().map(|l| format!(" {l}")).collect()
        };
        Self::new(template, words)
    }

    /// Regression (a score completion) rather than classification.
    pub fn is_regression(&self) -> bool {
        self.label_words.is_empty()
    }

    /// The prompt of an example: the template with its fields filled in.
    pub fn prompt(&self, example: &Example) -> Result<String> {
        let mut out = String::with_capacity(self.template.len() + example.char_len());
        let mut rest = self.template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| unclosed(&self.template))?;
            let name = &rest[open + 1..close];
            let value = example.field(name).ok_or_else(|| {
                DataError::Invalid(format!(
                    "prompt template {:?} uses field `{name}`, which the example does not have \
                     (fields: {})",
                    self.template,
                    example
                        .fields
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            out.push_str(value);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The completion for a target: the class's label word, the score's text (`" 3.8"`), or
    /// `""` for an unlabelled example. A class outside the label words, or a class on a
    /// regression verbaliser (and vice versa), is an error.
    pub fn completion(&self, target: &Target) -> Result<String> {
        match (*target, self.is_regression()) {
            (Target::None, _) => Ok(String::new()),
            (Target::Class(c), false) => self.label_words.get(c).cloned().ok_or_else(|| {
                DataError::Invalid(format!(
                    "class {c} has no label word (the verbaliser has {}: {:?})",
                    self.label_words.len(),
                    self.label_words
                ))
            }),
            (Target::Score(s), true) => Ok(format!(" {s:.1}")),
            (Target::Class(c), true) => Err(DataError::Invalid(format!(
                "class {c} given to a regression verbaliser (no label words)"
            ))),
            (Target::Score(s), false) => Err(DataError::Invalid(format!(
                "score {s} given to a classification verbaliser (label words {:?})",
                self.label_words
            ))),
        }
    }

    /// The [`LmExample`] of an example: prompt, completion, and its class or score.
    pub fn verbalize(&self, example: &Example) -> Result<LmExample> {
        Ok(LmExample {
            prompt: self.prompt(example)?,
            completion: self.completion(&example.label)?,
            label: example.label.class(),
            target: example.label.score(),
        })
    }

    /// [`verbalize`](Self::verbalize) over a list; an error names the example's index.
    pub fn verbalize_all(&self, examples: &[Example]) -> Result<Vec<LmExample>> {
        examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                self.verbalize(e)
                    .map_err(|err| DataError::Invalid(format!("example {i}: {err}")))
            })
            .collect()
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn unclosed(template: &str) -> DataError {
    DataError::Invalid(format!(
        "prompt template {template:?} has a `{{` without a closing `}}`"
    ))
}

/// The placeholder names of a template, in order.
pub(crate) fn placeholders(template: &str) -> Result<Vec<&str>> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| unclosed(template))?;
        let name = &rest[open + 1..close];
        if name.is_empty() || name.contains('{') {
            return Err(DataError::Invalid(format!(
                "prompt template {template:?} has an empty or nested placeholder `{{{name}}}`"
            )));
        }
        names.push(name);
        rest = &rest[close + 1..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_task_specs() {
        for kind in TaskKind::ALL {
            let spec = kind.spec();
            let v = Verbalizer::for_task(kind);
            let mut names = placeholders(&v.template).unwrap();
            names.sort();
            let mut fields = spec.fields.to_vec();
            fields.sort();
            assert_eq!(names, fields, "{kind}: every field used exactly once");
            assert_eq!(v.is_regression(), spec.is_regression, "{kind}");
            if !spec.is_regression {
                assert_eq!(v.label_words.len(), spec.label_names.len(), "{kind}");
                // Valid by Verbalizer::new's rules (distinct, non-empty), leading space.
                Verbalizer::new(v.template.clone(), v.label_words.clone()).unwrap();
                assert!(v.label_words.iter().all(|w| w.starts_with(' ')), "{kind}");
            }
        }
        assert_eq!(VERBALIZERS.len(), TaskKind::ALL.len());
    }

    #[test]
    fn template_errors() {
        assert!(placeholders("a {b").is_err());
        assert!(placeholders("a {} b").is_err());
        assert_eq!(placeholders("{a} x {b}").unwrap(), ["a", "b"]);
        let dup = Verbalizer::new("{a}", vec![" Yes".into(), "yes ".into()]).unwrap_err();
        assert!(dup.to_string().contains("twice"), "{dup}");
    }
}

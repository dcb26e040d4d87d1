//! One example: named text fields, a target and an optional group.
//!
//! The same example serves two kinds of model:
//! * **text-to-text** (T5, decoder LMs): [`Example::template_text`] renders
//!   `"sentence1: … sentence2: …"` (the authors' templates, no task prefix) and
//!   [`Example::target_text`] the string the model must generate (`"0"`, `"1"`, `"2"`, or the
//!   STS-B score rounded to one decimal);
//! * **encoder classifiers** (BERT family): [`Example::text_a`] / [`Example::text_b`] give the
//!   sentence pair, and [`Example::label`] the class id or score.
//!
//! Truncation of over-long inputs is the tokenizer's job; [`Example::char_len`] is there for
//! statistics and warnings.

use serde::{Deserialize, Serialize};

/// What an example should be mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// A class id in `0..num_labels` (index into the task's label names).
    Class(usize),
    /// A regression score (STS-B: 0–5).
    Score(f32),
    /// No label: official test files and prediction inputs.
    None,
}

impl Target {
    /// The text a text-to-text model is trained to generate: the class id as a decimal
    /// integer (`"0"`, `"1"`, `"2"`), or the score rounded to one decimal (`3.75` → `"3.8"`,
    /// `5.0` → `"5.0"`; ties at exactly representable halves go to even like Python's
    /// `round`). `None` for unlabelled examples.
    pub fn to_text(&self) -> Option<String> {
        match *self {
            Target::Class(c) => Some(c.to_string()),
            Target::Score(s) => Some(format!("{s:.1}")),
            Target::None => None,
        }
    }

    /// Parses generated text back into a target (inverse of [`Target::to_text`]).
    ///
    /// Classification: a decimal class id below `label_names.len()`, or one of the label names
    /// (exact match); regression (`regression == true`): any finite float. Anything else gives
    /// [`Target::None`], which the metrics count as a wrong prediction. Surrounding whitespace
    /// is ignored.
    pub fn parse_text(text: &str, label_names: &[&str], regression: bool) -> Target {
        let text = text.trim();
        if regression {
            return match text.parse::<f32>() {
                Ok(v) if v.is_finite() => Target::Score(v),
                _ => Target::None,
            };
        }
        if let Ok(c) = text.parse::<usize>() {
            if c < label_names.len() {
                return Target::Class(c);
            }
        }
        label_names
            .iter()
            .position(|n| *n == text)
            .map_or(Target::None, Target::Class)
    }

    /// The class id, if this is a class.
    pub fn class(&self) -> Option<usize> {
        match *self {
            Target::Class(c) => Some(c),
            _ => None,
        }
    }

    /// The score, if this is a score.
    pub fn score(&self) -> Option<f32> {
        match *self {
            Target::Score(s) => Some(s),
            _ => None,
        }
    }

    /// Whether a label is present.
    pub fn is_some(&self) -> bool {
        !matches!(self, Target::None)
    }
}

/// One example: ordered named text fields, a target, and a group id (MultiRC question).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// `(field name, text)` in template order, e.g. `[("premise", …), ("hypothesis", …)]`.
    pub fields: Vec<(String, String)>,
    /// The label, or [`Target::None`] for unlabelled files.
    pub label: Target,
    /// Group id for per-group metrics: MultiRC `"{passage idx}-{question idx}"`.
    pub group: Option<String>,
}

impl Example {
    /// An example without a group.
    pub fn new(fields: Vec<(String, String)>, label: Target) -> Self {
        Self {
            fields,
            label,
            group: None,
        }
    }

    /// Builder-style setter for [`Example::group`].
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The text of the field called `name`, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// First segment for a pair encoder: the first field's text (empty if there are no fields).
    pub fn text_a(&self) -> &str {
        self.fields.first().map_or("", |(_, v)| v.as_str())
    }

    /// Second segment for a pair encoder: the remaining fields' texts joined with a single
    /// space, or `None` for single-sentence tasks.
    pub fn text_b(&self) -> Option<String> {
        if self.fields.len() < 2 {
            return None;
        }
        Some(
            self.fields[1..]
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// The text-to-text input: `"name1: text1 name2: text2 …"` (fields in order, joined with
    /// single spaces, no task prefix), as in the authors' T5 code.
    pub fn template_text(&self) -> String {
        self.fields
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text-to-text target (see [`Target::to_text`]); `None` when unlabelled.
    pub fn target_text(&self) -> Option<String> {
        self.label.to_text()
    }

    /// Total length in Unicode scalar values (chars) of all field texts (names excluded).
    pub fn char_len(&self) -> usize {
        self.fields.iter().map(|(_, v)| v.chars().count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Example {
        Example::new(
            vec![
                ("premise".into(), "A man sleeps.".into()),
                ("hypothesis".into(), "A man is awake.".into()),
            ],
            Target::Class(2),
        )
    }

    #[test]
    fn texts_and_templates() {
        let e = pair();
        assert_eq!(e.text_a(), "A man sleeps.");
        assert_eq!(e.text_b().as_deref(), Some("A man is awake."));
        assert_eq!(
            e.template_text(),
            "premise: A man sleeps. hypothesis: A man is awake."
        );
        assert_eq!(e.target_text().as_deref(), Some("2"));
        assert_eq!(e.char_len(), 13 + 15);
        assert_eq!(e.field("hypothesis"), Some("A man is awake."));

        let three = Example::new(
            vec![
                ("question".into(), "q".into()),
                ("answer".into(), "a".into()),
                ("paragraph".into(), "p".into()),
            ],
            Target::None,
        );
        assert_eq!(three.text_b().as_deref(), Some("a p"));
        assert_eq!(three.target_text(), None);

        let single = Example::new(vec![("sentence".into(), "héllo".into())], Target::Class(1));
        assert_eq!(single.text_b(), None);
        assert_eq!(single.char_len(), 5);
    }

    #[test]
    fn score_text_rounds_to_one_decimal() {
        assert_eq!(Target::Score(3.75).to_text().as_deref(), Some("3.8"));
        assert_eq!(Target::Score(2.25).to_text().as_deref(), Some("2.2"));
        assert_eq!(Target::Score(5.0).to_text().as_deref(), Some("5.0"));
        assert_eq!(Target::Score(0.0).to_text().as_deref(), Some("0.0"));
        assert_eq!(Target::Score(3.8).to_text().as_deref(), Some("3.8"));
    }

    #[test]
    fn parse_text() {
        let names = ["negative", "positive"];
        assert_eq!(Target::parse_text(" 1 ", &names, false), Target::Class(1));
        assert_eq!(Target::parse_text("2", &names, false), Target::None);
        assert_eq!(
            Target::parse_text("positive", &names, false),
            Target::Class(1)
        );
        assert_eq!(Target::parse_text("great", &names, false), Target::None);
        assert_eq!(Target::parse_text("3.4", &[], true), Target::Score(3.4));
        assert_eq!(Target::parse_text("NaN", &[], true), Target::None);
        assert_eq!(Target::parse_text("x", &[], true), Target::None);
    }
}

//! From a model folder's `config.json` `model_type` to the family that loads it. A new family
//! adds one line to [`FAMILIES`]; nothing outside its folder and this line names it.

use crate::{CausalLm, Encoder, Seq2SeqLm};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::Path;

/// What kind of backbone a family is, with its loader.
#[derive(Clone, Copy)]
pub enum Loader {
    Encoder(fn(&Path, &Device) -> Result<Box<dyn Encoder>>),
    CausalLm(fn(&Path, &Device) -> Result<Box<dyn CausalLm>>),
    Seq2Seq(fn(&Path, &Device) -> Result<Box<dyn Seq2SeqLm>>),
}

impl Loader {
    /// `"encoder"` or `"causal-lm"`, as error messages and the manifest say it.
    pub fn kind(&self) -> &'static str {
        match self {
            Loader::Encoder(_) => "encoder",
            Loader::CausalLm(_) => "causal-lm",
            Loader::Seq2Seq(_) => "seq2seq",
        }
    }
}

/// One backbone family: the `model_type`s it loads and its loader.
pub struct Family {
    pub name: &'static str,
    pub model_types: &'static [&'static str],
    pub load: Loader,
}

/// Every family adept can train, in the order they are tried.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "bert",
        model_types: crate::bert::MODEL_TYPES,
        load: Loader::Encoder(crate::bert::load),
    },
    Family {
        name: "llama",
        model_types: crate::llama::MODEL_TYPES,
        load: Loader::CausalLm(crate::llama::load),
    },
    Family {
        name: "t5",
        model_types: crate::t5::MODEL_TYPES,
        load: Loader::Seq2Seq(crate::t5::load),
    },
];

/// The family that loads `model_type`, if any.
pub fn family_for(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
}

/// Every `model_type` some family loads.
pub fn known_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// `config.json`'s `model_type` in `dir`.
pub fn model_type_of(dir: &Path) -> Result<String> {
    if !dir.is_dir() {
        bail!(
            "model folder {} does not exist (a Hugging Face-layout folder with config.json, \
             model.safetensors and tokenizer.json; `adept fetch` caches the default one)",
            dir.display()
        );
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: a model folder needs the config.json of its checkpoint",
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    match json.get("model_type").and_then(|v| v.as_str()) {
        Some(t) => Ok(t.to_owned()),
        None => bail!(
            "{} has no \"model_type\"; add the checkpoint's type (one of: {})",
            path.display(),
            known_model_types().join(", ")
        ),
    }
}

/// The family `dir`'s `config.json` names, with its `model_type`.
pub fn family_of(dir: &Path) -> Result<(&'static Family, String)> {
    let model_type = model_type_of(dir)?;
    let Some(family) = family_for(&model_type) else {
        bail!(
            "{} has model_type {model_type:?}, which no adept backbone family loads; known: {}",
            dir.join("config.json").display(),
            known_model_types().join(", ")
        );
    };
    Ok((family, model_type))
}

fn context(dir: &Path, model_type: &str, family: &Family) -> String {
    format!(
        "loading {} as a {} model ({} family)",
        dir.display(),
        model_type,
        family.name
    )
}

/// Loads the frozen encoder in `dir` with the family its `config.json` names.
pub fn load_encoder(dir: &Path, device: &Device) -> Result<Box<dyn Encoder>> {
    let (family, model_type) = family_of(dir)?;
    match family.load {
        Loader::Encoder(load) => {
            load(dir, device).with_context(|| context(dir, &model_type, family))
        }
        other => bail!(
            "{} is a {} ({model_type}, {} family), not an encoder: train it with a {} \
             task (a verbalised task or a prompt/completion JSONL file)",
            dir.display(),
            other.kind(),
            family.name,
            if matches!(other, Loader::Seq2Seq(_)) {
                "text-to-text (seq2seq)"
            } else {
                "causal-LM"
            }
        ),
    }
}

/// Loads the frozen causal language model in `dir` with the family its `config.json` names.
pub fn load_causal_lm(dir: &Path, device: &Device) -> Result<Box<dyn CausalLm>> {
    let (family, model_type) = family_of(dir)?;
    match family.load {
        Loader::CausalLm(load) => {
            load(dir, device).with_context(|| context(dir, &model_type, family))
        }
        other => bail!(
            "{} is an {} ({model_type}, {} family), not a causal language model",
            dir.display(),
            other.kind(),
            family.name
        ),
    }
}

/// Loads the frozen encoder–decoder language model in `dir` with the family its `config.json`
/// names.
pub fn load_seq2seq(dir: &Path, device: &Device) -> Result<Box<dyn Seq2SeqLm>> {
    let (family, model_type) = family_of(dir)?;
    match family.load {
        Loader::Seq2Seq(load) => {
            load(dir, device).with_context(|| context(dir, &model_type, family))
        }
        other => bail!(
            "{} is a {} model ({model_type}, {} family), not an encoder-decoder (seq2seq) model",
            dir.display(),
            other.kind(),
            family.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        d
    }

    #[test]
    fn every_model_type_belongs_to_one_family() {
        let all = known_model_types();
        for t in &all {
            assert_eq!(all.iter().filter(|x| *x == t).count(), 1, "{t}");
        }
        assert_eq!(family_for("roberta").unwrap().name, "bert");
        assert!(family_for("gpt2").is_none());
    }

    #[test]
    fn unknown_missing_and_broken_configs_are_named() {
        let d = folder(r#"{"model_type": "gpt2", "hidden_size": 8}"#);
        let err = format!("{:#}", load_encoder(d.path(), &Device::Cpu).err().unwrap());
        assert!(
            err.contains("config.json") && err.contains("\"gpt2\""),
            "{err}"
        );
        assert!(err.contains("bert, roberta"), "{err}");

        let d = folder(r#"{"hidden_size": 8}"#);
        let err = format!("{:#}", load_encoder(d.path(), &Device::Cpu).err().unwrap());
        assert!(err.contains("no \"model_type\""), "{err}");

        let d = folder("{ not json");
        let err = format!("{:#}", load_encoder(d.path(), &Device::Cpu).err().unwrap());
        assert!(err.contains("config.json is not valid JSON"), "{err}");

        let d = tempfile::tempdir().unwrap();
        let err = format!("{:#}", load_encoder(d.path(), &Device::Cpu).err().unwrap());
        assert!(
            err.contains("cannot read") && err.contains("config.json"),
            "{err}"
        );

        let err = format!(
            "{:#}",
            load_encoder(&d.path().join("nope"), &Device::Cpu)
                .err()
                .unwrap()
        );
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_known_type_with_missing_weights_names_the_family_and_file() {
        let d = folder(
            r#"{"model_type": "roberta", "vocab_size": 10, "hidden_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 16}"#,
        );
        let err = format!("{:#}", load_encoder(d.path(), &Device::Cpu).err().unwrap());
        assert!(err.contains("bert family"), "{err}");
        assert!(err.contains("model.safetensors"), "{err}");
    }
}

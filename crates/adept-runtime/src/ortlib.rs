//! Finding, checking and loading the ONNX Runtime shared library (ort's `load-dynamic`).
//!
//! `ort` loads the library once per process and keeps it; so does this module. Before handing
//! the path to `ort`, [`probe_version`] opens the library itself and asks it for its version,
//! so a wrong file (not ONNX Runtime) or a wrong version is a clear error here instead of a
//! panic inside `ort`.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::session::DeviceKind;

/// The ONNX Runtime release adept is built and tested against (the one `adept fetch` installs).
pub const TESTED_VERSION: &str = adept_cache::ORT_VERSION;

/// The loaded library and the process-wide `ort` environment.
pub struct OrtRuntime {
    /// Canonical path of the shared library.
    pub library: PathBuf,
    /// Its version string, e.g. `1.31.1`.
    pub version: String,
    pub(crate) env: ort::environment::Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime")
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

static RUNTIME: Mutex<Option<&'static OrtRuntime>> = Mutex::new(None);

/// Locates the library: `explicit` (a file or a folder holding it), `$ORT_DYLIB_PATH`, or the
/// cache (`cache` or the default cache root). See `adept_cache::find_onnxruntime`.
pub fn find_library(cache: Option<&Path>, explicit: Option<&Path>) -> Result<PathBuf> {
    let root = adept_cache::cache_root(cache)?;
    adept_cache::find_onnxruntime(&root, explicit)
}

/// Opens `path` and returns the ONNX Runtime version it reports (`OrtGetApiBase()->GetVersionString()`).
pub fn probe_version(path: &Path) -> Result<String> {
    if !path.is_file() {
        bail!("ONNX Runtime library {} does not exist", path.display());
    }
    // SAFETY: loading a shared library runs its initialisers; ONNX Runtime's are benign. The
    // handle is leaked on purpose: `ort` loads the same file right after (a second reference),
    // and unloading ONNX Runtime while it may have registered process-wide state is unsafe.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        anyhow!(
            "cannot load {} as a shared library ({e}); is it an ONNX Runtime library for this platform?",
            path.display()
        )
    })?;
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.map_err(|_| {
            anyhow!(
                "{} is not an ONNX Runtime library (it has no OrtGetApiBase symbol)",
                path.display()
            )
        })?;
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime release and returns a
    // pointer to a static struct whose GetVersionString returns a static C string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            bail!("{}: OrtGetApiBase returned null", path.display());
        }
        CStr::from_ptr(((*base).GetVersionString)())
            .to_str()
            .with_context(|| format!("{}: the version string is not UTF-8", path.display()))?
            .to_owned()
    };
    std::mem::forget(lib);
    Ok(version)
}

/// Checks a version string against what the `ort` crate needs: `1.x` with `x >=`
/// [`ort::MINOR_VERSION`] (ort uses that API version).
pub fn check_version(version: &str, path: &Path) -> Result<()> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().flatten(), parts.next().flatten());
    match (major, minor) {
        (Some(1), Some(minor)) if minor >= ort::MINOR_VERSION => {
            if version != TESTED_VERSION {
                tracing::warn!(
                    "ONNX Runtime {version} at {} is not the tested {TESTED_VERSION}; it should work (same or newer API)",
                    path.display()
                );
            }
            Ok(())
        }
        _ => bail!(
            "ONNX Runtime at {} is version {version}, but adept's ort needs 1.{}.x or newer \
             (tested with {TESTED_VERSION}); run `adept fetch` or point ORT_DYLIB_PATH / --ort-lib at libonnxruntime {TESTED_VERSION}",
            path.display(),
            ort::MINOR_VERSION
        ),
    }
}

/// Loads ONNX Runtime from `library` (once per process) and creates the `ort` environment.
///
/// A second call with the same library returns the same runtime; a call with a different
/// library is an error, because a process cannot switch ONNX Runtime libraries.
pub fn load(library: &Path) -> Result<&'static OrtRuntime> {
    let canonical = library
        .canonicalize()
        .with_context(|| format!("ONNX Runtime library {} does not exist", library.display()))?;
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = *guard {
        if rt.library == canonical {
            return Ok(rt);
        }
        // Say what is wrong with the other file first, if anything.
        check_version(&probe_version(&canonical)?, &canonical)?;
        bail!(
            "ONNX Runtime is already loaded from {} in this process; it cannot also load {}",
            rt.library.display(),
            canonical.display()
        );
    }
    let version = probe_version(&canonical)?;
    check_version(&version, &canonical)?;
    let builder = ort::init_from(&canonical)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", canonical.display()))?;
    let env = builder
        .with_name("adept")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow!("cannot create the ONNX Runtime environment: {e}"))?;
    let rt: &'static OrtRuntime = Box::leak(Box::new(OrtRuntime {
        library: canonical,
        version,
        env,
    }));
    *guard = Some(rt);
    Ok(rt)
}

/// [`find_library`] then [`load`].
pub fn find_and_load(cache: Option<&Path>, explicit: Option<&Path>) -> Result<&'static OrtRuntime> {
    load(&find_library(cache, explicit)?)
}

/// The library to load for `device`. For [`DeviceKind::Cuda`] with no explicit path and no
/// `$ORT_DYLIB_PATH`, the onnxruntime-gpu library that `adept fetch --gpu` cached (it has the
/// CUDA execution provider; the CPU wheel's library has not), when present; otherwise, and for
/// the CPU, [`find_library`].
pub fn find_library_for(
    cache: Option<&Path>,
    explicit: Option<&Path>,
    device: DeviceKind,
) -> Result<PathBuf> {
    let env_set = std::env::var_os(adept_cache::ENV_ORT_DYLIB).is_some_and(|v| !v.is_empty());
    if device == DeviceKind::Cuda && explicit.is_none() && !env_set {
        let root = adept_cache::cache_root(cache)?;
        if let Some(gpu) = adept_cache::find_onnxruntime_gpu(&root) {
            return Ok(gpu);
        }
        tracing::info!(
            "--device cuda: no onnxruntime-gpu in {} (run `adept fetch --gpu`); using the CPU ONNX Runtime library",
            adept_cache::onnxruntime_gpu_dir(&root).display()
        );
    }
    find_library(cache, explicit)
}

/// [`find_library_for`] then [`load`]. A process holds one ONNX Runtime library: when one is
/// already loaded and no path was given explicitly, CUDA requests reuse it (the CUDA provider's
/// registration then says whether that library has it) instead of failing.
pub fn find_and_load_for(
    cache: Option<&Path>,
    explicit: Option<&Path>,
    device: DeviceKind,
) -> Result<&'static OrtRuntime> {
    if device == DeviceKind::Cuda && explicit.is_none() {
        if let Some(rt) = loaded() {
            return Ok(rt);
        }
    }
    load(&find_library_for(cache, explicit, device)?)
}

/// The runtime loaded so far in this process, if any.
pub fn loaded() -> Option<&'static OrtRuntime> {
    *RUNTIME.lock().unwrap_or_else(|e| e.into_inner())
}

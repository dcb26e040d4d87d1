//! Building an ONNX Runtime session: optimisation level, threads, execution provider.

use crate::ortlib::OrtRuntime;
use anyhow::{anyhow, bail, Result};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use std::path::{Path, PathBuf};

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider (needs a build with the `cuda` feature and the
    /// `onnxruntime-gpu` libraries; falls back to CPU unless `require_device`).
    Cuda,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// Session settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    pub device: DeviceKind,
    /// Fail instead of falling back to CPU when the device cannot be used.
    pub require_device: bool,
    /// Intra-op threads (`None`: ONNX Runtime's default, one per physical core).
    pub intra_threads: Option<usize>,
    /// ONNX Runtime graph optimisation level: 0 none, 1 basic, 2 extended, 3 all (default).
    pub optimization_level: u8,
    /// Save the optimised graph here (to see which fusions happened).
    pub optimized_model_path: Option<PathBuf>,
    /// Whether idle intra-op threads spin waiting for work (`None`: ONNX Runtime's default,
    /// on). Spinning shaves latency off back-to-back runs of one session, but threads of one
    /// session spinning while another runs take the cores from it.
    pub intra_op_spinning: Option<bool>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            require_device: false,
            intra_threads: None,
            optimization_level: 3,
            optimized_model_path: None,
            intra_op_spinning: None,
        }
    }
}

fn level(l: u8) -> Result<GraphOptimizationLevel> {
    Ok(match l {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        3 => GraphOptimizationLevel::All,
        other => bail!("graph optimisation level {other} is not 0-3"),
    })
}

/// A created session and the device it actually runs on.
pub struct BuiltSession {
    pub session: Session,
    pub device: DeviceKind,
    /// Why the requested device was not used (when it fell back).
    pub fallback_reason: Option<String>,
}

/// Environment variable: folders (`:`-separated) holding the CUDA 13 libraries ONNX Runtime's
/// CUDA provider loads (libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
/// libcufft.so.12, libcudnn*.so.9), e.g. the `nvidia/cu13/lib` and `nvidia/cudnn/lib` folders of
/// the PyPI wheels. Each library found there is loaded before the provider, so it need not be on
/// LD_LIBRARY_PATH. (A CUDA build of adept already has cudart, cuBLAS and cuRAND loaded.)
pub const ENV_CUDA_LIBS: &str = "ADEPT_CUDA_LIBS";

/// Loads, once per process, the CUDA libraries found in the folders of [`ENV_CUDA_LIBS`], in
/// dependency order; returns the ones loaded.
#[cfg(feature = "cuda")]
fn preload_cuda_libs() -> &'static [PathBuf] {
    static LOADED: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    LOADED.get_or_init(|| {
        let Some(dirs) = std::env::var_os(ENV_CUDA_LIBS) else {
            return Vec::new();
        };
        let mut loaded = Vec::new();
        for name in ort::ep::cuda::CUDA_DYLIBS
            .iter()
            .chain(ort::ep::cuda::CUDNN_DYLIBS)
        {
            for dir in std::env::split_paths(&dirs) {
                let path = dir.join(name);
                if !path.is_file() {
                    continue;
                }
                match ort::util::preload_dylib(&path) {
                    Ok(()) => loaded.push(path),
                    Err(e) => {
                        tracing::warn!("{ENV_CUDA_LIBS}: cannot load {}: {e}", path.display())
                    }
                }
                break;
            }
        }
        tracing::debug!(?loaded, "preloaded CUDA libraries");
        loaded
    })
}

#[cfg(feature = "cuda")]
fn register_cuda(builder: SessionBuilder) -> (SessionBuilder, Result<(), String>) {
    use ort::ep::{ExecutionProvider, CUDA};
    preload_cuda_libs();
    match CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return (
                builder,
                Err("this ONNX Runtime library has no CUDA execution provider (run `adept fetch --gpu` for onnxruntime-gpu, or point --ort-lib at its libonnxruntime)".into()),
            )
        }
        Err(e) => return (builder, Err(e.to_string())),
    }
    match builder.with_execution_providers([CUDA::default().build().error_on_failure()]) {
        Ok(b) => (b, Ok(())),
        Err(e) => {
            let msg = format!(
                "ONNX Runtime's CUDA provider cannot start: {e} (it needs an NVIDIA GPU and driver, and the CUDA 13 \
                 libraries: a CUDA build of adept, LD_LIBRARY_PATH or {ENV_CUDA_LIBS})"
            );
            (e.recover(), Err(msg))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(builder: SessionBuilder) -> (SessionBuilder, Result<(), String>) {
    (
        builder,
        Err("this build of adept has no CUDA support (build it with scripts/build-cuda.sh, or `--features cuda`)".into()),
    )
}

/// Creates a session for the ONNX file `model` with `cfg`.
pub fn build_session(rt: &OrtRuntime, model: &Path, cfg: &SessionConfig) -> Result<BuiltSession> {
    let load_err = |err: ort::Error<()>| {
        anyhow!(
            "ONNX Runtime cannot load {} as a model: {err}",
            model.display()
        )
    };
    let cpu = |fallback_reason: Option<String>| -> Result<BuiltSession> {
        let session = base_builder(rt, cfg)?
            .commit_from_file(model)
            .map_err(load_err)?;
        Ok(BuiltSession {
            session,
            device: DeviceKind::Cpu,
            fallback_reason,
        })
    };
    if cfg.device == DeviceKind::Cpu {
        return cpu(None);
    }
    let fall_back = |reason: String| -> Result<BuiltSession> {
        if cfg.require_device {
            bail!("the CUDA device was required but cannot be used: {reason}");
        }
        tracing::warn!("CUDA is not available ({reason}); running on the CPU");
        cpu(Some(reason))
    };
    let (mut builder, registered) = register_cuda(base_builder(rt, cfg)?);
    if let Err(reason) = registered {
        return fall_back(reason);
    }
    // The CUDA provider starts the device when the session is created: a GPU that cannot be
    // used (no device, a driver older than the CUDA runtime) fails here, not at registration.
    match builder.commit_from_file(model) {
        Ok(session) => Ok(BuiltSession {
            session,
            device: DeviceKind::Cuda,
            fallback_reason: None,
        }),
        Err(err) if err.to_string().contains("CUDA") => fall_back(format!(
            "ONNX Runtime's CUDA provider cannot start a session: {err}"
        )),
        Err(err) => Err(load_err(err)),
    }
}

/// A session builder with `cfg`'s optimisation level, threads, spinning and optimised-model
/// path (no execution provider yet).
fn base_builder(rt: &OrtRuntime, cfg: &SessionConfig) -> Result<SessionBuilder> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: ort::Error<SessionBuilder>| anyhow!("{what}: {err}")
    };
    let mut builder = Session::builder(&rt.env)
        .map_err(|err| anyhow!("cannot create an ONNX Runtime session builder: {err}"))?
        .with_optimization_level(level(cfg.optimization_level)?)
        .map_err(e("cannot set the graph optimisation level"))?;
    if let Some(n) = cfg.intra_threads {
        builder = builder
            .with_intra_threads(n.max(1))
            .map_err(e("cannot set the number of threads"))?;
    }
    if let Some(spin) = cfg.intra_op_spinning {
        builder = builder
            .with_intra_op_spinning(spin)
            .map_err(e("cannot set intra-op spinning"))?;
    }
    if let Some(p) = &cfg.optimized_model_path {
        builder = builder
            .with_optimized_model_path(p)
            .map_err(e("cannot set the optimised model path"))?;
    }
    Ok(builder)
}

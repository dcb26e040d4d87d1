//! Matrix products for the frozen backbone on the CPU: an optional BLAS library loaded at run
//! time, with the `gemm` crate (candle's own CPU matmul) as the always-available fallback.
//!
//! candle's CPU matmul runs the `gemm` crate's AVX2 kernels; on CPUs with AVX-512 an optimised
//! BLAS such as OpenBLAS is about twice as fast on the backbone's shapes. We do not link one: the
//! library is opened with `dlopen` (like ONNX Runtime in `adept-runtime`), so the build needs no
//! system package and a missing library only costs speed. `adept fetch` caches OpenBLAS from the
//! PyPI wheel `scipy-openblas32`; [`load`] accepts any library exporting `cblas_sgemm` (plain or
//! with the `scipy_` prefix of that wheel).
//!
//! [`sgemm`] is the one entry point: `C = A·B (+ C)` on row-major views. Big products go to the
//! BLAS when one is loaded; [`sgemm_single_thread`] always uses the `gemm` crate on the calling
//! thread, for the many small per-head products that run inside our own parallel loops.

use anyhow::{anyhow, Context};
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

type CblasSgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

struct Blas {
    sgemm: CblasSgemm,
    description: String,
    path: PathBuf,
    // Keeps the library mapped for the life of the process.
    _lib: libloading::Library,
}

static BLAS: OnceLock<Blas> = OnceLock::new();
static BYPASS: AtomicBool = AtomicBool::new(false);

/// Benchmarks only: with `true`, [`sgemm`] uses the built-in `gemm` crate even when a BLAS is
/// loaded, so `adept bench --ablation` can time both in one process.
pub fn bypass_blas(on: bool) {
    BYPASS.store(on, Ordering::SeqCst);
}

fn active() -> Option<&'static Blas> {
    if BYPASS.load(Ordering::Relaxed) {
        None
    } else {
        BLAS.get()
    }
}

/// Environment variable: a BLAS library to load instead of the cached OpenBLAS, or `off` to use
/// the built-in `gemm` crate only.
pub const ENV_BLAS: &str = "ADEPT_BLAS";

/// Loads the BLAS library at `path` for all later products of this process. Call it early, before
/// other threads start: for OpenBLAS it sets `OPENBLAS_THREAD_TIMEOUT` in the environment when
/// unset (so that idle workers sleep instead of spinning against candle's own threads), and
/// writing the environment is only sound while no other thread reads it. Loading the same
/// library again is a no-op, another one an error; a missing file, a library without
/// `cblas_sgemm` or one whose product is wrong is refused with its path named. Only LP64
/// libraries (32-bit integer arguments, the usual build) are supported.
pub fn load(path: &Path) -> anyhow::Result<()> {
    // One load at a time: the environment write and the library's initialisers (which read the
    // environment with C's getenv) never overlap another load.
    static LOADING: Mutex<()> = Mutex::new(());
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = BLAS.get() {
        if b.path == path {
            return Ok(());
        }
        anyhow::bail!(
            "a BLAS library is already loaded ({}); cannot also load {}",
            b.path.display(),
            path.display()
        );
    }
    if !path.is_file() {
        anyhow::bail!("the BLAS library {} does not exist", path.display());
    }
    let is_openblas = path.to_string_lossy().to_lowercase().contains("openblas");
    if is_openblas && std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        // Idle OpenBLAS workers then sleep at once instead of spinning against candle's threads.
        // SAFETY (of the set_var): see the function's documentation.
        std::env::set_var("OPENBLAS_THREAD_TIMEOUT", "4");
    }
    // SAFETY: loading a shared library runs its initialisers; the caller names a BLAS library.
    let lib = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("cannot load the BLAS library {}", path.display()))?;
    let sgemm: CblasSgemm = unsafe {
        lib.get::<CblasSgemm>(b"scipy_cblas_sgemm\0")
            .or_else(|_| lib.get::<CblasSgemm>(b"cblas_sgemm\0"))
            .map(|s| *s)
            .map_err(|_| {
                anyhow!(
                    "{} exports no cblas_sgemm: not a BLAS library",
                    path.display()
                )
            })?
    };
    check_product(sgemm)
        .with_context(|| format!("the BLAS library {} gives wrong products", path.display()))?;
    // As many BLAS threads as candle uses (OpenBLAS would otherwise start one per core).
    unsafe {
        type SetThreads = unsafe extern "C" fn(c_int);
        if let Ok(set) = lib
            .get::<SetThreads>(b"scipy_openblas_set_num_threads\0")
            .or_else(|_| lib.get::<SetThreads>(b"openblas_set_num_threads\0"))
        {
            set(candle_core::utils::get_num_threads().max(1) as c_int);
        }
    }
    let config = unsafe {
        type GetConfig = unsafe extern "C" fn() -> *const std::ffi::c_char;
        lib.get::<GetConfig>(b"scipy_openblas_get_config\0")
            .or_else(|_| lib.get::<GetConfig>(b"openblas_get_config\0"))
            .ok()
            .map(|f| std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned())
    };
    let description = config.unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let blas = Blas {
        sgemm,
        description,
        path: path.to_path_buf(),
        _lib: lib,
    };
    if BLAS.set(blas).is_err() {
        anyhow::bail!("a BLAS library was loaded concurrently");
    }
    Ok(())
}

/// A 2×3·3×2 product through `sgemm` against the hand-computed result, before the library is
/// used for anything.
fn check_product(sgemm: CblasSgemm) -> anyhow::Result<()> {
    let a = [1f32, 2., 3., 4., 5., 6.];
    let b = [7f32, 8., 9., 10., 11., 12.];
    let mut c = [0f32; 4];
    // SAFETY: the operands hold exactly the 2×3, 3×2 and 2×2 row-major matrices described.
    unsafe {
        sgemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            CBLAS_NO_TRANS,
            2,
            2,
            3,
            1.0,
            a.as_ptr(),
            3,
            b.as_ptr(),
            2,
            0.0,
            c.as_mut_ptr(),
            2,
        )
    };
    if c != [58., 64., 139., 154.] {
        anyhow::bail!("2×3·3×2 gave {c:?}, expected [58, 64, 139, 154]");
    }
    Ok(())
}

/// What runs the backbone's large products: the loaded BLAS, or the built-in `gemm` crate.
pub fn backend() -> String {
    match active() {
        Some(b) => format!("{} ({})", b.description.trim(), b.path.display()),
        None => "gemm crate (built in; no BLAS loaded)".to_string(),
    }
}

/// Whether a BLAS library is loaded (and not bypassed).
pub fn blas_loaded() -> bool {
    active().is_some()
}

/// A row-major matrix operand: element `(i, j)` of the operand is `data[i·ld + j]`, or with
/// `transposed` the operand is the transpose of the stored matrix (`data[j·ld + i]`).
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    ld: usize,
    transposed: bool,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], ld: usize, transposed: bool) -> Self {
        Self {
            data,
            ld,
            transposed,
        }
    }

    /// (row stride, column stride) of the operand.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }

    /// Checks that the `rows × cols` operand lies inside `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let (r, c) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(
            c <= self.ld && (r - 1) * self.ld + c <= self.data.len(),
            "sgemm: operand {what} ({rows}×{cols}, ld {}) exceeds its {} values",
            self.ld,
            self.data.len()
        );
    }
}

/// `C[m×n] = A[m×k]·B[k×n]`, or `C += A·B` with `accumulate`, `C` row-major with row stride
/// `ldc`. Uses the loaded BLAS (its own threads) or the `gemm` crate on candle's thread count.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    check_operands(m, n, k, &a, &b, c, ldc);
    if m == 0 || n == 0 {
        return;
    }
    if let Some(blas) = active() {
        let fits = |v: usize| c_int::try_from(v).is_ok();
        assert!(
            [m, n, k, a.ld, b.ld, ldc].into_iter().all(fits),
            "sgemm: sizes exceed the BLAS library's 32-bit integers"
        );
        let trans = |t: bool| if t { CBLAS_TRANS } else { CBLAS_NO_TRANS };
        // SAFETY: the operands were bounds-checked above.
        unsafe {
            (blas.sgemm)(
                CBLAS_ROW_MAJOR,
                trans(a.transposed),
                trans(b.transposed),
                m as c_int,
                n as c_int,
                k as c_int,
                1.0,
                a.data.as_ptr(),
                a.ld as c_int,
                b.data.as_ptr(),
                b.ld as c_int,
                if accumulate { 1.0 } else { 0.0 },
                c.as_mut_ptr(),
                ldc as c_int,
            )
        }
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: bounds checked above.
    unsafe { gemm_crate(m, n, k, a, b, c.as_mut_ptr(), ldc, accumulate, par) }
}

/// [`sgemm`] on the calling thread with the `gemm` crate, whatever BLAS is loaded; for small
/// products inside parallel loops. `c` may be a raw pointer into a buffer other threads write
/// elsewhere in: the caller guarantees the `m × n` block at `c` (row stride `ldc`) is its own.
///
/// # Safety
/// `c` must be valid for writes of the `m × n` block with row stride `ldc`, and no other thread
/// may access that block during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_single_thread(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    a.check(m, k, "A");
    b.check(k, n, "B");
    if m == 0 || n == 0 {
        return;
    }
    gemm_crate(m, n, k, a, b, c, ldc, accumulate, gemm::Parallelism::None)
}

fn check_operands(m: usize, n: usize, k: usize, a: &MatRef, b: &MatRef, c: &[f32], ldc: usize) {
    a.check(m, k, "A");
    b.check(k, n, "B");
    assert!(
        m == 0 || n == 0 || (n <= ldc && (m - 1) * ldc + n <= c.len()),
        "sgemm: output {m}×{n} (ld {ldc}) exceeds its {} values",
        c.len()
    );
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // gemm computes dst = alpha·dst + beta·lhs·rhs (dst read only when `read_dst`).
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a.data.as_ptr(),
        a_cs,
        a_rs,
        b.data.as_ptr(),
        b_cs,
        b_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &MatRef, b: &MatRef) -> Vec<f32> {
        let at = |i: usize, j: usize, x: &MatRef| {
            if x.transposed {
                x.data[j * x.ld + i]
            } else {
                x.data[i * x.ld + j]
            }
        };
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p, a) * at(p, j, b)).sum();
            }
        }
        c
    }

    #[test]
    fn products_with_every_transpose_and_stride_match_a_naive_loop() {
        let (m, n, k) = (7, 5, 6);
        let vals: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for ta in [false, true] {
            for tb in [false, true] {
                // Leading dimensions wider than the operand, as for a head's columns.
                let a = MatRef::new(&vals[3..], if ta { m + 2 } else { k + 3 }, ta);
                let b = MatRef::new(&vals[11..], if tb { k + 1 } else { n + 4 }, tb);
                let expected = naive(m, n, k, &a, &b);
                let mut c = vec![0.5f32; m * 9];
                sgemm(m, n, k, a, b, &mut c, 9, false);
                let mut acc = vec![1f32; m * n];
                unsafe { sgemm_single_thread(m, n, k, a, b, acc.as_mut_ptr(), n, true) };
                for i in 0..m {
                    for j in 0..n {
                        let e = expected[i * n + j];
                        assert!((c[i * 9 + j] - e).abs() < 1e-4, "({i},{j}) {ta} {tb}");
                        assert!((acc[i * n + j] - (e + 1.0)).abs() < 1e-4);
                    }
                    // Columns past n in a wider output row are left alone.
                    assert_eq!(c[i * 9 + 8], 0.5);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn an_operand_too_short_for_its_shape_is_refused() {
        let a = [0f32; 5];
        let b = [0f32; 6];
        let mut c = [0f32; 4];
        sgemm(
            2,
            2,
            3,
            MatRef::new(&a, 3, false),
            MatRef::new(&b, 2, false),
            &mut c,
            2,
            false,
        );
    }

    #[test]
    fn a_file_that_is_not_a_blas_library_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("adept-blas-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("libfake_blas.so");
        std::fs::write(&fake, b"not a shared library").unwrap();
        let err = format!("{:#}", load(&fake).unwrap_err());
        assert!(err.contains("libfake_blas.so"), "{err}");
        let err = format!("{:#}", load(&dir.join("libmissing.so")).unwrap_err());
        assert!(err.contains("libmissing.so does not exist"), "{err}");
        assert!(!blas_loaded(), "a refused library is not used");
        std::fs::remove_dir_all(&dir).ok();
    }
}

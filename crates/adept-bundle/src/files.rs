//! Files on disk: the atomic write and the sha256 of a file used for bundles, run folders,
//! checkpoints and reports. (`adept-onnx` and `adept-cache` keep small copies of their own so
//! that they need not depend on this crate, which pulls in `tokenizers`.)

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file beside `path` (same folder, so the
/// rename stays on one file system; its name is unique to this process and call) is written,
/// flushed to disk (`fsync`) and renamed over `path`, so a reader sees the old file or the
/// complete new one, never a partial write. The folder is synced afterwards (best effort: not
/// every platform can open a folder) so that the rename itself survives a crash. On failure the
/// temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> Result<()> {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("flushing {} to disk", tmp.display()))?;
        Ok(())
    };
    if let Err(err) = write().and_then(|()| {
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }) {
        let _ = fs::remove_file(&tmp);
        return Err(err.context(format!("cannot write {}", path.display())));
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// sha256 (lowercase hex) and size in bytes of the file at `path`, read in 1 MiB blocks.
pub fn sha256_file_and_len(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let bytes = std::io::copy(&mut reader, &mut h)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hex::encode(h.finalize()), bytes))
}

/// sha256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_file_and_len(path)?.0)
}

/// sha256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Names in `dir` other than `keep`.
    fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect()
    }

    #[test]
    fn writes_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        write_atomic(&p, b"").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        assert!(leftovers(dir.path(), &["a.json"]).is_empty());

        // A path without a file name is refused.
        assert!(write_atomic(Path::new(""), b"x").is_err());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        // No such folder: nothing is created.
        let err = write_atomic(&dir.path().join("no/such/dir/m.onnx"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("m.onnx"), "{err:#}");
        assert!(leftovers(dir.path(), &[]).is_empty());

        // The rename fails (the target is a non-empty folder): the folder is untouched and the
        // temporary file is removed.
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"keep").unwrap();
        let err = write_atomic(&target, b"new").unwrap_err();
        assert!(format!("{err:#}").contains("renaming"), "{err:#}");
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"keep");
        assert!(leftovers(dir.path(), &["target"]).is_empty());
    }

    /// A reader polling the file while it is rewritten over and over only ever sees one of the
    /// complete contents, never a mixture or a short file.
    #[test]
    fn readers_never_see_half_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(dir.path().join("big.bin"));
        let a = vec![b'a'; 1 << 18];
        let b = vec![b'b'; (1 << 18) + 4096];
        write_atomic(&p, &a).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, done, a, b) = (p.clone(), done.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0usize;
                while !done.load(Ordering::Relaxed) {
                    let got = fs::read(&*p).unwrap();
                    assert!(
                        got == a || got == b,
                        "read {} bytes that are neither version",
                        got.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..60 {
            write_atomic(&p, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        assert!(leftovers(dir.path(), &["big.bin"]).is_empty());
    }

    #[test]
    fn checksums_of_files_and_bytes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // Larger than the 1 MiB read block, not a multiple of it.
        let data: Vec<u8> = (0..(1u32 << 20) + 12345).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let (hex, n) = sha256_file_and_len(&p).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex, sha256_hex(&data));
        assert_eq!(sha256_file(&p).unwrap(), hex);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = sha256_file(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }
}

//! The data directory's exclusive lock: one `flowscope serve` per directory, for the life of
//! the process, taken before the WAL is replayed or any other file in it is opened.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The lock file's name in the data directory; it holds the holder's process id.
pub const LOCK_FILE: &str = "flowscope.lock";

/// An exclusive advisory lock (`flock`) on [`LOCK_FILE`]; the kernel lets it go when the
/// process ends however it ends (a SIGKILL included), so a stale file never blocks a start.
/// The file itself is left in place: deleting it would let a third process lock a new file
/// while a second still waits on the old one.
#[derive(Debug)]
pub struct DataDirLock {
    /// Held open for the lock's sake: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

/// Creates `dir` if needed, resolves it to an absolute path without symbolic links (Parquet
/// segments are read through an object store that needs one) and locks it for this process.
/// A directory another process holds is refused with that process's id and what to do.
pub fn create_and_lock(dir: &Path) -> anyhow::Result<(PathBuf, DataDirLock)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve the data directory {}", dir.display()))?;
    let lock = lock(&dir)?;
    tracing::info!(lock_file = %lock.path.display(), pid = std::process::id(), "data directory locked");
    Ok((dir, lock))
}

/// Locks `dir` (which exists) and writes this process's id into the lock file.
pub fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: a process that loses the race must not erase the holder's pid.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = match read_pid(&mut file) {
                Some(pid) => format!("pid {pid}"),
                // The holder has the lock but has not written its pid yet.
                None => "a process that is starting".to_string(),
            };
            anyhow::bail!(
                "the data directory {} is in use by another flowscope ({holder}, lock file {}): stop that process first, or give this one another --data-dir",
                dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(error)) => {
            return Err(error)
                .with_context(|| format!("cannot lock the data directory {}", dir.display()));
        }
    }
    let pid = std::process::id();
    (|| {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{pid}")?;
        file.sync_data()
    })()
    .with_context(|| format!("cannot write this process's id to {}", path.display()))?;
    Ok(DataDirLock { _file: file, path })
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let (resolved, held) = create_and_lock(&data_dir).expect("the first lock");
        assert!(resolved.is_absolute());
        let pid = std::process::id().to_string();
        let written = std::fs::read_to_string(&held.path).expect("the lock file");
        assert_eq!(written.trim(), pid);
        // flock locks belong to the open file: a second open in this process conflicts too.
        let error = format!("{:#}", lock(&resolved).expect_err("already held"));
        assert!(error.contains(&format!("pid {pid}")), "{error}");
        assert!(error.contains("--data-dir"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&held.path)
                .expect("the lock file")
                .trim(),
            pid,
            "the refused open left the holder's pid in place"
        );
        drop(held);
        let again = lock(&resolved).expect("free once the holder lets go");
        drop(again);
    }
}

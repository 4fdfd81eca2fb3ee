//! The directory lock: one open per backend directory, across threads and processes.
//!
//! An advisory `flock` on `<dir>/lock`, held for the life of the engine; the kernel drops it
//! when the process dies, so a crash never leaves a stale lock. The file holds the owner's pid
//! for humans; nothing reads it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use fs2::FileExt;

use crate::error::Error;

/// Take the lock of `dir` or fail with [`Error::Locked`].
pub(crate) fn acquire(dir: &Path) -> Result<File, Error> {
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(11) => {
            return Err(Error::Locked { path });
        }
        Err(e) => return Err(Error::io("lock", &path, e)),
    }
    file.set_len(0)
        .map_err(|e| Error::io("truncate", &path, e))?;
    writeln!(file, "{}", std::process::id()).map_err(|e| Error::io("write", &path, e))?;
    Ok(file)
}

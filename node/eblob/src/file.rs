//! Positional file IO with the fault-injection seam and path-carrying errors.
//!
//! Not buffering and not policy: callers decide when to sync. Every read, write and sync goes
//! through here so that a [`FaultInjector`] sees all of them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Fault, FaultInjector, IoOp};
use crate::error::Error;

/// Bring `len` bytes of `file` at `offset` into the page cache, waiting for the disk if it
/// must, without copying them anywhere: a `sendfile` into `/dev/null` reads the pages into
/// the cache, takes references to them and drops them (the null device consumes spliced
/// pages without touching their bytes). Bytes already cached cost one syscall. Where
/// `/dev/null` cannot be opened, the kernel is only asked to start the reads
/// (`POSIX_FADV_WILLNEED`). Bytes evicted again before they are used are read then.
fn into_page_cache(file: &File, offset: u64, len: u64) -> io::Result<()> {
    static NULL: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();
    let Some(null) = NULL.get_or_init(|| OpenOptions::new().write(true).open("/dev/null").ok())
    else {
        if let Some(len) = std::num::NonZeroU64::new(len) {
            rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::WillNeed)?;
        }
        return Ok(());
    };
    let (mut at, end) = (offset, offset + len);
    while at < end {
        // At most 1 GiB a call: sendfile moves at most about 2 GiB per call anyway.
        let want = (end - at).min(1 << 30) as usize;
        match rustix::fs::sendfile(null, file, Some(&mut at), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An open file plus its path and the fault seam.
#[derive(Debug)]
pub(crate) struct BlobFile {
    /// Shared so a [`crate::DataRegion`] can hand the open file out (for `sendfile`) without
    /// a `dup` per record; the inode stays readable while a region holds it, even after
    /// data-sort replaced the file.
    file: Arc<File>,
    path: PathBuf,
    faults: Option<Arc<dyn FaultInjector>>,
}

impl BlobFile {
    /// Open (creating if asked) for reading and writing.
    pub(crate) fn open(
        path: &Path,
        create: bool,
        faults: Option<Arc<dyn FaultInjector>>,
    ) -> Result<BlobFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(BlobFile {
            file: Arc::new(file),
            path: path.to_owned(),
            faults,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn fault(&self, op: IoOp, offset: u64, len: u64) -> Fault {
        match &self.faults {
            Some(f) => f.on_io(op, &self.path, offset, len),
            None => Fault::None,
        }
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        if let Fault::Fail(kind) = self.fault(IoOp::Read, offset, buf.len() as u64) {
            return Err(Error::io("read", &self.path, io::Error::from(kind)));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    /// Read `len` bytes at `offset` into a new buffer (not zeroed first: the read fills the
    /// buffer's spare capacity, so a 1 MiB record costs one copy out of the page cache, not a
    /// memset as well).
    pub(crate) fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let len = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("read of {len} bytes is too large")))?;
        if let Fault::Fail(kind) = self.fault(IoOp::Read, offset, len as u64) {
            return Err(Error::io("read", &self.path, io::Error::from(kind)));
        }
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => {
                    return Err(Error::io(
                        "read",
                        &self.path,
                        io::Error::from(io::ErrorKind::UnexpectedEof),
                    ))
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io("read", &self.path, e.into())),
            }
        }
        Ok(buf)
    }

    /// The open file, for reading `len` bytes at `offset` outside the engine (a
    /// [`crate::DataRegion`]); the fault seam sees it as a read of those bytes.
    ///
    /// The bytes are in the page cache when this returns (see [`into_page_cache`]): whoever
    /// sends the region from a network thread finds them there instead of waiting on the
    /// disk, and a disk that cannot read them fails here, as a read error.
    pub(crate) fn shared_for_read(&self, offset: u64, len: u64) -> Result<Arc<File>, Error> {
        if let Fault::Fail(kind) = self.fault(IoOp::Read, offset, len) {
            return Err(Error::io("read", &self.path, io::Error::from(kind)));
        }
        into_page_cache(&self.file, offset, len).map_err(|e| Error::io("read", &self.path, e))?;
        Ok(self.file.clone())
    }

    /// Write all of `buf` at `offset`.
    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        match self.fault(IoOp::Write, offset, buf.len() as u64) {
            Fault::None => {}
            Fault::Fail(kind) => return Err(Error::io("write", &self.path, io::Error::from(kind))),
            Fault::ShortWrite(n) => {
                let n = (n as usize).min(buf.len());
                self.file
                    .write_all_at(&buf[..n], offset)
                    .map_err(|e| Error::io("write", &self.path, e))?;
                return Err(Error::io(
                    "write",
                    &self.path,
                    io::Error::new(io::ErrorKind::WriteZero, "short write"),
                ));
            }
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    /// fdatasync.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        if let Fault::Fail(kind) = self.fault(IoOp::Sync, 0, 0) {
            return Err(Error::io("fsync", &self.path, io::Error::from(kind)));
        }
        let r = self
            .file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e));
        if let Some(f) = &self.faults {
            f.after_sync(&self.path);
        }
        r
    }

    /// Current file length.
    pub(crate) fn len(&self) -> Result<u64, Error> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("stat", &self.path, e))
    }

    /// Cut the file to `len` bytes.
    pub(crate) fn truncate(&self, len: u64) -> Result<(), Error> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))
    }
}

/// fsync a directory so that renames and creations in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync dir", dir, e))
}

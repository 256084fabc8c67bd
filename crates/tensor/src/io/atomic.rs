//! Atomic file replacement: write a hidden temporary file beside the target, then
//! `fsync` and rename it over the target.
//!
//! Readers never see a half-written file and an existing file is never truncated under
//! an open memory map; if anything fails (or the writer is dropped unfinished) the
//! temporary file is removed and the target is left as it was.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A temporary file that becomes `target` on [`AtomicFile::commit`].
pub(crate) struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates a new, empty temporary file in `target`'s directory.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let file_name = target.file_name().ok_or_else(|| {
            Error::invalid(format!("cannot write `{}`: the path does not name a file", target.display()))
        })?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut attempt = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = std::ffi::OsString::from(".");
            name.push(file_name);
            name.push(format!(".{}.{n}.tmp", std::process::id()));
            let temp = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => return Ok(AtomicFile { target: target.to_path_buf(), temp, file: Some(file) }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(Error::io(&temp, e)),
            }
        }
    }

    fn file(&mut self) -> Result<&mut File> {
        let temp = &self.temp;
        self.file.as_mut().ok_or_else(|| Error::invalid(format!("{}: temporary file already closed", temp.display())))
    }

    /// Writes `bytes` at byte `offset` of the temporary file.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let temp = self.temp.clone();
        let file = self.file()?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&temp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&temp, e))
    }

    /// Flushes the temporary file to disk and renames it to the target.
    pub fn commit(mut self) -> Result<()> {
        let temp = self.temp.clone();
        let file = self.file.take().ok_or_else(|| Error::invalid(format!("{}: committed twice", temp.display())))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        drop(file);
        std::fs::rename(&temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        // Persist the rename itself; best effort, as some filesystems refuse to sync dirs.
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        // Nothing left to clean up.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

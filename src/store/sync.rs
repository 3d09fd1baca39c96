//! Making a flushed group durable against power loss, not only a crash.
//!
//! sled's `flush()` writes its log with `sync_file_range`, which survives a
//! killed process but flushes neither the drive's cache nor the file's
//! metadata. Values over about 128 KiB (a quarter of a log segment) are not in
//! the log at all: sled writes each to its own file under `blobs/` and never
//! syncs it or the directory. [`Syncer::sync`] `fsync`s every blob file it
//! has not synced yet, then the `blobs` directory (so the new names survive),
//! then `fdatasync`s the log, which points at them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Syncer {
    /// sled's log file.
    log: File,
    /// `<db>/blobs`.
    blobs: PathBuf,
    /// Blob files already synced, so each is synced once.
    synced: Mutex<HashSet<OsString>>,
    /// Blob files synced since open: observable, for tests and operators.
    blob_files_synced: AtomicU64,
}

impl Syncer {
    /// Opens the log of the sled database at `db`, and syncs `db` itself so
    /// the log's name is durable.
    pub fn open(db: &Path) -> io::Result<Self> {
        let log = File::open(db.join("db"))?;
        File::open(db)?.sync_all()?;
        let syncer = Self {
            log,
            blobs: db.join("blobs"),
            synced: Mutex::new(HashSet::new()),
            blob_files_synced: AtomicU64::new(0),
        };
        // Blobs written before this open may never have been synced.
        syncer.sync()?;
        Ok(syncer)
    }

    /// Makes everything sled flushed so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_blobs()?;
        self.log.sync_data()
    }

    fn sync_blobs(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashSet::new();
        let mut new = 0u64;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // Removed by sled's garbage collection meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new += 1;
            }
            present.insert(name);
        }
        let removed = synced.len() + (new as usize) > present.len();
        *synced = present;
        if new > 0 || removed {
            File::open(&self.blobs)?.sync_all()?;
        }
        self.blob_files_synced.fetch_add(new, Ordering::Relaxed);
        Ok(())
    }

    pub fn blob_files_synced(&self) -> u64 {
        self.blob_files_synced.load(Ordering::Relaxed)
    }
}

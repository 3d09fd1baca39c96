//! Backups: every key of the store at one revision, in one file, and the
//! offline restore of such a file into an empty data dir.
//!
//! The file: [`BACKUP_MAGIC`], the revision (u64 BE), then each key and
//! value as `len: u32 BE` + bytes, then `u32::MAX`, the count of pairs (u64
//! BE) and the SHA-256 of everything before it. A restore checks the whole
//! file before it writes anything. The page-token secret is left out (the
//! restored store makes its own), and tokens live outside the store.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Shared, keys};
use crate::error::{Error, Result};

/// The first bytes of a backup file.
pub const BACKUP_MAGIC: &[u8; 16] = b"factcheck-bkp-1\n";

/// Writes the store to `path`; runs on the committer thread between
/// groups, so what it reads is one durable revision.
pub(super) fn write(shared: &Shared, path: &Path) -> Result<u64> {
    let written = write_file(shared, path);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// The prefix of the copies a backup streams from the data dir: removed
/// when the stream ends, and at open if a crash left one.
pub const PARTIAL_PREFIX: &str = "backup-";
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Removes the backup copies a crash left in `data_dir`.
pub fn remove_stale_copies(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PARTIAL_PREFIX) && name.ends_with(PARTIAL_SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a backup copy a crash left")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale backup copy")
                }
            }
        }
    }
}

fn write_file(shared: &Shared, path: &Path) -> Result<u64> {
    fail::fail_point!("backup::write");
    // On etcd other servers keep committing while the copy is made: it is
    // read at one etcd revision, and says which store revision that is.
    let frozen = shared.engine.frozen()?;
    let engine: &dyn super::engine::Engine = frozen.as_deref().unwrap_or(&*shared.engine);
    let revision = match &frozen {
        Some(f) => f.stored_revision()?,
        None => shared.revision.load(std::sync::atomic::Ordering::Acquire),
    };
    let file = std::fs::File::create(path)
        .map_err(|e| Error::internal(format!("backup {}: {e}", path.display())))?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    let io = |e: std::io::Error| Error::internal(format!("backup {}: {e}", path.display()));
    out.write_all(BACKUP_MAGIC).map_err(io)?;
    out.write_all(&revision.to_be_bytes()).map_err(io)?;
    let mut count = 0u64;
    for item in engine.iter() {
        let (k, v) = item?;
        // Not the store: the page-token key, and on etcd the keys beside
        // the store under its prefix (the tokens, a restore's mark), which
        // start with a zero byte.
        if k == keys::META_PAGE_SECRET || k.first() == Some(&0) {
            continue;
        }
        for part in [&k[..], &v[..]] {
            out.write_all(&(part.len() as u32).to_be_bytes()).map_err(io)?;
            out.write_all(part).map_err(io)?;
        }
        count += 1;
    }
    out.write_all(&u32::MAX.to_be_bytes()).map_err(io)?;
    out.write_all(&count.to_be_bytes()).map_err(io)?;
    let digest = out.hash.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&digest).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    tracing::info!(revision, keys = count, file = %path.display(), "backup written");
    Ok(revision)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the pairs of a backup, calling `each` on every one; checks the
/// count and the checksum at the end. Returns the revision and the count.
fn read(path: &Path, mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>) -> Result<(u64, u64)> {
    let bad = |why: &str| Error::invalid("INVALID_BACKUP", "backup", format!("{} {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(&format!("cannot be read: {e}")))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut take = |n: usize, hash: &mut Sha256| -> Result<Vec<u8>> {
        let mut buf = vec![0; n];
        input
            .read_exact(&mut buf)
            .map_err(|_| bad("is cut short: not a whole backup"))?;
        hash.update(&buf);
        Ok(buf)
    };
    if take(BACKUP_MAGIC.len(), &mut hash)? != BACKUP_MAGIC {
        return Err(bad("is not a factcheck backup"));
    }
    let revision = u64::from_be_bytes(take(8, &mut hash)?.try_into().expect("8 bytes"));
    let mut count = 0u64;
    loop {
        let len = u32::from_be_bytes(take(4, &mut hash)?.try_into().expect("4 bytes"));
        if len == u32::MAX {
            break;
        }
        if len > 64 << 20 {
            return Err(bad("holds a key over 64 MiB: it is corrupt"));
        }
        let key = take(len as usize, &mut hash)?;
        let len = u32::from_be_bytes(take(4, &mut hash)?.try_into().expect("4 bytes"));
        if len > 1 << 30 {
            return Err(bad("holds a value over 1 GiB: it is corrupt"));
        }
        let value = take(len as usize, &mut hash)?;
        each(key, value)?;
        count += 1;
    }
    let stated = u64::from_be_bytes(take(8, &mut hash)?.try_into().expect("8 bytes"));
    let digest = hash.finalize();
    let mut stored = [0u8; 32];
    input
        .read_exact(&mut stored)
        .map_err(|_| bad("is cut short: its checksum is missing"))?;
    if stated != count || stored[..] != digest[..] {
        return Err(bad("does not match its checksum: it is corrupt"));
    }
    match input.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(_) => return Err(bad("has bytes after its checksum: it is not one whole backup")),
        Err(e) => return Err(bad(&format!("cannot be read: {e}"))),
    }
    Ok((revision, count))
}

/// Where a restore builds the store before it becomes `db`: a store exists
/// only once it is whole.
pub const RESTORING: &str = "db.restoring";

/// Restores a backup into `data_dir`, which must hold no store yet.
/// Offline: no server may run on it. Checks the whole file first, so a
/// corrupt backup writes nothing. The store is built beside its place
/// ([`RESTORING`]) and renamed into it once flushed: a restore that is
/// killed leaves no `db` a server would open as a half store. Returns the
/// revision restored.
pub fn restore(from: &Path, data_dir: &Path) -> Result<u64> {
    let db_path = data_dir.join("db");
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(Error::invalid(
            "DATA_DIR_NOT_A_DIRECTORY",
            "data_dir",
            format!("{} is not a directory", data_dir.display()),
        ));
    }
    // The write-ahead log is part of a store too: a restored store must not
    // replay another one's.
    if db_path.exists() || super::wal::dir(data_dir).exists() {
        return Err(Error::invalid(
            "DATA_DIR_NOT_EMPTY",
            "data_dir",
            format!(
                "{} already holds a store: restore into an empty data dir",
                data_dir.display()
            ),
        ));
    }
    read(from, |_, _| Ok(()))?;
    crate::config::private_data_dir(data_dir).map_err(Error::internal)?;
    let building = data_dir.join(RESTORING);
    // What an interrupted restore left: ours to start again.
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .map_err(|e| Error::internal(format!("cannot remove {}: {e}", building.display())))?;
    }
    let revision = restore_into(from, &building)?;
    fail::fail_point!("restore::before_rename");
    std::fs::rename(&building, &db_path).map_err(|e| {
        Error::internal(format!(
            "cannot move {} to {}: {e}",
            building.display(),
            db_path.display()
        ))
    })?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::internal(format!("cannot sync {}: {e}", data_dir.display())))?;
    Ok(revision)
}

/// Writes the backup's pairs into a new sled store at `db_path`, durably.
fn restore_into(from: &Path, db_path: &Path) -> Result<u64> {
    let db = sled::Config::new()
        .path(db_path)
        .open()
        .map_err(|e| Error::internal(format!("cannot create the store at {}: {e}", db_path.display())))?;
    let tree = db.open_tree("factcheck").map_err(Error::internal)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let (revision, _) = read(from, |k, v| {
        pending += k.len() + v.len();
        batch.insert(k, v);
        if pending > 16 << 20 {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(Error::internal)?;
            pending = 0;
        }
        Ok(())
    })?;
    tree.apply_batch(batch).map_err(Error::internal)?;
    db.flush().map_err(Error::internal)?;
    // sled's flush does not reach the drive: the whole store is synced
    // before it takes its name.
    super::sync::Syncer::open(db_path)
        .map_err(|e| Error::internal(format!("cannot sync {}: {e}", db_path.display())))?;
    drop(tree);
    drop(db);
    Ok(revision)
}

/// Restores a backup into an etcd prefix, which must hold no key yet.
/// Offline: no server may run on the prefix. Checks the whole file first;
/// then marks the prefix as restoring ([`super::engine::etcd::RESTORING_KEY`],
/// which `serve` refuses), writes the pairs in transactions that fit etcd's
/// limits, and removes the mark last: a restore that is killed leaves a
/// prefix no server opens as a half store. Returns the revision restored.
pub fn restore_etcd(from: &Path, etcd: &crate::etcd::EtcdConfig) -> Result<u64> {
    use super::engine::Engine;
    use super::engine::etcd::{EtcdEngine, RESTORING_KEY};
    read(from, |_, _| Ok(()))?;
    let engine = EtcdEngine::open(etcd, true)?;
    let restarted = engine.restoring()?;
    if !restarted && !engine.is_empty()? {
        return Err(Error::invalid(
            "DATA_DIR_NOT_EMPTY",
            "etcd_prefix",
            format!(
                "the etcd prefix {} already holds a store: restore into an empty prefix",
                String::from_utf8_lossy(&etcd.prefix)
            ),
        ));
    }
    if restarted {
        // What an interrupted restore left: ours to start again.
        engine.clear()?;
    }
    engine.write(vec![(RESTORING_KEY.to_vec(), Some(Vec::new()))])?;
    let mut batch = Vec::new();
    let mut pending = 0usize;
    let (revision, _) = read(from, |k, v| {
        pending += k.len() + v.len();
        batch.push((k, Some(v)));
        if pending > 1 << 20 || batch.len() >= 1000 {
            engine.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
        Ok(())
    })?;
    engine.write(batch)?;
    fail::fail_point!("restore::before_rename");
    engine.finish_restore()?;
    Ok(revision)
}

//! The embedded engine: sled in `<data_dir>/db`, made durable by the
//! write-ahead log in `<data_dir>/wal`.
//!
//! A group is appended to the log as one frame and synced once, then
//! applied to sled in memory ([`SledEngine::commit`]); sled is made
//! durable behind the log by the [`Checkpointer`] thread when a log segment
//! is full: a `flush` and sync of sled, then the segment goes. The
//! committer never flushes sled, so sled's `flush_async` deadlock with many
//! concurrent flushers (spacejam/sled#1308) cannot happen (two threads
//! flush: the checkpointer and sled's own). No sled transaction is used, so
//! no closure is ever re-run.
//!
//! At open, [`wal::recover`] replays what the last run acknowledged but
//! sled had not made durable; readers may see sled ahead of the published
//! revision (a group is applied before it is published, and after a failed
//! commit what was applied stays in sled's memory): the store reads at its
//! published revision, falling back to the history (`Store::read_at`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CommitError, Engine, Op, Pair};
use crate::error::{Error, Result};
use crate::store::figures::{CommitFigures, Phase};
use crate::store::{StoreConfig, backup, keys, sync, wal};

pub struct SledEngine {
    db: sled::Db,
    tree: sled::Tree,
    /// Syncs the log and the blob files after each flush; `None`: no sync.
    sync: Option<sync::Syncer>,
    log: Mutex<Log>,
    figures: Arc<CommitFigures>,
    /// The store's fail-stop flag: a failed checkpoint sets it (sled may
    /// not hold what the log let go of), and the server reports NOT_SERVING.
    failed: Arc<tokio::sync::watch::Sender<bool>>,
}

struct Log {
    wal: wal::Wal,
    checkpointer: Option<Checkpointer>,
}

impl SledEngine {
    /// Opens (or creates) sled in the data dir and replays the log.
    pub fn open(
        config: &StoreConfig,
        figures: Arc<CommitFigures>,
        failed: Arc<tokio::sync::watch::Sender<bool>>,
    ) -> Result<SledEngine> {
        let path = config.data_dir.join("db");
        let restoring = config.data_dir.join(backup::RESTORING);
        if !path.exists() && restoring.exists() {
            return Err(Error::internal(format!(
                "{} holds an unfinished restore ({}), not a store: run `factcheck restore` again, or remove \
                 {} to start an empty store",
                config.data_dir.display(),
                restoring.display(),
                restoring.display()
            )));
        }
        let open = || {
            sled::Config::new()
                .path(&path)
                .cache_capacity(config.cache_capacity_bytes)
                .open()
        };
        // sled lets go of its file lock once its IO threads drop their
        // last reference, a moment after the store that closed it: a
        // restart in the same process waits for that, briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        let db = loop {
            match open() {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => {
                    break other.map_err(|e| {
                        Error::internal(format!("cannot open the store at {}: {e}", path.display()))
                    })?;
                }
            }
        };
        let tree = db.open_tree("factcheck").map_err(Error::internal)?;
        // sled's lock is ours: no other server streams from this data dir.
        backup::remove_stale_copies(&config.data_dir);
        let sync =
            if config.sync {
                Some(sync::Syncer::open(&path).map_err(|e| {
                    Error::internal(format!("cannot sync the store at {}: {e}", path.display()))
                })?)
            } else {
                None
            };
        // What the last run acknowledged but sled had not made durable.
        let wal_dir = wal::dir(&config.data_dir);
        wal::recover(&wal_dir, &tree, revision_of, || {
            db.flush().map_err(Error::internal)?;
            match &sync {
                Some(s) => s.sync().map_err(Error::internal),
                None => Ok(()),
            }
        })?;
        let log = wal::Wal::create(&wal_dir, config.sync, config.wal_segment_bytes).map_err(|e| {
            Error::internal(format!(
                "cannot make the write-ahead log in {}: {e}",
                wal_dir.display()
            ))
        })?;
        let engine = SledEngine {
            db,
            tree,
            sync,
            log: Mutex::new(Log {
                wal: log,
                checkpointer: None,
            }),
            figures,
            failed,
        };
        Ok(engine)
    }

    /// Starts the checkpointer: from now on the committer commits through
    /// the log.
    pub fn start(self: &Arc<Self>) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let checkpointer =
            Checkpointer::spawn(self.clone(), log.wal.dir().to_owned(), log.wal.segment_bytes());
        checkpointer.after_rotation(log.wal.seq());
        log.checkpointer = Some(checkpointer);
    }

    /// Makes everything applied to sled so far durable in sled itself.
    fn checkpoint(&self) -> std::result::Result<(), sled::Error> {
        self.db.flush()?;
        if let Some(sync) = &self.sync {
            sync.sync()?;
        }
        Ok(())
    }
}

/// The revision of the last group sled holds.
fn revision_of(tree: &sled::Tree) -> Result<u64> {
    keys::decode_revision(
        tree.get(keys::META_REVISION).map_err(Error::internal)?.as_deref(),
        "revision",
    )
}

impl Engine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key).map_err(Error::internal)?.map(|v| v.to_vec()))
    }

    fn page(&self, start: &[u8], end: Option<&[u8]>, limit: usize, reverse: bool) -> Result<Vec<Pair>> {
        let range = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        let pair = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Error::internal)
        };
        if reverse {
            range.rev().take(limit).map(pair).collect()
        } else {
            range.take(limit).map(pair).collect()
        }
    }

    fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.tree.apply_batch(wal::batch(ops)).map_err(Error::internal)?;
        self.checkpoint().map_err(Error::internal)
    }

    fn commit(&self, base: u64, revision: u64, ops: Vec<Op>) -> std::result::Result<(), CommitError> {
        let failed = |e: std::io::Error| CommitError::Failed(e.to_string());
        let figures = &self.figures;
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let log = &mut *log;
        let t = Instant::now();
        // The log first, sled after: sled never holds a group the log does
        // not (its flusher may write what it holds at any time), so a crash
        // leaves sled a prefix of the log and recovery replays the rest in
        // order; a failed write or sync leaves sled untouched.
        let frame = wal::frame(base, revision, &ops);
        let batch = wal::batch(ops);
        fail::fail_point!("commit::flush", |_| Err(CommitError::Failed(
            "injected flush failure".into()
        )));
        if !log.wal.fits(frame.len()) {
            log.wal.rotate().map_err(failed)?;
            if let Some(c) = &log.checkpointer {
                c.after_rotation(log.wal.seq());
            }
        }
        log.wal.write(&frame).map_err(failed)?;
        let t = figures.add(Phase::Write, t);
        fail::fail_point!("commit::sync", |_| Err(CommitError::Failed(
            "injected sync failure".into()
        )));
        log.wal.sync().map_err(failed)?;
        let t = figures.add(Phase::Sync, t);
        // In memory; readers do not read past the published revision.
        self.tree
            .apply_batch(batch)
            .map_err(|e| CommitError::Failed(e.to_string()))?;
        figures.add(Phase::Apply, t);
        Ok(())
    }

    fn stored_revision(&self) -> Result<u64> {
        revision_of(&self.tree)
    }

    fn close(&self, failed: bool) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = log.checkpointer.take() {
            c.stop();
        }
        // After a failure (a full disk, a failed sync) sled may never finish
        // a flush, and nothing needs one: the log holds every acknowledged
        // group and stays for the next open to replay.
        if failed || *self.failed.borrow() {
            tracing::warn!("the store failed: closing without a final flush; the next open replays the log");
            return;
        }
        // Closing cleanly: sled alone holds everything, the log can go.
        fail::fail_point!("store::final_flush");
        match self
            .checkpoint()
            .and_then(|()| wal::delete_before(log.wal.dir(), u64::MAX).map_err(sled::Error::Io))
        {
            Ok(()) => tracing::debug!("the log is checkpointed"),
            Err(e) => {
                tracing::error!(error = %e, "the last checkpoint failed: the next open replays the log")
            }
        }
    }

    fn blob_files_synced(&self) -> u64 {
        self.sync.as_ref().map_or(0, sync::Syncer::blob_files_synced)
    }
}

/// Checkpoints sled behind the committer, off its thread: once the log has
/// moved on to a new segment, every group of the older ones is in sled's
/// memory; a flush and sync of sled then make them durable there, and the
/// old segments are deleted. It then makes the next segment ahead of time.
struct Checkpointer {
    tx: Option<std::sync::mpsc::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn spawn(engine: Arc<SledEngine>, dir: PathBuf, segment_bytes: u64) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("factcheck-checkpoint".into())
            .spawn(move || {
                while let Ok(mut seq) = rx.recv() {
                    // Several rotations waiting: the latest covers them.
                    while let Ok(later) = rx.try_recv() {
                        seq = later;
                    }
                    if let Err(e) = checkpoint_through(&engine, &dir, seq, segment_bytes) {
                        tracing::error!(
                            error = %e,
                            "checkpoint failed: the store refuses writes from now on; restart the server once the disk is fixed"
                        );
                        engine.failed.send_replace(true);
                        break;
                    }
                }
            })
            .expect("spawning the checkpoint thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// The log now appends to segment `seq`.
    fn after_rotation(&self, seq: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(seq);
        }
    }

    /// Waits for the work asked so far.
    fn stop(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes sled durable through the segments before `seq`, deletes them, and
/// makes segment `seq + 1`.
fn checkpoint_through(
    engine: &SledEngine,
    dir: &Path,
    seq: u64,
    segment_bytes: u64,
) -> std::result::Result<(), sled::Error> {
    // Segment 1 is the first since open: nothing before it.
    if seq > 1 {
        fail::fail_point!("checkpoint", |_| Err(injected("checkpoint")));
        engine.checkpoint()?;
        // A crash here: sled holds the old segments' groups durably and
        // they are still in the log.
        fail::fail_point!("checkpoint::flushed", |_| Err(injected("checkpoint::flushed")));
        wal::delete_before(dir, seq)?;
    }
    wal::prepare(dir, seq + 1, segment_bytes)?;
    Ok(())
}

/// The error a failpoint injects.
#[cfg(feature = "failpoints")]
fn injected(what: &str) -> sled::Error {
    sled::Error::Io(std::io::Error::other(format!("injected {what} failure")))
}

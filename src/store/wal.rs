//! The write-ahead log: what makes a group durable before it is answered.
//!
//! sled's own `flush` costs two disk round trips a group here (its log write
//! waits on `sync_file_range`, then `fdatasync` for the metadata and the
//! drive's cache: ~480 µs measured, more than a whole etcd `Put`). So the
//! committer appends each group's keys to this log instead, with one
//! `pwrite` and one `fdatasync` into a segment that was filled with zeros
//! beforehand (no block allocation, no metadata to commit: ~150 µs), then
//! applies the same batch to sled in memory, and answers. (Log first, so sled
//! never holds a group the log does not: sled writes what it holds whenever
//! it likes.) sled is made durable in
//! the background ([`Checkpointer`]): when a segment is full, every group in
//! it is already in sled's memory; one `flush` and `fdatasync` of sled then
//! covers them all, and the segment is deleted.
//!
//! At open, [`recover`] applies to sled every frame of a revision sled does
//! not have (its `revision` key says which it has: sled recovers a prefix of
//! its batches, each of which carries that key), makes sled durable, and
//! deletes the log: from then on sled alone holds the state. A group makes
//! several revisions, so a frame names the revision it starts from as well
//! as the one it ends at: the frames replayed must go on from sled's
//! revision without a gap, or the log is not this store's.
//!
//! ## Format
//! Segments are `wal/{seq:016x}.wal`, 16 MiB of zeros when made. A frame is
//! `len: u32 LE`, `crc32(payload): u32 LE`, then the payload: `base: u64 LE`
//! (the revision before the group), `revision: u64 LE` (its last; equal to
//! `base` for a group that only trims the changelog) and the operations,
//! each `1 klen:u32 key vlen:u32 value` (insert) or `2 klen:u32 key`
//! (remove). A zero `len`, a frame past the end or a CRC
//! mismatch ends the log: a frame torn by a crash was never answered.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The size a segment is made with; a group larger than what is left of
/// one starts the next (and a group larger than this grows it).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// One key change of a group: a value to insert, or `None` to remove.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// The directory of the log in a data dir's sled directory's parent.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// The sequence numbers of the segments in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_suffix(".wal")
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        {
            out.push(seq);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The sled batch that makes `ops`.
pub fn batch(ops: Vec<Op>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in ops {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    batch
}

/// Encodes as a frame the group that went from revision `base` to
/// `revision`.
pub fn frame(base: u64, revision: u64, ops: &[Op]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    let mut out = Vec::with_capacity(24 + size);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    for (k, v) in ops {
        out.push(if v.is_some() { INSERT } else { REMOVE });
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    let payload_len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&payload_len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A frame's payload: the revisions it goes from and to, and its operations.
struct Parsed {
    base: u64,
    revision: u64,
    ops: Vec<Op>,
}

/// Reads a frame's payload.
fn parse(payload: &[u8]) -> Option<Parsed> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn len(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    let mut rest = payload;
    let base = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let revision = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let mut ops = Vec::new();
    while !rest.is_empty() {
        let tag = take(&mut rest, 1)?[0];
        let n = len(&mut rest)?;
        let key = take(&mut rest, n)?.to_vec();
        let value = match tag {
            INSERT => {
                let n = len(&mut rest)?;
                Some(take(&mut rest, n)?.to_vec())
            }
            REMOVE => None,
            _ => return None,
        };
        ops.push((key, value));
    }
    Some(Parsed { base, revision, ops })
}

/// Makes a segment of zeros under a temporary name, syncs it, then gives it
/// its name: a segment in use never grows, so its `fdatasync` has no
/// metadata to write.
///
/// The committer (when it needs the next segment before the checkpointer
/// made it) and the checkpointer may both ask: one makes it, the other
/// waits and finds it. Renaming over a segment already in use would lose
/// what was written to it.
fn make_segment(dir: &Path, seq: u64) -> io::Result<()> {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let path = segment_path(dir, seq);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{seq:016x}.tmp"));
    let f = File::create(&tmp)?;
    let zeros = vec![0u8; 1024 * 1024];
    for i in 0..SEGMENT_BYTES / zeros.len() as u64 {
        f.write_all_at(&zeros, i * zeros.len() as u64)?;
    }
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Applies to `tree` the frames of revisions after the one it holds (read
/// with `revision_of`), makes it durable with `persist`, and deletes the
/// log. Returns how many frames it applied.
pub fn recover(
    dir: &Path,
    tree: &sled::Tree,
    revision_of: impl Fn(&sled::Tree) -> Result<u64>,
    persist: impl FnOnce() -> Result<()>,
) -> Result<usize> {
    let io = |e: io::Error| {
        Error::internal(format!(
            "cannot read the write-ahead log in {}: {e}",
            dir.display()
        ))
    };
    let seqs = segments(dir).map_err(io)?;
    let held = revision_of(tree)?;
    // The revision sled is at as the frames are replayed.
    let mut at_revision = held;
    let mut applied = 0;
    'segments: for &seq in &seqs {
        let bytes = fs::read(segment_path(dir, seq)).map_err(io)?;
        let mut at = 0usize;
        while let Some(head) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
            let Some(payload) = bytes.get(at + 8..at + 8 + len).filter(|_| len > 0) else {
                break 'segments;
            };
            if crc32fast::hash(payload) != crc {
                tracing::warn!(
                    segment = seq,
                    offset = at,
                    "write-ahead log ends in a torn frame: ignored"
                );
                break 'segments;
            }
            let Some(Parsed { base, revision, ops }) = parse(payload) else {
                return Err(Error::internal(format!(
                    "corrupt frame in the write-ahead log segment {seq:016x} at {at}"
                )));
            };
            // A group sled has: its batch carried the revision key. (A group
            // that only trims, `base == revision`, is replayed when it goes
            // on from sled's revision, whether sled has it or not: removing
            // what is removed changes nothing.)
            let has = base < at_revision && revision <= at_revision;
            if !has {
                // Groups are gap-free: a frame that does not go on from
                // sled's revision is another store's log (its `db` gone,
                // say), and replaying it would make a store with a hole.
                if base != at_revision {
                    return Err(Error::internal(format!(
                        "the write-ahead log in {} goes on from revision {base}, but the store holds \
                         revision {at_revision}: it is not this store's log; move it away to open the \
                         store without it",
                        dir.display()
                    )));
                }
                tree.apply_batch(batch(ops)).map_err(Error::internal)?;
                at_revision = revision;
                applied += 1;
            }
            at += 8 + len;
        }
    }
    if applied > 0 {
        tracing::info!(frames = applied, "replayed the write-ahead log");
    }
    persist()?;
    for seq in seqs {
        fs::remove_file(segment_path(dir, seq)).map_err(io)?;
    }
    // Segments a crash left half made.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(entry.path()).map_err(io)?;
            }
        }
    }
    Ok(applied)
}

/// The segment being appended to.
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    /// Where the next frame goes.
    offset: u64,
    /// `fdatasync` after each frame (`--sync`); without it a frame survives
    /// the process being killed, not the machine losing power.
    sync: bool,
}

impl Wal {
    /// Starts an empty log in `dir` (which [`recover`] emptied).
    pub fn create(dir: &Path, sync: bool) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        make_segment(dir, 1)?;
        Ok(Wal {
            dir: dir.to_owned(),
            file: OpenOptions::new().write(true).open(segment_path(dir, 1))?,
            seq: 1,
            offset: 0,
            sync,
        })
    }

    /// The segment being appended to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a frame of `len` bytes still fits in the current segment.
    pub fn fits(&self, len: usize) -> bool {
        self.offset == 0 || self.offset + len as u64 <= SEGMENT_BYTES
    }

    /// Moves on to the next segment (made now if the checkpointer has not
    /// made it yet); the old one can go once sled holds its groups durably.
    pub fn rotate(&mut self) -> io::Result<()> {
        let next = self.seq + 1;
        make_segment(&self.dir, next)?;
        self.file = OpenOptions::new()
            .write(true)
            .open(segment_path(&self.dir, next))?;
        self.seq = next;
        self.offset = 0;
        Ok(())
    }

    /// Writes one frame (from [`frame`]).
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all_at(frame, self.offset)?;
        self.offset += frame.len() as u64;
        Ok(())
    }

    /// Makes what was written durable, if the log syncs.
    pub fn sync(&self) -> io::Result<()> {
        if self.sync { self.file.sync_data() } else { Ok(()) }
    }
}

/// Makes the next segment ahead of time, off the committer's thread.
pub fn prepare(dir: &Path, seq: u64) -> io::Result<()> {
    make_segment(dir, seq)
}

/// Deletes the segments before `seq`: sled holds all their groups durably.
pub fn delete_before(dir: &Path, seq: u64) -> io::Result<()> {
    for s in segments(dir)? {
        if s < seq {
            fs::remove_file(segment_path(dir, s))?;
        }
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_a_torn_one_ends_the_log() {
        let ops: Vec<Op> = vec![
            (b"pkey".to_vec(), Some("조태열 👑".as_bytes().to_vec())),
            (b"gone".to_vec(), None),
        ];
        let f = frame(4, 7, &ops);
        let len = u32::from_le_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 8, f.len());
        let p = parse(&f[8..]).unwrap();
        assert_eq!((p.base, p.revision, p.ops), (4, 7, ops));
        assert!(parse(&f[8..f.len() - 1]).is_none());
    }

    /// A log of groups of several revisions each, and a group that only
    /// trims, written as the committer writes them.
    fn write_log(dir: &Path, groups: &[(u64, u64, &str)]) {
        let mut wal = Wal::create(dir, false).unwrap();
        for &(base, revision, key) in groups {
            let ops: Vec<Op> = vec![
                (b"rev".to_vec(), Some(revision.to_be_bytes().to_vec())),
                (key.as_bytes().to_vec(), Some(b"v".to_vec())),
            ];
            wal.write(&frame(base, revision, &ops)).unwrap();
        }
        wal.sync().unwrap();
    }

    fn tree_at(revision: u64) -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("rev", &revision.to_be_bytes()).unwrap();
        tree
    }

    fn revision_of(tree: &sled::Tree) -> Result<u64> {
        let v = tree.get("rev").unwrap().unwrap();
        Ok(u64::from_be_bytes(v.as_ref().try_into().unwrap()))
    }

    /// sled holds the state after any whole group: recovery replays the
    /// groups after it. (A check that compared a frame's last revision with
    /// the one after sled's refused every log of groups of more than one
    /// revision after a kill.)
    #[test]
    fn recovery_goes_on_from_any_group_sled_holds() {
        let groups = [(4, 7, "a"), (7, 9, "b"), (9, 9, "trim"), (9, 12, "c")];
        for (held, replayed) in [(4, 4), (7, 3), (9, 2), (12, 0)] {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), &groups);
            let tree = tree_at(held);
            let n = recover(dir.path(), &tree, revision_of, || Ok(())).unwrap();
            assert_eq!(n, replayed, "sled at {held}");
            assert_eq!(revision_of(&tree).unwrap(), 12);
            assert!(segments(dir.path()).unwrap().is_empty());
        }
    }

    /// A log that does not go on from sled's revision, or that sled holds
    /// part of a group of, is refused and left in place.
    #[test]
    fn a_log_with_a_gap_or_half_a_group_held_is_refused() {
        for held in [2, 5, 8] {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), &[(4, 7, "a"), (7, 9, "b")]);
            let tree = tree_at(held);
            let err = recover(dir.path(), &tree, revision_of, || Ok(())).unwrap_err();
            assert!(err.to_string().contains("not this store's log"), "{err}");
            assert_eq!(segments(dir.path()).unwrap(), vec![1]);
        }
    }

    /// The committer and the checkpointer may make the same segment at
    /// once: both succeed, and it is made once (without the lock, one
    /// rename finds the other's temporary file gone).
    #[test]
    fn a_segment_made_twice_at_once_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || make_segment(&dir, 2))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(segments(dir.path()).unwrap(), vec![2]);
        let len = fs::metadata(segment_path(dir.path(), 2)).unwrap().len();
        assert_eq!(len, SEGMENT_BYTES);
    }
}

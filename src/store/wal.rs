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

/// The size a segment is made with by default; a group larger than what is
/// left of one starts the next (and a group larger than this grows it).
/// Tests set a few KiB ([`crate::store::StoreConfig::wal_segment_bytes`]) so
/// a rotation comes every few frames.
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
fn make_segment(dir: &Path, seq: u64, bytes: u64) -> io::Result<()> {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let path = segment_path(dir, seq);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{seq:016x}.tmp"));
    let f = File::create(&tmp)?;
    let zeros = vec![0u8; bytes.min(1024 * 1024) as usize];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    fail::fail_point!("wal::segment_made");
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Where a log's frames end, and why.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every segment read to its zero padding.
    Clean,
    /// The last frame written is incomplete (a crash in its write, so it was
    /// never answered): at `seq`, `offset`; nothing valid after it.
    Torn { seq: u64, offset: usize },
}

/// One valid frame: where it is, and what it holds.
struct Found {
    seq: u64,
    offset: usize,
    frame: Parsed,
}

/// Why the frame at an offset cannot be read, or `None` if it can.
fn bad_frame(bytes: &[u8], at: usize) -> Option<&'static str> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len == 0 {
        return (crc != 0).then_some("a frame header with a zero length");
    }
    let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
        return Some("a frame longer than its segment");
    };
    if crc32fast::hash(payload) != crc {
        return Some("a frame whose checksum does not match");
    }
    if parse(payload).is_none() {
        return Some("a frame whose checksum matches but whose contents cannot be read");
    }
    None
}

/// The first CRC-valid frame at or after `from` in `bytes` that could go on
/// from a revision at least `after` (byte by byte: a damaged length hides
/// where the next frame starts). The cheap checks come first, so a segment
/// of noise costs a pass over it, not a checksum per byte.
fn valid_frame_from(bytes: &[u8], from: usize, after: u64) -> Option<usize> {
    let mut at = from;
    while at + 8 + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len >= 16 && at + 8 + len <= bytes.len() {
            let base = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
            let revision = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().expect("8 bytes"));
            if base >= after
                && revision >= base
                && revision - base < 1 << 32
                && bad_frame(bytes, at).is_none()
            {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

/// Reads the whole log: every segment in order, every frame to the zero
/// padding that ends a segment's frames (a rotated segment always ends in
/// padding: the next segment goes on from it). Only a torn *tail* may end
/// the log early: a bad frame that a valid frame follows anywhere in the
/// log, a missing segment, or bytes after a segment's padding are damage,
/// and the log is refused as it is (nothing applied, nothing deleted).
fn read_log(dir: &Path, seqs: &[u64]) -> Result<(Vec<Found>, End)> {
    let io = |e: io::Error| {
        Error::internal(format!(
            "cannot read the write-ahead log in {}: {e}",
            dir.display()
        ))
    };
    let refuse = |seq: u64, offset: usize, what: &str| {
        Error::internal(format!(
            "the write-ahead log in {} is damaged: {what} in segment {seq:016x}.wal at byte {offset}, \
             and acknowledged writes follow it. The store was not opened and the log was left as it is. \
             Copy the data dir aside, then restore the latest backup (factcheck restore); or, to keep the \
             writes before the damage and lose those after it, move segment {seq:016x}.wal and every later \
             one out of wal/ and start again",
            dir.display()
        ))
    };
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::internal(format!(
                "the write-ahead log in {} lacks segment {:016x}.wal between {:016x}.wal and {:016x}.wal: \
                 the writes it held are lost. The store was not opened and the log was left as it is; \
                 copy the data dir aside and restore the latest backup (factcheck restore)",
                dir.display(),
                pair[0] + 1,
                pair[0],
                pair[1]
            )));
        }
    }
    let mut found = Vec::new();
    let mut last_revision = 0;
    let mut segments = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        segments.push((seq, fs::read(segment_path(dir, seq)).map_err(io)?));
    }
    for (i, (seq, bytes)) in segments.iter().enumerate() {
        let seq = *seq;
        let mut at = 0usize;
        while at + 8 <= bytes.len() {
            let bad = if bytes[at..at + 8] == [0; 8] {
                // The padding: the rest of the segment must be zeros.
                if bytes[at..].iter().all(|&b| b == 0) {
                    break;
                }
                Some("a zeroed frame header")
            } else {
                bad_frame(bytes, at)
            };
            match bad {
                None => {
                    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
                    let frame = parse(&bytes[at + 8..at + 8 + len]).expect("checked");
                    last_revision = frame.revision;
                    found.push(Found {
                        seq,
                        offset: at,
                        frame,
                    });
                    at += 8 + len;
                }
                Some(what) => {
                    // A torn tail, or damage with acknowledged frames after it?
                    let after_here = valid_frame_from(bytes, at + 1, last_revision).is_some();
                    let after_later = segments[i + 1..]
                        .iter()
                        .any(|(_, b)| valid_frame_from(b, 0, last_revision).is_some());
                    if after_here || after_later {
                        return Err(refuse(seq, at, what));
                    }
                    return Ok((found, End::Torn { seq, offset: at }));
                }
            }
        }
    }
    Ok((found, End::Clean))
}

/// Applies to `tree` the frames of revisions after the one it holds (read
/// with `revision_of`), makes it durable with `persist`, and deletes the
/// log. Returns how many frames it applied.
///
/// The whole log is read and checked before anything is applied: a log
/// that is damaged before its tail, or that does not go on from sled's
/// revision, is refused and left untouched (PostgreSQL and etcd refuse the
/// same way: guessing would drop acknowledged writes silently).
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
    let (frames, end) = read_log(dir, &seqs)?;
    let held = revision_of(tree)?;
    // Which frames sled lacks: they must go on from its revision, frame by
    // frame, without a gap.
    let mut at_revision = held;
    let mut replay = Vec::new();
    for Found { seq, offset, frame } in frames {
        // A group sled has: its batch carried the revision key. (A group
        // that only trims, `base == revision`, is replayed when it goes on
        // from sled's revision, whether sled has it or not: removing what is
        // removed changes nothing.)
        let has = frame.base < at_revision && frame.revision <= at_revision;
        if has {
            continue;
        }
        // Groups are gap-free: a frame that does not go on from sled's
        // revision is another store's log (its `db` gone, say), and
        // replaying it would make a store with a hole.
        if frame.base != at_revision {
            return Err(Error::internal(format!(
                "the write-ahead log in {} goes on from revision {} (segment {seq:016x}.wal at byte \
                 {offset}), but the store holds revision {at_revision}: it is not this store's log, or \
                 frames before it are lost. The store was not opened and the log was left as it is. Copy \
                 the data dir aside; if the log is another store's, move wal/ away to open this one \
                 without it, else restore the latest backup (factcheck restore)",
                dir.display(),
                frame.base
            )));
        }
        at_revision = frame.revision;
        replay.push(frame.ops);
    }
    if let End::Torn { seq, offset } = end {
        tracing::warn!(
            segment = seq,
            offset,
            "the write-ahead log ends in a torn frame (a write a crash interrupted, never acknowledged): dropped"
        );
    }
    let applied = replay.len();
    for ops in replay {
        tree.apply_batch(batch(ops)).map_err(Error::internal)?;
    }
    if applied > 0 {
        tracing::info!(
            frames = applied,
            revision = at_revision,
            "replayed the write-ahead log"
        );
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
    /// The size segments are made with.
    segment_bytes: u64,
}

impl Wal {
    /// Starts an empty log in `dir` (which [`recover`] emptied).
    pub fn create(dir: &Path, sync: bool, segment_bytes: u64) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        make_segment(dir, 1, segment_bytes)?;
        Ok(Wal {
            dir: dir.to_owned(),
            file: OpenOptions::new().write(true).open(segment_path(dir, 1))?,
            seq: 1,
            offset: 0,
            sync,
            segment_bytes,
        })
    }

    /// The segment being appended to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size segments are made with.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Whether a frame of `len` bytes still fits in the current segment.
    pub fn fits(&self, len: usize) -> bool {
        self.offset == 0 || self.offset + len as u64 <= self.segment_bytes
    }

    /// Moves on to the next segment (made now if the checkpointer has not
    /// made it yet); the old one can go once sled holds its groups durably.
    pub fn rotate(&mut self) -> io::Result<()> {
        let next = self.seq + 1;
        make_segment(&self.dir, next, self.segment_bytes)?;
        // A crash here: the old segment is full and not yet checkpointed,
        // the new one empty (recovery reads both).
        fail::fail_point!("wal::rotate", |_| Err(io::Error::other("failpoint wal::rotate")));
        self.file = OpenOptions::new()
            .write(true)
            .open(segment_path(&self.dir, next))?;
        self.seq = next;
        self.offset = 0;
        Ok(())
    }

    /// Writes one frame (from [`frame`]).
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        fail::fail_point!("wal::write", |_| Err(io::Error::other("failpoint wal::write")));
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
pub fn prepare(dir: &Path, seq: u64, bytes: u64) -> io::Result<()> {
    make_segment(dir, seq, bytes)
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
        write_log_in(
            dir,
            SEGMENT_BYTES,
            groups.iter().map(|&(b, r, k)| (b, r, k.to_owned(), 1)),
        );
    }

    /// Writes groups `(base, revision, key, value bytes)` as the committer
    /// does, rotating when a frame does not fit; returns where each frame
    /// went (segment, offset, length).
    fn write_log_in(
        dir: &Path,
        segment_bytes: u64,
        groups: impl IntoIterator<Item = (u64, u64, String, usize)>,
    ) -> Vec<(u64, u64, usize)> {
        let mut wal = Wal::create(dir, false, segment_bytes).unwrap();
        let mut placed = Vec::new();
        for (base, revision, key, size) in groups {
            let ops: Vec<Op> = vec![
                (b"rev".to_vec(), Some(revision.to_be_bytes().to_vec())),
                (key.into_bytes(), Some(vec![b'v'; size])),
            ];
            let f = frame(base, revision, &ops);
            if !wal.fits(f.len()) {
                wal.rotate().unwrap();
            }
            placed.push((wal.seq(), wal.offset, f.len()));
            wal.write(&f).unwrap();
        }
        wal.sync().unwrap();
        placed
    }

    /// Forty groups of one revision each, `k1`..`k40`, a few per segment.
    fn forty_groups(dir: &Path) -> Vec<(u64, u64, usize)> {
        write_log_in(dir, 4096, (1..=40).map(|r| (r - 1, r, format!("k{r}"), 900)))
    }

    /// The log's files and their bytes.
    fn log_files(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        segments(dir)
            .unwrap()
            .into_iter()
            .map(|s| (s, fs::read(segment_path(dir, s)).unwrap()))
            .collect()
    }

    fn poke(dir: &Path, seq: u64, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, seq))
            .unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    /// A rotated segment ends in zero padding and the log goes on in the
    /// next one: recovery reads every segment (it once stopped at the first
    /// padding and dropped every acknowledged group after it).
    #[test]
    fn recovery_reads_every_segment_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let placed = forty_groups(dir.path());
        assert!(placed.last().unwrap().0 >= 10, "few rotations: {placed:?}");
        let tree = tree_at(0);
        assert_eq!(recover(dir.path(), &tree, revision_of, || Ok(())).unwrap(), 40);
        assert_eq!(revision_of(&tree).unwrap(), 40);
        for r in 1..=40 {
            assert!(tree.contains_key(format!("k{r}")).unwrap(), "k{r} lost");
        }
    }

    /// Damage before the tail — a flipped bit, a zeroed header, a broken
    /// length, a segment gone — with acknowledged frames after it: the log
    /// is refused, named, and left exactly as it was; nothing is applied.
    #[test]
    fn damage_before_the_tail_is_refused_and_the_log_kept() {
        type Damage = fn(&Path, &[(u64, u64, usize)]);
        let damages: [(&str, Damage); 5] = [
            ("checksum", |d, p| {
                let (seq, off, len) = p[3];
                let f = fs::read(segment_path(d, seq)).unwrap();
                let at = off as usize + len - 1;
                poke(d, seq, at as u64, &[f[at] ^ 1]);
            }),
            ("zeroed frame header", |d, p| {
                let (seq, off, _) = p[3];
                poke(d, seq, off, &[0; 8]);
            }),
            ("longer than its segment", |d, p| {
                let (seq, off, _) = p[3];
                poke(d, seq, off, &u32::MAX.to_le_bytes());
            }),
            ("checksum", |d, p| {
                // The length of frame 4 of 40 grows by 16: the frame swallows
                // the padding; its checksum fails.
                let (seq, off, len) = p[3];
                poke(d, seq, off, &((len - 8 + 16) as u32).to_le_bytes());
            }),
            ("lacks segment", |d, p| {
                let (seq, _, _) = p[20];
                fs::remove_file(segment_path(d, seq)).unwrap();
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let placed = forty_groups(dir.path());
            damage(dir.path(), &placed);
            let before = log_files(dir.path());
            let tree = tree_at(0);
            let err = recover(dir.path(), &tree, revision_of, || panic!("persisted")).unwrap_err();
            let err = err.to_string();
            assert!(err.contains(what), "{what}: {err}");
            assert!(err.contains(".wal"), "names no segment: {err}");
            assert_eq!(
                revision_of(&tree).unwrap(),
                0,
                "{what}: applied part of a damaged log"
            );
            assert!(log_files(dir.path()) == before, "{what}: the log was changed");
        }
    }

    /// A torn tail — the last frame half written, or noise after its
    /// header's page was lost — is dropped; everything before it replays.
    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_replayed() {
        for cut in [1usize, 8, 9, 300] {
            let dir = tempfile::tempdir().unwrap();
            let placed = forty_groups(dir.path());
            let (seq, off, len) = placed[39];
            let zeros = vec![0; len - cut.min(len - 1)];
            poke(dir.path(), seq, off + cut.min(len - 1) as u64, &zeros);
            let tree = tree_at(0);
            assert_eq!(recover(dir.path(), &tree, revision_of, || Ok(())).unwrap(), 39);
            assert_eq!(revision_of(&tree).unwrap(), 39);
        }
        // The header's page lost, a later page of the frame kept.
        let dir = tempfile::tempdir().unwrap();
        let placed = forty_groups(dir.path());
        let (seq, off, _) = placed[39];
        poke(dir.path(), seq, off, &[0; 8]);
        let tree = tree_at(0);
        assert_eq!(recover(dir.path(), &tree, revision_of, || Ok(())).unwrap(), 39);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any crash point over any segment size: groups of random sizes
        /// written as the committer writes them; the checkpointer had made
        /// sled durable through some group and deleted the segments before
        /// it; the write in flight was torn at any byte. Recovery keeps
        /// every whole frame (each was answered) and no torn one.
        #[test]
        fn recovery_keeps_every_whole_frame_at_any_crash_point(
            segment_bytes in 4096u64..20_000,
            sizes in proptest::collection::vec(1usize..6000, 1..60),
            held_frac in 0.0f64..1.0,
            torn in proptest::option::of(0.0f64..1.0),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let n = sizes.len() as u64;
            let placed = write_log_in(
                dir.path(),
                segment_bytes,
                sizes.iter().enumerate().map(|(i, &s)| (i as u64 * 2, i as u64 * 2 + 2, format!("k{i}"), s)),
            );
            // The checkpointer: sled durable through the groups of the
            // segments before `first`, which are deleted; sled may hold any
            // later group too (its flusher).
            let held_groups = ((n as f64) * held_frac) as u64;
            let first_kept = if held_groups == 0 { 1 } else { placed[held_groups as usize - 1].0 };
            delete_before(dir.path(), first_kept).unwrap();
            let mut whole = n;
            if let Some(at) = torn {
                let (seq, off, len) = placed[n as usize - 1];
                // (sled never holds a group the log does not: log first.)
                if seq >= first_kept && held_groups < n {
                    let keep = ((len as f64) * at) as usize;
                    poke(dir.path(), seq, off + keep as u64, &vec![0; len - keep]);
                    whole = n - 1;
                }
            }
            let tree = tree_at(held_groups * 2);
            for i in 0..held_groups {
                tree.insert(format!("k{i}"), b"v").unwrap();
            }
            recover(dir.path(), &tree, revision_of, || Ok(())).unwrap();
            proptest::prop_assert_eq!(revision_of(&tree).unwrap(), whole.max(held_groups) * 2);
            for i in 0..whole {
                proptest::prop_assert!(tree.contains_key(format!("k{i}")).unwrap(), "k{} lost", i);
            }
            proptest::prop_assert!(segments(dir.path()).unwrap().is_empty());
        }
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
                std::thread::spawn(move || make_segment(&dir, 2, SEGMENT_BYTES))
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

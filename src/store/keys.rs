//! The key layout of the one sled tree, `factcheck`.
//!
//! Everything lives in one tree so that a group of mutations is one atomic
//! `apply_batch` (sled's multi-tree transactions cost ~5k/s of CPU here).
//! The first byte of a key names its keyspace; each keyspace is documented
//! as `key => value`. Values start with a format version byte (see `codec`).
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | meta | `m` `name` | per name: `revision` => u64 BE; `compacted` => u64 BE; `page_secret` => 32 bytes |
//! | articles (format 1) | `a` `article_id` | [`codec::ArticleRecord`](super::codec::ArticleRecord): rewritten as revision 1 at open |
//! | article revisions | `v` `article_id` `0x00` `revision: u32 BE` | [`codec::ArticleRevisionRecord`](super::codec::ArticleRevisionRecord); never rewritten, the last is the current text |
//! | annotations by position | `p` `article_id` `0x00` `start: u32 BE` `uuid: 16` | [`codec::AnnotationRecord`](super::codec::AnnotationRecord) |
//! | annotation locations | `n` `uuid: 16` | `start: u32 BE` `article_id` |
//! | request ids | `r` `request_uuid: 16` | [`codec::RequestRecord`](super::codec::RequestRecord) |
//! | article stats | `s` `article_id` | [`codec::StatsRecord`](super::codec::StatsRecord): written only by a deletion or a correction |
//! | changelog | `l` `revision: u64 BE` | [`codec::ChangeRecord`](super::codec::ChangeRecord): pointers to the history records of the revision |
//! | audit history | `h` `uuid: 16` `revision: u64 BE` [`seq: u32 BE`] | [`codec::HistoryRecord`](super::codec::HistoryRecord), chained by hash; never trimmed |
//! | re-anchorings in progress | `g` `article_id` | [`super::reanchoring::Mark`]: a correction whose annotations are still being re-anchored, chunk by chunk; deleted by the last chunk |
//! | review history | `j` `article_id` `0x00` `revision: u64 BE` `seq: u32 BE` | [`codec::ReviewRecord`](super::codec::ReviewRecord): adjudications, sign-offs, withdrawals, chained by hash per article; never trimmed. Read whole at open: the adjudications and the sign-off in force live in the index |
//!
//! ## What a create writes, and why each key must exist
//!
//! A create is 4 keys and one full copy of the annotation beyond its own
//! record (format 3 wrote 6 keys and two copies: see `docs/BENCHMARKS.md`):
//! - `p`: the annotation, in `ListAnnotations` order: every read of it.
//! - `n`: where its `p` key is, from its id alone: `GetAnnotation` by name or
//!   bare id, and the committer's read before an update or delete, without
//!   a scan.
//! - `h`: its audit history, chained by hash and never trimmed: the one
//!   copy of the change the store keeps.
//! - `l`: the revision's changelog entry: which history records the revision
//!   wrote (16 + 4 bytes each). Watches resume from a revision and replay in
//!   order from it; it is trimmed past the retention, the history is not.
//! - `r` (only with a `request_id`): its outcome, for a retry to get.
//!
//! and once per group `m revision`: the write-ahead log's recovery replays
//! the groups after it. Not written per create any more: the article's stats
//! (`s`). At open, an article's last change and last annotation update are
//! the newest of its annotations', its review records' and its stats
//! record's, so `s` is written only when a deletion or a correction takes
//! away what the other records would tell.
//!
//! Meta names: `revision` is the last committed revision; `compacted` the
//! highest revision trimmed from the changelog (0: none), so the oldest kept
//! is `compacted + 1`.
//!
//! A revision may change one annotation several times (a batch that updates
//! it twice): each change keeps its own history record. The first change of an
//! annotation in a revision has no `seq` (the key every record had before
//! batches could repeat a name); the next ones have `seq` 1, 2, ... A shorter
//! key sorts before its extensions, so a history scans in the order it was
//! written.
//!
//! Article ids never contain `0x00` (see [`ArticleId`]), so `article_id 0x00`
//! is a prefix that no other article's keys share, and the position index
//! sorts by article, then start, then id: the order of `ListAnnotations`.

use uuid::Uuid;

use crate::domain::ArticleId;

pub const ARTICLE: u8 = b'a';
pub const ARTICLE_REVISION: u8 = b'v';
pub const POSITION: u8 = b'p';
pub const LOCATION: u8 = b'n';
pub const REQUEST: u8 = b'r';
pub const STATS: u8 = b's';
pub const CHANGE: u8 = b'l';
pub const HISTORY: u8 = b'h';
pub const REVIEW: u8 = b'j';
pub const REANCHORING: u8 = b'g';

pub const META_REVISION: &[u8] = b"mrevision";
pub const META_PAGE_SECRET: &[u8] = b"mpage_secret";
pub const META_COMPACTED: &[u8] = b"mcompacted";

pub fn change(revision: u64) -> [u8; 9] {
    let mut k = [CHANGE; 9];
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

/// The revision in a changelog key, if well formed.
pub fn change_revision(key: &[u8]) -> Option<u64> {
    match key {
        [CHANGE, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// `v article_id 0x00`: every revision of one article.
pub fn article_revision_prefix(id: &ArticleId) -> Vec<u8> {
    let mut k = prefixed(ARTICLE_REVISION, id.as_str().as_bytes());
    k.push(0);
    k
}

pub fn article_revision(id: &ArticleId, revision: u32) -> Vec<u8> {
    let mut k = article_revision_prefix(id);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// The article and revision of an article revision key, if well formed.
pub fn parse_article_revision(key: &[u8]) -> Option<(ArticleId, u32)> {
    let rest = key.strip_prefix(&[ARTICLE_REVISION])?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let article = ArticleId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let revision = u32::from_be_bytes(rest[nul + 1..].try_into().ok()?);
    Some((article, revision))
}

pub fn stats(id: &ArticleId) -> Vec<u8> {
    prefixed(STATS, id.as_str().as_bytes())
}

/// `p article_id 0x00`: every annotation of one article.
pub fn position_prefix(id: &ArticleId) -> Vec<u8> {
    let mut k = prefixed(POSITION, id.as_str().as_bytes());
    k.push(0);
    k
}

pub fn position(id: &ArticleId, start: u32, uuid: Uuid) -> Vec<u8> {
    let mut k = position_prefix(id);
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(uuid.as_bytes());
    k
}

/// The article, start and id of a position key, if well formed.
pub fn parse_position(key: &[u8]) -> Option<(ArticleId, u32, Uuid)> {
    let rest = key.strip_prefix(&[POSITION])?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let article = ArticleId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let tail = &rest[nul + 1..];
    if tail.len() != 20 {
        return None;
    }
    let start = u32::from_be_bytes(tail[..4].try_into().ok()?);
    let uuid = Uuid::from_slice(&tail[4..]).ok()?;
    Some((article, start, uuid))
}

pub fn location(uuid: Uuid) -> Vec<u8> {
    prefixed(LOCATION, uuid.as_bytes())
}

pub fn location_value(start: u32, article: &ArticleId) -> Vec<u8> {
    let mut v = start.to_be_bytes().to_vec();
    v.extend_from_slice(article.as_str().as_bytes());
    v
}

/// The start offset a location value points at, if well formed.
pub fn location_start(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// `h uuid`: the audit history of one annotation.
pub fn history_prefix(uuid: Uuid) -> Vec<u8> {
    prefixed(HISTORY, uuid.as_bytes())
}

/// The key of the `seq`-th change (from 0) of `uuid` in `revision`.
pub fn history(uuid: Uuid, revision: u64, seq: u32) -> Vec<u8> {
    let mut k = history_prefix(uuid);
    k.extend_from_slice(&revision.to_be_bytes());
    if seq > 0 {
        k.extend_from_slice(&seq.to_be_bytes());
    }
    k
}

/// The id, revision and seq of a history key, if well formed.
pub fn parse_history(k: &[u8]) -> Option<(Uuid, u64, u32)> {
    let rest = k.strip_prefix(&[HISTORY])?;
    let (id, rest) = rest.split_at_checked(16)?;
    let id = Uuid::from_slice(id).ok()?;
    match rest.len() {
        8 => Some((id, u64::from_be_bytes(rest.try_into().ok()?), 0)),
        12 => {
            let seq = u32::from_be_bytes(rest[8..].try_into().ok()?);
            // seq 0 is written without its bytes: a key with them is not ours.
            (seq > 0).then_some((id, u64::from_be_bytes(rest[..8].try_into().ok()?), seq))
        }
        _ => None,
    }
}

/// `j article_id 0x00`: the review history of one article.
pub fn review_prefix(id: &ArticleId) -> Vec<u8> {
    let mut k = prefixed(REVIEW, id.as_str().as_bytes());
    k.push(0);
    k
}

/// The key of the `seq`-th review record (from 0) of `id` in `revision`.
pub fn review(id: &ArticleId, revision: u64, seq: u32) -> Vec<u8> {
    let mut k = review_prefix(id);
    k.extend_from_slice(&revision.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The article, revision and seq of a review history key, if well formed.
pub fn parse_review(key: &[u8]) -> Option<(ArticleId, u64, u32)> {
    let rest = key.strip_prefix(&[REVIEW])?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let article = ArticleId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let tail = &rest[nul + 1..];
    if tail.len() != 12 {
        return None;
    }
    let revision = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let seq = u32::from_be_bytes(tail[8..].try_into().ok()?);
    Some((article, revision, seq))
}

/// `g article_id`: the mark of an unfinished re-anchoring of the article.
pub fn reanchoring(id: &ArticleId) -> Vec<u8> {
    prefixed(REANCHORING, id.as_str().as_bytes())
}

/// The article of a re-anchoring mark's key, if well formed.
pub fn parse_reanchoring(key: &[u8]) -> Option<ArticleId> {
    let rest = key.strip_prefix(&[REANCHORING])?;
    ArticleId::parse(std::str::from_utf8(rest).ok()?).ok()
}

/// A stored revision number (`m revision`, `m compacted`): 0 when absent,
/// and an error naming `what` when not 8 bytes.
pub fn decode_revision(value: Option<&[u8]>, what: &str) -> crate::error::Result<u64> {
    match value {
        None => Ok(0),
        Some(v) => v
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| crate::error::Error::internal(format!("corrupt {what}"))),
    }
}

pub fn request(id: Uuid) -> Vec<u8> {
    prefixed(REQUEST, id.as_bytes())
}

fn prefixed(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len() + 21);
    k.push(space);
    k.extend_from_slice(rest);
    k
}

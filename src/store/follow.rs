//! Following the store's changelog: how a server takes in the changes other
//! servers committed to the same store (the etcd engine), and its own group
//! whose answer was lost.
//!
//! Every commit writes a changelog entry per revision in the same atomic
//! group as its records ([`super::keys`]), so the changelog from this
//! server's revision to the engine's is exactly what it has not published.
//! [`follow`] reads it, moves the index and the revision forward over it as
//! if this server had committed it ([`super::committer::publish`]), and
//! hands it to live watchers: a watch on any server sees every server's
//! changes, in revision order, with no gap. Only the committer thread
//! calls it, so the index still has one writer.
//!
//! It runs when the engine's watch on the store's head says another server
//! committed ([`super::engine::Engine::watch_head`]), when a commit lost its
//! guard to another server's ([`super::engine::CommitError::Conflict`]), after
//! a commit whose outcome is unknown, and for every read that must see all
//! writes acknowledged before it began (Kubernetes' consistent reads from
//! cache, KEP-2340: read the current revision with a quorum read, then
//! serve once the local state has reached it). Reads waiting together share
//! one quorum read.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::engine::PageQuery;
use super::{Shared, codec, committer, keys};
use crate::domain::{Article, ArticleId};
use crate::error::{Error, Result};

/// Changelog entries read and published at a time.
const PAGE: u64 = 256;

/// Takes in every change the engine holds past this server's revision;
/// returns the revision reached.
pub(super) fn follow(shared: &Shared) -> Result<u64> {
    let stored = shared.engine.stored_revision()?;
    let mut head = shared.revision.load(Ordering::Acquire);
    if stored < head {
        return Err(Error::internal(format!(
            "the store's revision went back from {head} to {stored}: was a backup restored under a running server?"
        )));
    }
    while head < stored {
        let upper = stored.min(head + PAGE);
        let (lower, end) = (keys::change(head + 1), keys::change(upper + 1));
        let mut changes = Vec::new();
        let entries = shared
            .engine
            .range(Bound::Included(&lower[..]), Bound::Excluded(&end[..]))
            .map(|item| item.map(|(_, v)| v))
            .collect::<Result<Vec<_>>>()?;
        let source = Prefetched::read(shared, &entries)?;
        for v in entries {
            let change = codec::decode_change(&v, &source)?;
            if change.revision != head + 1 + changes.len() as u64 {
                return Err(cannot_follow(shared, head + 1 + changes.len() as u64));
            }
            changes.push(change);
        }
        if changes.len() as u64 != upper - head {
            return Err(cannot_follow(shared, head + 1 + changes.len() as u64));
        }
        let compacted = Some(super::compaction_mark(&*shared.engine)?)
            .filter(|c| *c > shared.compacted.load(Ordering::Acquire));
        committer::publish(shared, upper, &changes, compacted);
        committer::broadcast(shared, changes);
        head = upper;
    }
    Ok(head)
}

/// The changelog no longer holds a revision this server has not seen (it
/// fell further behind than the retention): it cannot catch up by
/// following, so it stops serving; started again, it lists the store anew.
fn cannot_follow(shared: &Shared, missing: u64) -> Error {
    tracing::error!(
        missing,
        "the changelog no longer holds revision {missing}, which this server has not taken in: it fell behind \
         the changelog's retention. Refusing to serve; restart it to load the store afresh"
    );
    shared.failed.send_replace(true);
    Error::StoreFailed
}

/// The history records a page of changelog entries points at, read in a
/// few round trips ([`Engine::pages`](super::engine::Engine::pages)) rather
/// than two per annotation changed: a batch of 1,000 creates is one
/// revision pointing at 1,000 records.
struct Prefetched<'a> {
    shared: &'a Shared,
    /// `h id revision seq` → the record and the one before it (for
    /// updates).
    records: HashMap<Vec<u8>, (codec::HistoryRecord, Option<codec::HistoryRecord>)>,
}

impl<'a> Prefetched<'a> {
    fn read(shared: &'a Shared, entries: &[Vec<u8>]) -> Result<Self> {
        let mut keys = Vec::new();
        for v in entries {
            let r: codec::ChangeRecord = codec::decode(v)?;
            for e in &r.events {
                if let codec::EventRecord::History { id, seq } = e {
                    keys.push((
                        Uuid::from_bytes(*id),
                        keys::history(Uuid::from_bytes(*id), r.revision, *seq),
                    ));
                }
            }
        }
        let queries: Vec<PageQuery> = keys.iter().map(|(_, k)| PageQuery::key(k)).collect();
        let found = shared.engine.pages(&queries)?;
        let mut records = HashMap::new();
        let mut updates = Vec::new();
        for ((id, key), pairs) in keys.into_iter().zip(found) {
            let Some((_, v)) = pairs.into_iter().next() else {
                continue;
            };
            let record: codec::HistoryRecord = codec::decode(&v)?;
            if matches!(record.kind, codec::HistoryKind::Updated) {
                updates.push((id, key.clone()));
            }
            records.insert(key, (record, None));
        }
        let queries: Vec<PageQuery> = updates
            .iter()
            .map(|(id, key)| PageQuery::last_before(&keys::history_prefix(*id), key))
            .collect();
        for ((_, key), pairs) in updates.into_iter().zip(shared.engine.pages(&queries)?) {
            if let Some((_, v)) = pairs.into_iter().next()
                && let Some(entry) = records.get_mut(&key)
            {
                entry.1 = Some(codec::decode(&v)?);
            }
        }
        Ok(Prefetched { shared, records })
    }
}

impl codec::ChangeSource for Prefetched<'_> {
    fn article(&self, id: &ArticleId, revision: u32) -> Result<Arc<Article>> {
        self.shared.article(id, revision)
    }

    fn history(
        &self,
        id: Uuid,
        revision: u64,
        seq: u32,
    ) -> Result<(codec::HistoryRecord, Option<codec::HistoryRecord>)> {
        match self.records.get(&keys::history(id, revision, seq)) {
            Some(found) => Ok(found.clone()),
            None => self.shared.history(id, revision, seq),
        }
    }

    fn review(&self, article: &ArticleId, revision: u64, seq: u32) -> Result<codec::ReviewRecord> {
        codec::ChangeSource::review(self.shared, article, revision, seq)
    }
}

impl codec::ChangeSource for Shared {
    fn article(&self, id: &ArticleId, revision: u32) -> Result<Arc<Article>> {
        super::read_article_revision(&*self.engine, id, revision)?
            .ok_or_else(|| Error::internal(format!("changelog names a missing revision {revision} of {id}")))
    }

    fn history(
        &self,
        id: Uuid,
        revision: u64,
        seq: u32,
    ) -> Result<(codec::HistoryRecord, Option<codec::HistoryRecord>)> {
        let tree = &*self.engine;
        let key = keys::history(id, revision, seq);
        let record = tree.get(&key)?.ok_or_else(|| {
            Error::internal(format!(
                "changelog names a missing history record of {id} at {revision}"
            ))
        })?;
        let previous = tree
            .last_before(&keys::history_prefix(id), &key)?
            .map(|(_, v)| codec::decode(&v))
            .transpose()?;
        Ok((codec::decode(&record)?, previous))
    }

    fn review(&self, article: &ArticleId, revision: u64, seq: u32) -> Result<codec::ReviewRecord> {
        let v = self
            .engine
            .get(&keys::review(article, revision, seq))?
            .ok_or_else(|| {
                Error::internal(format!(
                    "changelog names a missing review record of {article} at {revision}"
                ))
            })?;
        codec::decode(&v)
    }
}

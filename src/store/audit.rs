//! The audit history: reading it, and checking its hash chains.
//!
//! The committer writes one [`HistoryRecord`] per change of an annotation, in
//! the same batch as the change (`h uuid revision`), chained to the previous
//! record of that annotation by hash. Nothing trims or rewrites it.

use std::ops::Bound;

use uuid::Uuid;

use super::codec::{self, HistoryKind, HistoryRecord};
use super::engine::Engine;
use super::{Store, keys, read_annotation};
use crate::domain::{Annotation, AnnotationName, EventKind, Revision};
use crate::error::{Error, Result};

/// What [`Store::verify_audit`] found.
#[derive(Debug, Default)]
pub struct AuditReport {
    /// Annotations with a history.
    pub chains: u64,
    /// Articles with a review history.
    pub review_chains: u64,
    /// History records checked.
    pub records: u64,
    /// Every break found, one line each; empty when all is well.
    pub problems: Vec<String>,
}

impl Store {
    /// Up to `limit` history records of `name` after the record at
    /// `after`, oldest first, as of the last durable revision, and whether
    /// more follow. Not found if the annotation never existed. Blocking.
    pub fn history(
        &self,
        name: &AnnotationName,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<(Revision, HistoryCursor)>, bool)> {
        let tree = &*self.inner.shared.engine;
        let at = self.revision();
        let lower = match after {
            Some(c) => keys::history(name.id, c.revision, c.seq),
            None => keys::history_prefix(name.id),
        };
        let lower = match after {
            Some(_) => Bound::Excluded(&lower[..]),
            None => Bound::Included(&lower[..]),
        };
        let upper = keys::history(name.id, u64::MAX, u32::MAX);
        let mut out = Vec::new();
        let mut more = false;
        for item in tree.range(lower, Bound::Included(&upper[..])) {
            let (k, v) = item?;
            let Some((_, key_revision, seq)) = keys::parse_history(&k) else {
                return Err(Error::internal("malformed history key"));
            };
            if key_revision > at {
                // Not durable yet, or never will be.
                break;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            let record: HistoryRecord = codec::decode(&v)?;
            let revision = to_revision(record)?;
            let cursor = HistoryCursor {
                revision: key_revision,
                seq,
            };
            if revision.annotation.name.article != name.article {
                return Err(Error::not_found(name.to_string()));
            }
            out.push((revision, cursor));
        }
        if out.is_empty() && after.is_none() && !tree.any_in(&keys::history_prefix(name.id))? {
            return Err(Error::not_found(name.to_string()));
        }
        Ok((out, more))
    }

    /// Checks every history chain: each record's hash, its link to the one
    /// before, revisions in order, and that the last state of each chain is
    /// the stored annotation (or that a deleted one is gone). Blocking;
    /// reads the whole history.
    pub fn verify_audit(&self) -> Result<AuditReport> {
        let tree = &*self.inner.shared.engine;
        let _index = self.read_lock();
        let mut report = AuditReport::default();
        let mut current: Option<(Uuid, HistoryRecord)> = None;
        let mut live = 0u64;
        for item in tree.scan_prefix(&[keys::HISTORY]) {
            let (k, v) = item?;
            report.records += 1;
            let Some((id, key_revision, seq)) = keys::parse_history(&k) else {
                report
                    .problems
                    .push(format!("malformed history key {}", hex::encode(&k)));
                continue;
            };
            let record: HistoryRecord = match codec::decode(&v) {
                Ok(r) => r,
                Err(_) => {
                    report
                        .problems
                        .push(format!("{id} revision {key_revision}: record does not decode"));
                    continue;
                }
            };
            let at = match seq {
                0 => format!("{id} revision {key_revision}"),
                seq => format!("{id} revision {key_revision} change {seq}"),
            };
            if record.revision != key_revision || Uuid::from_bytes(record.state.id) != id {
                report
                    .problems
                    .push(format!("{at}: record does not match its key"));
            }
            if record.content_hash() != record.hash {
                report
                    .problems
                    .push(format!("{at}: hash does not match the record's content"));
            }
            match &current {
                Some((prev_id, prev)) if *prev_id == id => {
                    if record.prev_hash != prev.hash {
                        report.problems.push(format!(
                            "{at}: previous hash does not link to revision {}",
                            prev.revision
                        ));
                    }
                    if record.revision < prev.revision || (record.revision == prev.revision && seq == 0) {
                        report.problems.push(format!("{at}: revisions out of order"));
                    }
                    if prev.kind == HistoryKind::Deleted {
                        report.problems.push(format!("{at}: follows a deletion"));
                    }
                }
                _ => {
                    if let Some((prev_id, prev)) = current.take() {
                        live += u64::from(self.check_last(prev_id, &prev, &mut report.problems)?);
                    }
                    report.chains += 1;
                    if record.prev_hash != [0; 32] {
                        report
                            .problems
                            .push(format!("{at}: first record has a previous hash"));
                    }
                    if record.kind != HistoryKind::Created {
                        report
                            .problems
                            .push(format!("{at}: history does not begin with a creation"));
                    }
                }
            }
            current = Some((id, record));
        }
        if let Some((id, last)) = current {
            live += u64::from(self.check_last(id, &last, &mut report.problems)?);
        }
        let mut stored = 0u64;
        for item in tree.scan_prefix(&[keys::POSITION]) {
            item?;
            stored += 1;
        }
        if stored != live {
            report.problems.push(format!(
                "{stored} annotations are stored but {live} histories end in a live state"
            ));
        }
        self.verify_reviews(&mut report)?;
        Ok(report)
    }

    /// Whether the chain ends live; notes where its last state and the
    /// stored annotation disagree.
    fn check_last(&self, id: Uuid, last: &HistoryRecord, problems: &mut Vec<String>) -> Result<bool> {
        let stored = read_annotation(&*self.inner.shared.engine, id)?;
        let expected: Option<Annotation> = match last.kind {
            HistoryKind::Deleted => None,
            _ => Some(last.state.clone().try_into()?),
        };
        if stored != expected {
            problems.push(format!(
                "{id}: the stored annotation differs from the last history record (revision {})",
                last.revision
            ));
        }
        Ok(expected.is_some())
    }
}

/// Where a page of one annotation's history ends: the key of its last
/// record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryCursor {
    pub revision: u64,
    /// Which change of the annotation within that revision, from 0.
    pub seq: u32,
}

impl HistoryCursor {
    /// 8 bytes (the revision) when `seq` is 0, as page tokens were before
    /// a revision could hold several changes of one annotation; else 12.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = self.revision.to_be_bytes().to_vec();
        if self.seq > 0 {
            b.extend_from_slice(&self.seq.to_be_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let revision = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let seq = match b.len() {
            8 => 0,
            12 => u32::from_be_bytes(b[8..].try_into().ok()?),
            _ => return None,
        };
        Some(Self { revision, seq })
    }
}

/// The annotation `id` as it stood at revision `at`: the state of its last
/// history record at or before `at`; `None` if deleted then or not yet
/// created.
pub(super) fn state_at(tree: &dyn Engine, id: Uuid, at: u64) -> Result<Option<Annotation>> {
    for item in tree.scan_prefix_rev(&keys::history_prefix(id)) {
        let (k, v) = item?;
        let Some((_, revision, _)) = keys::parse_history(&k) else {
            return Err(Error::internal("malformed history key"));
        };
        if revision > at {
            continue;
        }
        let record: HistoryRecord = codec::decode(&v)?;
        return match record.kind {
            HistoryKind::Deleted => Ok(None),
            _ => Ok(Some(record.state.try_into()?)),
        };
    }
    Ok(None)
}

fn to_revision(r: HistoryRecord) -> Result<Revision> {
    Ok(Revision {
        annotation: r.state.try_into()?,
        revision: r.revision,
        actor: r.actor,
        time_us: r.time_us,
        kind: match r.kind {
            HistoryKind::Created => EventKind::Created,
            HistoryKind::Updated => EventKind::Updated,
            HistoryKind::Deleted => EventKind::Deleted,
        },
        changed: r.changed,
        hash: r.hash,
        prev_hash: r.prev_hash,
    })
}

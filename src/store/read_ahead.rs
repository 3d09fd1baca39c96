//! What a group's jobs will read of the store, read all at once before
//! they are staged.
//!
//! Staging a create reads the new id's history head, an update or a delete
//! the annotation's location, its record and its history head, and a job
//! with a `request_id` its request record. On sled each read is a lookup in
//! memory; on etcd each is a round trip, and the committer made them one
//! after another, job by job: at 64 creates in flight a group spent more
//! time reading than committing (0.17× etcd's own `Put`). Read ahead, a
//! group costs two read-only `Txn`s ([`Engine::pages`]; one more for each
//! further 256 keys) and its commit. Reviews' hash heads and the records a
//! correction re-anchors are still read key by key.
//!
//! What is read here is the store as committed when the group starts; the
//! group's own changes are read before it (`Group::touched`,
//! `history_heads`, `requests`), and a commit by another server in between
//! fails the group's guard, which then stages again, reading ahead again.
//! Should the read ahead fail (a damaged record, an answer over the
//! client's size limit), the group is staged as before it: each job reads
//! its own keys, and only a job that meets the damage fails.

use std::collections::HashMap;

use uuid::Uuid;

use super::codec::{self, HistoryRecord, RequestRecord};
use super::committer::{Job, Mutation};
use super::engine::{Engine, PageQuery, Pair, prefix_end};
use super::keys;
use crate::domain::Annotation;
use crate::error::{Error, Result};

/// The store's answers to a group's reads, by what was asked.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// Annotations named by creates, updates and deletes: `None`, no such
    /// id.
    annotations: HashMap<Uuid, Option<Annotation>>,
    /// The hash of each named annotation's last history record.
    heads: HashMap<Uuid, [u8; 32]>,
    /// Request records of the jobs' `request_id`s: `None`, not seen.
    requests: HashMap<Uuid, Option<RequestRecord>>,
    /// The store's revision, read in the same read, when asked for.
    pub(super) stored: Option<u64>,
}

impl ReadAhead {
    /// Reads what `jobs` will ask for: two batches of reads (the locations
    /// first, then the records they point at); with `revision`, the store's
    /// revision in the first.
    pub(super) fn read(engine: &dyn Engine, jobs: &[Job], revision: bool) -> Result<ReadAhead> {
        let mut requests = Vec::new();
        let mut named = Vec::new();
        for job in jobs.iter().filter(|j| !j.validate_only) {
            requests.extend(job.request.map(|r| r.id));
            for m in &job.mutations {
                match m {
                    // A create reads its id too: it must not exist yet.
                    Mutation::Create { name, .. }
                    | Mutation::Update { name, .. }
                    | Mutation::Delete { name, .. } => named.push(name.id),
                    _ => {}
                }
            }
        }
        for ids in [&mut requests, &mut named] {
            ids.sort_unstable();
            ids.dedup();
        }
        let mut out = ReadAhead::default();
        if requests.is_empty() && named.is_empty() && !revision {
            return Ok(out);
        }
        let heads: Vec<Uuid> = named
            .iter()
            .copied()
            .filter(|id| prefix_end(&keys::history_prefix(*id)).is_some())
            .collect();
        let mut queries: Vec<PageQuery> = Vec::with_capacity(1 + requests.len() + named.len() + heads.len());
        if revision {
            queries.push(PageQuery::key(keys::META_REVISION));
        }
        queries.extend(requests.iter().map(|id| PageQuery::key(&keys::request(*id))));
        queries.extend(named.iter().map(|id| PageQuery::key(&keys::location(*id))));
        queries.extend(heads.iter().map(|id| head_query(*id)));
        let pages = answered(engine.pages(&queries)?, queries.len())?;
        let mut pages = pages.into_iter();
        if revision {
            let stored = pages.next().unwrap_or_default().pop();
            out.stored = Some(keys::decode_revision(
                stored.map(|(_, v)| v).as_deref(),
                "revision",
            )?);
        }
        for id in &requests {
            let record = match pages.next().unwrap_or_default().pop() {
                Some((_, v)) => Some(codec::decode::<RequestRecord>(&v)?),
                None => None,
            };
            out.requests.insert(*id, record);
        }
        let mut located = Vec::new();
        for id in &named {
            match pages.next().unwrap_or_default().pop() {
                Some((_, v)) => located.push((*id, super::parse_location(&v)?)),
                None => {
                    out.annotations.insert(*id, None);
                }
            }
        }
        for id in &heads {
            out.heads.insert(*id, head(pages.next().unwrap_or_default())?);
        }
        if located.is_empty() {
            return Ok(out);
        }
        let queries: Vec<PageQuery> = located
            .iter()
            .map(|(id, (article, start))| PageQuery::key(&keys::position(article, *start, *id)))
            .collect();
        let pages = answered(engine.pages(&queries)?, queries.len())?;
        for ((id, _), mut page) in located.into_iter().zip(pages) {
            // A location without its record is the store's damage: left to
            // the read that reports it.
            if let Some((_, v)) = page.pop() {
                out.annotations.insert(id, Some(codec::decode_annotation(&v)?));
            }
        }
        Ok(out)
    }

    /// Reads the history heads of `ids` too, in one batch: the records a
    /// correction's chunk moves ([`super::reanchoring`]).
    pub(super) fn read_heads(&mut self, engine: &dyn Engine, ids: &[Uuid]) -> Result<()> {
        let ids: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !self.heads.contains_key(id) && prefix_end(&keys::history_prefix(*id)).is_some())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let queries: Vec<PageQuery> = ids.iter().map(|id| head_query(*id)).collect();
        let pages = answered(engine.pages(&queries)?, queries.len())?;
        for (id, page) in ids.into_iter().zip(pages) {
            self.heads.insert(id, head(page)?);
        }
        Ok(())
    }

    /// The annotation as stored, if it was read ahead.
    pub(super) fn annotation(&self, id: Uuid) -> Option<Option<Annotation>> {
        self.annotations.get(&id).cloned()
    }

    /// The annotation's history head as stored, if it was read ahead.
    pub(super) fn head(&self, id: Uuid) -> Option<[u8; 32]> {
        self.heads.get(&id).copied()
    }

    /// The request's record as stored, if it was read ahead.
    pub(super) fn request(&self, id: Uuid) -> Option<Option<RequestRecord>> {
        self.requests.get(&id).map(|r| {
            r.as_ref().map(|r| RequestRecord {
                fingerprint: r.fingerprint,
                results: r.results.clone(),
                revision: r.revision,
            })
        })
    }
}

/// The query for the last history record of `id` (its id's prefix has an
/// end: checked by the callers).
fn head_query(id: Uuid) -> PageQuery {
    let prefix = keys::history_prefix(id);
    let end = prefix_end(&prefix).expect("checked by the caller");
    PageQuery::last_before(&prefix, &end)
}

/// The hash a history head query's answer holds; zeros if no record.
fn head(mut page: Vec<Pair>) -> Result<[u8; 32]> {
    Ok(match page.pop() {
        Some((_, v)) => codec::decode::<HistoryRecord>(&v)?.hash,
        None => [0; 32],
    })
}

/// `pages`, if the engine answered each of the `n` queries.
fn answered(pages: Vec<Vec<Pair>>, n: usize) -> Result<Vec<Vec<Pair>>> {
    if pages.len() != n {
        return Err(Error::internal(format!("{} answers to {n} reads", pages.len())));
    }
    Ok(pages)
}

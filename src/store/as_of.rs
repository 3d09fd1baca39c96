//! Reads as of a past revision (`read_revision`): one article, or every
//! article, exactly as it stood when the store was at that revision —
//! "the review as it was when it was signed off".
//!
//! The same on both engines: nothing here asks the engine for a past view
//! of itself (etcd could `Range` at a revision, but only back to its own
//! compaction, which a replica runs every thousand revisions). The state at
//! `at` is today's records with every later change taken back: the
//! changelog from `at + 1` names each annotation such a change touched,
//! and that annotation's history (never trimmed) holds its state at `at`.
//! So a read as of `at` is possible exactly while the changelog holds every
//! revision after `at`: from [`Store::oldest_readable`] on. Its cost is one
//! scan of the scope's records, one read of the changelog since `at`, and
//! one history read per annotation changed since `at`.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use uuid::Uuid;

use super::codec::{self, ChangeRecord, EventRecord};
use super::engine::Engine;
use super::index::Index;
use super::{AnnotationPage, Cursor, Store, audit, keys, select_page};
use crate::domain::{Annotation, AnnotationFilter, Article, ArticleId, Review};
use crate::error::{Error, Result};

/// The state of one article, or of all, as of a past revision.
pub struct AsOf {
    revision: u64,
    index: Index,
    annotations: HashMap<Uuid, Annotation>,
    min_analysts: u32,
}

impl Store {
    /// The state of `scope` (one article, or every article) as it stood at
    /// revision `at`, which this server has taken in ([`Store::at_least`]).
    /// Before the changelog's retention: `OUT_OF_RANGE` naming the oldest
    /// revision readable. Blocking: O(the scope's annotations + the changes
    /// since `at`).
    pub fn as_of(&self, at: u64, scope: Option<&ArticleId>) -> Result<AsOf> {
        let head = self.revision();
        if at > head {
            return Err(Error::internal(format!("as_of({at}) past the head {head}")));
        }
        self.check_readable(at)?;
        let tree = &*self.inner.shared.engine;
        // Today's records, read before the changelog: a change seen here has
        // its changelog entry (written in the same atomic write) seen below.
        let prefix = match scope {
            Some(id) => keys::position_prefix(id),
            None => vec![keys::POSITION],
        };
        let mut annotations = HashMap::new();
        let mut changed = HashSet::new();
        for item in tree.scan_prefix(&prefix) {
            let (_, v) = item?;
            let a = codec::decode_annotation(&v)?;
            if a.revision <= at {
                annotations.insert(a.name.id, a);
            } else {
                changed.insert(a.name.id);
            }
        }
        changed.extend(changed_since(tree, at, head)?);
        for id in changed {
            if annotations.contains_key(&id) {
                continue;
            }
            if let Some(a) = audit::state_at(tree, id, at)?
                && scope.is_none_or(|s| *s == a.name.article)
            {
                annotations.insert(id, a);
            }
        }
        // The articles: the last revision of each made at or before `at`
        // (articles are never deleted, so today's list names them all).
        let ids: Vec<ArticleId> = match scope {
            Some(id) => vec![id.clone()],
            None => self.read_lock().texts().keys().cloned().collect(),
        };
        let mut index = Index::default();
        for id in &ids {
            let Some((article, made_at)) = article_at(tree, id, at)? else {
                continue;
            };
            index.set_text(article);
            index.set_last_revision(id, made_at);
            for item in tree.scan_prefix(&keys::review_prefix(id)) {
                let (_, v) = item?;
                let record: codec::ReviewRecord = codec::decode(&v)?;
                if record.revision > at {
                    break;
                }
                index.apply_review(&record.to_event()?);
            }
        }
        annotations.retain(|_, a| index.text(&a.name.article).is_some());
        for a in annotations.values() {
            index.insert(a);
        }
        Ok(AsOf {
            revision: at,
            index,
            annotations,
            min_analysts: self.inner.review_min_analysts,
        })
    }

    /// The article as it stood at revision `at`; `None` if younger.
    pub fn article_as_of(&self, id: &ArticleId, at: u64) -> Result<Option<Arc<Article>>> {
        self.check_readable(at)?;
        Ok(article_at(&*self.inner.shared.engine, id, at)?.map(|(a, _)| a))
    }

    /// One annotation as it stood at revision `at`.
    pub fn get_as_of(&self, id: Uuid, at: u64) -> Result<Option<Annotation>> {
        self.check_readable(at)?;
        super::read_at(&*self.inner.shared.engine, id, None, at)
    }

    /// `OUT_OF_RANGE` if the changelog no longer holds every revision
    /// after `at`.
    fn check_readable(&self, at: u64) -> Result<()> {
        let oldest = self.oldest_readable();
        if at < oldest {
            return Err(compacted(at, oldest));
        }
        Ok(())
    }
}

impl AsOf {
    /// The revision read at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The article as it stood; `None` if it did not exist yet.
    pub fn article(&self, id: &ArticleId) -> Option<&Arc<Article>> {
        self.index.text(id)
    }

    /// A page of `ListAnnotations` as it would have been answered then.
    pub fn list(
        &self,
        filter: &AnnotationFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AnnotationPage> {
        let (keys, next) = select_page(&self.index, filter, cursor, limit)?;
        let annotations = keys
            .into_iter()
            .map(|(_, _, id)| {
                self.annotations
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Error::internal(format!("as-of index names {id} without its record")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AnnotationPage {
            annotations,
            next,
            revision: self.revision,
        })
    }

    /// The article's review as it stood; `NOT_FOUND` if the article did not
    /// exist yet.
    pub fn review(&self, id: &ArticleId) -> Result<Review> {
        let article = self
            .index
            .text(id)
            .cloned()
            .ok_or_else(|| Error::not_found(id.name()))?;
        Ok(match self.index.article(id) {
            Some(a) => a.snapshot().compute(&article, self.min_analysts),
            None => {
                let context = crate::domain::ReviewContext {
                    min_analysts: self.min_analysts,
                    ..Default::default()
                };
                Review::compute(article, &[], Vec::new(), context)
            }
        })
    }
}

/// `OUT_OF_RANGE` for a read at `at`, older than `oldest`.
fn compacted(at: u64, oldest: u64) -> Error {
    Error::OutOfRange {
        reason: "READ_REVISION_COMPACTED",
        message: format!(
            "read_revision {at} is older than the changelog's retention: the oldest revision readable is {oldest}"
        ),
        oldest: Some(oldest),
    }
}

/// The ids of the annotations changed after `at`: every changelog entry
/// from `at + 1` on, including any a commit in flight wrote past `head`.
/// A missing entry up to `head` is a trim that overtook the read — this
/// server's own commit before it published the new mark, or another
/// replica's it has not followed yet: the engine's compaction mark says
/// which revision is the oldest readable now — or a damaged changelog.
fn changed_since(tree: &dyn Engine, at: u64, head: u64) -> Result<HashSet<Uuid>> {
    let (lower, upper) = (keys::change(at + 1), [keys::CHANGE + 1]);
    let mut ids = HashSet::new();
    let mut next = at + 1;
    for item in tree.range(Bound::Included(&lower[..]), Bound::Excluded(&upper[..])) {
        let (_, v) = item?;
        let change: ChangeRecord = codec::decode(&v)?;
        if change.revision != next {
            break;
        }
        next += 1;
        for e in change.events {
            match e {
                EventRecord::History { id, .. } => {
                    ids.insert(Uuid::from_bytes(id));
                }
                EventRecord::Inline { before, after } => {
                    ids.extend(before.iter().chain(&after).map(|a| Uuid::from_bytes(a.id)));
                }
            }
        }
    }
    if next <= head {
        let mark = super::compaction_mark(tree)?;
        if at < mark {
            return Err(compacted(at, mark));
        }
        return Err(Error::internal(format!("changelog gap at revision {next}")));
    }
    Ok(ids)
}

/// The last revision of article `id` made at or before store revision `at`,
/// and the store revision that made it; `None` if the article is younger.
fn article_at(tree: &dyn Engine, id: &ArticleId, at: u64) -> Result<Option<(Arc<Article>, u64)>> {
    for item in tree.scan_prefix_rev(&keys::article_revision_prefix(id)) {
        let (k, v) = item?;
        let (_, revision) = keys::parse_article_revision(&k)
            .ok_or_else(|| Error::internal("corrupt article revision key"))?;
        let record: codec::ArticleRevisionRecord = codec::decode(&v)?;
        if record.store_revision <= at {
            let made_at = record.store_revision;
            return Ok(Some((
                Arc::new(record.into_article(id.clone(), revision)),
                made_at,
            )));
        }
    }
    Ok(None)
}

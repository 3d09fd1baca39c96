//! The in-memory index: every annotation's span, verdict and analyst, by
//! article, plus each article's review once computed.
//!
//! It is built from the position keyspace at open and changed only by the
//! committer, under the write side of the lock that guards it, after the
//! group it applies is durable: readers under the read side see the index and
//! sled at the same revision. An entry is ~80 bytes, so a million annotations
//! cost ~80 MiB; the notes and sources stay in sled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use uuid::Uuid;

use crate::domain::{
    Adjudication, Anchor, Annotation, AnnotationFilter, Article, ArticleId, Change, Mark, Review,
    ReviewContext, ReviewEvent, ReviewEventKind, SignOff, Span, Verdict,
};

/// What the index keeps of one annotation, keyed by `(start, id)`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub end: u32,
    pub verdict: Verdict,
    /// Interned: analysts are few, annotations many.
    pub analyst: Arc<str>,
    /// An orphan's span points into an older text: no `overlaps` query
    /// matches it, and no review covers it.
    pub anchor: Anchor,
    /// The store revision of its last change: an adjudication settles a
    /// region only while its annotations keep theirs.
    pub revision: u64,
    /// The article revision its span points into.
    pub article_revision: u32,
}

/// Start offsets per bucket of [`ArticleIndex::bucket_max_end`].
const BUCKET: u32 = 64;

/// One article's annotations and summary.
#[derive(Default)]
pub struct ArticleIndex {
    /// `(start, id)` → entry: the order of `ListAnnotations`.
    spans: BTreeMap<(u32, Uuid), Entry>,
    /// Per bucket of [`BUCKET`] start offsets, an upper bound of the ends of
    /// its spans: an `overlaps` query skips the buckets that end before it.
    /// Removals leave it as it was, so it only ever over-estimates.
    bucket_max_end: Vec<u32>,
    /// Annotations per analyst, for the distinct-analyst count.
    analysts: HashMap<Arc<str>, u32>,
    /// When an annotation of the article last changed.
    last_update_time_us: Option<i64>,
    /// The review of the current state, computed by the first reader after a
    /// change: a burst of writes costs one computation, not one per write.
    review: OnceLock<Arc<Review>>,
    /// +1 on every change, so a review computed outside the lock is shared
    /// only if the article did not change meanwhile.
    version: u64,
    /// Every adjudication made on the article, oldest first. Few: one per
    /// reviewer decision.
    adjudications: Vec<Arc<Adjudication>>,
    /// The sign-off in force: any change to the article withdraws it.
    sign_off: Option<Arc<SignOff>>,
    /// The store revision of the last change to the article, its
    /// annotations or its review: the review's etag.
    last_revision: u64,
    /// The article's current text revision (0: not known yet).
    text_revision: u32,
}

/// What a review is computed from: a copy of one article's index.
pub struct Snapshot {
    marks: Vec<Mark>,
    /// The analysts the marks number, in that order.
    analysts: Vec<Arc<str>>,
    context: ReviewContext,
}

impl Snapshot {
    pub fn compute(self, article: &Arc<Article>, min_analysts: u32) -> Review {
        Review::compute(
            article.clone(),
            &self.marks,
            self.analysts,
            ReviewContext {
                min_analysts,
                ..self.context
            },
        )
    }
}

impl ArticleIndex {
    fn insert(&mut self, a: &Annotation, analyst: Arc<str>) {
        *self.analysts.entry(analyst.clone()).or_default() += 1;
        let bucket = (a.judgement.span.start() / BUCKET) as usize;
        if self.bucket_max_end.len() <= bucket {
            self.bucket_max_end.resize(bucket + 1, 0);
        }
        let max_end = &mut self.bucket_max_end[bucket];
        *max_end = (*max_end).max(a.judgement.span.end());
        self.spans.insert(
            (a.judgement.span.start(), a.name.id),
            Entry {
                end: a.judgement.span.end(),
                verdict: a.judgement.verdict,
                analyst,
                anchor: a.anchor,
                revision: a.revision,
                article_revision: a.article_revision,
            },
        );
        self.changed();
    }

    /// Something the review reads changed: it must be computed again.
    fn changed(&mut self) {
        self.review = OnceLock::new();
        self.version += 1;
    }

    /// The sign-off in force, if any.
    pub fn sign_off(&self) -> Option<&Arc<SignOff>> {
        self.sign_off.as_ref()
    }

    /// When an annotation of the article last changed.
    pub fn last_update_time_us(&self) -> Option<i64> {
        self.last_update_time_us
    }

    /// See [`ArticleIndex::last_revision`].
    pub fn last_revision(&self) -> u64 {
        self.last_revision
    }

    fn remove(&mut self, a: &Annotation) {
        if let Some(e) = self.spans.remove(&(a.judgement.span.start(), a.name.id))
            && let Some(n) = self.analysts.get_mut(&e.analyst)
        {
            *n -= 1;
            if *n == 0 {
                self.analysts.remove(&e.analyst);
            }
        }
        self.changed();
    }

    /// The ids of every annotation of the article.
    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.spans.keys().map(|&(_, id)| id)
    }

    /// The start and id of every annotation of the article.
    pub fn positions(&self) -> impl Iterator<Item = (u32, Uuid)> + '_ {
        self.spans.keys().copied()
    }

    /// The span of every annotation of the article that points into its
    /// text's `revision` (not an orphan's).
    pub fn spans_at(&self, revision: u32) -> impl Iterator<Item = crate::domain::Span> + '_ {
        self.spans
            .iter()
            .filter(move |(_, e)| e.anchor != Anchor::Orphaned && e.article_revision == revision)
            .filter_map(|(&(start, _), e)| crate::domain::Span::new(start, e.end))
    }

    /// The article's review if already computed for its current state.
    pub fn cached_review(&self) -> Option<Arc<Review>> {
        self.review.get().cloned()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the entry's span points into the current text: not an
    /// orphan's, nor one a correction is still re-anchoring
    /// ([`super::reanchoring`]), which covers nothing of the new text until
    /// moved (the review counts it as moving).
    fn on_current_text(&self, e: &Entry) -> bool {
        e.anchor != Anchor::Orphaned && (self.text_revision == 0 || e.article_revision == self.text_revision)
    }

    /// A copy of what the review needs: O(n), a plain copy, so a reader
    /// holds the lock for that only and computes the review after.
    pub fn snapshot(&self) -> Snapshot {
        let mut numbers: HashMap<&Arc<str>, u32> = HashMap::with_capacity(self.analysts.len());
        let mut analysts: Vec<Arc<str>> = Vec::with_capacity(self.analysts.len());
        let mut moving = 0;
        let marks = self
            .spans
            .iter()
            .filter_map(|(&(start, id), e)| {
                let analyst = *numbers.entry(&e.analyst).or_insert_with(|| {
                    analysts.push(e.analyst.clone());
                    analysts.len() as u32 - 1
                });
                Some(Mark {
                    span: Span::new(start, e.end)?,
                    verdict: e.verdict,
                    id,
                    anchor: if self.on_current_text(e) {
                        e.anchor
                    } else {
                        moving += u32::from(e.anchor != Anchor::Orphaned);
                        Anchor::Orphaned
                    },
                    analyst,
                    revision: e.revision,
                })
            })
            .collect();
        Snapshot {
            marks,
            analysts,
            context: ReviewContext {
                last_update_time_us: self.last_update_time_us,
                min_analysts: 0,
                adjudications: self.adjudications.clone(),
                sign_off: self.sign_off.clone(),
                etag: self.last_revision,
                moving,
            },
        }
    }

    /// Keeps `review` as the review of the current state (the caller checked
    /// [`ArticleIndex::version`]).
    pub fn share_review(&self, review: Arc<Review>) {
        let _ = self.review.set(review);
    }

    /// The keys `(start, id)` after `after` that match `filter`, in order,
    /// at most `limit` of them. `length` is the article's: an `overlaps`
    /// range is clamped to it, so the work follows the article, not the
    /// query (an `overlaps` of `[0, 2^32-1)` once walked 67M buckets).
    pub fn select(
        &self,
        filter: &AnnotationFilter,
        after: Option<(u32, Uuid)>,
        limit: usize,
        length: u32,
    ) -> Vec<(u32, Uuid)> {
        let matches = |(&(start, id), e): (&(u32, Uuid), &Entry)| {
            let keep = filter.verdict.is_none_or(|v| v == e.verdict)
                && filter.analyst.as_deref().is_none_or(|n| n == &*e.analyst)
                && filter
                    .overlaps
                    .is_none_or(|s| e.end > s.start() && start < s.end() && self.on_current_text(e));
            keep.then_some((start, id))
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let Some(overlaps) = filter.overlaps else {
            return self
                .spans
                .range((lower, Bound::Unbounded))
                .filter_map(matches)
                .take(limit)
                .collect();
        };
        // Sorted by start: nothing at or past the end of `overlaps`
        // intersects it, nor anything in a bucket whose spans all end before
        // its start.
        let mut out = Vec::new();
        let first = after.map_or(0, |(start, _)| start / BUCKET);
        let end = overlaps.end().min(length);
        if end == 0 {
            return out;
        }
        // No bucket past the last one holding a span.
        let last = ((end - 1) / BUCKET).min(self.bucket_max_end.len().saturating_sub(1) as u32);
        #[cfg(test)]
        BUCKETS_VISITED.with(|v| v.set(v.get() + u64::from(last.saturating_sub(first)) + 1));
        for bucket in first..=last {
            if out.len() == limit {
                break;
            }
            if self
                .bucket_max_end
                .get(bucket as usize)
                .is_none_or(|&end| end <= overlaps.start())
            {
                continue;
            }
            let lo = (bucket * BUCKET, Uuid::nil());
            let hi = (((bucket + 1) * BUCKET).min(overlaps.end()), Uuid::nil());
            let lo = match after {
                Some(a) if a >= lo => Bound::Excluded(a),
                _ => Bound::Included(lo),
            };
            if let Bound::Excluded(a) = lo
                && a >= hi
            {
                continue;
            }
            let want = limit - out.len();
            out.extend(
                self.spans
                    .range((lo, Bound::Excluded(hi)))
                    .filter_map(matches)
                    .take(want),
            );
        }
        out
    }
}

#[cfg(test)]
thread_local! {
    /// Buckets an `overlaps` query looked at, for the test that its work
    /// follows the article, not the query.
    static BUCKETS_VISITED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Every article's index, and every article's current revision.
#[derive(Default)]
pub struct Index {
    articles: HashMap<ArticleId, ArticleIndex>,
    /// The current revision of every article, by id: published with the
    /// annotations, so a reader sees an article and its annotations at the
    /// same revision.
    texts: BTreeMap<ArticleId, Arc<Article>>,
    /// Interned analyst names.
    analysts: HashSet<Arc<str>>,
}

impl Index {
    pub fn article(&self, id: &ArticleId) -> Option<&ArticleIndex> {
        self.articles.get(id)
    }

    /// The article's current revision.
    pub fn text(&self, id: &ArticleId) -> Option<&Arc<Article>> {
        self.texts.get(id)
    }

    /// Every article's current revision, by id.
    pub fn texts(&self) -> &BTreeMap<ArticleId, Arc<Article>> {
        &self.texts
    }

    pub fn set_text(&mut self, article: Arc<Article>) {
        // A new text: its review must be computed again.
        if let Some(a) = self.articles.get_mut(&article.id) {
            a.text_revision = article.revision;
            a.changed();
        }
        self.texts.insert(article.id.clone(), article);
    }

    /// Moves the article's last change (the review's etag) to `revision`,
    /// if later.
    pub fn set_last_revision(&mut self, article: &ArticleId, revision: u64) {
        let a = self.articles.entry(article.clone()).or_default();
        if revision > a.last_revision {
            a.last_revision = revision;
            a.changed();
        }
    }

    /// Applies one entry of a review's history.
    pub fn apply_review(&mut self, e: &ReviewEvent) {
        let a = self.articles.entry(e.article.clone()).or_default();
        match &e.kind {
            ReviewEventKind::Adjudicated(adj) => a.adjudications.push(adj.clone()),
            ReviewEventKind::SignedOff(s) => a.sign_off = Some(s.clone()),
            ReviewEventKind::Withdrawn { .. } => a.sign_off = None,
        }
        a.changed();
        self.set_last_revision(&e.article, e.revision);
    }

    pub fn insert(&mut self, a: &Annotation) {
        let analyst = self.intern(a.analyst.as_str());
        let text_revision = self.texts.get(&a.name.article).map_or(0, |t| t.revision);
        let article = self.articles.entry(a.name.article.clone()).or_default();
        if text_revision > 0 {
            article.text_revision = text_revision;
        }
        article.insert(a, analyst);
        // At open, the stats records hold only what a deletion or a
        // correction took away: the rest is here.
        article.last_revision = article.last_revision.max(a.revision);
        article.last_update_time_us = article.last_update_time_us.max(Some(a.update_time_us));
    }

    /// Moves the article's last annotation change to `time_us`, if later.
    pub fn set_last_update(&mut self, article: &ArticleId, time_us: i64) {
        let a = self.articles.entry(article.clone()).or_default();
        a.last_update_time_us = a.last_update_time_us.max(Some(time_us));
    }

    /// Applies a committed change.
    pub fn apply(&mut self, change: &Change) {
        for e in &change.articles {
            self.set_text(e.article.clone());
            self.set_last_revision(&e.article.id, change.revision);
        }
        for e in &change.reviews {
            self.apply_review(e);
        }
        for event in &change.events {
            if let Some(before) = &event.before
                && let Some(article) = self.articles.get_mut(&before.name.article)
            {
                article.remove(before);
            }
            if let Some(after) = &event.after {
                self.insert(after);
            }
            let a = event.annotation();
            let time = event
                .after
                .as_ref()
                .map_or(change.commit_time_us, |a| a.update_time_us);
            self.set_last_update(&a.name.article, time);
            self.set_last_revision(&a.name.article, change.revision);
        }
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.analysts.get(name) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(name);
        self.analysts.insert(a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    /// An `overlaps` range far past the article costs what the article
    /// holds: before the clamp, `[0, 2^32-1)` walked 67M buckets.
    #[test]
    fn overlaps_is_clamped_to_the_article() {
        let article = ArticleId::parse("a").unwrap();
        let mut index = Index::default();
        for start in [0, 100, 3000] {
            index.insert(&annotation(&article, start, start + 10, Verdict::Verified, "ana"));
        }
        let entry = index.article(&article).unwrap();
        let filter = AnnotationFilter {
            article: Some(article.clone()),
            overlaps: Some(Span::new(0, u32::MAX).unwrap()),
            ..Default::default()
        };
        BUCKETS_VISITED.with(|v| v.set(0));
        assert_eq!(entry.select(&filter, None, 100, 4000).len(), 3);
        let visited = BUCKETS_VISITED.with(|v| v.get());
        assert!(visited <= 4000 / BUCKET as u64 + 1, "visited {visited} buckets");
        // Past the article's end: nothing, at no cost.
        let beyond = AnnotationFilter {
            overlaps: Some(Span::new(5000, u32::MAX).unwrap()),
            ..filter
        };
        assert!(entry.select(&beyond, None, 100, 4000).is_empty());
    }

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::domain::{Analyst, AnnotationName, Judgement};

    fn annotation(article: &ArticleId, start: u32, end: u32, verdict: Verdict, analyst: &str) -> Annotation {
        Annotation {
            name: AnnotationName {
                article: article.clone(),
                id: Uuid::new_v4(),
            },
            judgement: Judgement {
                span: Span::new(start, end).unwrap(),
                verdict,
                note: String::new(),
                sources: Vec::new(),
            },
            analyst: Analyst::parse(analyst).unwrap(),
            create_time_us: 0,
            update_time_us: 0,
            revision: 1,
            article_revision: 1,
            anchor: Anchor::Anchored,
        }
    }

    /// `select`, paged, agrees with filtering every annotation, whatever
    /// the spans, the removals and the filters.
    #[test]
    fn select_pages_agree_with_a_full_scan() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let article = ArticleId::parse("a").unwrap();
        let verdicts = [Verdict::Verified, Verdict::Disputed, Verdict::Unattributed];
        let mut index = Index::default();
        let mut live = Vec::new();
        for i in 0..3000 {
            let start = rng.random_range(0..6000);
            // Mostly short spans, a few covering most of the text.
            let len = if i % 97 == 0 {
                rng.random_range(1..6000)
            } else {
                rng.random_range(1..200)
            };
            let a = annotation(
                &article,
                start,
                start + len,
                verdicts[i % 3],
                ["ana", "bo", "조태열"][i % 3],
            );
            index.insert(&a);
            live.push(a);
        }
        // Remove a third, some of them the long ones.
        for _ in 0..1000 {
            let a = live.swap_remove(rng.random_range(0..live.len()));
            index.articles.get_mut(&article).unwrap().remove(&a);
        }
        let mut all: Vec<(u32, Uuid)> = Vec::new();
        for a in &live {
            all.push((a.judgement.span.start(), a.name.id));
        }
        all.sort();
        let entry = index.article(&article).unwrap();
        for q in 0..300 {
            let start = rng.random_range(0..6100);
            let filter = AnnotationFilter {
                article: Some(article.clone()),
                verdict: (q % 4 == 0).then_some(verdicts[q % 3]),
                analyst: (q % 5 == 0).then(|| "bo".to_owned()),
                overlaps: (q % 3 != 0).then(|| Span::new(start, start + rng.random_range(1..300)).unwrap()),
            };
            let expected: Vec<(u32, Uuid)> = all
                .iter()
                .copied()
                .filter(|k| {
                    let a = live.iter().find(|a| a.name.id == k.1).unwrap();
                    filter.matches(a)
                })
                .collect();
            let page = rng.random_range(1..50);
            let mut got: Vec<(u32, Uuid)> = Vec::new();
            let mut after = None;
            loop {
                let keys = entry.select(&filter, after, page, 6300);
                got.extend(&keys);
                if keys.len() < page {
                    break;
                }
                after = keys.last().copied();
            }
            assert_eq!(got, expected, "query {q}: {filter:?}");
        }
    }
}

//! Reviews: where an article's review stands, computed from its
//! annotations, its adjudications and its sign-off (never set by hand but
//! through a sign-off); and the review's own history.
//!
//! Nothing here knows about protobuf or sled.

use std::sync::Arc;

use uuid::Uuid;

use crate::domain::{Analyst, Anchor, AnnotationName, Article, ArticleId, Span, Verdict};

/// Most annotation names a [`ContestedSpan`] lists; `count` says how many
/// there are, and `ListAnnotations` with `overlaps` pages through them all.
pub const MAX_CONTESTED_NAMES: usize = 100;

/// A region where annotations with different verdicts overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContestedSpan {
    pub span: Span,
    /// Distinct verdicts in the region, in [`Verdict`] order.
    pub verdicts: Vec<Verdict>,
    /// The first [`MAX_CONTESTED_NAMES`] annotations intersecting the
    /// region, by start then id.
    pub annotations: Vec<AnnotationName>,
    /// The verdict of each of `annotations`.
    pub annotation_verdicts: Vec<Verdict>,
    /// How many annotations intersect the region.
    pub count: u32,
    /// Of those, how many give each verdict, by [`Verdict::index`].
    pub verdict_counts: [u32; 3],
    /// Names the region and exactly the annotations intersecting it, as
    /// they are now (see [`settles`]): an adjudication settles the region
    /// while this stays the same.
    pub fingerprint: [u8; 32],
    /// The adjudication that settles the region, if any.
    pub adjudication: Option<Arc<Adjudication>>,
}

/// The fingerprint of a contested region: its span, the article revision,
/// and every intersecting annotation's id and revision, in order. Any
/// change to an annotation in the region (a new one, a deleted one, an
/// edit, a re-anchoring) gives another fingerprint, so it re-opens the
/// region.
pub fn settles(span: Span, article_revision: u32, marks: &[&Mark]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"factcheck.contested.v1\0");
    h.update(span.start().to_be_bytes());
    h.update(span.end().to_be_bytes());
    h.update(article_revision.to_be_bytes());
    for m in marks {
        h.update(m.id.as_bytes());
        h.update(m.revision.to_be_bytes());
    }
    h.finalize().into()
}

/// A reviewer's decision on a contested span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjudication {
    pub article: ArticleId,
    pub id: Uuid,
    /// The article revision `span` points into.
    pub article_revision: u32,
    pub span: Span,
    pub verdict: Verdict,
    pub rationale: String,
    pub reviewer: Analyst,
    /// The first [`MAX_CONTESTED_NAMES`] intersecting annotations with the
    /// final verdict, and with another one.
    pub accepted: Vec<Uuid>,
    pub overruled: Vec<Uuid>,
    pub accepted_count: u32,
    pub overruled_count: u32,
    /// The [`ContestedSpan::fingerprint`] of the region it settles.
    pub fingerprint: [u8; 32],
    pub create_time_us: i64,
    /// The store revision it was made in.
    pub revision: u64,
}

impl Adjudication {
    /// `articles/{article}/adjudications/{id}`.
    pub fn name(&self) -> String {
        format!("{}/adjudications/{}", self.article.name(), self.id)
    }
}

/// A sign-off of an article's review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOff {
    pub article: ArticleId,
    pub reviewer: Analyst,
    pub time_us: i64,
    /// The store revision of the sign-off.
    pub revision: u64,
    /// The article revision signed off.
    pub article_revision: u32,
}

/// One entry of a review's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewEvent {
    pub article: ArticleId,
    pub revision: u64,
    pub time_us: i64,
    /// The reviewer, or whoever made the change that withdrew a sign-off.
    pub actor: String,
    pub kind: ReviewEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewEventKind {
    Adjudicated(Arc<Adjudication>),
    SignedOff(Arc<SignOff>),
    /// A change to the article withdrew the sign-off; `reason` says which.
    Withdrawn {
        sign_off: Arc<SignOff>,
        reason: String,
    },
}

/// What a review is computed from besides the marks.
#[derive(Clone, Debug, Default)]
pub struct ReviewContext {
    pub last_update_time_us: Option<i64>,
    pub min_analysts: u32,
    /// Every adjudication ever made on the article, oldest first: the last
    /// one with a region's fingerprint settles it.
    pub adjudications: Vec<Arc<Adjudication>>,
    /// The sign-off in force, if any.
    pub sign_off: Option<Arc<SignOff>>,
    /// The store revision of the last change to the article, its
    /// annotations or its review: the review's etag.
    pub etag: u64,
    /// Annotations a correction is still moving onto the current text
    /// (`store::reanchoring`): among the marks as orphans (they cover
    /// nothing of this text), counted apart from them.
    pub moving: u32,
}

/// One annotation as a review sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub span: Span,
    pub verdict: Verdict,
    pub id: Uuid,
    pub anchor: Anchor,
    /// The analyst, numbered within the review (see [`Review::analyst_names`]).
    pub analyst: u32,
    /// The store revision of the annotation's last change.
    pub revision: u64,
}

/// Where an article's review stands, computed from its annotations (never
/// set by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewState {
    /// No annotation yet.
    NotStarted,
    /// Annotated, but by fewer analysts than the desk requires, or with
    /// annotations a correction of the article left to look at again.
    InProgress,
    /// At least one contested span no adjudication settles.
    NeedsAdjudication,
    /// Enough analysts, every contested span settled, nothing to re-review.
    Ready,
    /// Ready, and signed off; nothing changed since.
    SignedOff,
}

/// Where the review of one article stands, at some revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub article: Arc<Article>,
    /// Indexed by [`Verdict::index`].
    pub counts: [u32; 3],
    pub covered: u32,
    pub contested: Vec<ContestedSpan>,
    pub analysts: u32,
    pub last_update_time_us: Option<i64>,
    /// Annotations whose quoted text a correction edited or removed
    /// ([`Anchor::needs_review`]), not counting those still `moving`.
    pub needs_review: u32,
    /// Of those, the ones whose text is gone: not in `covered` or
    /// `contested`.
    pub orphaned: u32,
    pub state: ReviewState,
    /// Analysts the desk requires before an article can be ready.
    pub min_analysts: u32,
    /// Agreement of the analysts with an anchored annotation
    /// ([`crate::agreement`]); pairs name them by `analyst_names`.
    pub agreement: crate::agreement::Agreement,
    /// The analysts [`Mark::analyst`] and the pairs number.
    pub analyst_names: Vec<Arc<str>>,
    /// Contested spans no adjudication settles.
    pub unresolved: u32,
    /// The sign-off in force.
    pub sign_off: Option<Arc<SignOff>>,
    /// See [`ReviewContext::etag`].
    pub etag: u64,
    /// See [`ReviewContext::moving`]: while any are, the review is judged
    /// half-moved, so nobody adjudicates or signs it off.
    pub moving: u32,
}

/// How many analysts must have annotated an article before it can be ready,
/// unless `serve --review-min-analysts` says otherwise: two pairs of eyes.
pub const DEFAULT_MIN_ANALYSTS: u32 = 2;

impl Review {
    /// Computes the review from the article's marks, sorted by start then
    /// id, and the number of distinct analysts. O(n log n) in the marks, plus
    /// the intersecting marks of each contested region.
    pub fn compute(
        article: Arc<Article>,
        marks: &[Mark],
        analyst_names: Vec<Arc<str>>,
        context: ReviewContext,
    ) -> Self {
        let ReviewContext {
            last_update_time_us,
            min_analysts,
            adjudications,
            sign_off,
            etag,
            moving,
        } = context;
        // The last adjudication of each region settles it.
        let settled: std::collections::HashMap<[u8; 32], &Arc<Adjudication>> =
            adjudications.iter().map(|a| (a.fingerprint, a)).collect();
        let analysts = analyst_names.len() as u32;
        let mut counts = [0u32; 3];
        let mut needs_review = 0;
        let mut orphaned = 0;
        for m in marks {
            counts[m.verdict.index()] += 1;
            needs_review += u32::from(m.anchor.needs_review());
            orphaned += u32::from(m.anchor == Anchor::Orphaned);
        }
        // An orphan's span points into an older text: it covers nothing here.
        // So does a mark still being moved, which comes as an orphan.
        let any_orphan = orphaned > 0;
        // But the correction's verdict on a moving one is not in yet.
        needs_review = needs_review.saturating_sub(moving);
        orphaned = orphaned.saturating_sub(moving);
        let orphans: Vec<Mark>;
        let marks = if any_orphan {
            orphans = marks
                .iter()
                .filter(|m| m.anchor != Anchor::Orphaned)
                .copied()
                .collect();
            &orphans[..]
        } else {
            marks
        };

        // Sweep over span boundaries: +1 at a start, -1 at an end, per verdict.
        let mut edges: Vec<(u32, i32, usize)> = Vec::with_capacity(marks.len() * 2);
        for m in marks {
            let v = m.verdict.index();
            edges.push((m.span.start(), 1, v));
            edges.push((m.span.end(), -1, v));
        }
        edges.sort_unstable();
        let mut active = [0i32; 3];
        let mut covered = 0u32;
        let mut regions: Vec<(u32, u32)> = Vec::new();
        let mut prev = 0u32;
        let mut i = 0;
        while i < edges.len() {
            let pos = edges[i].0;
            if pos > prev {
                let live = active.iter().filter(|&&n| n > 0).count();
                if live > 0 {
                    covered += pos - prev;
                }
                if live > 1 {
                    match regions.last_mut() {
                        Some(r) if r.1 == prev => r.1 = pos,
                        _ => regions.push((prev, pos)),
                    }
                }
            }
            while i < edges.len() && edges[i].0 == pos {
                active[edges[i].2] += edges[i].1;
                i += 1;
            }
            prev = pos;
        }

        // Regions are disjoint and ascending, marks sorted by start: a mark
        // ending before one region cannot reach a later one, so one pass with
        // the marks still open suffices.
        let mut open: Vec<&Mark> = Vec::new();
        let mut next = 0;
        let contested: Vec<ContestedSpan> = regions
            .into_iter()
            .filter_map(|(s, e)| Span::new(s, e))
            .map(|span| {
                while next < marks.len() && marks[next].span.start() < span.end() {
                    open.push(&marks[next]);
                    next += 1;
                }
                open.retain(|m| m.span.end() > span.start());
                let mut verdict_counts = [0u32; 3];
                for m in &open {
                    verdict_counts[m.verdict.index()] += 1;
                }
                let verdicts: Vec<Verdict> = Verdict::ALL
                    .into_iter()
                    .filter(|v| verdict_counts[v.index()] > 0)
                    .collect();
                let fingerprint = settles(span, article.revision, &open);
                ContestedSpan {
                    span,
                    verdicts,
                    annotations: open
                        .iter()
                        .take(MAX_CONTESTED_NAMES)
                        .map(|m| AnnotationName {
                            article: article.id.clone(),
                            id: m.id,
                        })
                        .collect(),
                    annotation_verdicts: open.iter().take(MAX_CONTESTED_NAMES).map(|m| m.verdict).collect(),
                    count: open.len() as u32,
                    verdict_counts,
                    fingerprint,
                    adjudication: settled.get(&fingerprint).map(|a| (*a).clone()),
                }
            })
            .collect();

        // Agreement among the analysts of the anchored marks, renumbered.
        let mut coder = vec![u32::MAX; analyst_names.len()];
        let mut names = Vec::new();
        let coded: Vec<Mark> = marks
            .iter()
            .map(|m| {
                let slot = &mut coder[m.analyst as usize];
                if *slot == u32::MAX {
                    *slot = names.len() as u32;
                    names.push(analyst_names[m.analyst as usize].clone());
                }
                Mark { analyst: *slot, ..*m }
            })
            .collect();
        let agreement = crate::agreement::of_marks(&coded, names.len() as u32);
        let total: u32 = counts.iter().sum();
        let unresolved = contested.iter().filter(|c| c.adjudication.is_none()).count() as u32;
        let state = if total == 0 {
            ReviewState::NotStarted
        } else if analysts < min_analysts || needs_review > 0 || moving > 0 {
            ReviewState::InProgress
        } else if unresolved > 0 {
            ReviewState::NeedsAdjudication
        } else if sign_off.is_some() {
            ReviewState::SignedOff
        } else {
            ReviewState::Ready
        };
        Self {
            article,
            counts,
            covered,
            contested,
            analysts,
            last_update_time_us,
            needs_review,
            orphaned,
            state,
            min_analysts,
            agreement,
            analyst_names: names,
            unresolved,
            sign_off,
            etag,
            moving,
        }
    }
}

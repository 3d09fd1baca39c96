//! The review RPCs: `ListArticleReviews` (every article's review in one
//! call, for a desk's dashboard), `CreateAdjudication`,
//! `SignOffArticleReview` and `ListReviewEvents`.

use std::sync::Arc;

use tonic::Request;
use uuid::Uuid;

use super::{Service, caller};
use crate::convert;
use crate::domain::{Adjudication, AnnotationFilter, ArticleId, Review, ReviewEventKind, ReviewState, Role};
use crate::error::{Error, Result};
use crate::pb;
use crate::store::{HistoryCursor, Mutation};

/// Contested spans a listed review carries; `GetArticleReview` has them all.
const LISTED_CONTESTED_SPANS: usize = 10;

impl Service {
    pub(super) async fn list_article_reviews_rpc(
        &self,
        req: Request<pb::ListArticleReviewsRequest>,
    ) -> Result<pb::ListArticleReviewsResponse> {
        let req = req.into_inner();
        let size = convert::page_size("page_size", req.page_size)?;
        let state = convert::review_state("state", req.state)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        // A token serves only the list with the same state filter.
        let mut fp = *b"reviews-list-v1\0";
        fp[15] = req.state as u8;
        let after = self.tokens().decode("page_token", &req.page_token, &fp)?;
        let revision = self.store.revision();
        let articles = self.store.articles();
        let (reviews, mut more) = self
            .blocking(move |store| {
                let mut out = Vec::new();
                let after = after.as_deref();
                for a in articles
                    .iter()
                    .filter(|a| after.is_none_or(|c| a.id.as_str().as_bytes() > c))
                {
                    let (review, at) = store.review(&a.id)?;
                    if state.is_some_and(|s| s != review.state) {
                        continue;
                    }
                    if out.len() == size {
                        return Ok((out, true));
                    }
                    out.push((review, at));
                }
                Ok::<_, Error>((out, false))
            })
            .await?;
        let mut page: Vec<pb::ArticleReview> = reviews
            .iter()
            .map(|(r, at)| {
                let mut p = convert::review_to_pb(r, *at, self.max_response / 4, enc);
                p.contested_spans.truncate(LISTED_CONTESTED_SPANS);
                p
            })
            .collect();
        let fit = self.fitting(&page);
        if fit < page.len() {
            page.truncate(fit);
            more = true;
        }
        let next_page_token = match (more, reviews.get(page.len().wrapping_sub(1))) {
            (true, Some((last, _))) => self.tokens().encode(&fp, last.article.id.as_str().as_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListArticleReviewsResponse {
            reviews: page,
            next_page_token,
            revision,
        })
    }
}

/// Most code points a rationale may hold: a note's limit.
const MAX_RATIONALE_CHARS: usize = crate::domain::MAX_NOTE_CHARS;

impl Service {
    /// The article's review now, and the store revision it was read at.
    pub(super) async fn current_review(&self, id: &ArticleId) -> Result<(Arc<Review>, u64)> {
        match self.store.cached_review(id) {
            Some(cached) => Ok(cached),
            None => {
                let id = id.clone();
                self.blocking(move |store| store.review(&id)).await
            }
        }
    }

    pub(super) async fn create_adjudication_rpc(
        &self,
        req: Request<pb::CreateAdjudicationRequest>,
    ) -> Result<pb::Adjudication> {
        let caller = caller(&req)?;
        caller.require(Role::Reviewer, "adjudicate contested spans")?;
        let req = req.into_inner();
        let id = convert::article_name("parent", &req.parent)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let a = req
            .adjudication
            .as_ref()
            .ok_or_else(|| Error::invalid("FIELD_REQUIRED", "adjudication", "is required"))?;
        let verdict = convert::required_verdict("adjudication.verdict", a.verdict)?;
        let rationale = a.rationale.trim();
        if rationale.is_empty() {
            return Err(Error::invalid(
                "FIELD_REQUIRED",
                "adjudication.rationale",
                "is required: say why the final verdict is the right one",
            ));
        }
        let chars = rationale.chars().count();
        if chars > MAX_RATIONALE_CHARS {
            return Err(Error::invalid(
                "FIELD_TOO_LONG",
                "adjudication.rationale",
                format!("is {chars} code points long; at most {MAX_RATIONALE_CHARS} are allowed"),
            ));
        }
        // Checked against every commit made before the call, on any server.
        self.fresh().await?;
        self.article(&id)?;
        let (review, _) = self.current_review(&id).await?;
        check_settled(&review).inspect_err(|_| self.store.take_up_stalled_reanchorings())?;
        let article = &review.article;
        let span = convert::span_in("adjudication.span", a.span.as_ref(), article, enc)?;
        check_etag(&req.etag, &review)?;
        let Some(contested) = review.contested.iter().find(|c| c.span == span) else {
            let known: Vec<String> = review
                .contested
                .iter()
                .take(5)
                .map(|c| {
                    let s = convert::span_to_pb(c.span, article, enc);
                    format!("[{}, {})", s.start, s.end)
                })
                .collect();
            return Err(Error::FailedPrecondition {
                reason: "NOT_CONTESTED",
                message: format!(
                    "adjudication.span is not a contested span of {}/review; {}",
                    id.name(),
                    if known.is_empty() {
                        "it has none".to_owned()
                    } else {
                        format!("its contested spans begin {}", known.join(", "))
                    }
                ),
            });
        };
        // Whoever annotated the region is a party to the dispute: someone
        // else settles it. (The review's etag, checked again as the
        // adjudication commits, makes this hold against a later annotation.)
        let filter = AnnotationFilter {
            article: Some(id.clone()),
            analyst: Some(caller.analyst.to_string()),
            overlaps: Some(span),
            verdict: None,
        };
        let own = self.blocking(move |store| store.list(&filter, None, 1)).await?;
        if let Some(a) = own.annotations.first() {
            return Err(Error::PermissionDenied {
                reason: "ADJUDICATOR_IS_PARTY",
                message: format!(
                    "{} annotated this contested span ({}): a reviewer who did not settles it",
                    caller.analyst, a.name
                ),
            });
        }
        let (accepted, overruled): (Vec<_>, Vec<_>) = contested
            .annotations
            .iter()
            .zip(&contested.annotation_verdicts)
            .partition(|(_, v)| **v == verdict);
        let accepted_count = contested.verdict_counts[verdict.index()];
        let adjudication = Adjudication {
            article: id.clone(),
            id: Uuid::new_v4(),
            article_revision: article.revision,
            span,
            verdict,
            rationale: rationale.to_owned(),
            reviewer: caller.analyst.clone(),
            accepted: accepted.into_iter().map(|(n, _)| n.id).collect(),
            overruled: overruled.into_iter().map(|(n, _)| n.id).collect(),
            accepted_count,
            overruled_count: contested.count - accepted_count,
            fingerprint: contested.fingerprint,
            create_time_us: 0,
            revision: 0,
        };
        let applied = self
            .store
            .apply(
                vec![Mutation::Adjudicate {
                    adjudication,
                    etag: review.etag,
                }],
                caller.analyst.clone(),
                None,
            )
            .await?;
        let made = applied
            .reviews
            .iter()
            .find_map(|e| match &e.kind {
                ReviewEventKind::Adjudicated(a) => Some(a.clone()),
                _ => None,
            })
            .ok_or_else(|| Error::internal("an adjudication made no review entry"))?;
        Ok(convert::adjudication_to_pb(&made, article, enc))
    }

    pub(super) async fn sign_off_rpc(
        &self,
        req: Request<pb::SignOffArticleReviewRequest>,
    ) -> Result<pb::ArticleReview> {
        let caller = caller(&req)?;
        caller.require(Role::Reviewer, "sign off reviews")?;
        let req = req.into_inner();
        let id = convert::review_name("name", &req.name)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        if convert::etag(&req.etag).is_none() {
            return Err(Error::invalid(
                "FIELD_REQUIRED",
                "etag",
                "is required: the etag of the review being signed off (GetArticleReview has it)",
            ));
        }
        // Checked against every commit made before the call, on any server.
        self.fresh().await?;
        self.article(&id)?;
        let (review, _) = self.current_review(&id).await?;
        check_settled(&review).inspect_err(|_| self.store.take_up_stalled_reanchorings())?;
        check_etag(&req.etag, &review)?;
        let refuse = |reason: &'static str, why: String| {
            Err(Error::FailedPrecondition {
                reason,
                message: format!("{}/review cannot be signed off: {why}", id.name()),
            })
        };
        // Two-person rule: the signer checks others' work, never their own.
        let party = review
            .analyst_names
            .iter()
            .any(|n| **n == *caller.analyst.as_str());
        match review.state {
            ReviewState::SignedOff => {
                let by = review
                    .sign_off
                    .as_ref()
                    .map_or("someone".into(), |s| s.reviewer.to_string());
                return refuse("ALREADY_SIGNED_OFF", format!("{by} already signed it off"));
            }
            ReviewState::NotStarted => return refuse("NOT_STARTED", "no annotation yet".into()),
            _ if review.needs_review > 0 => {
                return refuse(
                    "NEEDS_RE_REVIEW",
                    format!(
                        "{} annotations need re-review after a correction of the article",
                        review.needs_review
                    ),
                );
            }
            _ if review.unresolved > 0 => {
                return refuse(
                    "CONTESTED_SPANS_UNRESOLVED",
                    format!(
                        "{} contested spans are not adjudicated yet (CreateAdjudication settles them)",
                        review.unresolved
                    ),
                );
            }
            _ if party => {
                return Err(Error::PermissionDenied {
                    reason: "SIGNER_IS_PARTY",
                    message: format!(
                        "{}/review cannot be signed off by {}, who annotated the article: a reviewer who did not signs it off",
                        id.name(),
                        caller.analyst
                    ),
                });
            }
            ReviewState::InProgress => {
                return refuse(
                    "NOT_ENOUGH_ANALYSTS",
                    format!(
                        "{} analysts annotated it; the desk requires {}",
                        review.analysts, review.min_analysts
                    ),
                );
            }
            ReviewState::NeedsAdjudication | ReviewState::Ready => {}
        }
        self.store
            .apply(
                vec![Mutation::SignOff {
                    article: id.clone(),
                    reviewer: caller.analyst.clone(),
                    article_revision: review.article.revision,
                    etag: review.etag,
                }],
                caller.analyst.clone(),
                None,
            )
            .await?;
        let (review, revision) = self.current_review(&id).await?;
        Ok(convert::review_to_pb(
            &review,
            revision,
            self.max_response.saturating_sub(64 * 1024),
            enc,
        ))
    }

    pub(super) async fn list_review_events_rpc(
        &self,
        req: Request<pb::ListReviewEventsRequest>,
    ) -> Result<pb::ListReviewEventsResponse> {
        let req = req.into_inner();
        let id = convert::review_name("parent", &req.parent)?;
        let size = convert::page_size("page_size", req.page_size)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        self.article(&id)?;
        let fp = review_history_fingerprint(&id);
        let after = match self.tokens().decode("page_token", &req.page_token, &fp)? {
            Some(c) => Some(
                HistoryCursor::from_bytes(&c)
                    .ok_or_else(|| Error::invalid("INVALID_PAGE_TOKEN", "page_token", "is malformed"))?,
            ),
            None => None,
        };
        let article = id.clone();
        let (events, mut more) = self
            .blocking(move |store| store.review_history(&article, after, size))
            .await?;
        let read = |id: &ArticleId, rev: u32| {
            self.store
                .article_revision(id, rev)?
                .ok_or_else(|| Error::internal(format!("missing revision {rev} of {id}")))
        };
        let mut page: Vec<pb::ReviewEvent> = events
            .iter()
            .map(|(e, _)| convert::review_event_to_pb(e, read, enc))
            .collect::<Result<_>>()?;
        let fit = self.fitting(&page);
        if fit < page.len() {
            page.truncate(fit);
            more = true;
        }
        let next_page_token = match (more, events.get(page.len().wrapping_sub(1))) {
            (true, Some((_, cursor))) => self.tokens().encode(&fp, &cursor.to_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListReviewEventsResponse {
            events: page,
            next_page_token,
        })
    }
}

/// That no correction is still moving the article's annotations: its review
/// is half-moved meanwhile (the unmoved cover nothing yet), and the judgement
/// would be of that. Retryable: the move finishes on its own. The committer
/// checks again as it commits (`store::reanchoring`); this check names the
/// cause rather than the orphans it makes (`NEEDS_RE_REVIEW`, `NOT_CONTESTED`).
/// The caller makes sure someone drives the move, as the committer's
/// refusals do.
fn check_settled(review: &Review) -> Result<()> {
    if review.moving == 0 {
        return Ok(());
    }
    Err(Error::Aborted {
        reason: "REANCHORING_IN_PROGRESS",
        message: format!(
            "{}'s annotations are still being moved onto revision {} of its text ({} to go): retry in a moment",
            review.article.id.name(),
            review.article.revision,
            review.moving
        ),
    })
}

/// Refuses a request made on another state of the review than this one.
fn check_etag(etag: &str, review: &Review) -> Result<()> {
    let current = format!("\"{}\"", review.etag);
    match convert::etag(etag) {
        Some(e) if e != current => Err(Error::Aborted {
            reason: "ETAG_MISMATCH",
            message: format!(
                "etag {e} does not match the current etag {current} of {}/review: read it again and retry",
                review.article.id.name()
            ),
        }),
        _ => Ok(()),
    }
}

/// Page tokens of one article's review history serve only it.
fn review_history_fingerprint(id: &ArticleId) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"review-history\0")
        .chain_update(id.as_str())
        .finalize();
    digest[..16].try_into().expect("16 of 32 bytes")
}

//! `ListArticleReviews`: every article's review in one call, for a desk's
//! dashboard.

use tonic::Request;

use super::Service;
use crate::convert;
use crate::error::{Error, Result};
use crate::pb;

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

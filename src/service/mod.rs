//! The `factcheck.v1.FactCheckService` RPCs: validate (via `convert`), call
//! the store, convert back. No sled and no business rules live here.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{TokenHash, Tokens};
use crate::convert::{self, PageTokens};
use crate::domain::{Annotation, AnnotationName, Article, ArticleId, Caller, OffsetEncoding, Role};
use crate::error::{Error, Result};
use crate::pb;
use crate::pb::fact_check_service_server::FactCheckService;
use crate::store::{Applied, Cursor, HistoryCursor, Mutation, RequestKey, Store, Submit};
use crate::watch::{self as watcher, WatchGauge, WatchOptions};

mod articles;
mod backup;
mod reviews;

/// The longest moderation reason a deletion of another's annotation may
/// give, in code points.
const MAX_MODERATION_REASON_CHARS: usize = 1000;

/// The service; clones share the store.
#[derive(Clone)]
pub struct Service {
    store: Store,
    watch: WatchOptions,
    gauge: Arc<WatchGauge>,
    /// Turns true when the server begins to shut down: watch streams end.
    stopping: watch::Receiver<bool>,
    /// The largest response, in bytes (about): lists end their page early,
    /// BatchGet refuses beyond it.
    max_response: usize,
    /// The known tokens: a watch stream checks its token again on reload.
    tokens: Arc<Tokens>,
}

impl Service {
    pub fn new(
        store: Store,
        watch: WatchOptions,
        gauge: Arc<WatchGauge>,
        stopping: watch::Receiver<bool>,
        max_response: usize,
        tokens: Arc<Tokens>,
    ) -> Self {
        Self {
            store,
            watch,
            gauge,
            stopping,
            max_response,
            tokens,
        }
    }

    /// How many of `items`, from the first, fit in the response limit; at
    /// least one, so a page always moves forward (one annotation is far
    /// under any limit the flag allows).
    fn fitting<M: prost::Message>(&self, items: &[M]) -> usize {
        // Reserve room for the rest of the response (tokens, revision).
        let budget = self.max_response.saturating_sub(1024);
        let mut used = 0;
        for (i, item) in items.iter().enumerate() {
            used += item.encoded_len() + 4;
            if used > budget {
                return i.max(1);
            }
        }
        items.len()
    }

    /// Who a stream serves, checked again whenever the tokens reload.
    fn identity<T>(&self, req: &Request<T>) -> Result<watcher::Identity> {
        Ok(watcher::Identity {
            tokens: self.tokens.clone(),
            token: req
                .extensions()
                .get::<TokenHash>()
                .copied()
                .ok_or_else(|| Error::Unauthenticated("missing credentials".into()))?,
            caller: caller(req)?,
        })
    }

    fn article(&self, id: &ArticleId) -> Result<Arc<Article>> {
        self.store.article(id).ok_or_else(|| Error::not_found(id.name()))
    }

    /// The article revision `a`'s span points into.
    fn revision_of(&self, a: &Annotation) -> Result<Arc<Article>> {
        self.store
            .article_revision(&a.name.article, a.article_revision)?
            .ok_or_else(|| Error::internal(format!("{} points into a missing article revision", a.name)))
    }

    fn tokens(&self) -> PageTokens<'_> {
        PageTokens {
            secret: self.store.page_secret(),
        }
    }

    fn to_pb(&self, a: &Annotation, enc: OffsetEncoding) -> Result<pb::Annotation> {
        Ok(convert::annotation_to_pb(a, &*self.revision_of(a)?, enc))
    }

    fn all_to_pb(&self, all: &[Annotation], enc: OffsetEncoding) -> Result<Vec<pb::Annotation>> {
        all.iter().map(|a| self.to_pb(a, enc)).collect()
    }

    /// The mutation a create request asks for. `within` is the batch's
    /// parent (`Some(None)` for `articles/-`); `None` outside a batch.
    fn create_mutation(
        &self,
        req: &pb::CreateAnnotationRequest,
        within: Option<Option<&ArticleId>>,
        caller: &Caller,
        enc: OffsetEncoding,
    ) -> Result<(Mutation, Arc<Article>)> {
        let id = match (within, req.parent.is_empty()) {
            (Some(Some(parent)), true) => parent.clone(),
            (Some(None), true) => {
                return Err(Error::invalid(
                    "BATCH_MISMATCH",
                    "parent",
                    "is required when the batch's parent is articles/-",
                ));
            }
            _ => {
                let id = convert::article_name("parent", &req.parent)?;
                if let Some(Some(parent)) = within
                    && *parent != id
                {
                    return Err(Error::invalid(
                        "BATCH_MISMATCH",
                        "parent",
                        format!("must be empty or the batch's parent {}", parent.name()),
                    ));
                }
                id
            }
        };
        let annotation = req
            .annotation
            .as_ref()
            .ok_or_else(|| Error::invalid("FIELD_REQUIRED", "annotation", "is required"))?;
        let article = self.article(&id)?;
        let judgement = convert::new_judgement(annotation, &article, enc)?;
        if !req.expected_quote.is_empty() {
            let actual = article.quote(judgement.span).unwrap_or_default();
            if actual != req.expected_quote {
                use unicode_normalization::UnicodeNormalization;
                let span = convert::span_to_pb(judgement.span, &article, enc);
                let hint = if actual.nfc().eq(req.expected_quote.nfc()) {
                    " (the two differ only in Unicode normalization: they are equal under NFC; send the \
                     article's own characters, as GetArticle returns them)"
                } else {
                    ""
                };
                return Err(Error::invalid(
                    "EXPECTED_QUOTE_MISMATCH",
                    "expected_quote",
                    format!(
                        "does not match the text at [{}, {}): the text there is {actual:?}{hint}",
                        span.start, span.end
                    ),
                ));
            }
        }
        let mutation = Mutation::Create {
            name: AnnotationName {
                article: id,
                id: uuid::Uuid::now_v7(),
            },
            judgement,
            analyst: caller.analyst.clone(),
            article_revision: article.revision,
        };
        Ok((mutation, article))
    }

    fn update_mutation(
        &self,
        req: &pb::UpdateAnnotationRequest,
        within: Option<Option<&ArticleId>>,
        caller: &Caller,
        enc: OffsetEncoding,
    ) -> Result<Mutation> {
        let annotation = req
            .annotation
            .as_ref()
            .ok_or_else(|| Error::invalid("FIELD_REQUIRED", "annotation", "is required"))?;
        let name = convert::annotation_name("annotation.name", &annotation.name)?;
        check_within(&name, within.flatten()).map_err(|e| match e {
            Error::InvalidArgument {
                reason, description, ..
            } => Error::invalid(reason, "annotation.name", description),
            e => e,
        })?;
        let article = self
            .store
            .article(&name.article)
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        let patch = convert::patch(annotation, req.update_mask.as_ref(), &article, enc)?;
        let etag = [&req.etag, &annotation.etag]
            .into_iter()
            .find_map(|e| convert::etag(e));
        Ok(Mutation::Update {
            article_revision: patch.span.map(|_| article.revision),
            name,
            patch,
            etag,
            owner: caller.owner_restriction(),
        })
    }

    fn delete_mutation(
        &self,
        req: &pb::DeleteAnnotationRequest,
        within: Option<Option<&ArticleId>>,
        caller: &Caller,
    ) -> Result<Mutation> {
        let name = convert::annotation_name("name", &req.name)?;
        check_within(&name, within.flatten())?;
        if self.store.article(&name.article).is_none() {
            return Err(Error::not_found(name.to_string()));
        }
        let etag = convert::etag(&req.etag);
        let reason = req.reason.trim();
        let chars = reason.chars().count();
        if chars > MAX_MODERATION_REASON_CHARS {
            return Err(Error::invalid(
                "FIELD_TOO_LONG",
                "reason",
                format!("is {chars} code points long; at most {MAX_MODERATION_REASON_CHARS} are allowed"),
            ));
        }
        Ok(Mutation::Delete {
            name,
            etag,
            owner: caller.delete_restriction(),
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
        })
    }

    /// Submits a batch's mutations, with its request id if it has one.
    async fn submit<R: prost::Message + Clone + HasRequestId>(
        &self,
        mutations: Vec<Mutation>,
        req: &R,
        caller: &Caller,
        validate_only: bool,
        clear_id: impl FnOnce(&mut R),
    ) -> Result<Applied> {
        let request_id = convert::request_id("request_id", req.request_id())?;
        // The key of the request as it would be applied (`clear_id` clears
        // `validate_only` too): a validate-only call records nothing, but
        // one whose request was applied already answers as the retry would,
        // so a re-run script learns it is done.
        let request = request_key(request_id, req, caller, clear_id);
        self.store
            .submit(Submit {
                mutations,
                actor: caller.analyst.clone(),
                request,
                validate_only,
                children: Some("requests"),
            })
            .await
    }

    /// What a read does first: see every write acknowledged before it, by
    /// this server or (etcd) any other on the store ([`Store::fresh`]).
    async fn fresh(&self) -> Result<u64> {
        self.store.fresh().await
    }

    /// What a read does first, given the request's `read_revision` and
    /// `min_revision`: waits until this server holds the state the client
    /// asked for, and returns the revision of a read as of the past
    /// (`None`: read the present). A `min_revision` the server already has
    /// costs nothing; without one, [`Service::fresh`].
    async fn read_point(&self, read_revision: u64, min_revision: u64) -> Result<Option<u64>> {
        if read_revision > 0 {
            if min_revision > read_revision {
                return Err(Error::invalid(
                    "MIN_REVISION_PAST_READ_REVISION",
                    "min_revision",
                    format!(
                        "is {min_revision}, past read_revision {read_revision}: a read at one revision cannot be newer"
                    ),
                ));
            }
            self.store.at_least(read_revision).await?;
            return Ok(Some(read_revision));
        }
        if min_revision > 0 {
            self.store.at_least(min_revision).await?;
        } else {
            self.fresh().await?;
        }
        Ok(None)
    }

    /// Runs a check of a call against this server's state. If it fails and
    /// other servers share the store (etcd), takes their commits in and
    /// runs it once more: a refusal stands only on a state at least as new
    /// as the call (an article created on another replica a moment ago),
    /// while the common case costs nothing more.
    async fn checked<T>(&self, check: impl Fn() -> Result<T>) -> Result<T> {
        match check() {
            Err(_) if self.store.shared() => {
                self.fresh().await?;
                check()
            }
            r => r,
        }
    }

    /// Runs blocking store work off the async runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(Error::internal)?
    }
}

/// Validates each child of a batch; a failure names the child.
fn children<T, M>(items: &[T], mut each: impl FnMut(&T) -> Result<M>) -> Result<Vec<M>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| each(item).map_err(|e| e.at(format!("requests[{i}]"))))
        .collect()
}

/// The request key of a request with a `request_id`: the id and a
/// fingerprint of the request without it.
fn request_key<R: prost::Message + Clone>(
    request_id: Option<uuid::Uuid>,
    req: &R,
    caller: &Caller,
    clear_id: impl FnOnce(&mut R),
) -> Option<RequestKey> {
    request_id.map(|id| {
        let mut bare = req.clone();
        clear_id(&mut bare);
        RequestKey {
            id,
            fingerprint: convert::fingerprint(&bare, caller.analyst.as_str()),
        }
    })
}

/// Checks that `name` is under the batch's parent (`None`: `articles/-`).
fn check_within(name: &AnnotationName, within: Option<&ArticleId>) -> Result<()> {
    match within {
        Some(parent) if *parent != name.article => Err(Error::invalid(
            "BATCH_MISMATCH",
            "name",
            format!("{name} is not under the batch's parent {}", parent.name()),
        )),
        _ => Ok(()),
    }
}

/// The caller, if their role may write (analyst and above); checked before
/// anything about the request or the store (AIP-193).
fn writer<T>(req: &Request<T>, action: &str) -> Result<Caller> {
    let caller = caller(req)?;
    caller.require(Role::Analyst, action)?;
    Ok(caller)
}

fn caller<T>(req: &Request<T>) -> Result<Caller> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("missing credentials".into()))
}

fn single(applied: Applied) -> Result<Annotation> {
    applied
        .annotations
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("a single mutation returned no result"))
}

#[tonic::async_trait]
impl FactCheckService for Service {
    type WatchAnnotationsStream = watcher::Body;

    async fn watch_annotations(
        &self,
        req: Request<pb::WatchAnnotationsRequest>,
    ) -> Result<Response<Self::WatchAnnotationsStream>, Status> {
        let identity = self.identity(&req)?;
        let req = req.into_inner();
        let filter = convert::watch_filter(&req)?;
        if let Some(id) = &filter.article {
            self.article(id)?;
        }
        let start = (req.start_revision > 0).then_some(req.start_revision);
        let rx = watcher::start(
            self.store.clone(),
            filter,
            start,
            &self.watch,
            &self.gauge,
            self.stopping.clone(),
            identity,
        )?;
        Ok(Response::new(rx))
    }

    async fn list_articles(
        &self,
        req: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        let req = req.into_inner();
        let size = convert::page_size("page_size", req.page_size)?;
        let full = convert::article_view_full("view", req.view, false)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let fp = convert::ARTICLES_FINGERPRINT;
        self.read_point(0, req.min_revision).await?;
        let after = self.tokens().decode("page_token", &req.page_token, &fp)?;
        let all = self.store.articles();
        let mut articles = all
            .iter()
            .filter(|a| after.as_deref().is_none_or(|c| a.id.as_str().as_bytes() > c));
        let mut page: Vec<pb::Article> = articles
            .by_ref()
            .take(size)
            .map(|a| convert::article_to_pb(a, full, enc, false))
            .collect();
        let fit = self.fitting(&page);
        let cut = fit < page.len();
        page.truncate(fit);
        let next_page_token = match (cut || articles.next().is_some(), page.last()) {
            (true, Some(last)) => {
                let id = last.name.trim_start_matches("articles/");
                self.tokens().encode(&fp, id.as_bytes())
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListArticlesResponse {
            articles: page,
            next_page_token,
        }))
    }

    async fn get_article(
        &self,
        req: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        let req = req.into_inner();
        let (id, revision) = convert::article_revision_name("name", &req.name)?;
        let full = convert::article_view_full("view", req.view, true)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        if req.read_revision > 0 && revision.is_some() {
            return Err(Error::invalid(
                "READ_REVISION_WITH_ARTICLE_REVISION",
                "read_revision",
                "cannot be set with an article revision name (`@`): the name already says which text",
            )
            .into());
        }
        let at = self.read_point(req.read_revision, req.min_revision).await?;
        let article = match (revision, at) {
            (None, None) => self.article(&id)?,
            (None, Some(at)) => {
                let name = req.name.clone();
                self.blocking(move |store| {
                    store
                        .article_as_of(&id, at)?
                        .ok_or_else(|| Error::not_found(name))
                })
                .await?
            }
            (Some(r), _) => {
                let store = self.store.clone();
                let name = req.name.clone();
                self.blocking(move |_| {
                    store
                        .article_revision(&id, r)?
                        .ok_or_else(|| Error::not_found(name))
                })
                .await?
            }
        };
        Ok(Response::new(convert::article_to_pb(
            &article,
            full,
            enc,
            revision.is_some(),
        )))
    }

    async fn list_article_reviews(
        &self,
        req: Request<pb::ListArticleReviewsRequest>,
    ) -> Result<Response<pb::ListArticleReviewsResponse>, Status> {
        self.read_point(0, req.get_ref().min_revision).await?;
        Ok(Response::new(self.list_article_reviews_rpc(req).await?))
    }

    async fn create_adjudication(
        &self,
        req: Request<pb::CreateAdjudicationRequest>,
    ) -> Result<Response<pb::Adjudication>, Status> {
        Ok(Response::new(self.create_adjudication_rpc(req).await?))
    }

    async fn sign_off_article_review(
        &self,
        req: Request<pb::SignOffArticleReviewRequest>,
    ) -> Result<Response<pb::ArticleReview>, Status> {
        Ok(Response::new(self.sign_off_rpc(req).await?))
    }

    async fn list_review_events(
        &self,
        req: Request<pb::ListReviewEventsRequest>,
    ) -> Result<Response<pb::ListReviewEventsResponse>, Status> {
        self.fresh().await?;
        Ok(Response::new(self.list_review_events_rpc(req).await?))
    }

    type WatchArticleReviewsStream = watcher::reviews::Body;

    async fn watch_article_reviews(
        &self,
        req: Request<pb::WatchArticleReviewsRequest>,
    ) -> Result<Response<Self::WatchArticleReviewsStream>, Status> {
        let identity = self.identity(&req)?;
        let req = req.into_inner();
        let article = convert::annotation_parent("parent", &req.parent)?;
        if let Some(id) = &article {
            self.article(id)?;
        }
        let options = watcher::reviews::Options {
            article,
            state: convert::review_state("state", req.state)?,
            encoding: convert::offset_encoding("offset_encoding", req.offset_encoding)?,
            max_response: self.max_response,
        };
        let body = watcher::reviews::start(
            self.store.clone(),
            options,
            &self.watch,
            &self.gauge,
            self.stopping.clone(),
            identity,
        )?;
        Ok(Response::new(body))
    }

    async fn create_article(
        &self,
        req: Request<pb::CreateArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        Ok(Response::new(self.create_article_rpc(req).await?))
    }

    async fn update_article(
        &self,
        req: Request<pb::UpdateArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        Ok(Response::new(self.update_article_rpc(req).await?))
    }

    async fn list_article_revisions(
        &self,
        req: Request<pb::ListArticleRevisionsRequest>,
    ) -> Result<Response<pb::ListArticleRevisionsResponse>, Status> {
        self.fresh().await?;
        Ok(Response::new(self.list_article_revisions_rpc(req).await?))
    }

    async fn create_annotation(
        &self,
        req: Request<pb::CreateAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        let caller = writer(&req, "create annotations")?;
        let req = req.into_inner();
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let (mutation, article) = self
            .checked(|| self.create_mutation(&req, None, &caller, enc))
            .await?;
        let request_id = convert::request_id("request_id", &req.request_id)?;
        let request = request_key(request_id, &req, &caller, |r| r.request_id.clear());
        let created = single(
            self.store
                .apply(vec![mutation], caller.analyst.clone(), request)
                .await?,
        )?;
        Ok(Response::new(convert::annotation_to_pb(&created, &article, enc)))
    }

    async fn get_annotation(
        &self,
        req: Request<pb::GetAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        let req = req.into_inner();
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        // `articles/-/annotations/{uuid}`: whichever article holds it
        // (AIP-159), so a bare id can be acted on.
        let (id, article) = match req.name.strip_prefix("articles/-/annotations/") {
            Some(id) => (convert::uuid("name", id)?, None),
            None => {
                let name = convert::annotation_name("name", &req.name)?;
                (name.id, Some(name.article))
            }
        };
        let at = self.read_point(req.read_revision, req.min_revision).await?;
        let store = self.store.clone();
        let found = self
            .blocking(move |_| match at {
                Some(at) => store.get_as_of(id, at),
                None => store.get_any(id),
            })
            .await?
            .filter(|a| article.as_ref().is_none_or(|article| *article == a.name.article))
            .ok_or_else(|| Error::not_found(req.name.clone()))?;
        Ok(Response::new(self.to_pb(&found, enc)?))
    }

    async fn update_annotation(
        &self,
        req: Request<pb::UpdateAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        let caller = writer(&req, "update annotations")?;
        let req = req.into_inner();
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let mutation = self.update_mutation(&req, None, &caller, enc)?;
        let updated = single(
            self.store
                .apply(vec![mutation], caller.analyst.clone(), None)
                .await?,
        )?;
        Ok(Response::new(self.to_pb(&updated, enc)?))
    }

    async fn delete_annotation(
        &self,
        req: Request<pb::DeleteAnnotationRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        let caller = writer(&req, "delete annotations")?;
        let mutation = self.delete_mutation(&req.into_inner(), None, &caller)?;
        self.store
            .apply(vec![mutation], caller.analyst.clone(), None)
            .await?;
        Ok(Response::new(pbjson_types::Empty {}))
    }

    async fn batch_create_annotations(
        &self,
        req: Request<pb::BatchCreateAnnotationsRequest>,
    ) -> Result<Response<pb::BatchCreateAnnotationsResponse>, Status> {
        let caller = writer(&req, "create annotations")?;
        let req = req.into_inner();
        let within = convert::annotation_parent("parent", &req.parent)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        convert::batch_size("requests", req.requests.len())?;
        let mutations = self
            .checked(|| {
                children(&req.requests, |child| {
                    if !child.request_id.is_empty() {
                        return Err(Error::invalid(
                            "BATCH_MISMATCH",
                            "request_id",
                            "must be empty in a batch: set the batch's request_id",
                        ));
                    }
                    convert::child_encoding(child.offset_encoding, enc)?;
                    Ok(self
                        .create_mutation(child, Some(within.as_ref()), &caller, enc)?
                        .0)
                })
            })
            .await?;
        let applied = self
            .submit(mutations, &req, &caller, req.validate_only, |r| {
                r.request_id.clear();
                r.validate_only = false;
            })
            .await?;
        Ok(Response::new(pb::BatchCreateAnnotationsResponse {
            annotations: self.all_to_pb(&applied.annotations, enc)?,
            revision: applied.revision,
        }))
    }

    async fn batch_update_annotations(
        &self,
        req: Request<pb::BatchUpdateAnnotationsRequest>,
    ) -> Result<Response<pb::BatchUpdateAnnotationsResponse>, Status> {
        let caller = writer(&req, "update annotations")?;
        let req = req.into_inner();
        let within = convert::annotation_parent("parent", &req.parent)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        convert::batch_size("requests", req.requests.len())?;
        let mutations = children(&req.requests, |child| {
            convert::child_encoding(child.offset_encoding, enc)?;
            self.update_mutation(child, Some(within.as_ref()), &caller, enc)
        })?;
        let applied = self
            .submit(mutations, &req, &caller, req.validate_only, |r| {
                r.request_id.clear();
                r.validate_only = false;
            })
            .await?;
        Ok(Response::new(pb::BatchUpdateAnnotationsResponse {
            annotations: self.all_to_pb(&applied.annotations, enc)?,
            revision: applied.revision,
        }))
    }

    async fn batch_delete_annotations(
        &self,
        req: Request<pb::BatchDeleteAnnotationsRequest>,
    ) -> Result<Response<pb::BatchDeleteAnnotationsResponse>, Status> {
        let caller = writer(&req, "delete annotations")?;
        let req = req.into_inner();
        let within = convert::annotation_parent("parent", &req.parent)?;
        convert::batch_size("requests", req.requests.len())?;
        let mutations = children(&req.requests, |child| {
            self.delete_mutation(child, Some(within.as_ref()), &caller)
        })?;
        let applied = self
            .submit(mutations, &req, &caller, req.validate_only, |r| {
                r.request_id.clear();
                r.validate_only = false;
            })
            .await?;
        Ok(Response::new(pb::BatchDeleteAnnotationsResponse {
            revision: applied.revision,
        }))
    }

    async fn batch_get_annotations(
        &self,
        req: Request<pb::BatchGetAnnotationsRequest>,
    ) -> Result<Response<pb::BatchGetAnnotationsResponse>, Status> {
        let req = req.into_inner();
        let within = convert::annotation_parent("parent", &req.parent)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        convert::batch_size("names", req.names.len())?;
        self.read_point(0, req.min_revision).await?;
        let names = req
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let field = format!("names[{i}]");
                let name = convert::annotation_name(&field, n)?;
                check_within(&name, within.as_ref()).map_err(|e| match e {
                    Error::InvalidArgument {
                        reason, description, ..
                    } => Error::invalid(reason, &field, description),
                    e => e,
                })?;
                Ok(name)
            })
            .collect::<Result<Vec<_>>>()?;
        // A name asked twice would be answered twice: one small request for
        // one large annotation a thousand times made a 450 MB answer.
        let mut seen = std::collections::HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if let Some(first) = seen.insert(name.id, i) {
                return Err(Error::invalid(
                    "DUPLICATE_NAME",
                    format!("names[{i}]"),
                    format!("repeats names[{first}]: ask for each annotation once"),
                )
                .into());
            }
        }
        let (found, revision) = self.blocking(move |store| store.get_many(&names)).await?;
        let annotations = found
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let a = a.ok_or_else(|| Error::not_found(req.names[i].clone()).at(format!("names[{i}]")))?;
                self.to_pb(&a, enc)
            })
            .collect::<Result<Vec<_>>>()?;
        if self.fitting(&annotations) < annotations.len() {
            let size: usize = annotations.iter().map(prost::Message::encoded_len).sum();
            return Err(Error::ResourceExhausted {
                reason: "RESPONSE_TOO_LARGE",
                message: format!(
                    "the {} annotations take {size} bytes, over the response limit of {} bytes: ask for fewer names",
                    annotations.len(),
                    self.max_response
                ),
            }
            .into());
        }
        Ok(Response::new(pb::BatchGetAnnotationsResponse {
            annotations,
            revision,
        }))
    }

    async fn list_annotations(
        &self,
        req: Request<pb::ListAnnotationsRequest>,
    ) -> Result<Response<pb::ListAnnotationsResponse>, Status> {
        let req = req.into_inner();
        let mut filter = convert::annotation_filter(&req)?;
        let size = convert::page_size("page_size", req.page_size)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let at = self.read_point(req.read_revision, req.min_revision).await?;
        if let Some(id) = &filter.article {
            let article = match at {
                Some(at) => {
                    let id = id.clone();
                    self.blocking(move |store| {
                        store
                            .article_as_of(&id, at)?
                            .ok_or_else(|| Error::not_found(id.name()))
                    })
                    .await?
                }
                None => self.article(id)?,
            };
            filter.overlaps = filter.overlaps.map(|s| convert::overlaps_in(s, &article, enc));
        } else if filter.overlaps.is_some() && enc != OffsetEncoding::CodePoints {
            return Err(Error::invalid("OVERLAPS_NEEDS_ONE_ARTICLE", 
                "offset_encoding",
                "overlaps across articles/- is counted in code points: name one article to count it otherwise",
            )
            .into());
        }
        // A token serves only the same filters at the same read revision.
        let fp = convert::filter_fingerprint(&filter, at.unwrap_or(0));
        let cursor = self
            .tokens()
            .decode("page_token", &req.page_token, &fp)?
            .map(Cursor::from_bytes);
        // As of a past revision: the state then, built for the page once
        // the request is known to be good (the token checked).
        let past = match at {
            Some(at) => {
                let scope = filter.article.clone();
                Some(
                    self.blocking(move |store| store.as_of(at, scope.as_ref()))
                        .await?,
                )
            }
            None => None,
        };
        let page = self
            .blocking(move |store| match past {
                Some(past) => past.list(&filter, cursor.as_ref(), size),
                None => store.list(&filter, cursor.as_ref(), size),
            })
            .await?;
        let mut annotations = page
            .annotations
            .iter()
            .map(|a| self.to_pb(a, enc))
            .collect::<Result<Vec<_>>>()?;
        // A page over the response limit ends early; the next one starts
        // after its last annotation.
        let fit = self.fitting(&annotations);
        let next = if fit < annotations.len() {
            annotations.truncate(fit);
            Some(Cursor::after(&page.annotations[fit - 1]))
        } else {
            page.next
        };
        let next_page_token = next
            .map(|c| self.tokens().encode(&fp, c.as_bytes()))
            .unwrap_or_default();
        Ok(Response::new(pb::ListAnnotationsResponse {
            annotations,
            next_page_token,
            revision: page.revision,
        }))
    }

    async fn list_annotation_revisions(
        &self,
        req: Request<pb::ListAnnotationRevisionsRequest>,
    ) -> Result<Response<pb::ListAnnotationRevisionsResponse>, Status> {
        let req = req.into_inner();
        let name = convert::annotation_name("name", &req.name)?;
        let size = convert::page_size("page_size", req.page_size)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        self.fresh().await?;
        self.store
            .article(&name.article)
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        let fp = convert::history_fingerprint(&name);
        let after = match self.tokens().decode("page_token", &req.page_token, &fp)? {
            Some(c) => Some(
                HistoryCursor::from_bytes(&c)
                    .ok_or_else(|| Error::invalid("INVALID_PAGE_TOKEN", "page_token", "is malformed"))?,
            ),
            None => None,
        };
        let (revisions, mut more) = self
            .blocking(move |store| store.history(&name, after, size))
            .await?;
        // Each record quotes the article revision it was made on.
        let mut page: Vec<pb::AnnotationRevision> = revisions
            .iter()
            .map(|(r, _)| {
                Ok(convert::revision_to_pb(
                    r,
                    &*self.revision_of(&r.annotation)?,
                    enc,
                ))
            })
            .collect::<Result<_>>()?;
        let fit = self.fitting(&page);
        if fit < page.len() {
            page.truncate(fit);
            more = true;
        }
        let next_page_token = match (more, revisions.get(page.len().wrapping_sub(1))) {
            (true, Some((_, cursor))) => self.tokens().encode(&fp, &cursor.to_bytes()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAnnotationRevisionsResponse {
            revisions: page,
            next_page_token,
        }))
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>>;

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let caller = caller(&req)?;
        caller.require(Role::Admin, "back up the store")?;
        let (path, revision) = self.store.backup().await?;
        Ok(Response::new(backup::stream(path, revision)))
    }

    async fn get_caller(&self, req: Request<pb::GetCallerRequest>) -> Result<Response<pb::Caller>, Status> {
        let caller = caller(&req)?;
        Ok(Response::new(pb::Caller {
            analyst: caller.analyst.to_string(),
            role: caller.role.to_string(),
        }))
    }

    async fn get_article_review(
        &self,
        req: Request<pb::GetArticleReviewRequest>,
    ) -> Result<Response<pb::ArticleReview>, Status> {
        let req = req.into_inner();
        let id = convert::review_name("name", &req.name)?;
        let enc = convert::offset_encoding("offset_encoding", req.offset_encoding)?;
        let budget = self.max_response.saturating_sub(64 * 1024);
        let Some(at) = self.read_point(req.read_revision, req.min_revision).await? else {
            let (review, revision) = self.current_review(&id).await?;
            return Ok(Response::new(convert::review_to_pb(
                &review, revision, budget, enc,
            )));
        };
        // As of a revision since which the article has not changed: today's
        // review, which is exactly what it was then — checked again on the
        // review itself (its etag is the article's last change), as a commit
        // may land between the two.
        if self.store.last_change(&id).is_some_and(|last| last <= at) {
            let (review, _) = self.current_review(&id).await?;
            if review.etag <= at {
                return Ok(Response::new(convert::review_to_pb(&review, at, budget, enc)));
            }
        }
        let review = {
            let id = id.clone();
            self.blocking(move |store| store.as_of(at, Some(&id))?.review(&id))
                .await?
        };
        let mut review = convert::review_to_pb(&review, at, budget, enc);
        // A state the article has left: nothing can be done with its etag
        // (a sign-off needs the current one). And the store keeps no record
        // of a deletion's time once later changes came, so the last update
        // is not given rather than given wrong.
        review.etag.clear();
        review.last_update_time = None;
        Ok(Response::new(review))
    }
}

/// Batch requests that carry a `request_id`.
trait HasRequestId {
    fn request_id(&self) -> &str;
}

macro_rules! has_request_id {
    ($($t:ty),*) => {$(
        impl HasRequestId for $t {
            fn request_id(&self) -> &str {
                &self.request_id
            }
        }
    )*};
}

has_request_id!(
    pb::BatchCreateAnnotationsRequest,
    pb::BatchUpdateAnnotationsRequest,
    pb::BatchDeleteAnnotationsRequest
);

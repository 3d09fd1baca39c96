//! The `factcheck.v1.FactCheckService` RPCs: validate (via `convert`), call
//! the store, convert back. No sled and no business rules live here.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::{self, PageTokens};
use crate::domain::{Article, ArticleId, Caller};
use crate::error::{Error, Result};
use crate::pb;
use crate::pb::fact_check_service_server::FactCheckService;
use crate::store::{Cursor, Mutation, RequestKey, Store};
use crate::watch::{self as watcher, WatchGauge, WatchOptions};

/// The service; clones share the store.
#[derive(Clone)]
pub struct Service {
    store: Store,
    watch: WatchOptions,
    gauge: Arc<WatchGauge>,
    /// Turns true when the server begins to shut down: watch streams end.
    stopping: watch::Receiver<bool>,
}

impl Service {
    pub fn new(
        store: Store,
        watch: WatchOptions,
        gauge: Arc<WatchGauge>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            watch,
            gauge,
            stopping,
        }
    }

    fn article(&self, id: &ArticleId) -> Result<&Arc<Article>> {
        self.store.article(id).ok_or_else(|| Error::not_found(id.name()))
    }

    fn tokens(&self) -> PageTokens<'_> {
        PageTokens {
            secret: self.store.page_secret(),
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

fn caller<T>(req: &Request<T>) -> Result<Caller> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("missing credentials".into()))
}

fn single(mut results: Vec<crate::domain::Annotation>) -> Result<crate::domain::Annotation> {
    results
        .pop()
        .ok_or_else(|| Error::internal("a single mutation returned no result"))
}

#[tonic::async_trait]
impl FactCheckService for Service {
    type WatchAnnotationsStream = ReceiverStream<watcher::Outgoing>;

    async fn watch_annotations(
        &self,
        req: Request<pb::WatchAnnotationsRequest>,
    ) -> Result<Response<Self::WatchAnnotationsStream>, Status> {
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
        )?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_articles(
        &self,
        req: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        let req = req.into_inner();
        let size = convert::page_size("page_size", req.page_size)?;
        let full = convert::article_view_full("view", req.view, false)?;
        let fp = convert::ARTICLES_FINGERPRINT;
        let after = self.tokens().decode("page_token", &req.page_token, &fp)?;
        let mut articles = self
            .store
            .articles()
            .filter(|a| after.as_deref().is_none_or(|c| a.id.as_str().as_bytes() > c));
        let page: Vec<pb::Article> = articles
            .by_ref()
            .take(size)
            .map(|a| convert::article_to_pb(a, full))
            .collect();
        let next_page_token = match (articles.next(), page.last()) {
            (Some(_), Some(last)) => {
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
        let id = convert::article_name("name", &req.name)?;
        let full = convert::article_view_full("view", req.view, true)?;
        let article = self.article(&id)?;
        Ok(Response::new(convert::article_to_pb(article, full)))
    }

    async fn create_annotation(
        &self,
        req: Request<pb::CreateAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let id = convert::article_name("parent", &req.parent)?;
        let annotation = req
            .annotation
            .as_ref()
            .ok_or_else(|| Error::invalid("annotation", "is required"))?;
        let request_id = convert::request_id("request_id", &req.request_id)?;
        let article = self.article(&id)?.clone();
        let judgement = convert::new_judgement(annotation, &article)?;
        if !req.expected_quote.is_empty() {
            let actual = article.quote(judgement.span).unwrap_or_default();
            if actual != req.expected_quote {
                return Err(Error::invalid(
                    "expected_quote",
                    format!(
                        "does not match the text at {}: the text there is {actual:?}",
                        judgement.span
                    ),
                )
                .into());
            }
        }
        let request = request_id.map(|rid| RequestKey {
            id: rid,
            fingerprint: convert::fingerprint(
                &pb::CreateAnnotationRequest {
                    request_id: String::new(),
                    ..req.clone()
                },
                caller.analyst.as_str(),
            ),
        });
        let mutation = Mutation::Create {
            name: crate::domain::AnnotationName {
                article: id,
                id: uuid::Uuid::now_v7(),
            },
            judgement,
            analyst: caller.analyst,
        };
        let created = single(self.store.apply(vec![mutation], request).await?)?;
        Ok(Response::new(convert::annotation_to_pb(&created, &article)))
    }

    async fn get_annotation(
        &self,
        req: Request<pb::GetAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        let req = req.into_inner();
        let name = convert::annotation_name("name", &req.name)?;
        let article = self
            .store
            .article(&name.article)
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        let found = self
            .store
            .get(&name.article, name.id)?
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        Ok(Response::new(convert::annotation_to_pb(&found, article)))
    }

    async fn update_annotation(
        &self,
        req: Request<pb::UpdateAnnotationRequest>,
    ) -> Result<Response<pb::Annotation>, Status> {
        caller(&req)?;
        let req = req.into_inner();
        let annotation = req
            .annotation
            .as_ref()
            .ok_or_else(|| Error::invalid("annotation", "is required"))?;
        let name = convert::annotation_name("annotation.name", &annotation.name)?;
        let article = self
            .store
            .article(&name.article)
            .ok_or_else(|| Error::not_found(name.to_string()))?
            .clone();
        let patch = convert::patch(annotation, req.update_mask.as_ref(), &article)?;
        let etag = [&req.etag, &annotation.etag]
            .into_iter()
            .find(|e| !e.is_empty())
            .cloned();
        let updated = single(
            self.store
                .apply(vec![Mutation::Update { name, patch, etag }], None)
                .await?,
        )?;
        Ok(Response::new(convert::annotation_to_pb(&updated, &article)))
    }

    async fn delete_annotation(
        &self,
        req: Request<pb::DeleteAnnotationRequest>,
    ) -> Result<Response<()>, Status> {
        caller(&req)?;
        let req = req.into_inner();
        let name = convert::annotation_name("name", &req.name)?;
        if self.store.article(&name.article).is_none() {
            return Err(Error::not_found(name.to_string()).into());
        }
        let etag = (!req.etag.is_empty()).then_some(req.etag);
        self.store
            .apply(vec![Mutation::Delete { name, etag }], None)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_annotations(
        &self,
        req: Request<pb::ListAnnotationsRequest>,
    ) -> Result<Response<pb::ListAnnotationsResponse>, Status> {
        let req = req.into_inner();
        let filter = convert::annotation_filter(&req)?;
        let size = convert::page_size("page_size", req.page_size)?;
        if let Some(id) = &filter.article {
            self.article(id)?;
        }
        let fp = convert::filter_fingerprint(&filter);
        let cursor = self
            .tokens()
            .decode("page_token", &req.page_token, &fp)?
            .map(Cursor::from_bytes);
        let page = self
            .blocking(move |store| store.list(&filter, cursor.as_ref(), size))
            .await?;
        let annotations = page
            .annotations
            .iter()
            .map(|a| {
                let article = self.article(&a.name.article)?;
                Ok(convert::annotation_to_pb(a, article))
            })
            .collect::<Result<Vec<_>>>()?;
        let next_page_token = page
            .next
            .map(|c| self.tokens().encode(&fp, c.as_bytes()))
            .unwrap_or_default();
        Ok(Response::new(pb::ListAnnotationsResponse {
            annotations,
            next_page_token,
            revision: page.revision,
        }))
    }

    async fn get_article_review(
        &self,
        req: Request<pb::GetArticleReviewRequest>,
    ) -> Result<Response<pb::ArticleReview>, Status> {
        let req = req.into_inner();
        let id = convert::review_name("name", &req.name)?;
        let article = self.article(&id)?.clone();
        let review = self.blocking(move |store| store.review(&article)).await?;
        Ok(Response::new(convert::review_to_pb(&review)))
    }
}

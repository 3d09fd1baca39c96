//! The article RPCs that change articles or read their revisions:
//! `CreateArticle`, `UpdateArticle`, `ListArticleRevisions`.
//!
//! A correction is diffed here, on the caller's task, and every span known
//! at the read revision is placed before the job is submitted, so the
//! committer only looks placements up (see [`crate::anchor`]).

use std::sync::Arc;

use tonic::Request;

use super::{Service, caller};
use crate::anchor::Reanchor;
use crate::convert;
use crate::domain::{Article, ArticleId, OffsetEncoding, Role};
use crate::error::{Error, Result};
use crate::pb;
use crate::store::Mutation;

/// Most bytes of an article's text: ten times a long feature.
pub const MAX_ARTICLE_BYTES: usize = 1024 * 1024;
/// Most code points of a title.
pub const MAX_TITLE_CHARS: usize = 500;
/// Most bytes of a source URL.
pub const MAX_URL_BYTES: usize = 2048;

/// The fields of an article a request sets, checked.
#[derive(Default)]
struct Fields {
    title: Option<String>,
    text: Option<String>,
    source_url: Option<String>,
}

fn title(field: &str, t: &str) -> Result<String> {
    if t.chars().count() > MAX_TITLE_CHARS || t.contains(['\n', '\r', '\0']) {
        return Err(Error::invalid(
            "INVALID_TITLE",
            field,
            format!("must be one line of at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(t.trim().to_owned())
}

fn text(field: &str, t: &str) -> Result<String> {
    if t.trim().is_empty() {
        return Err(Error::invalid(
            "FIELD_REQUIRED",
            field,
            "is required and must not be blank",
        ));
    }
    if t.len() > MAX_ARTICLE_BYTES {
        return Err(Error::invalid(
            "FIELD_TOO_LONG",
            field,
            format!("is {} bytes, over the limit of {MAX_ARTICLE_BYTES}", t.len()),
        ));
    }
    if t.contains('\0') {
        return Err(Error::invalid(
            "INVALID_CHARACTER",
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(t.to_owned())
}

fn source_url(field: &str, u: &str) -> Result<String> {
    if u.is_empty() {
        return Ok(String::new());
    }
    let absolute = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() <= MAX_URL_BYTES
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    if !absolute {
        return Err(Error::invalid(
            "INVALID_URL",
            field,
            format!("{u:?} is not an absolute http(s) URL of at most {MAX_URL_BYTES} bytes"),
        ));
    }
    Ok(u.to_owned())
}

/// Which fields an update sets: the mask's, or the non-empty ones.
fn update_fields(a: &pb::Article, mask: Option<&pbjson_types::FieldMask>) -> Result<Fields> {
    let paths = convert::mask_paths(
        mask,
        "article",
        &[
            ("title", !a.title.is_empty()),
            ("text", !a.text.is_empty()),
            ("source_url", !a.source_url.is_empty()),
        ],
    )?;
    let mut f = Fields::default();
    for p in paths {
        match p {
            "title" => f.title = Some(title("article.title", &a.title)?),
            "text" => f.text = Some(text("article.text", &a.text)?),
            "source_url" => f.source_url = Some(source_url("article.source_url", &a.source_url)?),
            _ => unreachable!("paths were checked above"),
        }
    }
    Ok(f)
}

impl Service {
    pub(super) async fn create_article_rpc(
        &self,
        req: Request<pb::CreateArticleRequest>,
    ) -> Result<pb::Article> {
        let caller = caller(&req)?;
        caller.require(Role::Reviewer, "create articles")?;
        let req = req.into_inner();
        let id = ArticleId::parse(&req.article_id)
            .map_err(|e| Error::invalid("INVALID_NAME", "article_id", format!("{:?} {e}", req.article_id)))?;
        let a = req
            .article
            .as_ref()
            .ok_or_else(|| Error::invalid("FIELD_REQUIRED", "article", "is required"))?;
        let text = text("article.text", &a.text)?;
        let title = title("article.title", &a.title)?;
        let url = source_url("article.source_url", &a.source_url)?;
        let now = crate::store::now_us();
        let article = Arc::new(Article::revision(
            id,
            title,
            text,
            url,
            1,
            caller.analyst.to_string(),
            now,
            now,
        ));
        self.put_article(
            Mutation::PutArticle {
                article,
                base: None,
                reanchor: None,
            },
            &caller,
        )
        .await
    }

    pub(super) async fn update_article_rpc(
        &self,
        req: Request<pb::UpdateArticleRequest>,
    ) -> Result<pb::Article> {
        let caller = caller(&req)?;
        caller.require(Role::Reviewer, "correct articles")?;
        let req = req.into_inner();
        let a = req
            .article
            .as_ref()
            .ok_or_else(|| Error::invalid("FIELD_REQUIRED", "article", "is required"))?;
        let id = convert::article_name("article.name", &a.name)?;
        let fields = update_fields(a, req.update_mask.as_ref())?;
        // The etag is checked here: against every commit made before the
        // call, on any server.
        self.fresh().await?;
        let current = self.article(&id)?;
        let etag = [&req.etag, &a.etag].into_iter().find_map(|e| convert::etag(e));
        if let Some(etag) = etag
            && etag != current.etag()
        {
            return Err(Error::Aborted {
                reason: "ETAG_MISMATCH",
                message: format!(
                    "etag {etag} does not match the current etag {} of {}: read it again and retry",
                    current.etag(),
                    id.name()
                ),
            });
        }
        let title = fields.title.unwrap_or_else(|| current.title.clone());
        let text = fields.text.unwrap_or_else(|| current.text.clone());
        let source_url = fields.source_url.unwrap_or_else(|| current.source_url.clone());
        // Nothing to change (a retry of an update that landed, say): the
        // current revision, and no new one.
        let first_line = text.lines().next().unwrap_or_default().trim();
        if text == current.text
            && source_url == current.source_url
            && (title == current.title || title.is_empty() && current.title == first_line)
        {
            return Ok(convert::article_to_pb(
                &current,
                false,
                OffsetEncoding::CodePoints,
                false,
            ));
        }
        let next = Arc::new(Article::revision(
            id.clone(),
            title,
            text,
            source_url,
            current.revision + 1,
            caller.analyst.to_string(),
            current.create_time_us,
            crate::store::now_us(),
        ));
        let reanchor = if next.text != current.text {
            let (old, new) = (current.clone(), next.clone());
            // The diff and the placement of every span known now are the
            // expensive part: done here, off the async threads and off the
            // committer.
            Some(
                self.blocking(move |store| {
                    let r = Reanchor::new(old, new);
                    store.place_known(&r);
                    Ok(Arc::new(r))
                })
                .await?,
            )
        } else {
            None
        };
        let made = self
            .put_article(
                Mutation::PutArticle {
                    article: next,
                    base: Some(current.revision),
                    reanchor,
                },
                &caller,
            )
            .await?;
        // A correction of many annotations moves the rest in chunks, after
        // its revision: answered once all are moved.
        self.store.reanchored(&id).await?;
        Ok(made)
    }

    /// Commits an article's creation or correction; answers with the
    /// revision made.
    async fn put_article(&self, mutation: Mutation, caller: &crate::domain::Caller) -> Result<pb::Article> {
        let applied = self
            .store
            .apply(vec![mutation], caller.analyst.clone(), None)
            .await?;
        let made = applied
            .articles
            .first()
            .ok_or_else(|| Error::internal("an article change made no revision"))?;
        // The resource as made, text included (AIP-133, AIP-134).
        Ok(convert::article_to_pb(
            made,
            true,
            OffsetEncoding::CodePoints,
            false,
        ))
    }

    pub(super) async fn list_article_revisions_rpc(
        &self,
        req: Request<pb::ListArticleRevisionsRequest>,
    ) -> Result<pb::ListArticleRevisionsResponse> {
        let req = req.into_inner();
        let id = convert::article_name("name", &req.name)?;
        let size = convert::page_size("page_size", req.page_size)?;
        let full = convert::article_view_full("view", req.view, false)?;
        let fp = revisions_fingerprint(&id);
        let after = match self.tokens().decode("page_token", &req.page_token, &fp)? {
            Some(c) => u32::from_be_bytes(
                c.as_slice()
                    .try_into()
                    .map_err(|_| Error::invalid("INVALID_PAGE_TOKEN", "page_token", "is malformed"))?,
            ),
            None => 0,
        };
        let (revisions, mut more) = self
            .blocking(move |store| store.article_revisions(&id, after, size))
            .await?;
        let mut articles: Vec<pb::Article> = revisions
            .iter()
            .map(|a| convert::article_to_pb(a, full, OffsetEncoding::CodePoints, true))
            .collect();
        let fit = self.fitting(&articles);
        if fit < articles.len() {
            articles.truncate(fit);
            more = true;
        }
        let next_page_token = match (more, revisions.get(articles.len().wrapping_sub(1))) {
            (true, Some(last)) => self.tokens().encode(&fp, &last.revision.to_be_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListArticleRevisionsResponse {
            articles,
            next_page_token,
        })
    }
}

/// Page tokens of one article's revisions serve only that list.
fn revisions_fingerprint(id: &ArticleId) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("article-revisions-v1 {id}").as_bytes());
    digest[..16].try_into().expect("16 of 32 bytes")
}

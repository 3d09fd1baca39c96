//! `factcheck publish`, `correct` and `revisions`: articles from text files,
//! for a newsroom that publishes corrections.

use serde_json::json;

use super::json as cli_json;
use super::{CliError, Result, article_name, connect};
use crate::config::{ArticleFields, ClientArgs, OutputFormat};
use crate::pb;

/// A text file (or standard input) as UTF-8, a leading BOM dropped.
fn read_text(file: &str) -> Result<String> {
    let bytes = if file == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
    } else {
        std::fs::read(file)
    }
    .map_err(|e| CliError::Other(format!("cannot read {file}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::Usage(format!(
            "{file} is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))
}

fn print(client: &ClientArgs, verb: &str, a: &pb::Article, extra: Option<&pb::ArticleReview>) {
    match client.output {
        OutputFormat::Json => {
            let mut v = cli_json::message(a);
            if let Some(r) = extra {
                v["needsReviewCount"] = json!(r.needs_review_count);
                v["orphanedCount"] = json!(r.orphaned_count);
            }
            outln!("{v}");
        }
        OutputFormat::Text => {
            outln!("{verb} {} revision {} (etag {})", a.name, a.revision_id, a.etag);
            if let Some(r) = extra {
                outln!(
                    "{} of {} annotations need re-review ({} orphaned: their text is gone)",
                    r.needs_review_count,
                    r.total_count,
                    r.orphaned_count
                );
            }
        }
    }
}

pub async fn publish(client: &ClientArgs, id: &str, file: &str, fields: ArticleFields) -> Result<()> {
    let text = read_text(file)?;
    let mut c = connect(client).await?;
    let a = c
        .create_article(pb::CreateArticleRequest {
            article_id: id.trim_start_matches("articles/").to_owned(),
            article: Some(pb::Article {
                text,
                title: fields.title.unwrap_or_default(),
                source_url: fields.source_url.unwrap_or_default(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    print(client, "published", &a, None);
    Ok(())
}

pub async fn correct(
    client: &ClientArgs,
    id: &str,
    file: &str,
    fields: ArticleFields,
    etag: Option<String>,
) -> Result<()> {
    let text = read_text(file)?;
    let mut paths = vec!["text".to_owned()];
    paths.extend(fields.title.is_some().then(|| "title".to_owned()));
    paths.extend(fields.source_url.is_some().then(|| "source_url".to_owned()));
    let mut c = connect(client).await?;
    let name = article_name(id);
    let a = c
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: name.clone(),
                text,
                title: fields.title.unwrap_or_default(),
                source_url: fields.source_url.unwrap_or_default(),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask { paths }),
            etag: etag.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let review = c
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{name}/review"),
            offset_encoding: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    print(client, "corrected", &a, Some(&review));
    Ok(())
}

pub async fn revisions(client: &ClientArgs, id: &str) -> Result<()> {
    let mut c = connect(client).await?;
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = c
            .list_article_revisions(pb::ListArticleRevisionsRequest {
                name: article_name(id),
                page_size: 1000,
                page_token: token,
                view: 0,
            })
            .await?
            .into_inner();
        all.extend(page.articles);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match client.output {
        OutputFormat::Json => all.iter().for_each(|a| outln!("{}", cli_json::message(a))),
        OutputFormat::Text => {
            outln!("{:<8}  {:<20}  {:<27}  SHA-256", "REVISION", "AUTHOR", "TIME");
            for a in &all {
                outln!(
                    "{:<8}  {:<20}  {:<27}  {}",
                    a.revision_id,
                    a.revision_author,
                    a.revision_create_time
                        .as_ref()
                        .map(super::json::rfc3339)
                        .unwrap_or_default(),
                    &a.sha256[..16.min(a.sha256.len())]
                );
            }
        }
    }
    Ok(())
}

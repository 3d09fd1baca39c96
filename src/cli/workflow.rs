//! The review workflow from the command line: `resolve` (adjudicate a
//! contested span), `signoff`, `review-log`, and `export --format
//! claimreview` (schema.org ClaimReview JSON-LD of signed-off articles).

use serde_json::{Value, json};

use super::{CliError, Client, Result, article_name, connect, json as cli_json, list_all};
use crate::config::{ClientArgs, OutputFormat, VerdictArg};
use crate::pb;

pub async fn resolve(
    client: &ClientArgs,
    id: &str,
    (start, end): (u32, u32),
    verdict: VerdictArg,
    rationale: String,
    etag: Option<String>,
) -> Result<()> {
    let mut c = connect(client).await?;
    let adjudication = c
        .create_adjudication(pb::CreateAdjudicationRequest {
            parent: article_name(id),
            adjudication: Some(pb::Adjudication {
                span: Some(pb::Span { start, end }),
                verdict: super::verdict_pb(verdict) as i32,
                rationale,
                ..Default::default()
            }),
            etag: etag.unwrap_or_default(),
            offset_encoding: 0,
        })
        .await?
        .into_inner();
    match client.output {
        OutputFormat::Json => outln!("{}", cli_json::message(&adjudication)),
        OutputFormat::Text => {
            outln!("{}", adjudication.name);
            outln!(
                "  [{}:{}] {} — {}",
                start,
                end,
                cli_json::verdict_str(adjudication.verdict),
                super::ellipsize(&adjudication.quote, 60)
            );
            outln!(
                "  accepts {} annotation(s), overrules {}",
                adjudication.accepted_count,
                adjudication.overruled_count
            );
        }
    }
    Ok(())
}

pub async fn signoff(client: &ClientArgs, id: &str, etag: Option<String>) -> Result<()> {
    let mut c = connect(client).await?;
    let name = format!("{}/review", article_name(id));
    let etag = match etag {
        Some(e) => e,
        None => {
            let r = c
                .get_article_review(pb::GetArticleReviewRequest {
                    name: name.clone(),
                    offset_encoding: 0,
                    ..Default::default()
                })
                .await?
                .into_inner();
            eprintln!(
                "signing off {name} at etag {}: {}, {} annotation(s) by {} analyst(s), {} contested span(s) adjudicated",
                r.etag,
                cli_json::review_state_str(r.state),
                r.total_count,
                r.analyst_count,
                r.contested_span_count
            );
            r.etag
        }
    };
    let r = c
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name,
            etag,
            offset_encoding: 0,
        })
        .await?
        .into_inner();
    match client.output {
        OutputFormat::Json => outln!("{}", cli_json::message(&r)),
        OutputFormat::Text => {
            let by = r
                .sign_off
                .as_ref()
                .map(|s| s.reviewer.as_str())
                .unwrap_or_default();
            outln!("{} signed off by {by} (etag {})", r.name, r.etag);
        }
    }
    Ok(())
}

pub async fn review_log(client: &ClientArgs, id: &str) -> Result<()> {
    let mut c = connect(client).await?;
    let parent = format!("{}/review", article_name(id));
    let mut token = String::new();
    loop {
        let page = c
            .list_review_events(pb::ListReviewEventsRequest {
                parent: parent.clone(),
                page_size: 1000,
                page_token: token,
                offset_encoding: 0,
            })
            .await?
            .into_inner();
        for e in &page.events {
            match client.output {
                OutputFormat::Json => outln!("{}", cli_json::message(e)),
                OutputFormat::Text => {
                    let what = match (&e.adjudication, &e.sign_off) {
                        (Some(a), _) => {
                            let s = a.span.unwrap_or_default();
                            format!(
                                "adjudicated [{}:{}] {}: {}",
                                s.start,
                                s.end,
                                cli_json::verdict_str(a.verdict),
                                super::ellipsize(&a.rationale, 60)
                            )
                        }
                        (None, Some(s)) if e.reason.is_empty() => {
                            format!("signed off {}", s.article_revision)
                        }
                        (None, Some(s)) => format!("sign-off by {} withdrawn: {}", s.reviewer, e.reason),
                        (None, None) => "?".into(),
                    };
                    outln!(
                        "{:>8}  {}  {:<12}  {what}",
                        e.revision,
                        cli_json::time(e.time.as_ref()).as_str().unwrap_or_default(),
                        e.actor
                    );
                }
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

/// Who publishes the fact checks, and where.
pub struct Publisher {
    pub name: String,
    pub url: String,
    /// The base of each ClaimReview's `url`.
    pub public_url: String,
}

/// The rating scale of `reviewRating`: 1 (worst) to 3 (best), documented
/// in the README. Unattributed sits between: the claim is neither
/// confirmed nor refuted, only unsupported.
fn rating(verdict: i32) -> (u8, &'static str) {
    match pb::Verdict::try_from(verdict) {
        Ok(pb::Verdict::Verified) => (3, "Verified"),
        Ok(pb::Verdict::Unattributed) => (2, "Unattributed"),
        _ => (1, "Disputed"),
    }
}

/// ClaimReview JSON-LD of every signed-off article among `ids` (all when
/// `None`): one per adjudicated contested span, and one per distinct span
/// of the annotations outside contested spans.
pub async fn claim_reviews(c: &mut Client, id: Option<&str>, publisher: &Publisher) -> Result<Vec<Value>> {
    let ids: Vec<String> = match id {
        Some(id) => vec![article_name(id)],
        None => {
            let mut out = Vec::new();
            let mut token = String::new();
            loop {
                let page = c
                    .list_article_reviews(pb::ListArticleReviewsRequest {
                        page_size: 1000,
                        page_token: token,
                        state: pb::ReviewState::SignedOff as i32,
                        offset_encoding: 0,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                out.extend(
                    page.reviews
                        .into_iter()
                        .map(|r| r.name.trim_end_matches("/review").to_owned()),
                );
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out
        }
    };
    let mut items = Vec::new();
    for name in ids {
        let review = c
            .get_article_review(pb::GetArticleReviewRequest {
                name: format!("{name}/review"),
                offset_encoding: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(sign_off) = review
            .sign_off
            .as_ref()
            .filter(|_| review.state == pb::ReviewState::SignedOff as i32)
        else {
            if id.is_some() {
                return Err(CliError::Other(format!(
                    "{name} is not signed off ({}): only signed-off reviews are published",
                    cli_json::review_state_str(review.state)
                )));
            }
            continue;
        };
        if review.contested_spans.len() < review.contested_span_count as usize {
            return Err(CliError::Other(format!(
                "{name} has more contested spans than one review lists: export it on a server with a larger --max-response-mb"
            )));
        }
        let article = c
            .get_article(pb::GetArticleRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let appearance = if article.source_url.is_empty() {
            format!("{}/{name}", publisher.public_url)
        } else {
            article.source_url.clone()
        };
        let date = cli_json::time(sign_off.sign_off_time.as_ref());
        let date = date
            .as_str()
            .and_then(|t| t.get(..10))
            .unwrap_or_default()
            .to_owned();
        // `reviewBody`: the adjudication's rationale, or the notes of the
        // annotations of the span (each once, in order).
        let item = |span: pb::Span, quote: &str, verdict: i32, body: &str| {
            let (value, label) = rating(verdict);
            let mut item = json!({
                "@context": "https://schema.org",
                "@type": "ClaimReview",
                "url": format!("{}/{name}#claim-{}-{}", publisher.public_url, span.start, span.end),
                "claimReviewed": quote,
                "datePublished": date,
                "author": {"@type": "Organization", "name": publisher.name, "url": publisher.url},
                "reviewRating": {
                    "@type": "Rating",
                    "ratingValue": value,
                    "bestRating": 3,
                    "worstRating": 1,
                    "alternateName": label,
                },
                "itemReviewed": {
                    "@type": "Claim",
                    "appearance": {"@type": "CreativeWork", "url": appearance},
                },
            });
            if !body.trim().is_empty() {
                item["reviewBody"] = json!(body.trim());
            }
            item
        };
        let contested: Vec<pb::Span> = review.contested_spans.iter().filter_map(|c| c.span).collect();
        for c in &review.contested_spans {
            // Signed off: every contested span is adjudicated.
            if let (Some(a), Some(span)) = (&c.adjudication, c.span) {
                items.push(item(span, &c.quote, a.verdict, &a.rationale));
            }
        }
        let annotations = list_all(
            c,
            pb::ListAnnotationsRequest {
                parent: name.clone(),
                page_size: 1000,
                ..Default::default()
            },
        )
        .await?;
        let mut notes: std::collections::BTreeMap<(u32, u32), Vec<&str>> = Default::default();
        for a in &annotations {
            let (Some(span), note) = (a.span, a.note.trim()) else {
                continue;
            };
            let of_span = notes.entry((span.start, span.end)).or_default();
            if !note.is_empty() && !of_span.contains(&note) {
                of_span.push(note);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &annotations {
            let Some(span) = a.span else { continue };
            let in_contested = contested.iter().any(|c| c.start < span.end && span.start < c.end);
            if in_contested || !seen.insert((span.start, span.end)) {
                continue;
            }
            let body = notes
                .get(&(span.start, span.end))
                .map(|n| n.join("\n\n"))
                .unwrap_or_default();
            items.push(item(span, &a.quote, a.verdict, &body));
        }
    }
    Ok(items)
}

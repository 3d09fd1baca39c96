//! W3C Web Annotations: `factcheck export --format w3c` writes them, and
//! `factcheck apply --format w3c` anchors them on the current text.
//!
//! The export follows the Web Annotation Data Model
//! (<https://www.w3.org/TR/annotation-model/>): absolute IRIs for the
//! collection, its page, each annotation's target source and creator; a
//! `TextQuoteSelector` with 32 code points of `prefix` and `suffix` (the
//! exact quote alone is ambiguous in articles that repeat paragraphs) and a
//! `TextPositionSelector` in code points, as the model counts; the verdict
//! as an `assessing` body, the note as a `commenting` one, sources as
//! `linking` resources.
//!
//! The import reads what Hypothesis and this export write: a collection, a
//! page, a list, or one annotation; each is anchored by its quote selector
//! (its position selector, if any, only as a hint, since positions go stale
//! when articles are corrected), with the same context scoring the server
//! uses to re-anchor (see [`crate::anchor`]).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::json::verdict_str;
use super::{CliError, Client, Result};
use crate::anchor::{CONTEXT, best_match};
use crate::pb;

/// Where exported IRIs point: `{base}/articles/{id}` and the like.
pub struct Iris {
    pub base: String,
}

impl Iris {
    fn article(&self, id: &str) -> String {
        format!("{}/articles/{id}", self.base)
    }

    fn analyst(&self, name: &str) -> String {
        let escaped: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{}/analysts/{escaped}", self.base)
    }
}

fn split_name(name: &str) -> (&str, &str) {
    let rest = name.strip_prefix("articles/").unwrap_or(name);
    rest.split_once("/annotations/").unwrap_or((rest, ""))
}

/// The code points before and after `[start, end)` of `text`, up to
/// [`CONTEXT`] each.
fn context(text: &str, start: u32, end: u32) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let (s, e) = ((start as usize).min(chars.len()), (end as usize).min(chars.len()));
    (
        chars[s.saturating_sub(CONTEXT)..s].iter().collect(),
        chars[e..(e + CONTEXT).min(chars.len())].iter().collect(),
    )
}

/// One annotation; `text` is the article revision its span points into,
/// `source` the article's IRI.
pub fn annotation(a: &pb::Annotation, text: &str, source: &str, iris: &Iris) -> Value {
    let (_, id) = split_name(&a.name);
    let s = a.span.unwrap_or_default();
    let (prefix, suffix) = context(text, s.start, s.end);
    let mut body = vec![json!({
        "type": "TextualBody",
        "purpose": "assessing",
        "value": verdict_str(a.verdict),
        "format": "text/plain",
    })];
    if !a.note.is_empty() {
        body.push(json!({
            "type": "TextualBody",
            "purpose": "commenting",
            "value": a.note,
            "format": "text/plain",
        }));
    }
    for src in &a.sources {
        if src.starts_with("https://") || src.starts_with("http://") {
            body.push(json!({ "type": "SpecificResource", "purpose": "linking", "source": src }));
        } else {
            body.push(
                json!({ "type": "TextualBody", "purpose": "linking", "value": src, "format": "text/plain" }),
            );
        }
    }
    json!({
        "id": format!("urn:uuid:{id}"),
        "type": "Annotation",
        "motivation": "assessing",
        "creator": { "id": iris.analyst(&a.analyst), "type": "Person", "name": a.analyst },
        "created": a.create_time.as_ref().map(super::json::rfc3339),
        "modified": a.update_time.as_ref().map(super::json::rfc3339),
        "body": body,
        "target": {
            "source": source,
            "selector": [
                { "type": "TextPositionSelector", "start": s.start, "end": s.end },
                { "type": "TextQuoteSelector", "exact": a.quote, "prefix": prefix, "suffix": suffix },
            ],
        },
    })
}

/// The export of `all`: one collection, one page holding every annotation.
/// Reads each article revision the annotations point into.
pub async fn collection(c: &mut Client, all: &[pb::Annotation], iris: &Iris) -> Result<Value> {
    let mut texts: HashMap<String, pb::Article> = HashMap::new();
    let mut items = Vec::with_capacity(all.len());
    for a in all {
        let (article, _) = split_name(&a.name);
        let name = format!("articles/{article}@{}", a.article_revision);
        if !texts.contains_key(&name) {
            let got = c
                .get_article(pb::GetArticleRequest {
                    name: name.clone(),
                    view: pb::ArticleView::Full as i32,
                    offset_encoding: 0,
                    ..Default::default()
                })
                .await?
                .into_inner();
            texts.insert(name.clone(), got);
        }
        let revision = &texts[&name];
        let source = if revision.source_url.is_empty() {
            iris.article(article)
        } else {
            revision.source_url.clone()
        };
        items.push(annotation(a, &revision.text, &source, iris));
    }
    let id = format!("{}/annotations", iris.base);
    Ok(json!({
        "@context": "http://www.w3.org/ns/anno.jsonld",
        "id": id,
        "type": "AnnotationCollection",
        "label": "factcheck annotations",
        "total": all.len(),
        "generator": { "id": format!("{}/", iris.base), "type": "Software", "name": concat!("factcheck ", env!("CARGO_PKG_VERSION")) },
        "generated": prost_types::Timestamp::from(std::time::SystemTime::now()).to_string(),
        "first": {
            "id": format!("{id}?page=0"),
            "type": "AnnotationPage",
            "partOf": id,
            "startIndex": 0,
            "items": items,
        },
    }))
}

/// An annotation to create, anchored on the current text.
pub struct Anchored {
    pub article: String,
    pub start: u32,
    pub end: u32,
    pub quote: String,
    pub verdict: String,
    pub note: String,
    pub sources: Vec<String>,
}

/// The annotations of a W3C document, in order.
fn items(doc: Value) -> Result<Vec<Value>> {
    let mut doc = doc;
    if let Some(first) = doc.get_mut("first").map(Value::take) {
        doc = first;
    }
    match doc {
        Value::Array(all) => Ok(all),
        Value::Object(ref o) if o.contains_key("items") => match doc.get("items") {
            Some(Value::Array(all)) => Ok(all.clone()),
            _ => Err(CliError::Usage("`items` is not a list".into())),
        },
        Value::Object(_) => Ok(vec![doc]),
        _ => Err(CliError::Usage(
            "not a W3C annotation, page, collection or list of annotations".into(),
        )),
    }
}

fn strings(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    }
}

/// Reads a W3C document and anchors each annotation on the current text of
/// its article. Returns the anchored ones with their position (from 1) and
/// the others with why they could not be anchored.
pub async fn anchor_all(
    c: &mut Client,
    text: &str,
) -> Result<(Vec<(usize, Anchored)>, Vec<(usize, String)>)> {
    let doc: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| CliError::Usage(format!("not JSON: {e}")))?;
    let all = items(doc)?;
    // Articles by id and by their published URL.
    let mut by_url: HashMap<String, String> = HashMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_articles(pb::ListArticlesRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for a in page.articles {
            let id = a.name.trim_start_matches("articles/").to_owned();
            if !a.source_url.is_empty() {
                by_url.insert(a.source_url, id);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut texts: HashMap<String, Option<String>> = HashMap::new();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (i, a) in all.iter().enumerate() {
        let n = i + 1;
        match anchor_one(c, a, &by_url, &mut texts).await {
            Ok(x) => ok.push((n, x)),
            Err(why) => {
                let id = a.get("id").and_then(Value::as_str).unwrap_or("(no id)");
                failed.push((n, format!("{id}: {why}")));
            }
        }
    }
    Ok((ok, failed))
}

async fn anchor_one(
    c: &mut Client,
    a: &Value,
    by_url: &HashMap<String, String>,
    texts: &mut HashMap<String, Option<String>>,
) -> std::result::Result<Anchored, String> {
    let target = strings(a.get("target")).into_iter().next().ok_or("no target")?;
    let source = match target {
        Value::String(s) => s.as_str(),
        t => t
            .get("source")
            .and_then(Value::as_str)
            .ok_or("the target has no source")?,
    };
    let article = by_url
        .get(source)
        .cloned()
        .or_else(|| {
            let path = source.split(['#', '?']).next().unwrap_or(source);
            path.rsplit_once("articles/")
                .map(|(_, id)| id.trim_end_matches('/').to_owned())
        })
        .ok_or_else(|| format!("source {source:?} names no article here"))?;
    if !texts.contains_key(&article) {
        let got = c
            .get_article(pb::GetArticleRequest {
                name: format!("articles/{article}"),
                view: pb::ArticleView::Full as i32,
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .ok()
            .map(|r| r.into_inner().text);
        texts.insert(article.clone(), got);
    }
    let text = texts[&article]
        .as_deref()
        .ok_or_else(|| format!("article {article} does not exist here"))?;
    let selectors = strings(target.get("selector"));
    let quote = selectors
        .iter()
        .find(|s| s.get("type").and_then(Value::as_str) == Some("TextQuoteSelector"))
        .ok_or("no TextQuoteSelector to anchor by")?;
    let field = |k: &str| quote.get(k).and_then(Value::as_str).unwrap_or_default();
    let (exact, prefix, suffix) = (field("exact"), field("prefix"), field("suffix"));
    if exact.is_empty() {
        return Err("the TextQuoteSelector has no exact text".into());
    }
    let position = selectors
        .iter()
        .find(|s| s.get("type").and_then(Value::as_str) == Some("TextPositionSelector"))
        .and_then(|p| {
            Some((
                p.get("start")?.as_u64()? as usize,
                p.get("end")?.as_u64()? as usize,
            ))
        });
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte_of = |cp: usize| chars.get(cp).map_or(text.len(), |(b, _)| *b);
    // The position, if it still holds the quote; else the best match by
    // context, nearest the position.
    let start = match position {
        Some((s, e)) if s < e && e <= chars.len() && &text[byte_of(s)..byte_of(e)] == exact => s,
        _ => {
            let hint = position.map_or(0, |(s, _)| byte_of(s));
            let m = best_match(text, exact, prefix, suffix, hint)
                .ok_or_else(|| format!("the quote {exact:?} is not in the current text of {article}"))?;
            if m.tied && position.is_none() {
                return Err(format!(
                    "the quote {exact:?} occurs {} times in {article} and neither its prefix and suffix nor a \
                     position tells which",
                    m.count
                ));
            }
            text[..m.start].chars().count()
        }
    };
    let end = start + exact.chars().count();
    let mut verdict = None;
    let mut notes = Vec::new();
    let mut sources = Vec::new();
    for b in strings(a.get("body")) {
        let purpose = b.get("purpose").and_then(Value::as_str).unwrap_or("commenting");
        let value = b.get("value").and_then(Value::as_str);
        match (purpose, value) {
            ("assessing", Some(v)) => verdict = Some(v.to_owned()),
            ("linking", Some(v)) => sources.push(v.to_owned()),
            ("linking", None) => {
                if let Some(src) = b.get("source").or_else(|| b.get("id")).and_then(Value::as_str) {
                    sources.push(src.to_owned());
                }
            }
            ("commenting" | "describing" | "replying", Some(v)) => notes.push(v.to_owned()),
            _ => {}
        }
    }
    let verdict = verdict.ok_or(
        "no verdict: add a body with purpose \"assessing\" and value verified, disputed or unattributed",
    )?;
    Ok(Anchored {
        article,
        start: start as u32,
        end: end as u32,
        quote: exact.to_owned(),
        verdict,
        note: notes.join("\n\n"),
        sources,
    })
}

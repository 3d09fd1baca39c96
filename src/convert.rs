//! Protobuf ↔ domain: every request field is validated here, and every
//! error names the field it is about.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use std::sync::Arc;

use crate::domain::{
    Adjudication, Anchor, Annotation, AnnotationFilter, AnnotationName, Article, ArticleId, ContestedSpan,
    EventKind, Judgement, MAX_NOTE_CHARS, MAX_SOURCE_CHARS, MAX_SOURCES, OffsetEncoding, OffsetError, Review,
    ReviewEvent, ReviewEventKind, ReviewState, Revision, SignOff, Span, Verdict,
};
use crate::error::{Error, Result};
use crate::pb;

/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Larger page sizes are coerced down to this.
pub const MAX_PAGE_SIZE: usize = 1000;

/// `articles/{article}`.
pub fn article_name(field: &str, name: &str) -> Result<ArticleId> {
    let id = name.strip_prefix("articles/").ok_or_else(|| {
        Error::invalid(
            "INVALID_NAME",
            field,
            format!("{name:?} is not of the form articles/{{article}}"),
        )
    })?;
    ArticleId::parse(id).map_err(|e| Error::invalid("INVALID_NAME", field, format!("article id {id:?} {e}")))
}

/// `articles/{article}` or `articles/-` (every article: `None`).
pub fn annotation_parent(field: &str, parent: &str) -> Result<Option<ArticleId>> {
    if parent == "articles/-" {
        return Ok(None);
    }
    article_name(field, parent).map(Some)
}

/// `articles/{article}/annotations/{uuid}`.
pub fn annotation_name(field: &str, name: &str) -> Result<AnnotationName> {
    let malformed = || {
        Error::invalid(
            "INVALID_NAME",
            field,
            format!("{name:?} is not of the form articles/{{article}}/annotations/{{uuid}}"),
        )
    };
    let rest = name.strip_prefix("articles/").ok_or_else(malformed)?;
    let (article, id) = rest.split_once("/annotations/").ok_or_else(malformed)?;
    let article = ArticleId::parse(article)
        .map_err(|e| Error::invalid("INVALID_NAME", field, format!("article id {article:?} {e}")))?;
    let id = Uuid::try_parse(id).map_err(|_| {
        Error::invalid(
            "INVALID_NAME",
            field,
            format!("annotation id {id:?} is not a UUID"),
        )
    })?;
    Ok(AnnotationName { article, id })
}

/// `articles/{article}/review`.
pub fn review_name(field: &str, name: &str) -> Result<ArticleId> {
    let article = name.strip_suffix("/review").ok_or_else(|| {
        Error::invalid(
            "INVALID_NAME",
            field,
            format!("{name:?} is not of the form articles/{{article}}/review"),
        )
    })?;
    article_name(field, article)
}

/// A request's verdict; `None` for `VERDICT_UNSPECIFIED`.
pub fn verdict(field: &str, value: i32) -> Result<Option<Verdict>> {
    match pb::Verdict::try_from(value) {
        Ok(pb::Verdict::Unspecified) => Ok(None),
        Ok(pb::Verdict::Verified) => Ok(Some(Verdict::Verified)),
        Ok(pb::Verdict::Disputed) => Ok(Some(Verdict::Disputed)),
        Ok(pb::Verdict::Unattributed) => Ok(Some(Verdict::Unattributed)),
        Err(_) => Err(Error::invalid(
            "INVALID_ENUM_VALUE",
            field,
            format!("{value} is not a Verdict value"),
        )),
    }
}

pub fn required_verdict(field: &str, value: i32) -> Result<Verdict> {
    verdict(field, value)?.ok_or_else(|| {
        Error::invalid(
            "FIELD_REQUIRED",
            field,
            "is required: VERDICT_VERIFIED, VERDICT_DISPUTED or VERDICT_UNATTRIBUTED",
        )
    })
}

pub fn verdict_to_pb(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Verified => pb::Verdict::Verified,
        Verdict::Disputed => pb::Verdict::Disputed,
        Verdict::Unattributed => pb::Verdict::Unattributed,
    }
}

/// A span with `start < end`, not checked against any text.
pub fn span(field: &str, span: Option<&pb::Span>) -> Result<Span> {
    let s = span.ok_or_else(|| Error::invalid("FIELD_REQUIRED", field, "is required"))?;
    Span::new(s.start, s.end).ok_or_else(|| {
        Error::invalid(
            "SPAN_EMPTY",
            format!("{field}.end"),
            format!("must be greater than start ({}), got {}", s.start, s.end),
        )
    })
}

/// `articles/{article}` or `articles/{article}@{revision}`.
pub fn article_revision_name(field: &str, name: &str) -> Result<(ArticleId, Option<u32>)> {
    match name.split_once('@') {
        None => Ok((article_name(field, name)?, None)),
        Some((article, rev)) => {
            let id = article_name(field, article)?;
            let rev = rev.parse::<u32>().ok().filter(|&r| r > 0).ok_or_else(|| {
                Error::invalid(
                    "INVALID_NAME",
                    field,
                    format!("revision {rev:?} is not a revision id (1, 2, ...)"),
                )
            })?;
            Ok((id, Some(rev)))
        }
    }
}

/// An etag as sent: `None` when empty; `"66"` and `66` are the same etag
/// (a shell drops the quotes of `--etag "66"`).
pub fn etag(value: &str) -> Option<String> {
    match value {
        "" => None,
        v if v.starts_with('"') || v.starts_with("W/") => Some(v.to_owned()),
        v => Some(format!("\"{v}\"")),
    }
}

/// A request's offset encoding; code points when unset.
pub fn offset_encoding(field: &str, value: i32) -> Result<OffsetEncoding> {
    match pb::OffsetEncoding::try_from(value) {
        Ok(pb::OffsetEncoding::Unspecified | pb::OffsetEncoding::CodePoints) => {
            Ok(OffsetEncoding::CodePoints)
        }
        Ok(pb::OffsetEncoding::Utf16) => Ok(OffsetEncoding::Utf16),
        Ok(pb::OffsetEncoding::Utf8) => Ok(OffsetEncoding::Utf8),
        Err(_) => Err(Error::invalid(
            "INVALID_ENUM_VALUE",
            field,
            format!("{value} is not an OffsetEncoding value"),
        )),
    }
}

/// A batch child's offset encoding: unset, or the batch's.
pub fn child_encoding(value: i32, batch: OffsetEncoding) -> Result<()> {
    if value != 0 && offset_encoding("offset_encoding", value)? != batch {
        return Err(Error::invalid(
            "BATCH_MISMATCH",
            "offset_encoding",
            "must be unset or the batch's offset_encoding",
        ));
    }
    Ok(())
}

/// A span counted in `enc` that lies within `article` and starts and ends
/// on grapheme cluster boundaries, in code points.
pub fn span_in(
    field: &str,
    value: Option<&pb::Span>,
    article: &Article,
    enc: OffsetEncoding,
) -> Result<Span> {
    let raw = span(field, value)?;
    let unit = enc.unit();
    let point =
        |name: &str, offset: u32| -> Result<u32> {
            let field = format!("{field}.{name}");
            let cp = article.decode_offset(offset, enc).map_err(|e| match e {
            OffsetError::PastEnd(len) => Error::invalid("SPAN_OUT_OF_RANGE", 
                &field,
                format!("must be at most the article length ({len} {unit}), got {offset}"),
            ),
            OffsetError::InsideCodePoint(before, after) => Error::invalid("OFFSET_INSIDE_CHARACTER", 
                &field,
                format!(
                    "{offset} falls inside a character (within a UTF-16 surrogate pair or a UTF-8 sequence): \
                     the nearest character boundaries are {before} and {after} ({unit})"
                ),
            ),
        })?;
            article.grapheme_boundary(cp).map_err(|(before, after)| {
            Error::invalid("SPAN_SPLITS_GRAPHEME_CLUSTER", 
                &field,
                format!(
                    "{offset} splits a grapheme cluster (a letter and its combining marks, a flag, an emoji \
                     sequence or a Hangul syllable): the nearest boundaries are {} and {} ({unit})",
                    article.encode_offset(before, enc),
                    article.encode_offset(after, enc)
                ),
            )
        })?;
            Ok(cp)
        };
    let start = point("start", raw.start())?;
    let end = point("end", raw.end())?;
    Span::new(start, end).ok_or_else(|| Error::internal("an encoded span lost its length"))
}

/// An `overlaps` filter counted in `enc`, in code points: clamped to the
/// article and widened to whole characters, as a range query may be.
pub fn overlaps_in(span: Span, article: &Article, enc: OffsetEncoding) -> Span {
    let point = |offset: u32, up: bool| match article.decode_offset(offset, enc) {
        Ok(cp) => cp,
        Err(OffsetError::PastEnd(_)) => article.len(),
        Err(OffsetError::InsideCodePoint(before, after)) => {
            let b = if up { after } else { before };
            article.decode_offset(b, enc).unwrap_or(article.len())
        }
    };
    let start = point(span.start(), false);
    let end = point(span.end(), true);
    Span::new(start, end.max(start + 1)).expect("end past start")
}

pub fn note(field: &str, note: &str) -> Result<String> {
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(Error::invalid(
            "FIELD_TOO_LONG",
            field,
            format!("is longer than {MAX_NOTE_CHARS} characters"),
        ));
    }
    no_nul(field, note)?;
    Ok(note.to_owned())
}

pub fn sources(field: &str, sources: &[String]) -> Result<Vec<String>> {
    if sources.len() > MAX_SOURCES {
        return Err(Error::invalid(
            "TOO_MANY_ENTRIES",
            field,
            format!("has more than {MAX_SOURCES} entries"),
        ));
    }
    for (i, s) in sources.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if s.trim().is_empty() {
            return Err(Error::invalid("FIELD_EMPTY", f, "is empty"));
        }
        if s.chars().count() > MAX_SOURCE_CHARS {
            return Err(Error::invalid(
                "FIELD_TOO_LONG",
                f,
                format!("is longer than {MAX_SOURCE_CHARS} characters"),
            ));
        }
        no_nul(&f, s)?;
        crate::domain::check_source_scheme(&f, s)?;
    }
    Ok(sources.to_vec())
}

fn no_nul(field: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(Error::invalid(
            "INVALID_CHARACTER",
            field,
            "contains a NUL character",
        ));
    }
    Ok(())
}

/// The judgement of an annotation to create, checked against its article.
pub fn new_judgement(a: &pb::Annotation, article: &Article, enc: OffsetEncoding) -> Result<Judgement> {
    Ok(Judgement {
        span: span_in("annotation.span", a.span.as_ref(), article, enc)?,
        verdict: required_verdict("annotation.verdict", a.verdict)?,
        note: note("annotation.note", &a.note)?,
        sources: sources("annotation.sources", &a.sources)?,
    })
}

/// A UUID.
pub fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::try_parse(value)
        .map_err(|_| Error::invalid("INVALID_NAME", field, format!("{value:?} is not a UUID")))
}

/// An optional `request_id`: empty, or a UUID.
pub fn request_id(field: &str, value: &str) -> Result<Option<Uuid>> {
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::try_parse(value)
        .map(Some)
        .map_err(|_| Error::invalid("INVALID_NAME", field, format!("{value:?} is not a UUID")))
}

/// SHA-256 of a request and its caller, to tell a retry from a reused id.
pub fn fingerprint(request: &impl prost::Message, analyst: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(analyst.as_bytes());
    h.update([0]);
    h.update(request.encode_to_vec());
    h.finalize().into()
}

/// Most children in one batch request.
pub const MAX_BATCH: usize = 1000;

/// A batch holds 1 to [`MAX_BATCH`] children.
pub fn batch_size(field: &str, n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(
            "BATCH_SIZE",
            field,
            format!("must hold 1 to {MAX_BATCH} entries, got {n}"),
        ));
    }
    Ok(())
}

/// `page_size`: 0 is the default, larger than the maximum is the maximum.
pub fn page_size(field: &str, size: i32) -> Result<usize> {
    match size {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid(
            "INVALID_PAGE_SIZE",
            field,
            format!("must not be negative, got {n}"),
        )),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// The filters of a ListAnnotations request.
pub fn annotation_filter(req: &pb::ListAnnotationsRequest) -> Result<AnnotationFilter> {
    Ok(AnnotationFilter {
        article: annotation_parent("parent", &req.parent)?,
        verdict: verdict("verdict", req.verdict)?,
        analyst: (!req.analyst.is_empty()).then(|| req.analyst.clone()),
        overlaps: req
            .overlaps
            .as_ref()
            .map(|s| span("overlaps", Some(s)))
            .transpose()?,
    })
}

/// The filters of a WatchAnnotations request.
pub fn watch_filter(req: &pb::WatchAnnotationsRequest) -> Result<crate::domain::WatchFilter> {
    Ok(crate::domain::WatchFilter {
        article: annotation_parent("parent", &req.parent)?,
        verdict: verdict("verdict", req.verdict)?,
        analyst: (!req.analyst.is_empty()).then(|| req.analyst.clone()),
        encoding: offset_encoding("offset_encoding", req.offset_encoding)?,
    })
}

/// What a page token is bound to: the list it came from and its filters.
pub fn filter_fingerprint(f: &AnnotationFilter, read_revision: u64) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"annotations\0");
    // 0 (now) hashes as before, so tokens handed out before read_revision
    // existed still serve.
    if read_revision > 0 {
        h.update(b"at\0");
        h.update(read_revision.to_be_bytes());
    }
    h.update(f.article.as_ref().map_or("-", |a| a.as_str()));
    h.update([0, f.verdict.map_or(0, |v| v.index() as u8 + 1), 0]);
    h.update(f.analyst.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    if let Some(s) = f.overlaps {
        h.update(s.start().to_be_bytes());
        h.update(s.end().to_be_bytes());
    }
    h.finalize()[..16].try_into().expect("16 bytes")
}

pub const ARTICLES_FINGERPRINT: [u8; 16] = *b"articles-list-v1";

/// Page tokens are opaque: `base64url(version, fingerprint, cursor, mac)`,
/// the MAC an HMAC-SHA-256 keyed with a secret kept in the store, so a token
/// cannot be forged, edited or used with other filters.
pub struct PageTokens<'a> {
    pub secret: &'a [u8; 32],
}

const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 16;

impl PageTokens<'_> {
    pub fn encode(&self, fingerprint: &[u8; 16], cursor: &[u8]) -> String {
        let mut body = vec![TOKEN_VERSION];
        body.extend_from_slice(fingerprint);
        body.extend_from_slice(cursor);
        let mac = self.mac(&body);
        body.extend_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// The cursor in `token`, if the token is one of ours for these filters.
    pub fn decode(&self, field: &str, token: &str, fingerprint: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            Error::invalid(
                "INVALID_PAGE_TOKEN",
                field,
                "is not a page token this server issued for this list",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        if bytes.len() < 1 + 16 + MAC_LEN {
            return Err(invalid());
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut m = self.hmac();
        m.update(body);
        m.verify_truncated_left(mac).map_err(|_| invalid())?;
        if body[0] != TOKEN_VERSION {
            return Err(invalid());
        }
        if &body[1..17] != fingerprint {
            return Err(Error::invalid(
                "INVALID_PAGE_TOKEN",
                field,
                "was issued for a list with other parent or filters: send the same filters, or no page_token",
            ));
        }
        Ok(Some(body[17..].to_vec()))
    }

    fn hmac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.secret).expect("HMAC takes any key length")
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.hmac();
        m.update(body);
        m.finalize().into_bytes()[..MAC_LEN].try_into().expect("16 bytes")
    }
}

pub fn timestamp(us: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// An article revision; `named` names it `articles/{id}@{revision}`.
pub fn article_to_pb(a: &Article, full: bool, enc: OffsetEncoding, named: bool) -> pb::Article {
    pb::Article {
        name: if named { a.revision_name() } else { a.id.name() },
        title: a.title.clone(),
        text: if full { a.text.clone() } else { String::new() },
        length: a.len_in(enc),
        sha256: a.sha256.clone(),
        revision_id: a.revision.to_string(),
        revision_author: a.author.clone(),
        revision_create_time: Some(timestamp(a.revision_time_us)),
        create_time: Some(timestamp(a.create_time_us)),
        source_url: a.source_url.clone(),
        etag: a.etag(),
    }
}

pub fn anchor_to_pb(a: Anchor) -> pb::AnchorState {
    match a {
        Anchor::Anchored => pb::AnchorState::Anchored,
        Anchor::Moved => pb::AnchorState::Moved,
        Anchor::Changed => pb::AnchorState::Changed,
        Anchor::Orphaned => pb::AnchorState::Orphaned,
    }
}

/// Whether an article view asks for the text; `default_full` for UNSPECIFIED.
pub fn article_view_full(field: &str, view: i32, default_full: bool) -> Result<bool> {
    match pb::ArticleView::try_from(view) {
        Ok(pb::ArticleView::Unspecified) => Ok(default_full),
        Ok(pb::ArticleView::Basic) => Ok(false),
        Ok(pb::ArticleView::Full) => Ok(true),
        Err(_) => Err(Error::invalid(
            "INVALID_ENUM_VALUE",
            field,
            format!("{view} is not an ArticleView value"),
        )),
    }
}

/// A span of `article`, counted in `enc`.
pub fn span_to_pb(s: Span, article: &Article, enc: OffsetEncoding) -> pb::Span {
    pb::Span {
        start: article.encode_offset(s.start(), enc),
        end: article.encode_offset(s.end(), enc),
    }
}

/// Page tokens of one annotation's history serve only that history.
pub fn history_fingerprint(name: &AnnotationName) -> [u8; 16] {
    let digest = Sha256::digest(format!("history-v1 {name}").as_bytes());
    digest[..16].try_into().expect("16 of 32 bytes")
}

/// A history record; `article` is the revision its span points into.
pub fn revision_to_pb(r: &Revision, article: &Article, enc: OffsetEncoding) -> pb::AnnotationRevision {
    use pb::annotation_event::Type;
    pb::AnnotationRevision {
        annotation: Some(annotation_to_pb(&r.annotation, article, enc)),
        revision: r.revision,
        actor: r.actor.clone(),
        change_time: Some(timestamp(r.time_us)),
        r#type: match r.kind {
            EventKind::Created => Type::Created,
            EventKind::Updated => Type::Updated,
            EventKind::Deleted => Type::Deleted,
        } as i32,
        changed_fields: (r.kind == EventKind::Updated).then(|| pbjson_types::FieldMask {
            paths: r.changed.clone(),
        }),
        hash: hex::encode(r.hash),
        previous_hash: hex::encode(r.prev_hash),
        moderation_reason: match r.kind {
            EventKind::Deleted => r
                .changed
                .iter()
                .find_map(|c| c.strip_prefix(crate::store::MODERATION_PREFIX))
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        },
    }
}

/// An annotation; `article` is the revision its span points into
/// (`a.article_revision`).
pub fn annotation_to_pb(a: &Annotation, article: &Article, enc: OffsetEncoding) -> pb::Annotation {
    debug_assert_eq!(article.revision, a.article_revision);
    let j = &a.judgement;
    pb::Annotation {
        name: a.name.render(),
        span: Some(span_to_pb(j.span, article, enc)),
        quote: article.quote(j.span).unwrap_or_default().to_owned(),
        verdict: verdict_to_pb(j.verdict) as i32,
        note: j.note.clone(),
        sources: j.sources.clone(),
        analyst: a.analyst.to_string(),
        create_time: Some(timestamp(a.create_time_us)),
        update_time: Some(timestamp(a.update_time_us)),
        etag: a.etag(),
        article_revision: a.article_revision.to_string(),
        anchor_state: anchor_to_pb(a.anchor) as i32,
    }
}

fn contested_to_pb(c: &ContestedSpan, article: &Article, enc: OffsetEncoding) -> pb::ContestedSpan {
    pb::ContestedSpan {
        span: Some(span_to_pb(c.span, article, enc)),
        quote: article.quote(c.span).unwrap_or_default().to_owned(),
        verdicts: c.verdicts.iter().map(|&v| verdict_to_pb(v) as i32).collect(),
        annotations: c.annotations.iter().map(AnnotationName::render).collect(),
        annotation_count: c.count,
        adjudication: c
            .adjudication
            .as_ref()
            .map(|a| adjudication_to_pb(a, article, enc)),
    }
}

/// An adjudication; `article` is the revision its span points into
/// (`a.article_revision`).
pub fn adjudication_to_pb(a: &Adjudication, article: &Article, enc: OffsetEncoding) -> pb::Adjudication {
    debug_assert_eq!(article.revision, a.article_revision);
    let name = |id: &Uuid| {
        AnnotationName {
            article: a.article.clone(),
            id: *id,
        }
        .render()
    };
    pb::Adjudication {
        name: a.name(),
        span: Some(span_to_pb(a.span, article, enc)),
        quote: article.quote(a.span).unwrap_or_default().to_owned(),
        verdict: verdict_to_pb(a.verdict) as i32,
        rationale: a.rationale.clone(),
        reviewer: a.reviewer.to_string(),
        accepted_annotations: a.accepted.iter().map(name).collect(),
        overruled_annotations: a.overruled.iter().map(name).collect(),
        accepted_count: a.accepted_count,
        overruled_count: a.overruled_count,
        create_time: Some(timestamp(a.create_time_us)),
        revision: a.revision,
        article_revision: format!("{}@{}", a.article.name(), a.article_revision),
    }
}

pub fn sign_off_to_pb(s: &SignOff) -> pb::SignOff {
    pb::SignOff {
        reviewer: s.reviewer.to_string(),
        sign_off_time: Some(timestamp(s.time_us)),
        revision: s.revision,
        article_revision: format!("{}@{}", s.article.name(), s.article_revision),
    }
}

/// One entry of a review's history; `article` reads the article revision
/// an adjudication points into.
pub fn review_event_to_pb(
    e: &ReviewEvent,
    article: impl Fn(&ArticleId, u32) -> Result<Arc<Article>>,
    enc: OffsetEncoding,
) -> Result<pb::ReviewEvent> {
    use pb::review_event::Type;
    let mut out = pb::ReviewEvent {
        review: format!("{}/review", e.article.name()),
        revision: e.revision,
        time: Some(timestamp(e.time_us)),
        actor: e.actor.clone(),
        ..Default::default()
    };
    match &e.kind {
        ReviewEventKind::Adjudicated(a) => {
            out.r#type = Type::Adjudicated as i32;
            let text = article(&a.article, a.article_revision)?;
            out.adjudication = Some(adjudication_to_pb(a, &text, enc));
        }
        ReviewEventKind::SignedOff(s) => {
            out.r#type = Type::SignedOff as i32;
            out.sign_off = Some(sign_off_to_pb(s));
        }
        ReviewEventKind::Withdrawn { sign_off, reason } => {
            out.r#type = Type::SignOffWithdrawn as i32;
            out.sign_off = Some(sign_off_to_pb(sign_off));
            out.reason = reason.clone();
        }
    }
    Ok(out)
}

/// `r` as of store revision `revision`.
/// The review, its contested spans cut to those that fit in `budget` bytes
/// (`contested_span_count` still counts them all).
pub fn review_to_pb(r: &Review, revision: u64, budget: usize, enc: OffsetEncoding) -> pb::ArticleReview {
    use prost::Message;
    let article = &r.article;
    let mut used = 0;
    let contested_spans = r
        .contested
        .iter()
        .map(|c| contested_to_pb(c, article, enc))
        .take_while(|c| {
            used += c.encoded_len() + 4;
            used <= budget
        })
        .collect();
    let len = article.len();
    pb::ArticleReview {
        name: format!("{}/review", article.id.name()),
        total_count: r.counts.iter().sum(),
        verified_count: r.counts[Verdict::Verified.index()],
        disputed_count: r.counts[Verdict::Disputed.index()],
        unattributed_count: r.counts[Verdict::Unattributed.index()],
        covered_code_points: r.covered,
        covered_fraction: if len == 0 {
            0.0
        } else {
            f64::from(r.covered) / f64::from(len)
        },
        contested_spans,
        contested_span_count: r.contested.len() as u32,
        analyst_count: r.analysts,
        last_update_time: r.last_update_time_us.map(timestamp),
        revision,
        needs_review_count: r.needs_review,
        orphaned_count: r.orphaned,
        moving_count: r.moving,
        article_revision: article.revision.to_string(),
        state: review_state_to_pb(r.state) as i32,
        min_analysts: r.min_analysts,
        krippendorff_alpha: r.agreement.alpha,
        pairwise_agreements: r
            .agreement
            .pairwise
            .iter()
            .map(|&(a, b, alpha)| pb::AnalystAgreement {
                analyst: r.analyst_names[a as usize].to_string(),
                other_analyst: r.analyst_names[b as usize].to_string(),
                krippendorff_alpha: alpha,
            })
            .collect(),
        sign_off: r.sign_off.as_deref().map(sign_off_to_pb),
        etag: format!("\"{}\"", r.etag),
        unresolved_contested_span_count: r.unresolved,
    }
}

pub fn review_state_to_pb(s: ReviewState) -> pb::ReviewState {
    match s {
        ReviewState::NotStarted => pb::ReviewState::NotStarted,
        ReviewState::InProgress => pb::ReviewState::InProgress,
        ReviewState::NeedsAdjudication => pb::ReviewState::NeedsAdjudication,
        ReviewState::Ready => pb::ReviewState::Ready,
        ReviewState::SignedOff => pb::ReviewState::SignedOff,
    }
}

/// A request's review state filter; `None` when unset.
pub fn review_state(field: &str, value: i32) -> Result<Option<ReviewState>> {
    match pb::ReviewState::try_from(value) {
        Ok(pb::ReviewState::Unspecified) => Ok(None),
        Ok(pb::ReviewState::NotStarted) => Ok(Some(ReviewState::NotStarted)),
        Ok(pb::ReviewState::InProgress) => Ok(Some(ReviewState::InProgress)),
        Ok(pb::ReviewState::NeedsAdjudication) => Ok(Some(ReviewState::NeedsAdjudication)),
        Ok(pb::ReviewState::Ready) => Ok(Some(ReviewState::Ready)),
        Ok(pb::ReviewState::SignedOff) => Ok(Some(ReviewState::SignedOff)),
        Err(_) => Err(Error::invalid(
            "INVALID_ENUM_VALUE",
            field,
            format!("{value} is not a ReviewState value"),
        )),
    }
}

/// The fields of `annotation` an update changes, per `update_mask` (or, with
/// no mask, the fields that are set).
/// The fields an update mask names (AIP-134): its paths, each one of
/// `fields`; `*` for all of them; omitted, the fields the resource sets (the
/// `bool` of each). `what` names the resource in errors.
pub fn mask_paths(
    mask: Option<&pbjson_types::FieldMask>,
    what: &str,
    fields: &[(&'static str, bool)],
) -> Result<Vec<&'static str>> {
    let names: Vec<&'static str> = fields.iter().map(|&(f, _)| f).collect();
    let list = names.join(", ");
    match mask {
        Some(m) if m.paths.iter().any(|p| p == "*") => {
            if m.paths.len() > 1 {
                return Err(Error::invalid(
                    "INVALID_UPDATE_MASK",
                    "update_mask",
                    "'*' must be the only path",
                ));
            }
            Ok(names)
        }
        Some(m) if !m.paths.is_empty() => m
            .paths
            .iter()
            .map(|p| {
                names.iter().copied().find(|n| n == p).ok_or_else(|| {
                    Error::invalid(
                        "INVALID_UPDATE_MASK",
                        "update_mask",
                        format!("{p:?} is not an updatable field: use {list} or *"),
                    )
                })
            })
            .collect(),
        _ => {
            let set: Vec<&'static str> = fields.iter().filter(|&&(_, set)| set).map(|&(f, _)| f).collect();
            if set.is_empty() {
                return Err(Error::invalid(
                    "INVALID_UPDATE_MASK",
                    "update_mask",
                    format!("names no field and the {what} sets none of {list}"),
                ));
            }
            Ok(set)
        }
    }
}

pub fn patch(
    annotation: &pb::Annotation,
    mask: Option<&pbjson_types::FieldMask>,
    article: &Article,
    enc: OffsetEncoding,
) -> Result<crate::domain::Patch> {
    let paths = mask_paths(
        mask,
        "annotation",
        &[
            ("span", annotation.span.is_some()),
            ("verdict", annotation.verdict != 0),
            ("note", !annotation.note.is_empty()),
            ("sources", !annotation.sources.is_empty()),
        ],
    )?;
    let mut patch = crate::domain::Patch::default();
    for p in paths {
        match p {
            "span" => {
                patch.span = Some(span_in(
                    "annotation.span",
                    annotation.span.as_ref(),
                    article,
                    enc,
                )?)
            }
            "verdict" => patch.verdict = Some(required_verdict("annotation.verdict", annotation.verdict)?),
            "note" => patch.note = Some(note("annotation.note", &annotation.note)?),
            "sources" => patch.sources = Some(sources("annotation.sources", &annotation.sources)?),
            _ => unreachable!("paths were checked above"),
        }
    }
    Ok(patch)
}

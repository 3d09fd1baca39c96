//! Stored values: a format version byte, then the record in postcard.
//!
//! A new format gets a new version byte and a decoder beside the old one, so
//! a data directory written by an older server stays readable. Format 1 had
//! no article revisions: its annotation records (and the history, request
//! and changelog records that hold them) read as made on article revision 1,
//! anchored; its history records keep the hash they were written with.
//! Format 3 added review events to changelog entries and the last change's
//! revision to article stats. Format 4 made changelog entries point at the
//! history records that hold a change instead of copying them (one stored
//! copy per change). Every other record reads the same in 2, 3 and 4.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use std::sync::Arc;

use crate::domain::{
    Adjudication, Analyst, Anchor, Annotation, AnnotationName, ArticleEvent, ArticleId, Change, Event,
    Judgement, ReviewEvent, ReviewEventKind, SignOff, Span, Verdict,
};
use crate::error::{Error, Result};

/// The format before article revisions.
const V1: u8 = 1;
/// The format before review events.
const V2: u8 = 2;
/// The format whose changelog entries copied the annotations.
const V3: u8 = 3;
/// The version byte every value written today starts with.
const V4: u8 = 4;

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![V4];
    // Serializing plain structs into a Vec cannot fail.
    out.extend(postcard::to_stdvec(record).expect("postcard encodes plain structs"));
    out
}

/// A stored record type, and how it reads in the older format.
pub trait Record: DeserializeOwned {
    /// The record from format-1 bytes (after the version byte). Types that
    /// did not change read them as they are.
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }

    /// The record from format-2 bytes.
    fn from_v2(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }

    /// The record from format-3 bytes.
    fn from_v3(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }
}

fn postcard_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::internal(format!("corrupt stored record: {e}")))
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&V4, rest)) => postcard_decode(rest),
        Some((&V3, rest)) => T::from_v3(rest),
        Some((&V2, rest)) => T::from_v2(rest),
        Some((&V1, rest)) => T::from_v1(rest),
        Some((v, _)) => Err(Error::internal(format!("unknown record format version {v}"))),
        None => Err(Error::internal("empty stored record")),
    }
}

/// An article as format 1 stored it (`a article_id`): one text, no
/// revisions. Read once at open and rewritten as its revision 1.
#[derive(Serialize, Deserialize)]
pub struct ArticleRecord {
    pub text: String,
}

impl Record for ArticleRecord {}

/// One article revision (`v article_id 0x00 revision`). Never rewritten:
/// annotations and their history quote it.
#[derive(Serialize, Deserialize)]
pub struct ArticleRevisionRecord {
    pub title: String,
    pub text: String,
    pub source_url: String,
    /// Who made the revision.
    pub author: String,
    /// When revision 1 was made (copied forward, so any revision tells).
    pub create_time_us: i64,
    /// When this revision was made.
    pub time_us: i64,
    /// The store revision that made it; 0 for seeds loaded into an empty
    /// store.
    pub store_revision: u64,
}

impl Record for ArticleRevisionRecord {}

impl ArticleRevisionRecord {
    pub fn from_article(a: &crate::domain::Article, store_revision: u64) -> Self {
        Self {
            title: a.title.clone(),
            text: a.text.clone(),
            source_url: a.source_url.clone(),
            author: a.author.clone(),
            create_time_us: a.create_time_us,
            time_us: a.revision_time_us,
            store_revision,
        }
    }

    pub fn into_article(self, id: ArticleId, revision: u32) -> crate::domain::Article {
        crate::domain::Article::revision(
            id,
            self.title,
            self.text,
            self.source_url,
            revision,
            self.author,
            self.create_time_us,
            self.time_us,
        )
    }
}

/// An annotation as stored in the position index.
#[derive(Serialize, Deserialize, Clone)]
pub struct AnnotationRecord {
    pub article: String,
    pub id: [u8; 16],
    pub start: u32,
    pub end: u32,
    /// 1 verified, 2 disputed, 3 unattributed (the proto numbers).
    pub verdict: u8,
    pub note: String,
    pub sources: Vec<String>,
    pub analyst: String,
    pub create_time_us: i64,
    pub update_time_us: i64,
    pub revision: u64,
    /// The article revision the span points into.
    pub article_revision: u32,
    /// [`Anchor::code`].
    pub anchor: u8,
}

/// [`AnnotationRecord`] in format 1.
#[derive(Serialize, Deserialize, Clone)]
struct AnnotationRecordV1 {
    article: String,
    id: [u8; 16],
    start: u32,
    end: u32,
    verdict: u8,
    note: String,
    sources: Vec<String>,
    analyst: String,
    create_time_us: i64,
    update_time_us: i64,
    revision: u64,
}

impl From<AnnotationRecordV1> for AnnotationRecord {
    fn from(r: AnnotationRecordV1) -> Self {
        Self {
            article: r.article,
            id: r.id,
            start: r.start,
            end: r.end,
            verdict: r.verdict,
            note: r.note,
            sources: r.sources,
            analyst: r.analyst,
            create_time_us: r.create_time_us,
            update_time_us: r.update_time_us,
            revision: r.revision,
            article_revision: 1,
            anchor: Anchor::Anchored.code(),
        }
    }
}

impl From<AnnotationRecord> for AnnotationRecordV1 {
    fn from(r: AnnotationRecord) -> Self {
        Self {
            article: r.article,
            id: r.id,
            start: r.start,
            end: r.end,
            verdict: r.verdict,
            note: r.note,
            sources: r.sources,
            analyst: r.analyst,
            create_time_us: r.create_time_us,
            update_time_us: r.update_time_us,
            revision: r.revision,
        }
    }
}

impl Record for AnnotationRecord {
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        Ok(postcard_decode::<AnnotationRecordV1>(bytes)?.into())
    }
}

/// The outcome of a request made with a `request_id`.
#[derive(Serialize, Deserialize)]
pub struct RequestRecord {
    /// SHA-256 of the request, so a reused id with another request is caught.
    pub fingerprint: [u8; 32],
    /// The annotations the request returned, in order.
    pub results: Vec<AnnotationRecord>,
    /// The revision the request committed as.
    pub revision: u64,
}

#[derive(Deserialize)]
struct RequestRecordV1 {
    fingerprint: [u8; 32],
    results: Vec<AnnotationRecordV1>,
    revision: u64,
}

impl Record for RequestRecord {
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        let r: RequestRecordV1 = postcard_decode(bytes)?;
        Ok(Self {
            fingerprint: r.fingerprint,
            results: r.results.into_iter().map(Into::into).collect(),
            revision: r.revision,
        })
    }
}

/// One state in an annotation's audit history. Records of one annotation
/// form a chain: each carries the previous record's hash, and its own hash
/// covers everything else in it, so an edit anywhere breaks the chain.
#[derive(Serialize, Deserialize, Clone)]
pub struct HistoryRecord {
    pub revision: u64,
    pub time_us: i64,
    /// Who made the change.
    pub actor: String,
    pub kind: HistoryKind,
    /// The fields an update changed, in `span, verdict, note, sources` order.
    pub changed: Vec<String>,
    /// The annotation after the change; for a deletion, as it was deleted.
    pub state: AnnotationRecord,
    /// The previous record's hash; zeros for the first.
    pub prev_hash: [u8; 32],
    /// [`HistoryRecord::content_hash`], as written.
    pub hash: [u8; 32],
    /// The format it was read in: its hash covers that format's bytes. Not
    /// stored (the version byte says it).
    #[serde(skip)]
    pub format: u8,
}

/// [`HistoryRecord`] in format 1.
#[derive(Serialize, Deserialize)]
struct HistoryRecordV1 {
    revision: u64,
    time_us: i64,
    actor: String,
    kind: HistoryKind,
    changed: Vec<String>,
    state: AnnotationRecordV1,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

impl Record for HistoryRecord {
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        let r: HistoryRecordV1 = postcard_decode(bytes)?;
        Ok(Self {
            revision: r.revision,
            time_us: r.time_us,
            actor: r.actor,
            kind: r.kind,
            changed: r.changed,
            state: r.state.into(),
            prev_hash: r.prev_hash,
            hash: r.hash,
            format: V1,
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryKind {
    Created,
    Updated,
    Deleted,
}

impl HistoryRecord {
    /// SHA-256 over a domain tag and the record with `hash` zeroed, in the
    /// format it was written in.
    pub fn content_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut bare = self.clone();
        bare.hash = [0; 32];
        let mut h = Sha256::new();
        if self.format == V1 {
            let v1 = HistoryRecordV1 {
                revision: bare.revision,
                time_us: bare.time_us,
                actor: bare.actor,
                kind: bare.kind,
                changed: bare.changed,
                state: bare.state.into(),
                prev_hash: bare.prev_hash,
                hash: bare.hash,
            };
            h.update(b"factcheck.history.v1\0");
            h.update(postcard::to_stdvec(&v1).expect("postcard encodes plain structs"));
        } else {
            h.update(b"factcheck.history.v2\0");
            h.update(postcard::to_stdvec(&bare).expect("postcard encodes plain structs"));
        }
        h.finalize().into()
    }
}

/// Per-article facts kept up to date at write time.
#[derive(Serialize, Deserialize, Default)]
pub struct StatsRecord {
    /// When an annotation of the article last changed.
    pub last_update_time_us: i64,
    /// The store revision of the last change to the article, its
    /// annotations or its review (the review's etag): kept, because a
    /// deletion leaves nothing else that remembers it.
    pub last_revision: u64,
}

#[derive(Deserialize)]
struct StatsRecordV2 {
    last_update_time_us: i64,
}

impl Record for StatsRecord {
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        Self::from_v2(bytes)
    }

    /// Format 2 did not keep the last revision: 0, and the store takes the
    /// newest revision it finds among the article's records instead.
    fn from_v2(bytes: &[u8]) -> Result<Self> {
        let r: StatsRecordV2 = postcard_decode(bytes)?;
        Ok(Self {
            last_update_time_us: r.last_update_time_us,
            last_revision: 0,
        })
    }
}

/// One entry of a review's history (`j article_id 0x00 revision seq`),
/// chained per article by hash like [`HistoryRecord`]s.
#[derive(Serialize, Deserialize, Clone)]
pub struct ReviewRecord {
    pub article: String,
    pub revision: u64,
    pub time_us: i64,
    pub actor: String,
    pub kind: ReviewRecordKind,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl Record for ReviewRecord {}

#[derive(Serialize, Deserialize, Clone)]
pub enum ReviewRecordKind {
    Adjudicated(AdjudicationRecord),
    SignedOff(SignOffRecord),
    Withdrawn { sign_off: SignOffRecord, reason: String },
}

#[derive(Serialize, Deserialize, Clone)]
pub struct AdjudicationRecord {
    pub id: [u8; 16],
    pub article_revision: u32,
    pub start: u32,
    pub end: u32,
    pub verdict: u8,
    pub rationale: String,
    pub reviewer: String,
    pub accepted: Vec<[u8; 16]>,
    pub overruled: Vec<[u8; 16]>,
    pub accepted_count: u32,
    pub overruled_count: u32,
    pub fingerprint: [u8; 32],
    pub create_time_us: i64,
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct SignOffRecord {
    pub reviewer: String,
    pub time_us: i64,
    pub revision: u64,
    pub article_revision: u32,
}

impl ReviewRecord {
    /// SHA-256 over a domain tag and the record with `hash` zeroed.
    pub fn content_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut bare = self.clone();
        bare.hash = [0; 32];
        let mut h = Sha256::new();
        h.update(b"factcheck.review.v1\0");
        h.update(postcard::to_stdvec(&bare).expect("postcard encodes plain structs"));
        h.finalize().into()
    }

    pub fn from_event(e: &ReviewEvent) -> Self {
        let kind = match &e.kind {
            ReviewEventKind::Adjudicated(a) => ReviewRecordKind::Adjudicated(AdjudicationRecord {
                id: *a.id.as_bytes(),
                article_revision: a.article_revision,
                start: a.span.start(),
                end: a.span.end(),
                verdict: verdict_code(a.verdict),
                rationale: a.rationale.clone(),
                reviewer: a.reviewer.as_str().to_owned(),
                accepted: a.accepted.iter().map(|u| *u.as_bytes()).collect(),
                overruled: a.overruled.iter().map(|u| *u.as_bytes()).collect(),
                accepted_count: a.accepted_count,
                overruled_count: a.overruled_count,
                fingerprint: a.fingerprint,
                create_time_us: a.create_time_us,
                revision: a.revision,
            }),
            ReviewEventKind::SignedOff(s) => ReviewRecordKind::SignedOff(SignOffRecord::from(&**s)),
            ReviewEventKind::Withdrawn { sign_off, reason } => ReviewRecordKind::Withdrawn {
                sign_off: SignOffRecord::from(&**sign_off),
                reason: reason.clone(),
            },
        };
        Self {
            article: e.article.as_str().to_owned(),
            revision: e.revision,
            time_us: e.time_us,
            actor: e.actor.clone(),
            kind,
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    pub fn to_event(&self) -> Result<ReviewEvent> {
        let corrupt = |what: &str| Error::internal(format!("corrupt review record: {what}"));
        let article = ArticleId::parse(&self.article).map_err(|_| corrupt("article"))?;
        let sign_off = |s: &SignOffRecord| -> Result<Arc<SignOff>> {
            Ok(Arc::new(SignOff {
                article: article.clone(),
                reviewer: Analyst::parse(&s.reviewer).map_err(|_| corrupt("reviewer"))?,
                time_us: s.time_us,
                revision: s.revision,
                article_revision: s.article_revision,
            }))
        };
        let kind = match &self.kind {
            ReviewRecordKind::Adjudicated(a) => ReviewEventKind::Adjudicated(Arc::new(Adjudication {
                article: article.clone(),
                id: Uuid::from_bytes(a.id),
                article_revision: a.article_revision,
                span: Span::new(a.start, a.end).ok_or_else(|| corrupt("span"))?,
                verdict: verdict_from_code(a.verdict).ok_or_else(|| corrupt("verdict"))?,
                rationale: a.rationale.clone(),
                reviewer: Analyst::parse(&a.reviewer).map_err(|_| corrupt("reviewer"))?,
                accepted: a.accepted.iter().map(|u| Uuid::from_bytes(*u)).collect(),
                overruled: a.overruled.iter().map(|u| Uuid::from_bytes(*u)).collect(),
                accepted_count: a.accepted_count,
                overruled_count: a.overruled_count,
                fingerprint: a.fingerprint,
                create_time_us: a.create_time_us,
                revision: a.revision,
            })),
            ReviewRecordKind::SignedOff(s) => ReviewEventKind::SignedOff(sign_off(s)?),
            ReviewRecordKind::Withdrawn { sign_off: s, reason } => ReviewEventKind::Withdrawn {
                sign_off: sign_off(s)?,
                reason: reason.clone(),
            },
        };
        Ok(ReviewEvent {
            article,
            revision: self.revision,
            time_us: self.time_us,
            actor: self.actor.clone(),
            kind,
        })
    }
}

impl From<&SignOff> for SignOffRecord {
    fn from(s: &SignOff) -> Self {
        Self {
            reviewer: s.reviewer.as_str().to_owned(),
            time_us: s.time_us,
            revision: s.revision,
            article_revision: s.article_revision,
        }
    }
}

fn verdict_from_code(code: u8) -> Option<Verdict> {
    match code {
        1 => Some(Verdict::Verified),
        2 => Some(Verdict::Disputed),
        3 => Some(Verdict::Unattributed),
        _ => None,
    }
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Verified => 1,
        Verdict::Disputed => 2,
        Verdict::Unattributed => 3,
    }
}

impl From<&Annotation> for AnnotationRecord {
    fn from(a: &Annotation) -> Self {
        Self {
            article: a.name.article.as_str().to_owned(),
            id: *a.name.id.as_bytes(),
            start: a.judgement.span.start(),
            end: a.judgement.span.end(),
            verdict: verdict_code(a.judgement.verdict),
            note: a.judgement.note.clone(),
            sources: a.judgement.sources.clone(),
            analyst: a.analyst.as_str().to_owned(),
            create_time_us: a.create_time_us,
            update_time_us: a.update_time_us,
            revision: a.revision,
            article_revision: a.article_revision,
            anchor: a.anchor.code(),
        }
    }
}

impl TryFrom<AnnotationRecord> for Annotation {
    type Error = Error;

    fn try_from(r: AnnotationRecord) -> Result<Self> {
        let corrupt = |what: &str| Error::internal(format!("corrupt annotation record: {what}"));
        let verdict = verdict_from_code(r.verdict).ok_or_else(|| corrupt("verdict"))?;
        Ok(Annotation {
            name: AnnotationName {
                article: ArticleId::parse(&r.article).map_err(|_| corrupt("article"))?,
                id: Uuid::from_bytes(r.id),
            },
            judgement: Judgement {
                span: Span::new(r.start, r.end).ok_or_else(|| corrupt("span"))?,
                verdict,
                note: r.note,
                sources: r.sources,
            },
            analyst: Analyst::parse(&r.analyst).map_err(|_| corrupt("analyst"))?,
            create_time_us: r.create_time_us,
            update_time_us: r.update_time_us,
            revision: r.revision,
            article_revision: r.article_revision,
            anchor: Anchor::from_code(r.anchor).ok_or_else(|| corrupt("anchor"))?,
        })
    }
}

pub fn decode_annotation(bytes: &[u8]) -> Result<Annotation> {
    decode::<AnnotationRecord>(bytes)?.try_into()
}

/// One changelog entry: everything a revision changed, by reference to the
/// records that hold it (format 4), or copied (formats 1 to 3).
#[derive(Serialize, Deserialize)]
pub struct ChangeRecord {
    pub revision: u64,
    pub commit_time_us: i64,
    pub events: Vec<EventRecord>,
    /// Articles created or corrected: their revision records hold the rest.
    pub articles: Vec<ArticleEventRecord>,
    /// The review history records the revision wrote.
    pub reviews: Vec<ReviewEntry>,
}

/// One annotation change of a changelog entry.
// Old entries are read once each, as they are replayed: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum EventRecord {
    /// Formats 1 to 3: the states themselves.
    Inline {
        before: Option<AnnotationRecord>,
        after: Option<AnnotationRecord>,
    },
    /// Format 4: the change's history record, `h id revision [seq]`; the
    /// state before an update is the record before it.
    History { id: [u8; 16], seq: u32 },
}

/// One review event of a changelog entry.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum ReviewEntry {
    /// Format 3: the record itself.
    Inline(ReviewRecord),
    /// Format 4: the review history record `j article 0x00 revision seq`.
    History { article: String, seq: u32 },
}

/// [`ChangeRecord`] in format 3.
#[derive(Deserialize)]
struct ChangeRecordV3 {
    revision: u64,
    commit_time_us: i64,
    events: Vec<EventRecordV3>,
    articles: Vec<ArticleEventRecord>,
    reviews: Vec<ReviewRecord>,
}

/// [`ChangeRecord`] in format 2.
#[derive(Deserialize)]
struct ChangeRecordV2 {
    revision: u64,
    commit_time_us: i64,
    events: Vec<EventRecordV3>,
    articles: Vec<ArticleEventRecord>,
}

#[derive(Deserialize)]
struct EventRecordV3 {
    before: Option<AnnotationRecord>,
    after: Option<AnnotationRecord>,
}

impl From<EventRecordV3> for EventRecord {
    fn from(e: EventRecordV3) -> Self {
        EventRecord::Inline {
            before: e.before,
            after: e.after,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct ArticleEventRecord {
    pub article: String,
    pub revision: u32,
    pub created: bool,
}

#[derive(Deserialize)]
struct ChangeRecordV1 {
    revision: u64,
    commit_time_us: i64,
    events: Vec<EventRecordV1>,
}

#[derive(Deserialize)]
struct EventRecordV1 {
    before: Option<AnnotationRecordV1>,
    after: Option<AnnotationRecordV1>,
}

impl Record for ChangeRecord {
    fn from_v1(bytes: &[u8]) -> Result<Self> {
        let r: ChangeRecordV1 = postcard_decode(bytes)?;
        Ok(Self {
            revision: r.revision,
            commit_time_us: r.commit_time_us,
            events: r
                .events
                .into_iter()
                .map(|e| EventRecord::Inline {
                    before: e.before.map(Into::into),
                    after: e.after.map(Into::into),
                })
                .collect(),
            articles: Vec::new(),
            reviews: Vec::new(),
        })
    }

    fn from_v2(bytes: &[u8]) -> Result<Self> {
        let r: ChangeRecordV2 = postcard_decode(bytes)?;
        Ok(Self {
            revision: r.revision,
            commit_time_us: r.commit_time_us,
            events: r.events.into_iter().map(Into::into).collect(),
            articles: r.articles,
            reviews: Vec::new(),
        })
    }

    fn from_v3(bytes: &[u8]) -> Result<Self> {
        let r: ChangeRecordV3 = postcard_decode(bytes)?;
        Ok(Self {
            revision: r.revision,
            commit_time_us: r.commit_time_us,
            events: r.events.into_iter().map(Into::into).collect(),
            articles: r.articles,
            reviews: r.reviews.into_iter().map(ReviewEntry::Inline).collect(),
        })
    }
}

/// Reads what a changelog entry points at.
pub trait ChangeSource {
    fn article(&self, id: &ArticleId, revision: u32) -> Result<Arc<crate::domain::Article>>;
    /// The history record `h id revision [seq]`, and the one before it.
    fn history(&self, id: Uuid, revision: u64, seq: u32) -> Result<(HistoryRecord, Option<HistoryRecord>)>;
    /// The review history record `j article 0x00 revision seq`.
    fn review(&self, article: &ArticleId, revision: u64, seq: u32) -> Result<ReviewRecord>;
}

fn parse_article(s: &str) -> Result<ArticleId> {
    ArticleId::parse(s).map_err(|_| Error::internal("corrupt article name in a changelog entry"))
}

/// A changelog entry, with what it points at read from `source`.
pub fn decode_change(bytes: &[u8], source: &impl ChangeSource) -> Result<Change> {
    let r: ChangeRecord = decode(bytes)?;
    let events = r
        .events
        .into_iter()
        .map(|e| match e {
            EventRecord::Inline { before, after } => Ok(Event {
                before: before.map(Annotation::try_from).transpose()?,
                after: after.map(Annotation::try_from).transpose()?,
            }),
            EventRecord::History { id, seq } => {
                let (record, previous) = source.history(Uuid::from_bytes(id), r.revision, seq)?;
                let state = Some(Annotation::try_from(record.state)?);
                Ok(match record.kind {
                    HistoryKind::Created => Event {
                        before: None,
                        after: state,
                    },
                    HistoryKind::Deleted => Event {
                        before: state,
                        after: None,
                    },
                    HistoryKind::Updated => Event {
                        before: Some(
                            previous
                                .ok_or_else(|| {
                                    Error::internal("an update's history record has none before it")
                                })?
                                .state
                                .try_into()?,
                        ),
                        after: state,
                    },
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let articles = r
        .articles
        .into_iter()
        .map(|e| {
            Ok(ArticleEvent {
                article: source.article(&parse_article(&e.article)?, e.revision)?,
                created: e.created,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let reviews = r
        .reviews
        .into_iter()
        .map(|e| match e {
            ReviewEntry::Inline(record) => record.to_event(),
            ReviewEntry::History { article, seq } => source
                .review(&parse_article(&article)?, r.revision, seq)?
                .to_event(),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Change {
        revision: r.revision,
        commit_time_us: r.commit_time_us,
        events,
        articles,
        reviews,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-3 changelog entry, which copied the annotations, still
    /// reads: as inline events.
    #[test]
    fn format_3_changelog_entries_read_inline() {
        #[derive(Serialize)]
        struct V3Event {
            before: Option<AnnotationRecord>,
            after: Option<AnnotationRecord>,
        }
        #[derive(Serialize)]
        struct V3Change {
            revision: u64,
            commit_time_us: i64,
            events: Vec<V3Event>,
            articles: Vec<ArticleEventRecord>,
            reviews: Vec<ReviewRecord>,
        }
        let state = AnnotationRecord::from(AnnotationRecordV1 {
            article: "a".into(),
            id: [7; 16],
            start: 0,
            end: 3,
            verdict: 1,
            note: "조태열 👑".into(),
            sources: vec![],
            analyst: "ana".into(),
            create_time_us: 1,
            update_time_us: 1,
            revision: 5,
        });
        let mut bytes = vec![V3];
        bytes.extend(
            postcard::to_stdvec(&V3Change {
                revision: 5,
                commit_time_us: 9,
                events: vec![V3Event {
                    before: None,
                    after: Some(state),
                }],
                articles: vec![],
                reviews: vec![],
            })
            .unwrap(),
        );
        let read: ChangeRecord = decode(&bytes).unwrap();
        assert_eq!((read.revision, read.commit_time_us), (5, 9));
        match &read.events[..] {
            [
                EventRecord::Inline {
                    before: None,
                    after: Some(a),
                },
            ] => assert_eq!(a.note, "조태열 👑"),
            _ => panic!("not one inline creation"),
        }
    }

    /// A history record written by format 1 still reads, and its hash still
    /// verifies: the audit chain survives the upgrade.
    #[test]
    fn format_1_history_reads_and_verifies() {
        let state = AnnotationRecordV1 {
            article: "a".into(),
            id: [7; 16],
            start: 0,
            end: 3,
            verdict: 1,
            note: "n".into(),
            sources: vec![],
            analyst: "ana".into(),
            create_time_us: 1,
            update_time_us: 1,
            revision: 1,
        };
        let mut v1 = HistoryRecordV1 {
            revision: 1,
            time_us: 1,
            actor: "ana".into(),
            kind: HistoryKind::Created,
            changed: vec![],
            state,
            prev_hash: [0; 32],
            hash: [0; 32],
        };
        // The hash as format 1 computed it.
        let mut h = sha2::Sha256::default();
        sha2::Digest::update(&mut h, b"factcheck.history.v1\0");
        sha2::Digest::update(&mut h, postcard::to_stdvec(&v1).unwrap());
        v1.hash = sha2::Digest::finalize(h).into();
        let mut bytes = vec![V1];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let read: HistoryRecord = decode(&bytes).unwrap();
        assert_eq!(read.content_hash(), v1.hash);
        assert_eq!(read.state.article_revision, 1);
        // And a format-2 record's hash covers its new fields.
        let mut v2 = read.clone();
        v2.format = V2;
        v2.hash = v2.content_hash();
        let again: HistoryRecord = decode(&encode(&v2)).unwrap();
        assert_eq!(again.content_hash(), v2.hash);
        let mut tampered = again.clone();
        tampered.state.article_revision = 2;
        assert_ne!(tampered.content_hash(), v2.hash);
    }
}

//! Stored values: a format version byte, then the record in postcard.
//!
//! A new format gets a new version byte and a decoder beside the old one, so
//! a data directory written by an older server stays readable.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::domain::{
    Analyst, Annotation, AnnotationName, ArticleId, Change, Event, Judgement, Span, Verdict,
};
use crate::error::{Error, Result};

/// The version byte every value written today starts with.
const V1: u8 = 1;

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![V1];
    // Serializing plain structs into a Vec cannot fail.
    out.extend(postcard::to_stdvec(record).expect("postcard encodes plain structs"));
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| Error::internal(format!("corrupt stored record: {e}")))
        }
        Some((v, _)) => Err(Error::internal(format!("unknown record format version {v}"))),
        None => Err(Error::internal("empty stored record")),
    }
}

/// An article as stored: its text is the authority once annotated.
#[derive(Serialize, Deserialize)]
pub struct ArticleRecord {
    pub text: String,
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
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryKind {
    Created,
    Updated,
    Deleted,
}

impl HistoryRecord {
    /// SHA-256 over a domain tag and the record with `hash` zeroed.
    pub fn content_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut bare = self.clone();
        bare.hash = [0; 32];
        let bytes = postcard::to_stdvec(&bare).expect("postcard encodes plain structs");
        let mut h = Sha256::new();
        h.update(b"factcheck.history.v1\0");
        h.update(bytes);
        h.finalize().into()
    }
}

/// Per-article facts kept up to date at write time.
#[derive(Serialize, Deserialize, Default)]
pub struct StatsRecord {
    /// When an annotation of the article last changed.
    pub last_update_time_us: i64,
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
        }
    }
}

impl TryFrom<AnnotationRecord> for Annotation {
    type Error = Error;

    fn try_from(r: AnnotationRecord) -> Result<Self> {
        let corrupt = |what: &str| Error::internal(format!("corrupt annotation record: {what}"));
        let verdict = match r.verdict {
            1 => Verdict::Verified,
            2 => Verdict::Disputed,
            3 => Verdict::Unattributed,
            _ => return Err(corrupt("verdict")),
        };
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
        })
    }
}

pub fn decode_annotation(bytes: &[u8]) -> Result<Annotation> {
    decode::<AnnotationRecord>(bytes)?.try_into()
}

/// One changelog entry: everything a revision changed.
#[derive(Serialize, Deserialize)]
pub struct ChangeRecord {
    pub revision: u64,
    pub commit_time_us: i64,
    pub events: Vec<EventRecord>,
}

#[derive(Serialize, Deserialize)]
pub struct EventRecord {
    pub before: Option<AnnotationRecord>,
    pub after: Option<AnnotationRecord>,
}

impl From<&Change> for ChangeRecord {
    fn from(c: &Change) -> Self {
        Self {
            revision: c.revision,
            commit_time_us: c.commit_time_us,
            events: c
                .events
                .iter()
                .map(|e| EventRecord {
                    before: e.before.as_ref().map(AnnotationRecord::from),
                    after: e.after.as_ref().map(AnnotationRecord::from),
                })
                .collect(),
        }
    }
}

pub fn decode_change(bytes: &[u8]) -> Result<Change> {
    let r: ChangeRecord = decode(bytes)?;
    let events = r
        .events
        .into_iter()
        .map(|e| {
            Ok(Event {
                before: e.before.map(Annotation::try_from).transpose()?,
                after: e.after.map(Annotation::try_from).transpose()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Change {
        revision: r.revision,
        commit_time_us: r.commit_time_us,
        events,
    })
}

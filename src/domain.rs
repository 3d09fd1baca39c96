//! Domain types: each one can only hold a valid value.
//!
//! Nothing here knows about protobuf or sled; `convert` builds these from
//! requests and `store` from stored records.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Most code points a note may hold.
pub const MAX_NOTE_CHARS: usize = 10_000;
/// Most sources one annotation may cite.
pub const MAX_SOURCES: usize = 50;
/// Most code points one source may hold.
pub const MAX_SOURCE_CHARS: usize = 2_048;
/// Most code points an analyst name may hold.
pub const MAX_ANALYST_CHARS: usize = 64;
/// Most bytes of an article id.
pub const MAX_ARTICLE_ID_BYTES: usize = 128;

/// The stem of a seed file: 1 to 128 ASCII letters, digits, `_`, `-` or `.`,
/// not starting with `.` and never `-` (which names all articles in lists).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArticleId(String);

impl ArticleId {
    /// Checks `s` against the id rules; the error says which rule failed.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is empty");
        }
        if s.len() > MAX_ARTICLE_ID_BYTES {
            return Err("is longer than 128 bytes");
        }
        if s == "-" || s.starts_with('.') {
            return Err("is not a valid article id");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err("may hold only ASCII letters, digits, '_', '-' and '.'");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `articles/{id}`.
    pub fn name(&self) -> String {
        format!("articles/{}", self.0)
    }
}

impl fmt::Display for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An annotation's full identity: the article it belongs to and its UUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AnnotationName {
    /// The article; part of the name so a name never points across articles.
    pub article: ArticleId,
    /// A UUID v7, so ids sort roughly by creation time.
    pub id: Uuid,
}

impl fmt::Display for AnnotationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "articles/{}/annotations/{}", self.article, self.id)
    }
}

/// A non-empty half-open range `[start, end)` of code points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// A span with `start < end`; `None` otherwise.
    pub fn new(start: u32, end: u32) -> Option<Self> {
        (start < end).then_some(Self { start, end })
    }

    pub fn start(self) -> u32 {
        self.start
    }

    pub fn end(self) -> u32 {
        self.end
    }

    /// Whether the two spans share at least one code point.
    pub fn intersects(self, other: Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// What an analyst concluded about a claim; "unspecified" is not a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Verified,
    Disputed,
    Unattributed,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Verified, Verdict::Disputed, Verdict::Unattributed];

    /// A dense index, for per-verdict counters.
    pub fn index(self) -> usize {
        match self {
            Verdict::Verified => 0,
            Verdict::Disputed => 1,
            Verdict::Unattributed => 2,
        }
    }
}

/// An analyst's name, taken from the tokens file (never from a request).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Analyst(String);

impl Analyst {
    /// 1 to 64 code points, no control characters, no surrounding spaces.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is empty");
        }
        if s.chars().count() > MAX_ANALYST_CHARS {
            return Err("is longer than 64 characters");
        }
        if s.chars().any(char::is_control) || s.trim() != s {
            return Err("has control characters or surrounding spaces");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Analyst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token may do; each role may do everything the one before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read, list and watch.
    Reader,
    /// Also create annotations, and update or delete their own.
    Analyst,
    /// Also update or delete anyone's annotations: adjudication.
    Reviewer,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Analyst, Role::Reviewer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Analyst => "analyst",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of an RPC, as established by its bearer token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub analyst: Analyst,
    pub role: Role,
}

impl Caller {
    /// Whether the caller's role is at least `role`; `action` says what
    /// was refused, e.g. `create annotations`.
    pub fn require(&self, role: Role, action: &str) -> Result<(), crate::error::Error> {
        if self.role >= role {
            return Ok(());
        }
        Err(crate::error::Error::PermissionDenied {
            reason: "ROLE_REQUIRED",
            message: format!(
                "{} has role {} and may not {action}: that needs role {role} or above",
                self.analyst, self.role
            ),
        })
    }

    /// The owner a mutation of someone's annotation must match: the caller
    /// unless their role may adjudicate (reviewer and above).
    pub fn owner_restriction(&self) -> Option<Analyst> {
        (self.role < Role::Reviewer).then(|| self.analyst.clone())
    }
}

/// An article: immutable once loaded, shared by every reader.
#[derive(Debug)]
pub struct Article {
    pub id: ArticleId,
    pub title: String,
    pub text: String,
    /// Lowercase hex SHA-256 of `text`.
    pub sha256: String,
    /// Byte offset of every code point, plus `text.len()` at the end, so a
    /// span becomes a byte range in O(1).
    offsets: Vec<u32>,
}

impl Article {
    pub fn new(id: ArticleId, text: String) -> Arc<Self> {
        let title = text.lines().next().unwrap_or_default().trim().to_owned();
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        let mut offsets: Vec<u32> = text.char_indices().map(|(i, _)| i as u32).collect();
        offsets.push(text.len() as u32);
        Arc::new(Self {
            id,
            title,
            text,
            sha256,
            offsets,
        })
    }

    /// Length of the text in code points.
    pub fn len(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of `span`, or `None` if it reaches past the end.
    pub fn quote(&self, span: Span) -> Option<&str> {
        let start = *self.offsets.get(span.start() as usize)? as usize;
        let end = *self.offsets.get(span.end() as usize)? as usize;
        Some(&self.text[start..end])
    }
}

/// What a verdict-bearing annotation says, as the analyst wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub span: Span,
    pub verdict: Verdict,
    /// At most [`MAX_NOTE_CHARS`] code points.
    pub note: String,
    /// At most [`MAX_SOURCES`], each non-empty and at most [`MAX_SOURCE_CHARS`].
    pub sources: Vec<String>,
}

/// A stored annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    pub name: AnnotationName,
    pub judgement: Judgement,
    pub analyst: Analyst,
    /// Microseconds since the Unix epoch.
    pub create_time_us: i64,
    /// Microseconds since the Unix epoch.
    pub update_time_us: i64,
    /// The store revision of the last change: the etag.
    pub revision: u64,
}

impl Annotation {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }
}

/// The fields of an annotation an update may change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    pub span: Option<Span>,
    pub verdict: Option<Verdict>,
    pub note: Option<String>,
    pub sources: Option<Vec<String>>,
}

impl Patch {
    pub fn apply(&self, j: &mut Judgement) {
        if let Some(span) = self.span {
            j.span = span;
        }
        if let Some(verdict) = self.verdict {
            j.verdict = verdict;
        }
        if let Some(note) = &self.note {
            j.note.clone_from(note);
        }
        if let Some(sources) = &self.sources {
            j.sources.clone_from(sources);
        }
    }
}

/// Filters of a list of annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AnnotationFilter {
    /// One article, or every article when `None`.
    pub article: Option<ArticleId>,
    pub verdict: Option<Verdict>,
    pub analyst: Option<String>,
    pub overlaps: Option<Span>,
}

impl AnnotationFilter {
    pub fn matches(&self, a: &Annotation) -> bool {
        self.verdict.is_none_or(|v| v == a.judgement.verdict)
            && self.analyst.as_deref().is_none_or(|n| n == a.analyst.as_str())
            && self.overlaps.is_none_or(|s| s.intersects(a.judgement.span))
    }
}

/// Most annotation names a [`ContestedSpan`] lists; `count` says how many
/// there are, and `ListAnnotations` with `overlaps` pages through them all.
pub const MAX_CONTESTED_NAMES: usize = 100;

/// A region where annotations with different verdicts overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContestedSpan {
    pub span: Span,
    /// Distinct verdicts in the region, in [`Verdict`] order.
    pub verdicts: Vec<Verdict>,
    /// The first [`MAX_CONTESTED_NAMES`] annotations intersecting the
    /// region, by start then id.
    pub annotations: Vec<AnnotationName>,
    /// How many annotations intersect the region.
    pub count: u32,
}

/// One annotation as a review sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub span: Span,
    pub verdict: Verdict,
    pub id: Uuid,
}

/// Where the review of one article stands, at some revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub article: Arc<Article>,
    /// Indexed by [`Verdict::index`].
    pub counts: [u32; 3],
    pub covered: u32,
    pub contested: Vec<ContestedSpan>,
    pub analysts: u32,
    pub last_update_time_us: Option<i64>,
}

impl PartialEq for Article {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.text == other.text
    }
}

impl Review {
    /// Computes the review from the article's marks, sorted by start then
    /// id, and the number of distinct analysts. O(n log n) in the marks, plus
    /// the intersecting marks of each contested region.
    pub fn compute(
        article: Arc<Article>,
        marks: &[Mark],
        analysts: u32,
        last_update_time_us: Option<i64>,
    ) -> Self {
        let mut counts = [0u32; 3];
        for m in marks {
            counts[m.verdict.index()] += 1;
        }

        // Sweep over span boundaries: +1 at a start, -1 at an end, per verdict.
        let mut edges: Vec<(u32, i32, usize)> = Vec::with_capacity(marks.len() * 2);
        for m in marks {
            let v = m.verdict.index();
            edges.push((m.span.start(), 1, v));
            edges.push((m.span.end(), -1, v));
        }
        edges.sort_unstable();
        let mut active = [0i32; 3];
        let mut covered = 0u32;
        let mut regions: Vec<(u32, u32)> = Vec::new();
        let mut prev = 0u32;
        let mut i = 0;
        while i < edges.len() {
            let pos = edges[i].0;
            if pos > prev {
                let live = active.iter().filter(|&&n| n > 0).count();
                if live > 0 {
                    covered += pos - prev;
                }
                if live > 1 {
                    match regions.last_mut() {
                        Some(r) if r.1 == prev => r.1 = pos,
                        _ => regions.push((prev, pos)),
                    }
                }
            }
            while i < edges.len() && edges[i].0 == pos {
                active[edges[i].2] += edges[i].1;
                i += 1;
            }
            prev = pos;
        }

        // Regions are disjoint and ascending, marks sorted by start: a mark
        // ending before one region cannot reach a later one, so one pass with
        // the marks still open suffices.
        let mut open: Vec<&Mark> = Vec::new();
        let mut next = 0;
        let contested = regions
            .into_iter()
            .filter_map(|(s, e)| Span::new(s, e))
            .map(|span| {
                while next < marks.len() && marks[next].span.start() < span.end() {
                    open.push(&marks[next]);
                    next += 1;
                }
                open.retain(|m| m.span.end() > span.start());
                let mut verdicts: Vec<Verdict> = open.iter().map(|m| m.verdict).collect();
                verdicts.sort_unstable();
                verdicts.dedup();
                ContestedSpan {
                    span,
                    verdicts,
                    annotations: open
                        .iter()
                        .take(MAX_CONTESTED_NAMES)
                        .map(|m| AnnotationName {
                            article: article.id.clone(),
                            id: m.id,
                        })
                        .collect(),
                    count: open.len() as u32,
                }
            })
            .collect();

        Self {
            article,
            counts,
            covered,
            contested,
            analysts,
            last_update_time_us,
        }
    }
}

/// One state in an annotation's audit history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// After the change; for a deletion, as it was deleted.
    pub annotation: Annotation,
    pub revision: u64,
    pub actor: String,
    /// Microseconds since the Unix epoch.
    pub time_us: i64,
    pub kind: EventKind,
    /// For an update, the fields that changed.
    pub changed: Vec<String>,
    pub hash: [u8; 32],
    pub prev_hash: [u8; 32],
}

/// One annotation's change within a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `None` for a creation.
    pub before: Option<Annotation>,
    /// `None` for a deletion.
    pub after: Option<Annotation>,
}

/// What kind of change an [`Event`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match (&self.before, &self.after) {
            (None, _) => EventKind::Created,
            (Some(_), Some(_)) => EventKind::Updated,
            (Some(_), None) => EventKind::Deleted,
        }
    }

    /// The annotation as it is after the event, or as it last was.
    pub fn annotation(&self) -> &Annotation {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .expect("an event has a before or an after state")
    }
}

/// Everything one committed revision changed: one mutation, or one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    /// Microseconds since the Unix epoch.
    pub commit_time_us: i64,
    pub events: Vec<Event>,
}

/// Which changes a watcher wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// One article, or every article when `None`.
    pub article: Option<ArticleId>,
    pub verdict: Option<Verdict>,
    pub analyst: Option<String>,
}

impl WatchFilter {
    fn matches_state(&self, a: &Annotation) -> bool {
        self.article.as_ref().is_none_or(|id| *id == a.name.article)
            && self.verdict.is_none_or(|v| v == a.judgement.verdict)
            && self.analyst.as_deref().is_none_or(|n| n == a.analyst.as_str())
    }

    /// An event matches if the annotation matched before or after it, so a
    /// watcher also sees an annotation leave its selection.
    pub fn matches(&self, e: &Event) -> bool {
        e.before.as_ref().is_some_and(|a| self.matches_state(a))
            || e.after.as_ref().is_some_and(|a| self.matches_state(a))
    }
}

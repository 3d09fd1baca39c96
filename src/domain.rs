//! Domain types: each one can only hold a valid value.
//!
//! Nothing here knows about protobuf or sled; `convert` builds these from
//! requests and `store` from stored records.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::review::{
    Adjudication, ContestedSpan, DEFAULT_MIN_ANALYSTS, MAX_CONTESTED_NAMES, Mark, Review, ReviewContext,
    ReviewEvent, ReviewEventKind, ReviewState, SignOff,
};

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

/// The URL scheme a source starts with, lowercased, if it has one: a letter,
/// then letters, digits, `+`, `-` or `.`, then `:` and no white space
/// (RFC 3986), read as a browser reads a link (leading spaces and controls
/// skipped, tabs and line breaks inside dropped). `Reuters: 3 May` and
/// `Interview, 2024` have none: plain citations.
pub fn source_scheme(source: &str) -> Option<String> {
    let mut chars = source
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'));
    let first = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let mut scheme = String::from(first.to_ascii_lowercase());
    for c in chars.by_ref() {
        match c {
            ':' => break,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {
                scheme.push(c.to_ascii_lowercase())
            }
            _ => return None,
        }
    }
    match chars.next() {
        Some(c) if !c.is_whitespace() => Some(scheme),
        _ => None,
    }
}

/// Checks the scheme of the source at `field` (`annotation.sources[2]`): a
/// source with a URL scheme is an `http` or `https` link, so no page or
/// export ever holds a `javascript:` or `data:` one; a plain citation (no
/// scheme) is text.
pub fn check_source_scheme(field: &str, source: &str) -> Result<(), crate::error::Error> {
    match source_scheme(source) {
        None => Ok(()),
        Some(s) if s == "http" || s == "https" => Ok(()),
        Some(s) => Err(crate::error::Error::invalid(
            "SOURCE_SCHEME_NOT_ALLOWED",
            field,
            format!("has the URL scheme {s:?}: a source is an http(s) URL or a citation without a scheme"),
        )),
    }
}

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

impl AnnotationName {
    /// `articles/{article}/annotations/{uuid}`, built without the
    /// formatting machinery: a review lists up to 100 names per contested
    /// span, and `format!` was most of its response's cost (a profile of
    /// `GetArticleReview`, `docs/BENCHMARKS.md`).
    pub fn render(&self) -> String {
        let article = self.article.as_str();
        let mut out = String::with_capacity(22 + article.len() + 36);
        out.push_str("articles/");
        out.push_str(article);
        out.push_str("/annotations/");
        out.push_str(self.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        out
    }
}

impl fmt::Display for AnnotationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
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
    /// Also create annotations, and update or delete their own (nobody
    /// else changes them).
    Analyst,
    /// Also adjudicate contested spans they did not annotate, sign off
    /// reviews of articles they did not annotate, and correct articles.
    Reviewer,
    /// Everything: also tokens, backups, and deleting anyone's annotation
    /// for moderation, with a reason.
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

    /// The owner an update of an annotation must match: always the caller.
    /// An annotation's verdict, span, note and sources are its analyst's
    /// judgement: a reviewer settles a disagreement by adjudication, which
    /// leaves what the analysts said (and so their agreement) as it was.
    pub fn owner_restriction(&self) -> Option<Analyst> {
        Some(self.analyst.clone())
    }

    /// The owner a deletion must match: the caller, unless an admin, who may
    /// delete anyone's annotation for moderation (with a recorded reason).
    pub fn delete_restriction(&self) -> Option<Analyst> {
        (self.role < Role::Admin).then(|| self.analyst.clone())
    }
}

/// One revision of an article: immutable once made, shared by every reader.
/// A correction makes a new revision; old ones stay readable
/// (`articles/{id}@{revision}`), so every annotation and history record
/// quotes the text it judged.
#[derive(Debug, Clone)]
pub struct Article {
    pub id: ArticleId,
    pub title: String,
    pub text: String,
    /// Where the article is published; empty if unknown.
    pub source_url: String,
    /// Lowercase hex SHA-256 of `text`.
    pub sha256: String,
    /// The article revision, from 1: the first text is revision 1, and each
    /// change makes the next.
    pub revision: u32,
    /// Who made this revision: an analyst, or `seeds` for a seed file.
    pub author: String,
    /// When revision 1 was made, microseconds since the Unix epoch.
    pub create_time_us: i64,
    /// When this revision was made.
    pub revision_time_us: i64,
    /// Byte offset of every code point, plus `text.len()` at the end, so a
    /// span becomes a byte range in O(1).
    offsets: Vec<u32>,
    /// UTF-16 offset of every code point, plus the end; empty when the text
    /// has no astral code point (every offset is then its code point).
    utf16: Vec<u32>,
}

/// How a client counts offsets into a text (LSP's `positionEncoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OffsetEncoding {
    /// Unicode code points: what is stored.
    #[default]
    CodePoints,
    /// UTF-16 code units: JavaScript, Java, C#.
    Utf16,
    /// UTF-8 bytes.
    Utf8,
}

impl OffsetEncoding {
    /// What the unit is called in messages.
    pub fn unit(self) -> &'static str {
        match self {
            OffsetEncoding::CodePoints => "code points",
            OffsetEncoding::Utf16 => "UTF-16 code units",
            OffsetEncoding::Utf8 => "UTF-8 bytes",
        }
    }
}

/// Why an offset does not name a position in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetError {
    /// Past the end of the text (its length in the encoding is given).
    PastEnd(u32),
    /// Inside a code point: between the two halves of a UTF-16 surrogate
    /// pair, or among a UTF-8 sequence's bytes. The code point boundaries
    /// around it are given.
    InsideCodePoint(u32, u32),
}

/// Who is recorded as making the articles loaded from seed files.
pub const SEEDS_AUTHOR: &str = "seeds";

impl Article {
    /// Revision 1 of an article from a seed file: the title is the first
    /// line.
    pub fn new(id: ArticleId, text: String) -> Arc<Self> {
        Arc::new(Self::revision(
            id,
            String::new(),
            text,
            String::new(),
            1,
            SEEDS_AUTHOR.into(),
            0,
            0,
        ))
    }

    /// An article revision. An empty `title` becomes the text's first line.
    #[allow(clippy::too_many_arguments)]
    pub fn revision(
        id: ArticleId,
        title: String,
        text: String,
        source_url: String,
        revision: u32,
        author: String,
        create_time_us: i64,
        revision_time_us: i64,
    ) -> Self {
        let title = if title.is_empty() {
            text.lines().next().unwrap_or_default().trim().to_owned()
        } else {
            title
        };
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        let mut offsets: Vec<u32> = text.char_indices().map(|(i, _)| i as u32).collect();
        offsets.push(text.len() as u32);
        let mut utf16 = Vec::new();
        if text.chars().any(|c| c.len_utf16() == 2) {
            utf16.reserve(offsets.len());
            let mut at = 0u32;
            for c in text.chars() {
                utf16.push(at);
                at += c.len_utf16() as u32;
            }
            utf16.push(at);
        }
        Self {
            id,
            utf16,
            title,
            text,
            source_url,
            sha256,
            revision,
            author,
            create_time_us,
            revision_time_us,
            offsets,
        }
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

    /// The byte offset of code point `i` (`len()` maps to the text's end).
    pub fn byte_offset(&self, i: u32) -> Option<usize> {
        self.offsets.get(i as usize).map(|&b| b as usize)
    }

    /// The code point at byte offset `b`, if `b` is a code point boundary.
    pub fn code_point_at_byte(&self, b: usize) -> Option<u32> {
        self.offsets.binary_search(&(b as u32)).ok().map(|i| i as u32)
    }

    /// The text's length in `enc`.
    pub fn len_in(&self, enc: OffsetEncoding) -> u32 {
        self.encode_offset(self.len(), enc)
    }

    /// Code point offset `cp` (at most `len()`) counted in `enc`.
    pub fn encode_offset(&self, cp: u32, enc: OffsetEncoding) -> u32 {
        let cp = cp.min(self.len()) as usize;
        match enc {
            OffsetEncoding::CodePoints => cp as u32,
            OffsetEncoding::Utf8 => self.offsets[cp],
            OffsetEncoding::Utf16 if self.utf16.is_empty() => cp as u32,
            OffsetEncoding::Utf16 => self.utf16[cp],
        }
    }

    /// The code point offset of `offset`, counted in `enc`.
    pub fn decode_offset(&self, offset: u32, enc: OffsetEncoding) -> Result<u32, OffsetError> {
        let table = match enc {
            OffsetEncoding::CodePoints => None,
            OffsetEncoding::Utf8 => Some(&self.offsets),
            OffsetEncoding::Utf16 if self.utf16.is_empty() => None,
            OffsetEncoding::Utf16 => Some(&self.utf16),
        };
        let Some(table) = table else {
            return if offset > self.len() {
                Err(OffsetError::PastEnd(self.len()))
            } else {
                Ok(offset)
            };
        };
        let last = *table.last().expect("the end is always there");
        if offset > last {
            return Err(OffsetError::PastEnd(last));
        }
        match table.binary_search(&offset) {
            Ok(cp) => Ok(cp as u32),
            Err(next) => Err(OffsetError::InsideCodePoint(table[next - 1], table[next])),
        }
    }

    /// Whether code point offset `cp` is an extended grapheme cluster
    /// boundary; if not, the boundaries before and after it.
    pub fn grapheme_boundary(&self, cp: u32) -> Result<(), (u32, u32)> {
        use unicode_segmentation::GraphemeCursor;
        let Some(byte) = self.byte_offset(cp) else {
            return Ok(());
        };
        let text = self.text.as_str();
        let mut cursor = GraphemeCursor::new(byte, text.len(), true);
        if cursor.is_boundary(text, 0).unwrap_or(true) {
            return Ok(());
        }
        let prev = cursor.prev_boundary(text, 0).ok().flatten().unwrap_or(0);
        let mut cursor = GraphemeCursor::new(byte, text.len(), true);
        let next = cursor.next_boundary(text, 0).ok().flatten().unwrap_or(text.len());
        let cp_of = |b: usize| self.code_point_at_byte(b).unwrap_or(cp);
        Err((cp_of(prev), cp_of(next)))
    }

    /// `"{revision}"`: an update applies only to the revision it read.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }

    /// `articles/{id}@{revision}`.
    pub fn revision_name(&self) -> String {
        format!("articles/{}@{}", self.id, self.revision)
    }
}

/// How an annotation's span relates to its article after the last change of
/// the article's text (see [`crate::anchor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// Its text and position are unchanged (or it was made on this text).
    #[default]
    Anchored,
    /// The same quote, at new offsets: text before it changed.
    Moved,
    /// The quoted text itself was edited; the span covers the edited text.
    /// Needs re-review; any edit of the annotation confirms it.
    Changed,
    /// The quoted text is gone: the span still points into the article
    /// revision it was made on, and it counts toward no coverage. Setting a
    /// new span anchors it again.
    Orphaned,
}

impl Anchor {
    /// Whether an analyst should look at it again.
    pub fn needs_review(self) -> bool {
        matches!(self, Anchor::Changed | Anchor::Orphaned)
    }

    /// The stored code.
    pub fn code(self) -> u8 {
        match self {
            Anchor::Anchored => 1,
            Anchor::Moved => 2,
            Anchor::Changed => 3,
            Anchor::Orphaned => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Anchor::Anchored,
            2 => Anchor::Moved,
            3 => Anchor::Changed,
            4 => Anchor::Orphaned,
            _ => return None,
        })
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
    /// The article revision `judgement.span` points into: the current one
    /// unless the annotation is orphaned.
    pub article_revision: u32,
    /// How the last correction of the article moved it.
    pub anchor: Anchor,
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
            && self
                .overlaps
                .is_none_or(|s| a.anchor != Anchor::Orphaned && s.intersects(a.judgement.span))
    }
}

impl PartialEq for Article {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.revision == other.revision && self.text == other.text
    }
}

impl Eq for Article {}

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
    /// Articles created or corrected; their annotations' re-anchoring is in
    /// `events`.
    pub articles: Vec<ArticleEvent>,
    /// Adjudications, sign-offs and withdrawals.
    pub reviews: Vec<ReviewEvent>,
}

/// An article created or changed within a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArticleEvent {
    /// The article's new revision.
    pub article: Arc<Article>,
    /// Whether this created the article.
    pub created: bool,
}

/// Which changes a watcher wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// One article, or every article when `None`.
    pub article: Option<ArticleId>,
    pub verdict: Option<Verdict>,
    pub analyst: Option<String>,
    /// How the spans of the events are counted.
    pub encoding: OffsetEncoding,
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

    /// Article events reach every watcher of the article, whatever its
    /// verdict and analyst filters: a correction moves their annotations.
    pub fn matches_article(&self, e: &ArticleEvent) -> bool {
        self.article.as_ref().is_none_or(|id| *id == e.article.id)
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn only_http_and_https_links_are_sources_with_a_scheme() {
        for (source, scheme) in [
            ("https://example.org/a", Some("https")),
            ("HTTP://example.org", Some("http")),
            ("javascript:alert(1)", Some("javascript")),
            (" \u{1}JavaScript:alert(1)", Some("javascript")),
            ("java\tscript:alert(1)", Some("javascript")),
            ("data:text/html,<b>", Some("data")),
            ("Reuters: interview, 3 May 2024", None),
            ("Ministry of Foreign Affairs press release", None),
            ("AP, 2024-05-03", None),
            ("", None),
        ] {
            assert_eq!(source_scheme(source).as_deref(), scheme, "{source:?}");
        }
        assert!(check_source_scheme("s", "https://example.org").is_ok());
        assert!(check_source_scheme("s", "Reuters: interview").is_ok());
        let e = check_source_scheme("annotation.sources[1]", "javascript:alert(1)").unwrap_err();
        assert_eq!(e.reason(), "SOURCE_SCHEME_NOT_ALLOWED");
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_rendered_name_is_the_formatted_one() {
        let name = AnnotationName {
            article: ArticleId::parse("002_946fad7c8fee627f").unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            name.render(),
            format!("articles/{}/annotations/{}", name.article.as_str(), name.id)
        );
        assert_eq!(name.to_string(), name.render());
    }
}

//! Re-anchoring: where an annotation's span goes when its article's text is
//! corrected.
//!
//! A [`Reanchor`] is built once per correction, from the old and the new
//! revision (on the caller's thread: the diff is the expensive part), and
//! then places each span in O(log n):
//!
//! 1. **Diff.** The two texts are diffed as tokens (a run of letters and
//!    digits is one token, any other code point is one), so an edit aligns
//!    with words rather than with stray letters. A span whose every code
//!    point lies in one unchanged stretch keeps its text: `Anchored` if its
//!    offsets are the same, else `Moved`.
//! 2. **Quote search.** Otherwise the span's exact quote is looked for in
//!    the new text, scored by how much of its 32 code points of context on
//!    each side still surround it (the W3C `TextQuoteSelector` strategy
//!    Hypothesis uses). A match with enough context, or the only occurrence
//!    of a quote that occurred once before too, is `Moved` (a paragraph moved
//!    up is deleted and inserted elsewhere as far as a diff can tell).
//! 3. **Mapped edit.** Otherwise the span's ends are mapped through the diff:
//!    if at least half of its text survived, or it was replaced in place by
//!    one edit, the span covers the edited text: `Changed`.
//! 4. Else the quoted text is gone: `Orphaned`, keeping its old span.
//!
//! All offsets are code points.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffTag};

use crate::domain::{Anchor, Article, Span};

/// Code points of context on each side of a quote (as the W3C export's
/// `prefix` and `suffix`).
pub const CONTEXT: usize = 32;

/// Context code points a non-unique quote needs to match to be placed.
const MIN_CONTEXT_SCORE: usize = 8;

/// Most occurrences of a quote scored: an adversarial text of one repeated
/// letter must not make a search quadratic.
const MAX_CANDIDATES: usize = 1000;

/// How long the diff may search for the smallest edit before settling for a
/// coarser one (spans then fall to the quote search more often).
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// One stretch of the diff, in code points.
#[derive(Clone, Debug)]
struct Segment {
    tag: DiffTag,
    old: Range<u32>,
    new: Range<u32>,
}

/// Where a span goes in the new text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub anchor: Anchor,
    /// In the new text; for `Orphaned`, the old span, unchanged.
    pub span: Span,
}

/// A correction's diff, ready to place spans. Placements are remembered,
/// so the caller can place every span it knows of before submitting the
/// correction, and the committer only looks them up.
pub struct Reanchor {
    old: Arc<Article>,
    new: Arc<Article>,
    /// Every stretch of the old text but insertions, by old start.
    segments: Vec<Segment>,
    placed: Mutex<HashMap<Span, Placement>>,
    /// Bytes the quote search may still scan: rewriting a long article
    /// under thousands of annotations must not make the search quadratic;
    /// past it, spans go straight to the mapped edit.
    search_budget: AtomicUsize,
}

impl std::fmt::Debug for Reanchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reanchor({} {} → {})",
            self.old.id, self.old.revision, self.new.revision
        )
    }
}

/// Bytes of text all quote searches of one correction may scan.
const SEARCH_BUDGET: usize = 512 << 20;

impl Reanchor {
    pub fn new(old: Arc<Article>, new: Arc<Article>) -> Self {
        let (old_tokens, old_starts) = tokens(&old.text);
        let (new_tokens, new_starts) = tokens(&new.text);
        let ops = similar::capture_diff_slices_deadline(
            Algorithm::Myers,
            &old_tokens,
            &new_tokens,
            Some(Instant::now() + DIFF_DEADLINE),
        );
        let segments = ops
            .iter()
            .map(|op| op.as_tag_tuple())
            .filter(|(_, o, _)| !o.is_empty())
            .map(|(tag, o, n)| Segment {
                tag,
                old: old_starts[o.start]..old_starts[o.end],
                new: new_starts[n.start]..new_starts[n.end],
            })
            .collect();
        Self {
            old,
            new,
            segments,
            placed: Mutex::new(HashMap::new()),
            search_budget: AtomicUsize::new(SEARCH_BUDGET),
        }
    }

    /// The revision spans are placed from.
    pub fn old(&self) -> &Arc<Article> {
        &self.old
    }

    /// The revision spans are placed into.
    pub fn new_revision(&self) -> &Arc<Article> {
        &self.new
    }

    /// Where `span` of the old text goes.
    pub fn place(&self, span: Span) -> Placement {
        if let Some(p) = self.placed.lock().unwrap_or_else(|e| e.into_inner()).get(&span) {
            return *p;
        }
        let p = self.compute(span);
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(span, p);
        p
    }

    fn compute(&self, span: Span) -> Placement {
        let (s, e) = (span.start(), span.end());
        let orphaned = Placement {
            anchor: Anchor::Orphaned,
            span,
        };
        let Some(quote) = self.old.quote(span) else {
            return orphaned;
        };
        // 1. Inside one unchanged stretch: the same text.
        if let Some(seg) = self.segment(s)
            && seg.tag == DiffTag::Equal
            && e <= seg.old.end
        {
            let start = seg.new.start + (s - seg.old.start);
            let span = Span::new(start, start + (e - s)).expect("non-empty");
            let anchor = if start == s {
                Anchor::Anchored
            } else {
                Anchor::Moved
            };
            return Placement { anchor, span };
        }
        // 2. The same quote elsewhere, with its context.
        let hint = self.map_start(s);
        if let Some(start) = self.search(quote, span, hint) {
            let span = Span::new(start, start + (e - s)).expect("non-empty");
            let anchor = if start == s {
                Anchor::Anchored
            } else {
                Anchor::Moved
            };
            return Placement { anchor, span };
        }
        // 3. The edited text, if half of it survived or one edit replaced it.
        let (start, end) = (self.map_start(s), self.map_end(e));
        let retained: u32 = self
            .segments
            .iter()
            .filter(|g| g.tag == DiffTag::Equal)
            .map(|g| g.old.end.min(e).saturating_sub(g.old.start.max(s)))
            .sum();
        let in_place = self
            .segment(s)
            .is_some_and(|g| g.tag == DiffTag::Replace && e <= g.old.end);
        // Less than half of it left is not an edit of it: what matched was
        // common words elsewhere (a deleted sentence's "an attack" aligned
        // with the paragraph before's).
        match Span::new(start, end) {
            Some(span) if retained * 2 >= e - s || in_place => Placement {
                anchor: Anchor::Changed,
                span,
            },
            _ => orphaned,
        }
    }

    /// The stretch holding old code point `i`.
    fn segment(&self, i: u32) -> Option<&Segment> {
        let k = self.segments.partition_point(|g| g.old.end <= i);
        self.segments.get(k).filter(|g| g.old.start <= i)
    }

    /// Where a span starting at old code point `b` starts in the new text.
    fn map_start(&self, b: u32) -> u32 {
        match self.segment(b) {
            Some(g) if g.tag == DiffTag::Equal => g.new.start + (b - g.old.start),
            Some(g) => g.new.start,
            None => self.new.len(),
        }
    }

    /// Where a span ending at old boundary `b` ends in the new text.
    fn map_end(&self, b: u32) -> u32 {
        if b == 0 {
            return 0;
        }
        match self.segment(b - 1) {
            Some(g) if g.tag == DiffTag::Equal => g.new.start + (b - g.old.start),
            Some(g) if g.tag == DiffTag::Delete => g.new.start,
            Some(g) => g.new.end,
            None => self.new.len(),
        }
    }

    /// Where the old span's quote is in the new text, judged by context.
    fn search(&self, quote: &str, span: Span, hint: u32) -> Option<u32> {
        let cost = self.new.text.len() + self.old.text.len();
        let budget = self
            .search_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(cost));
        if budget.is_err() {
            return None;
        }
        let (prefix, suffix) = context(&self.old, span);
        let hint = self.new.byte_offset(hint).unwrap_or(self.new.text.len());
        let best = best_match(&self.new.text, quote, prefix, suffix, hint)?;
        let unique = best.count == 1 && occurrences(&self.old.text, quote, 2) == 1;
        if best.score < MIN_CONTEXT_SCORE && !unique {
            return None;
        }
        self.new.code_point_at_byte(best.start)
    }
}

/// The up to [`CONTEXT`] code points before and after `span`.
pub fn context(article: &Article, span: Span) -> (&str, &str) {
    let at = |i: u32| article.byte_offset(i).unwrap_or(article.text.len());
    let before = at(span.start().saturating_sub(CONTEXT as u32));
    let after = at((span.end() + CONTEXT as u32).min(article.len()));
    (
        &article.text[before..at(span.start())],
        &article.text[at(span.end())..after],
    )
}

/// The best occurrence of a quote in a text, by context.
#[derive(Clone, Copy, Debug)]
pub struct Match {
    /// Where it starts, a byte offset.
    pub start: usize,
    /// Code points of the prefix and suffix that match around it.
    pub score: usize,
    /// How many occurrences were scored.
    pub count: usize,
    /// Whether another occurrence scored as well: only the hint chose.
    pub tied: bool,
}

/// The occurrence of `quote` in `text` whose surroundings best match
/// `prefix` (the text just before it) and `suffix` (just after); ties go to
/// the one nearest the byte offset `hint`. Linear in the text, and scores at
/// most [`MAX_CANDIDATES`] occurrences.
pub fn best_match(text: &str, quote: &str, prefix: &str, suffix: &str, hint: usize) -> Option<Match> {
    if quote.is_empty() {
        return None;
    }
    let mut best: Option<(usize, usize, usize)> = None;
    let mut tied = false;
    let mut count = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(quote) {
        let start = from + found;
        count += 1;
        let end = start + quote.len();
        let score = prefix
            .chars()
            .rev()
            .zip(text[..start].chars().rev())
            .take_while(|(a, b)| a == b)
            .count()
            + suffix
                .chars()
                .zip(text[end..].chars())
                .take_while(|(a, b)| a == b)
                .count();
        let distance = start.abs_diff(hint);
        match best {
            Some((s, _, _)) if score == s => tied = true,
            Some((s, _, _)) if score > s => tied = false,
            _ => {}
        }
        if best.is_none_or(|(s, _, d)| score > s || (score == s && distance < d)) {
            best = Some((score, start, distance));
        }
        if count == MAX_CANDIDATES {
            break;
        }
        // Occurrences may overlap: go on from the next code point.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    best.map(|(score, start, _)| Match {
        start,
        score,
        count,
        tied,
    })
}

/// How many times `quote` occurs in `text`, counting at most `limit`.
fn occurrences(text: &str, quote: &str, limit: usize) -> usize {
    let mut n = 0;
    let mut from = 0;
    while n < limit
        && let Some(found) = text[from..].find(quote)
    {
        n += 1;
        let start = from + found;
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    n
}

/// The text's tokens and the code point where each starts (plus the end).
fn tokens(text: &str) -> (Vec<&str>, Vec<u32>) {
    let mut tokens = Vec::new();
    let mut starts = Vec::new();
    let mut word: Option<(usize, u32)> = None;
    let mut cp = 0u32;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if word.is_none() {
                word = Some((i, cp));
            }
        } else {
            if let Some((b, w)) = word.take() {
                tokens.push(&text[b..i]);
                starts.push(w);
            }
            tokens.push(&text[i..i + c.len_utf8()]);
            starts.push(cp);
        }
        cp += 1;
    }
    if let Some((b, w)) = word {
        tokens.push(&text[b..]);
        starts.push(w);
    }
    starts.push(cp);
    (tokens, starts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ArticleId;

    const SEED_002: &str = include_str!("../seeds/002_946fad7c8fee627f.txt");

    impl Reanchor {
        fn between(old: &str, new: &str) -> Self {
            let id = ArticleId::parse("t").unwrap();
            Reanchor::new(Article::new(id.clone(), old.into()), Article::new(id, new.into()))
        }
    }

    fn span_of(text: &str, quote: &str) -> Span {
        let b = text.find(quote).expect("quote in text");
        let s = text[..b].chars().count() as u32;
        Span::new(s, s + quote.chars().count() as u32).unwrap()
    }

    fn quote(text: &str, span: Span) -> String {
        text.chars()
            .skip(span.start() as usize)
            .take((span.end() - span.start()) as usize)
            .collect()
    }

    #[test]
    fn unchanged_text_anchors_everything() {
        let t = "Minister 조태열 said “the talks – all of them – went well” 🎉.";
        let r = Reanchor::between(t, t);
        let span = span_of(t, "조태열 said");
        assert_eq!(
            r.place(span),
            Placement {
                anchor: Anchor::Anchored,
                span
            }
        );
    }

    #[test]
    fn text_inserted_before_moves_the_span() {
        let old = "The ministry said exports rose 5% in May.";
        let new = "Correction appended. 🎉 The ministry said exports rose 5% in May.";
        let r = Reanchor::between(old, new);
        let p = r.place(span_of(old, "exports rose"));
        assert_eq!(p.anchor, Anchor::Moved);
        assert_eq!(quote(new, p.span), "exports rose");
    }

    #[test]
    fn a_corrected_number_changes_the_span() {
        let old = "The ministry said exports rose 5% in May, officials said.";
        let new = "The ministry said exports rose 6% in May, officials said.";
        let r = Reanchor::between(old, new);
        let p = r.place(span_of(old, "exports rose 5% in May"));
        assert_eq!(p.anchor, Anchor::Changed);
        assert_eq!(quote(new, p.span), "exports rose 6% in May");
        // Only the number: replaced in place.
        let p = r.place(span_of(old, "5"));
        assert_eq!(p.anchor, Anchor::Changed);
        assert_eq!(quote(new, p.span), "6");
    }

    #[test]
    fn a_deleted_sentence_orphans_the_span() {
        let old = "First sentence. “We will never agree,” he said. Last sentence.";
        let new = "First sentence. Last sentence.";
        let r = Reanchor::between(old, new);
        let span = span_of(old, "“We will never agree,” he said.");
        assert_eq!(
            r.place(span),
            Placement {
                anchor: Anchor::Orphaned,
                span
            }
        );
        assert_eq!(r.place(span_of(old, "Last sentence")).anchor, Anchor::Moved);
    }

    /// A deleted sentence sharing words with the one before it: what the
    /// diff matches of it is the neighbour's words, not an edit of it.
    #[test]
    fn a_deleted_sentence_is_not_its_neighbours_words() {
        // 002 corrected as tests/articles.rs corrects it: repeated
        // paragraphs reordered, the seventh deleted, a note on top, a figure
        // fixed.
        let mut p: Vec<&str> = SEED_002.split_inclusive('\n').collect();
        let old = p.concat();
        p.swap(21, 24);
        p.remove(6);
        p.insert(0, "Editor’s note: this article has been updated.\n");
        let new = p.concat().replace("13,000", "13,500");
        let r = Reanchor::between(&old, &new);
        let span = span_of(
            &old,
            "military assistance “without delay” in the case of an attack",
        );
        assert_eq!(r.place(span).anchor, Anchor::Orphaned);
    }

    #[test]
    fn swapped_paragraphs_keep_their_quotes() {
        let a = "Alpha paragraph says the budget grew by ten percent.\n";
        let b = "Beta paragraph quotes the minister on trade with Seoul.\n";
        let c = "Gamma paragraph closes.\n";
        let old = format!("{a}{b}{c}");
        let new = format!("{b}{a}{c}");
        let r = Reanchor::between(&old, &new);
        for q in ["budget grew", "minister on trade", "Gamma"] {
            let p = r.place(span_of(&old, q));
            assert_ne!(p.anchor, Anchor::Orphaned, "{q}");
            assert_ne!(p.anchor, Anchor::Changed, "{q}");
            assert_eq!(quote(&new, p.span), q);
        }
    }

    #[test]
    fn a_moved_quote_is_found_by_its_context() {
        // The quoted sentence moves from the end to the start, and its old
        // place gets another sentence: the diff cannot keep it, the search
        // finds it by the words around it.
        let old = "Officials met on Monday. The talks ended without a deal, said Kim. Markets fell.";
        let new = "The talks ended without a deal, said Kim. Officials met on Monday. Markets fell sharply.";
        let r = Reanchor::between(old, new);
        let p = r.place(span_of(old, "The talks ended without a deal"));
        assert_eq!(p.anchor, Anchor::Moved);
        assert_eq!(quote(new, p.span), "The talks ended without a deal");
    }

    #[test]
    fn repeated_text_keeps_its_quote() {
        let old = "One: the same words here. Two: the same words here. End.";
        let new = "Two: the same words here. One: the same words here. End.";
        let r = Reanchor::between(old, new);
        let b = old.rfind("the same words").unwrap();
        let s = old[..b].chars().count() as u32;
        let p = r.place(Span::new(s, s + 14).unwrap());
        assert_eq!(quote(new, p.span), "the same words");
    }

    #[test]
    fn best_match_is_bounded_on_hostile_text() {
        let text = "a".repeat(100_000);
        let m = best_match(&text, "aa", "", "", 50_000).unwrap();
        assert_eq!(m.count, MAX_CANDIDATES);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const SEED: &str = SEED_002;

        /// One edit of the text outside the span: insert at a code point,
        /// or delete a range, both entirely before or after it.
        #[derive(Clone, Debug)]
        enum Edit {
            Insert(usize, String),
            Delete(usize, usize),
        }

        fn edits() -> impl Strategy<Value = Vec<Edit>> {
            let insert =
                (any::<usize>(), "[a-z ,.’“”–조태열🎉\n]{1,40}").prop_map(|(at, t)| Edit::Insert(at, t));
            let delete = (any::<usize>(), 1usize..200).prop_map(|(at, n)| Edit::Delete(at, n));
            prop::collection::vec(prop_oneof![insert, delete], 1..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// For random edits that do not touch a span's text, the span
            /// still quotes exactly the same text.
            #[test]
            fn edits_outside_a_span_keep_its_quote(
                prefix in "[ 조태열🎉’a-z]{0,20}",
                start in 0usize..6000,
                len in 1usize..120,
                edits in edits(),
            ) {
                let mut text: Vec<char> = prefix.chars().chain(SEED.chars()).collect();
                let start = start % (text.len() - len);
                let (mut s, mut e) = (start, start + len);
                let quote: String = text[s..e].iter().collect();
                let old: String = text.iter().collect();
                for edit in edits {
                    match edit {
                        Edit::Insert(at, t) => {
                            let at = at % (text.len() + 1);
                            // Outside: at or before the start, or at or after the end.
                            let at = if at > s && at < e { e } else { at };
                            let n = t.chars().count();
                            text.splice(at..at, t.chars());
                            if at <= s {
                                s += n;
                                e += n;
                            }
                        }
                        Edit::Delete(at, n) => {
                            let at = at % (text.len() + 1);
                            let (from, to) = if at < s {
                                (at, (at + n).min(s))
                            } else {
                                let from = at.max(e).min(text.len());
                                (from, (from + n).min(text.len()))
                            };
                            text.drain(from..to);
                            if to <= s {
                                s -= to - from;
                                e -= to - from;
                            }
                        }
                    }
                }
                let new: String = text.iter().collect();
                prop_assert_eq!(text[s..e].iter().collect::<String>(), quote.clone());
                let r = Reanchor::between(&old, &new);
                let p = r.place(Span::new(start as u32, (start + len) as u32).unwrap());
                prop_assert!(matches!(p.anchor, Anchor::Anchored | Anchor::Moved), "{:?}", p);
                prop_assert_eq!(super::quote(&new, p.span), quote);
            }
        }
    }
}

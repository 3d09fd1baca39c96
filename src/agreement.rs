//! Agreement between analysts: Krippendorff's alpha, nominal.
//!
//! Defined so that any client can recompute it from the annotations:
//!
//! - the **coders** are the analysts with a live, anchored (not orphaned)
//!   annotation on the article;
//! - the **units** are the code points covered by at least one of those
//!   annotations;
//! - a coder's **value** at a unit is the verdict of their annotations
//!   covering it, `none` where none of theirs covers it, and *missing* where
//!   their own covering annotations disagree;
//! - alpha is absent when it is undefined: fewer than two coders, or no
//!   pairable values, or no variation at all.
//!
//! Alpha is computed from the coincidence matrix as in Krippendorff,
//! "Computing Krippendorff's Alpha-Reliability" (2011):
//! `alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k`.
//! Units with identical values are counted together (a run of code points
//! covered by the same annotations is one weighted unit), so the work follows
//! the annotations, not the text's length.

use std::collections::BTreeMap;

use crate::domain::Mark;

/// Pairwise agreement is given for at most this many analysts (190 pairs):
/// it costs the square of their number, and a desk rarely has more on one
/// article. Above it, only the overall alpha.
pub const MAX_PAIRWISE_ANALYSTS: u32 = 20;

/// Values a coder may give a unit: the three verdicts and `none`.
const NONE: usize = 3;
const CATEGORIES: usize = 4;

/// Accumulates a coincidence matrix over weighted units, for any number
/// of categories.
#[derive(Clone, Debug)]
pub struct Coincidences {
    categories: usize,
    /// `o[c * categories + k]`, summed over units.
    o: Vec<f64>,
}

impl Coincidences {
    pub fn new(categories: usize) -> Self {
        Self {
            categories,
            o: vec![0.0; categories * categories],
        }
    }

    /// Adds `weight` units whose pairable values are counted per category in
    /// `counts` (missing values left out): each unit adds its `c`-`k` pairs
    /// over `m - 1`, `m` its pairable values; a unit with fewer than two adds
    /// nothing.
    pub fn add(&mut self, counts: &[u32], weight: u64) {
        let m: u32 = counts.iter().sum();
        if m < 2 {
            return;
        }
        let w = weight as f64 / f64::from(m - 1);
        for (c, &nc) in counts.iter().enumerate() {
            for (k, &nk) in counts.iter().enumerate() {
                let pairs = f64::from(nc) * f64::from(if c == k { nk.saturating_sub(1) } else { nk });
                self.o[c * self.categories + k] += w * pairs;
            }
        }
    }

    /// Nominal alpha; `None` when undefined (nothing pairable, or no
    /// variation).
    pub fn alpha(&self) -> Option<f64> {
        let k = self.categories;
        let n_c: Vec<f64> = self.o.chunks(k).map(|row| row.iter().sum()).collect();
        let n: f64 = n_c.iter().sum();
        if n <= 1.0 {
            return None;
        }
        let mut observed = 0.0;
        let mut expected = 0.0;
        for c in 0..k {
            for d in 0..k {
                if c != d {
                    observed += self.o[c * k + d];
                    expected += n_c[c] * n_c[d];
                }
            }
        }
        if expected == 0.0 {
            return None;
        }
        Some(1.0 - (n - 1.0) * observed / expected)
    }
}

/// Alpha among all coders and between each pair, for one article.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    pub alpha: Option<f64>,
    /// Per pair of coders (by index into the analysts the marks name, the
    /// lower first): their alpha, two coders at a time over the same units.
    pub pairwise: Vec<(u32, u32, Option<f64>)>,
}

/// A coder's value over a run: a verdict, `none`, or missing.
fn value(verdicts: u8) -> Option<usize> {
    match verdicts.count_ones() {
        0 => Some(NONE),
        1 => Some(verdicts.trailing_zeros() as usize),
        _ => None,
    }
}

/// The agreement of the analysts of `marks` (orphans already left out),
/// `coders` of them, numbered `0..coders` by `Mark::analyst`.
pub fn of_marks(marks: &[Mark], coders: u32) -> Agreement {
    if coders < 2 {
        return Agreement::default();
    }
    // Sweep the boundaries: between two, each coder's covering verdicts
    // (a bit per verdict, counted per annotation) are constant.
    let mut edges: BTreeMap<u32, Vec<(usize, usize, i32)>> = BTreeMap::new();
    for m in marks {
        let c = m.analyst as usize;
        edges
            .entry(m.span.start())
            .or_default()
            .push((c, m.verdict.index(), 1));
        edges
            .entry(m.span.end())
            .or_default()
            .push((c, m.verdict.index(), -1));
    }
    let n = coders as usize;
    let paired = if coders <= MAX_PAIRWISE_ANALYSTS { n } else { 0 };
    let mut active = vec![[0i32; 3]; n];
    let mut all = Coincidences::new(CATEGORIES);
    let mut pairs: Vec<Coincidences> =
        vec![Coincidences::new(CATEGORIES); paired * paired.saturating_sub(1) / 2];
    let mut prev: Option<u32> = None;
    for (&pos, changes) in &edges {
        if let Some(start) = prev
            && pos > start
        {
            let values: Vec<Option<usize>> = active
                .iter()
                .map(|a| {
                    let bits = (0..3).filter(|&v| a[v] > 0).fold(0u8, |b, v| b | 1 << v);
                    value(bits)
                })
                .collect();
            // A unit is covered by at least one annotation.
            if active.iter().any(|a| a.iter().any(|&x| x > 0)) {
                let weight = u64::from(pos - start);
                let mut counts = [0u32; CATEGORIES];
                for v in values.iter().flatten() {
                    counts[*v] += 1;
                }
                all.add(&counts, weight);
                let mut p = 0;
                for a in 0..paired {
                    for b in a + 1..paired {
                        let mut counts = [0u32; CATEGORIES];
                        for v in [values[a], values[b]].into_iter().flatten() {
                            counts[v] += 1;
                        }
                        pairs[p].add(&counts, weight);
                        p += 1;
                    }
                }
            }
        }
        for &(c, v, d) in changes {
            active[c][v] += d;
        }
        prev = Some(pos);
    }
    let mut pairwise = Vec::with_capacity(pairs.len());
    let mut p = 0;
    for a in 0..paired as u32 {
        for b in a + 1..paired as u32 {
            pairwise.push((a, b, pairs[p].alpha()));
            p += 1;
        }
    }
    Agreement {
        alpha: all.alpha(),
        pairwise,
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Anchor, Span, Verdict};

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
    /// section C: 4 observers, 12 units, values 1-5 (0 here: missing).
    /// Nominal alpha = 0.743.
    #[test]
    fn the_papers_worked_example() {
        let data: [[usize; 12]; 4] = [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, 0, 0, 0],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, 0, 3],
            [0, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 0],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, 0],
        ];
        let mut acc = Coincidences::new(5);
        for u in 0..12 {
            let mut counts = [0u32; 5];
            for row in &data {
                if row[u] > 0 {
                    counts[row[u] - 1] += 1;
                }
            }
            acc.add(&counts, 1);
        }
        let alpha = acc.alpha().unwrap();
        assert!((alpha - 0.743).abs() < 0.0005, "{alpha}");
        // The paper's coincidence total: n = 40 pairable values.
        let n: f64 = acc.o.iter().sum();
        assert!((n - 40.0).abs() < 1e-9, "{n}");
    }

    fn mark(start: u32, end: u32, verdict: Verdict, analyst: u32) -> Mark {
        Mark {
            span: Span::new(start, end).unwrap(),
            verdict,
            id: Uuid::new_v4(),
            anchor: Anchor::Anchored,
            analyst,
            revision: 1,
        }
    }

    #[test]
    fn perfect_agreement_single_analyst_and_no_overlap() {
        // Two analysts marking the same spans the same way, with the text
        // between marked by nobody: perfect agreement.
        let same = [
            mark(0, 10, Verdict::Verified, 0),
            mark(0, 10, Verdict::Verified, 1),
            mark(20, 30, Verdict::Disputed, 0),
            mark(20, 30, Verdict::Disputed, 1),
        ];
        assert_eq!(of_marks(&same, 2).alpha, Some(1.0));
        assert_eq!(of_marks(&same, 2).pairwise, vec![(0, 1, Some(1.0))]);
        // One analyst: undefined.
        assert_eq!(of_marks(&same[..1], 1).alpha, None);
        // No variation at all (everyone says verified everywhere): undefined.
        let flat = [
            mark(0, 10, Verdict::Verified, 0),
            mark(0, 10, Verdict::Verified, 1),
        ];
        assert_eq!(of_marks(&flat, 2).alpha, None);
        // No overlap: each marks what the other left alone: total
        // disagreement, below zero.
        let apart = [
            mark(0, 10, Verdict::Verified, 0),
            mark(10, 20, Verdict::Verified, 1),
        ];
        assert!(of_marks(&apart, 2).alpha.unwrap() < 0.0);
    }

    /// Many analysts: the overall alpha, no pairs (their cost is the
    /// square of the analysts).
    #[test]
    fn many_analysts_get_an_alpha_but_no_pairs() {
        let marks: Vec<Mark> = (0..200)
            .map(|i| {
                mark(
                    i * 3,
                    i * 3 + 5,
                    [Verdict::Verified, Verdict::Disputed][i as usize % 2],
                    i,
                )
            })
            .collect();
        let a = of_marks(&marks, 200);
        assert!(a.alpha.is_some());
        assert!(a.pairwise.is_empty());
        let few = of_marks(&marks[..20], 20);
        assert_eq!(few.pairwise.len(), 190);
    }

    #[test]
    fn an_analysts_own_disagreement_is_missing() {
        // Analyst 0 says both verified and disputed over [5, 10): missing
        // there, so only [0, 5) and [10, 15) pair up.
        let marks = [
            mark(0, 10, Verdict::Verified, 0),
            mark(5, 15, Verdict::Disputed, 0),
            mark(0, 5, Verdict::Verified, 1),
            mark(10, 15, Verdict::Disputed, 1),
            mark(20, 25, Verdict::Unattributed, 1),
        ];
        let a = of_marks(&marks, 2);
        // By hand: units [0,5) V/V, [10,15) D/D, [20,25) none/U; [5,10)
        // has one pairable value. o: VV=10, DD=10, nU+Un=5+5 → n=30,
        // n_V=10, n_D=10, n_none=5, n_U=5; observed off-diagonal = 10,
        // expected = 30^2 - (100+100+25+25) = 650.
        let expected = 1.0 - 29.0 * 10.0 / 650.0;
        assert!((a.alpha.unwrap() - expected).abs() < 1e-12, "{a:?}");
    }
}

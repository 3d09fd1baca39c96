//! The review history: adjudications, sign-offs and withdrawals, one chain
//! per article (`j article_id 0x00 revision seq`), written by the committer
//! in the same batch as the change they belong to. Like the annotation
//! history, nothing trims or rewrites it; the index holds what is in force.

use std::ops::Bound;

use super::codec::{self, ReviewRecord};
use super::{AuditReport, HistoryCursor, Store, keys};
use crate::domain::{ArticleId, ReviewEvent};
use crate::error::{Error, Result};

impl Store {
    /// Up to `limit` entries of the article's review history after
    /// `after`, oldest first, as of the last durable revision, and whether
    /// more follow. Blocking.
    pub fn review_history(
        &self,
        article: &ArticleId,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<(ReviewEvent, HistoryCursor)>, bool)> {
        let at = self.revision();
        let lower = match after {
            Some(c) => keys::review(article, c.revision, c.seq),
            None => keys::review_prefix(article),
        };
        let lower = match after {
            Some(_) => Bound::Excluded(&lower[..]),
            None => Bound::Included(&lower[..]),
        };
        let upper = keys::review(article, u64::MAX, u32::MAX);
        let mut out = Vec::new();
        for item in self.inner.shared.engine.range(lower, Bound::Included(&upper[..])) {
            let (k, v) = item?;
            let (_, revision, seq) =
                keys::parse_review(&k).ok_or_else(|| Error::internal("malformed review key"))?;
            if revision > at {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let record: ReviewRecord = codec::decode(&v)?;
            out.push((record.to_event()?, HistoryCursor { revision, seq }));
        }
        Ok((out, false))
    }

    /// Checks every article's review chain: each record's hash, its link to
    /// the one before, its key, and revisions in order.
    pub(super) fn verify_reviews(&self, report: &mut AuditReport) -> Result<()> {
        let mut last: Option<(ArticleId, u64, [u8; 32])> = None;
        for item in self.inner.shared.engine.scan_prefix(&[keys::REVIEW]) {
            let (k, v) = item?;
            report.records += 1;
            let Some((article, revision, seq)) = keys::parse_review(&k) else {
                report
                    .problems
                    .push(format!("malformed review key {}", hex::encode(&k)));
                continue;
            };
            let at = format!("review of {article} revision {revision} entry {seq}");
            let record: ReviewRecord = match codec::decode(&v) {
                Ok(r) => r,
                Err(_) => {
                    report.problems.push(format!("{at}: record does not decode"));
                    continue;
                }
            };
            if record.revision != revision || record.article != article.as_str() {
                report
                    .problems
                    .push(format!("{at}: record does not match its key"));
            }
            if record.content_hash() != record.hash {
                report
                    .problems
                    .push(format!("{at}: hash does not match the record's content"));
            }
            if record.to_event().is_err() {
                report.problems.push(format!("{at}: record does not read"));
            }
            let expected_prev = match &last {
                Some((a, prev_revision, hash)) if *a == article => {
                    if *prev_revision > revision {
                        report.problems.push(format!("{at}: revisions out of order"));
                    }
                    *hash
                }
                _ => {
                    report.review_chains += 1;
                    [0; 32]
                }
            };
            if record.prev_hash != expected_prev {
                report
                    .problems
                    .push(format!("{at}: previous hash does not link to the entry before"));
            }
            last = Some((article, revision, record.hash));
        }
        Ok(())
    }
}

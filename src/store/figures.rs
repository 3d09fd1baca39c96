//! Where the committer's time goes: CPU (staging, sled's `apply_batch`,
//! publishing) against waiting for the disk (the log's `pwrite` and
//! `fdatasync`).
//!
//! Counted per group with relaxed atomics (a few nanoseconds a group) and
//! logged when the store closes, so a benchmark can read the split of the
//! run it drove without a profiler (`docs/BENCHMARKS.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Totals since open.
#[derive(Default)]
pub struct CommitFigures {
    groups: AtomicU64,
    jobs: AtomicU64,
    keys: AtomicU64,
    stage_ns: AtomicU64,
    apply_ns: AtomicU64,
    write_ns: AtomicU64,
    sync_ns: AtomicU64,
    publish_ns: AtomicU64,
}

/// One phase of a group's commit.
#[derive(Clone, Copy)]
pub enum Phase {
    /// Checking and encoding the jobs into one batch.
    Stage,
    /// sled's `apply_batch`: inserting the keys into its tree, in memory.
    Apply,
    /// Writing the group's frame to the write-ahead log.
    Write,
    /// `fdatasync` of the write-ahead log, with `--sync`.
    Sync,
    /// Moving the index and the revision forward, answering, publishing.
    Publish,
}

impl CommitFigures {
    /// Adds the time since `since` to `phase`; returns now, for the next.
    pub fn add(&self, phase: Phase, since: Instant) -> Instant {
        let now = Instant::now();
        let ns = now.duration_since(since).as_nanos() as u64;
        let counter = match phase {
            Phase::Stage => &self.stage_ns,
            Phase::Apply => &self.apply_ns,
            Phase::Write => &self.write_ns,
            Phase::Sync => &self.sync_ns,
            Phase::Publish => &self.publish_ns,
        };
        counter.fetch_add(ns, Ordering::Relaxed);
        now
    }

    /// Counts one committed group of `jobs` jobs writing `keys` keys.
    pub fn group(&self, jobs: usize, keys: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        self.keys.fetch_add(keys as u64, Ordering::Relaxed);
    }

    /// One line: groups, jobs and keys per group, µs per group in each phase.
    pub fn summary(&self) -> String {
        let groups = self.groups.load(Ordering::Relaxed).max(1) as f64;
        let per = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / groups / 1000.0;
        format!(
            "groups={} jobs_per_group={:.1} keys_per_job={:.2} stage_us={:.1} apply_us={:.1} write_us={:.1} sync_us={:.1} publish_us={:.1}",
            self.groups.load(Ordering::Relaxed),
            self.jobs.load(Ordering::Relaxed) as f64 / groups,
            self.keys.load(Ordering::Relaxed) as f64 / self.jobs.load(Ordering::Relaxed).max(1) as f64,
            per(&self.stage_ns),
            per(&self.apply_ns),
            per(&self.write_ns),
            per(&self.sync_ns),
            per(&self.publish_ns),
        )
    }
}

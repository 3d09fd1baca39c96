//! The single writer: every mutation of the store goes through this thread.
//!
//! It takes every job waiting in its queue (a group), checks each job's
//! preconditions against the current state (it is the only writer, so the
//! state cannot change under it), stages the accepted jobs into one list of
//! key changes, has the engine commit it atomically and durably (sled: one
//! log frame synced once, then one sled batch; etcd: one `Txn`, see
//! [`super::engine`]), and only then publishes it and answers the callers:
//! group commit. Each accepted job gets the next revision, so revisions are
//! gap-free and in commit order.
//!
//! What happens when a commit does not succeed depends on what the engine
//! knows ([`CommitError`]): a failed commit stops writes (fail-stop); a
//! refused one is answered and forgotten; one whose outcome is unknown (etcd
//! did not answer) is answered `UNAVAILABLE` and settled, by following the
//! engine's changelog ([`super::follow`]), before anything else is staged;
//! one that lost its guard to another server's commit (etcd) follows that
//! server's changes and is staged again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{
    self, AnnotationRecord, ArticleEventRecord, ArticleRevisionRecord, ChangeRecord, EventRecord,
    HistoryKind, HistoryRecord, RequestRecord, ReviewEntry, ReviewRecord, StatsRecord,
};
use super::engine::{CommitError, Op};
use super::figures::Phase;
use super::read_ahead::ReadAhead;
use super::reanchoring::{self, Driving, Mark};
use super::{Shared, keys};
use crate::anchor::Reanchor;
use crate::domain::{
    Adjudication, Analyst, Anchor, Annotation, AnnotationName, Article, ArticleEvent, ArticleId, Change,
    Event, Judgement, Patch, ReviewEvent, ReviewEventKind, SignOff,
};
use crate::error::{Error, Result};

/// Most jobs committed in one group (one batch, one flush).
const MAX_GROUP: usize = 1024;

/// One change to make.
#[derive(Debug)]
pub enum Mutation {
    Create {
        name: AnnotationName,
        judgement: Judgement,
        analyst: Analyst,
        /// The article revision the span was checked against: if the
        /// article changed since, the span may mean other text, so the
        /// create is refused.
        article_revision: u32,
    },
    Update {
        name: AnnotationName,
        patch: Patch,
        /// With a new span: the article revision it was checked against.
        article_revision: Option<u32>,
        /// Apply only if the annotation still has this etag.
        etag: Option<String>,
        /// Apply only if the annotation is this analyst's (a caller who may
        /// not adjudicate); `None`: anyone's.
        owner: Option<Analyst>,
    },
    Delete {
        name: AnnotationName,
        etag: Option<String>,
        /// Apply only if the annotation is this analyst's; `None` (an
        /// admin): anyone's, but another's needs a `reason`.
        owner: Option<Analyst>,
        /// Why an admin deletes another's annotation (moderation): recorded
        /// in its history.
        reason: Option<String>,
    },
    /// Creates an article or makes its next revision, re-anchoring its
    /// annotations in the same revision: the first chunk of them, and the
    /// rest in the next groups ([`super::reanchoring`]).
    PutArticle {
        /// The new revision, numbered `base + 1` (1 for a new article).
        article: Arc<Article>,
        /// The revision it replaces (it must still be current); `None`:
        /// create, and the article must not exist.
        base: Option<u32>,
        /// From `base` to `article`, when the text changed: built by the
        /// caller, who also placed the spans it knew of.
        reanchor: Option<Arc<Reanchor>>,
    },
    /// The next chunk of an unfinished re-anchoring: made by the committer
    /// itself ([`super::reanchoring`]), never by a caller.
    Reanchor { reanchor: Arc<Reanchor> },
    /// Settles a contested span of the review the caller computed (and
    /// checked the span against) at `etag`; the committer fills in the
    /// revision and the time.
    Adjudicate { adjudication: Adjudication, etag: u64 },
    /// Signs off the review the caller computed at `etag` and found READY,
    /// with `reviewer` not its only analyst.
    SignOff {
        article: ArticleId,
        reviewer: Analyst,
        article_revision: u32,
        etag: u64,
    },
}

/// A caller's `request_id` with a fingerprint of the whole request.
#[derive(Clone, Copy, Debug)]
pub struct RequestKey {
    pub id: Uuid,
    pub fingerprint: [u8; 32],
}

/// Mutations applied all together or not at all, as one revision.
pub struct Job {
    pub mutations: Vec<Mutation>,
    /// Who asked: recorded in the audit history.
    pub actor: Analyst,
    pub request: Option<RequestKey>,
    /// Check everything, write nothing.
    pub validate_only: bool,
    /// For a batch, what its children are called in errors (`requests`), so
    /// a failed child is named `requests[3]`.
    pub children: Option<&'static str>,
    pub reply: oneshot::Sender<Result<Applied>>,
}

/// What a job did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The annotation after each mutation (before it, for a delete).
    pub annotations: Vec<Annotation>,
    /// The article revisions made.
    pub articles: Vec<Arc<Article>>,
    /// The review history entries written (withdrawals first).
    pub reviews: Vec<ReviewEvent>,
    /// The revision the job committed as; 0 for validate-only jobs (but
    /// for one whose request was applied before: `replayed`).
    pub revision: u64,
    /// The job's `request_id` was applied before: this is that outcome,
    /// and nothing was done now.
    pub replayed: bool,
}

/// What the committer is asked to do.
pub enum Work {
    Commit(Job),
    /// Copy the store, as of the last commit, to a file: between groups,
    /// so the copy is one revision (writers wait meanwhile).
    Backup {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Take in every change the engine holds that this server has not
    /// published (other servers' commits, on etcd): a nudge from the
    /// engine's watch, or from a read that waits to see the store's head
    /// ([`super::Store::fresh`]).
    Follow,
}

pub fn spawn(shared: Arc<Shared>, rx: mpsc::Receiver<Work>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("factcheck-committer".into())
        .spawn(move || run(&shared, rx))
        .expect("spawning the committer thread")
}

fn run(shared: &Arc<Shared>, mut rx: mpsc::Receiver<Work>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    let mut carried: Vec<Job> = Vec::new();
    let mut compactor = Compactor::new(shared);
    // A group's outcome is unknown (its answer was lost): before anything
    // else is staged, the store follows the engine's changelog, which holds
    // the group if it landed.
    let mut uncertain = false;
    // Once a commit fails, what the engine holds may differ from what was
    // answered: refuse every later write rather than build on it.
    let mut failed = false;
    // The chunk of each re-anchoring in progress that is in a group now.
    let mut chunks: HashMap<ArticleId, reanchoring::Chunk> = HashMap::new();
    loop {
        // The next chunk of each correction still re-anchoring goes into
        // this group, after what callers queued: they wait for one chunk
        // at most ([`super::reanchoring`]).
        // Not once the store is closing: the marks resume them at the next
        // start.
        let closing = rx.is_closed() && rx.is_empty();
        let mut next_chunks = match closing {
            true => Vec::new(),
            false => reanchoring::chunk_jobs(shared, &mut chunks),
        };
        // Jobs a full group left over go first, in their order.
        let first = match carried.is_empty() && next_chunks.is_empty() {
            true => match rx.blocking_recv() {
                Some(w) => Some(w),
                None => break,
            },
            false => None,
        };
        jobs.append(&mut carried);
        // A backup ends the group: it copies what the jobs before it made.
        let mut backup = None;
        let mut next = first;
        if next.is_none() && jobs.len() < MAX_GROUP {
            next = rx.try_recv().ok();
        }
        while let Some(work) = next.take() {
            match work {
                Work::Commit(job) => jobs.push(job),
                Work::Follow => {}
                Work::Backup { path, reply } => {
                    backup = Some((path, reply));
                    break;
                }
            }
            if jobs.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        jobs.append(&mut next_chunks);
        // A failed checkpoint stops writes too.
        failed |= *shared.failed.borrow();
        // Another server's commits (etcd), or this server's own group
        // whose answer was lost: into the index before anything is staged.
        let behind = shared.follow_asked.swap(false, Ordering::AcqRel);
        // On a shared store (etcd) every group is also checked against a
        // state at least as new as its calls, in its read ahead
        // ([`read_ahead`]).
        let followed = if !failed && (uncertain || behind) {
            let r = super::follow::follow(shared);
            uncertain &= r.is_err();
            if r.is_err() && behind {
                // Try again with the next work.
                shared.follow_asked.store(true, Ordering::Release);
            }
            r
        } else {
            Ok(shared.revision.load(Ordering::Acquire))
        };
        if failed {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Error::StoreFailed));
            }
        } else if let Err(e) = &followed {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(clone_unavailable(e)));
            }
        } else if !jobs.is_empty() {
            match commit_group(shared, &mut jobs, &mut compactor) {
                Outcome::Done { rest } => carried = rest,
                Outcome::Failed => failed = true,
                Outcome::Uncertain => uncertain = true,
            }
        }
        if reanchoring::chunks_done(shared, &mut chunks) {
            // The store cannot be reached: the chunk is tried again, not
            // at once.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some((path, reply)) = backup {
            let result = if failed {
                Err(Error::StoreFailed)
            } else if uncertain {
                Err(unknown_outcome(shared))
            } else {
                super::backup::write(shared, &path)
            };
            // Nobody waits for it any more (the caller gave up): the copy
            // must not stay in the data dir.
            if reply.send(result).is_err() || failed {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    shared.engine.close(failed || *shared.failed.borrow());
}

/// The error of a write while the last group's outcome is unknown.
fn unknown_outcome(shared: &Shared) -> Error {
    Error::StoreUnavailable {
        reason: "STORE_UNAVAILABLE",
        message: format!(
            "the store ({}) cannot be reached: nothing was written; retry",
            shared.engine.name()
        ),
    }
}

/// The same error for each caller that waited on one attempt to follow.
pub(super) fn clone_unavailable(e: &Error) -> Error {
    match e {
        Error::StoreUnavailable { reason, message } => Error::StoreUnavailable {
            reason,
            message: message.clone(),
        },
        Error::StoreFailed => Error::StoreFailed,
        Error::Unavailable => Error::Unavailable,
        other => Error::internal(other.to_string()),
    }
}

/// Moves the index and the revision forward over `changes`.
pub(super) fn publish(shared: &Shared, revision: u64, changes: &[Change], compacted: Option<u64>) {
    let mut index = shared.visible.write().unwrap_or_else(|e| e.into_inner());
    for change in changes {
        index.apply(change);
    }
    shared.revision.store(revision, Ordering::Release);
    drop(index);
    shared.head.send_replace(revision);
    if let Some(c) = compacted {
        shared.compacted.store(c, Ordering::Release);
    }
}

/// Sends committed changes to live watchers.
pub(super) fn broadcast(shared: &Shared, changes: Vec<Change>) {
    for change in changes {
        let size: usize = change
            .events
            .iter()
            .flat_map(|e| [&e.before, &e.after])
            .flatten()
            .map(result_cost)
            .sum();
        let live = if size > super::LIVE_CHANGE_BYTES {
            super::Live::OnDisk {
                revision: change.revision,
            }
        } else {
            super::Live::Change(Arc::new(change))
        };
        let _ = shared.changes.send(live);
    }
}

/// What became of a group.
enum Outcome {
    /// Committed or refused, and answered; `rest` are jobs that did not
    /// fit the engine's limits with the others: they go in the next group.
    Done { rest: Vec<Job> },
    /// The commit failed: fail-stop.
    Failed,
    /// Answered UNAVAILABLE; whether it landed is learnt by following the
    /// changelog before the next.
    Uncertain,
}

/// Stages `jobs`, in order, into a group; the jobs that would take it past
/// the engine's limits are handed back, unstaged.
fn stage_group<'a>(
    shared: &'a Shared,
    jobs: &mut Vec<Job>,
) -> Result<(Group<'a>, Vec<Result<Applied>>, Vec<Job>)> {
    let limits = shared.engine.limits();
    let read = read_ahead(shared, jobs)?;
    let mut group = Group::new(shared);
    group.read_ahead = read;
    let mut results = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        if job.validate_only {
            // Checked against the durable state, staged into a group that
            // is thrown away.
            results.push(Group::new(shared).stage(job).map(|applied| Applied {
                revision: if applied.replayed { applied.revision } else { 0 },
                ..applied
            }));
            continue;
        }
        let before = (group.ops.len(), group.bytes());
        results.push(group.stage(job));
        if let Some(l) = limits
            && i > 0
            && (group.ops.len() > l.ops || group.bytes() > l.bytes)
            && before.0 > 0
        {
            // This job does not fit with the ones before it: stage those
            // again without it, and it goes first in the next group.
            let mut rest = jobs.split_off(i);
            return match stage_group(shared, jobs) {
                Ok((group, results, _)) => Ok((group, results, rest)),
                Err(e) => {
                    // Answered with the others.
                    jobs.append(&mut rest);
                    Err(e)
                }
            };
        }
    }
    Ok((group, results, Vec::new()))
}

/// Reads ahead what `jobs` will read of the store. On a shared store (etcd)
/// the same read gives the store's revision, and the group is staged on a
/// state at least that new: a refusal (a stale etag, a missing annotation)
/// must not stand on a state another server has moved past. One quorum
/// read per group, however many calls it holds; more only when another
/// server committed since this one last looked.
fn read_ahead(shared: &Shared, jobs: &[Job]) -> Result<ReadAhead> {
    let check = shared.engine.shared();
    for _ in 0..3 {
        let read = match ReadAhead::read(&*shared.engine, jobs, check) {
            Ok(read) => read,
            Err(e) => {
                // A damaged record, or an answer over the client's limit
                // (request records of replayed big batches): as before the
                // read ahead, a quorum read, then each job reads its own
                // keys and only the job that meets the damage fails.
                tracing::warn!(error = %e, "reading a group's keys ahead failed: each call reads its own");
                if check {
                    super::follow::follow(shared)?;
                }
                return Ok(ReadAhead::default());
            }
        };
        match read.stored {
            Some(stored) if stored > shared.revision.load(Ordering::Acquire) => {
                super::follow::follow(shared)?;
            }
            _ => return Ok(read),
        }
    }
    // Others keep committing: stage on what was read last; the commit's
    // guard catches anything newer.
    ReadAhead::read(&*shared.engine, jobs, false)
}

/// How many times a group is staged again after losing its guard to
/// another server's commit before its callers are told to retry.
const MAX_CONFLICTS: usize = 64;

/// Commits one group and answers its callers.
fn commit_group(shared: &Shared, jobs: &mut Vec<Job>, compactor: &mut Compactor) -> Outcome {
    let mut conflicts = 0;
    let (error, mut results, rest) = loop {
        let started = Instant::now();
        let (mut group, results, rest) = match stage_group(shared, jobs) {
            Ok(staged) => staged,
            Err(e) => {
                compactor.abandoned();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(clone_unavailable(&e)));
                }
                return Outcome::Done { rest: Vec::new() };
            }
        };
        group.compacted = compactor.stage(shared, &mut group.ops, group.revision);
        shared.figures.add(Phase::Stage, started);
        let staged = (jobs.len(), group.keys);
        let revision = group.revision;
        let started = std::mem::take(&mut group.started);
        match group.commit() {
            Ok(changes) => {
                shared.figures.group(staged.0, staged.1);
                compactor.committed();
                for d in started {
                    tracing::info!(
                        article = %d.reanchor.new_revision().id,
                        revision = d.reanchor.new_revision().revision,
                        "correction committed: its other annotations are re-anchored in chunks"
                    );
                    shared.reanchoring.start(d.reanchor, d.actor);
                }
                // Only now, once durable: a change is never published twice
                // or published and then lost.
                broadcast(shared, changes);
                answer(jobs, results);
                return Outcome::Done { rest };
            }
            Err((CommitError::Conflict, _)) if conflicts < MAX_CONFLICTS => {
                // Another server committed first: nothing was written. Take
                // its changes in and check every job again on them (an etag
                // it moved is now a mismatch, a request id it answered is
                // now a replay).
                conflicts += 1;
                compactor.abandoned();
                jobs.extend(rest);
                // Replicas that keep colliding back off a little, at random,
                // so one of them gets through and none starves (optimistic
                // concurrency's usual cure; the group meanwhile grows).
                if conflicts > 1 {
                    let most = (conflicts as u64).min(16) * 500;
                    std::thread::sleep(std::time::Duration::from_micros(rand::random::<u64>() % most));
                }
                if let Err(e) = super::follow::follow(shared) {
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(clone_unavailable(&e)));
                    }
                    return Outcome::Done { rest: Vec::new() };
                }
                tracing::debug!(
                    revision,
                    conflicts,
                    "another server committed first: staging the group again"
                );
            }
            Err((e, _)) => break (e, results, rest),
        }
    };
    let outcome = match error {
        CommitError::Conflict => {
            compactor.abandoned();
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(Error::StoreUnavailable {
                        reason: "STORE_CONTENDED",
                        message: format!(
                            "other servers committed first {MAX_CONFLICTS} times running: nothing was written; retry"
                        ),
                    });
                }
            }
            Outcome::Done { rest }
        }
        CommitError::Refused(e) => {
            compactor.abandoned();
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(clone_refusal(&e));
                }
            }
            Outcome::Done { rest }
        }
        CommitError::Uncertain(e) => {
            tracing::warn!(error = %e, "the store did not answer a commit: it may or may not have landed");
            compactor.abandoned();
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(Error::StoreUnavailable {
                        reason: "COMMIT_OUTCOME_UNKNOWN",
                        message: format!(
                            "the store ({}) did not answer whether this write landed: retry with the same \
                             request_id (a retry returns the first outcome if it did)",
                            shared.engine.name()
                        ),
                    });
                }
            }
            answer(jobs, results);
            // Jobs not staged yet wait for the outcome like new ones.
            for job in rest {
                let _ = job.reply.send(Err(unknown_outcome(shared)));
            }
            return Outcome::Uncertain;
        }
        CommitError::Failed(e) => {
            tracing::error!(
                error = %e,
                "group commit failed: the store refuses writes from now on; restart the server once the disk is fixed"
            );
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(Error::CommitFailed);
                }
            }
            // Fail-stop, as databases do after a failed fsync: what the
            // engine holds in memory may not be on disk, so nothing more is
            // built on it, and readers stay at the last durable revision.
            // Set before anyone is answered.
            shared.failed.send_replace(true);
            for job in rest {
                let _ = job.reply.send(Err(Error::StoreFailed));
            }
            Outcome::Failed
        }
    };
    answer(jobs, results);
    outcome
}

/// Answers each job with its result.
fn answer(jobs: &mut Vec<Job>, results: Vec<Result<Applied>>) {
    for (job, result) in jobs.drain(..).zip(results) {
        // A caller that went away no longer needs the answer; the write stands.
        let _ = job.reply.send(result);
    }
}

/// The same refusal, for each job of a refused group.
fn clone_refusal(e: &Error) -> Error {
    match e {
        Error::ResourceExhausted { reason, message } => Error::ResourceExhausted {
            reason,
            message: message.clone(),
        },
        other => Error::internal(other.to_string()),
    }
}

/// Trims the changelog past its retention, a bounded slice per group so a
/// large backlog never makes one commit slow.
struct Compactor {
    retention: super::Retention,
    /// The highest revision trimmed so far (0: none).
    compacted: u64,
    /// What the staged removals will bring `compacted` to.
    staged: Option<u64>,
    /// When the oldest entry's age was last checked.
    last_age_check: std::time::Instant,
}

/// Most changelog entries removed in one group.
const MAX_TRIM: usize = 1024;

impl Compactor {
    fn new(shared: &Shared) -> Self {
        Self {
            retention: shared.retention,
            compacted: shared.compacted.load(Ordering::Acquire),
            staged: None,
            last_age_check: std::time::Instant::now(),
        }
    }

    /// Stages removals; returns the revision trimmed through, if any.
    fn stage(&mut self, shared: &Shared, ops: &mut Vec<Op>, head: u64) -> Option<u64> {
        // Another server on the store (etcd) may have trimmed further: its
        // mark came in with its changes ([`super::follow`]). Never move the
        // mark back.
        self.compacted = self.compacted.max(shared.compacted.load(Ordering::Acquire));
        let by_count = head.saturating_sub(self.retention.revisions);
        let mut target = by_count;
        if self.last_age_check.elapsed() >= std::time::Duration::from_secs(1) {
            self.last_age_check = std::time::Instant::now();
            target = target.max(self.expired_through(shared, head));
        }
        if target <= self.compacted {
            return None;
        }
        let through = target.min(self.compacted + MAX_TRIM as u64);
        for rev in self.compacted + 1..=through {
            ops.push((keys::change(rev).to_vec(), None));
        }
        ops.push((
            keys::META_COMPACTED.to_vec(),
            Some(through.to_be_bytes().to_vec()),
        ));
        self.staged = Some(through);
        self.staged
    }

    /// The newest revision older than the retention age (0 if none).
    fn expired_through(&self, shared: &Shared, head: u64) -> u64 {
        let cutoff = now_us() - self.retention.age.as_micros() as i64;
        let mut through = self.compacted;
        let (from, to) = (
            keys::change(self.compacted + 1),
            keys::change(head.saturating_add(1)),
        );
        let range = shared.engine.range(
            std::ops::Bound::Included(&from[..]),
            std::ops::Bound::Excluded(&to[..]),
        );
        for item in range.take(MAX_TRIM) {
            let Ok((k, v)) = item else { break };
            match codec::decode::<ChangeRecord>(&v) {
                Ok(c) if c.commit_time_us < cutoff => {
                    through = keys::change_revision(&k).unwrap_or(through);
                }
                _ => break,
            }
        }
        through
    }

    fn committed(&mut self) {
        if let Some(through) = self.staged.take() {
            self.compacted = through;
        }
    }

    /// The group was not committed (or may not have been): its removals
    /// are staged again by a later group.
    fn abandoned(&mut self) {
        self.staged = None;
    }
}

/// What the group changed of one article, for its stats record.
#[derive(Clone, Copy)]
struct StatsMark {
    /// When an annotation of it last changed, if one did in the group.
    annotations_changed_us: Option<i64>,
    /// The revision of the group's last change to it.
    revision: u64,
    /// Whether its stats record must be written: only what the store keeps
    /// nowhere else (a deletion's revision and time, a correction's
    /// revision), see `keys`.
    persist: bool,
}

/// The state of one group while its jobs are staged.
struct Group<'a> {
    shared: &'a Shared,
    /// The keys to write, in order: one commit of the engine.
    ops: Vec<Op>,
    /// Annotations changed by jobs staged so far: the new state, `None` if
    /// deleted. Later jobs of the group read through this.
    touched: HashMap<Uuid, Option<Annotation>>,
    /// The hash of the last history record of each annotation the group
    /// changed so far.
    history_heads: HashMap<Uuid, [u8; 32]>,
    /// Request ids recorded by jobs staged so far.
    requests: HashMap<Uuid, RequestRecord>,
    /// Article revisions made by jobs staged so far.
    articles: HashMap<ArticleId, Arc<Article>>,
    /// Articles the group changed (their annotations, text or review).
    stats: HashMap<ArticleId, StatsMark>,
    /// The sign-off of each article whose sign-off the group changed.
    sign_offs: HashMap<ArticleId, Option<Arc<SignOff>>>,
    /// The hash of the last review record of each article the group wrote
    /// one for.
    review_heads: HashMap<ArticleId, [u8; 32]>,
    /// What each staged job changed, in revision order.
    changes: Vec<Change>,
    /// The revision of the last staged job.
    revision: u64,
    /// The changelog is trimmed through this revision by this group.
    compacted: Option<u64>,
    /// Keys staged into `batch`, for the committer's figures.
    keys: usize,
    /// The store's answers to the jobs' reads, read before staging them.
    read_ahead: ReadAhead,
    /// The re-anchoring marks the group wrote (`None`: deleted).
    marks: HashMap<ArticleId, Option<Mark>>,
    /// Re-anchorings the group's corrections left unfinished: driven once
    /// it commits.
    started: Vec<Driving>,
}

impl<'a> Group<'a> {
    fn new(shared: &'a Shared) -> Self {
        Group {
            shared,
            ops: Vec::new(),
            touched: HashMap::new(),
            history_heads: HashMap::new(),
            requests: HashMap::new(),
            articles: HashMap::new(),
            stats: HashMap::new(),
            sign_offs: HashMap::new(),
            review_heads: HashMap::new(),
            changes: Vec::new(),
            revision: shared.revision.load(Ordering::Acquire),
            compacted: None,
            keys: 0,
            read_ahead: ReadAhead::default(),
            marks: HashMap::new(),
            started: Vec::new(),
        }
    }

    fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.keys += 1;
        self.ops.push((key.into(), Some(value.into())));
    }

    fn del(&mut self, key: impl Into<Vec<u8>>) {
        self.keys += 1;
        self.ops.push((key.into(), None));
    }

    /// Checks and stages one job; on error nothing of it is staged.
    fn stage(&mut self, job: &Job) -> Result<Applied> {
        if let Some(req) = job.request
            && let Some(prev) = self.request(req.id)?
        {
            if prev.fingerprint != req.fingerprint {
                return Err(Error::AlreadyExists {
                    reason: "REQUEST_ID_REUSED",
                    message: format!("request_id {} was already used by another request", req.id),
                });
            }
            return Ok(Applied {
                annotations: prev
                    .results
                    .into_iter()
                    .map(Annotation::try_from)
                    .collect::<Result<_>>()?,
                articles: Vec::new(),
                reviews: Vec::new(),
                revision: prev.revision,
                replayed: true,
            });
        }

        if let [Mutation::Reanchor { reanchor }] = &job.mutations[..] {
            let ours = self.mark_of(&reanchor.new_revision().id)?.is_some_and(|m| {
                (m.from, m.to) == (reanchor.old().revision, reanchor.new_revision().revision)
            });
            if !ours {
                // Finished (by this server or another): no revision.
                return Ok(Applied {
                    annotations: Vec::new(),
                    articles: Vec::new(),
                    reviews: Vec::new(),
                    revision: 0,
                    replayed: false,
                });
            }
        }
        let revision = self.revision + 1;
        let now = now_us();
        // Re-anchoring marks this job writes, and re-anchorings it leaves
        // to later chunks.
        let mut marks: Vec<(ArticleId, Option<Mark>)> = Vec::new();
        let mut started: Vec<Driving> = Vec::new();
        // Moderation reasons of deletions of others' annotations, by id.
        let mut moderations: HashMap<Uuid, String> = HashMap::new();
        // This job's changes, read before the group's when checking later
        // mutations of the same job.
        let mut local: HashMap<Uuid, Option<Annotation>> = HashMap::new();
        let mut local_articles: HashMap<ArticleId, Arc<Article>> = HashMap::new();
        let mut article_events: Vec<ArticleEvent> = Vec::new();
        let mut review_events: Vec<ReviewEvent> = Vec::new();
        // Each change, and whether the job answers with it (re-anchoring is
        // part of an article's change, not of its answer).
        let mut changes: Vec<(Option<Annotation>, Option<Annotation>, bool)> = Vec::new();
        for (i, m) in job.mutations.iter().enumerate() {
            let name_child = |e: Error| match job.children {
                Some(label) => e.at(format!("{label}[{i}]")),
                None => e,
            };
            let (before, after) = match m {
                Mutation::Create {
                    name,
                    judgement,
                    analyst,
                    article_revision,
                } => {
                    self.check_article(&local_articles, &name.article, *article_revision)
                        .map_err(name_child)?;
                    if self.current(&local, name)?.is_some() {
                        return Err(name_child(Error::AlreadyExists {
                            reason: "ANNOTATION_EXISTS",
                            message: format!("{name} already exists"),
                        }));
                    }
                    let created = Annotation {
                        name: name.clone(),
                        judgement: judgement.clone(),
                        analyst: analyst.clone(),
                        create_time_us: now,
                        update_time_us: now,
                        revision,
                        article_revision: *article_revision,
                        anchor: Anchor::Anchored,
                    };
                    (None, Some(created))
                }
                Mutation::Update {
                    name,
                    patch,
                    article_revision,
                    etag,
                    owner,
                } => {
                    let before = self
                        .existing(&local, name, etag.as_deref(), owner.as_ref())
                        .map_err(name_child)?;
                    let mut after = before.clone();
                    patch.apply(&mut after.judgement);
                    after.update_time_us = now;
                    after.revision = revision;
                    if let Some(r) = article_revision {
                        // A new span, on the current text: anchored there.
                        self.check_article(&local_articles, &name.article, *r)
                            .map_err(name_child)?;
                        after.article_revision = *r;
                        after.anchor = Anchor::Anchored;
                    } else if after.anchor != Anchor::Orphaned {
                        // Edited after a correction moved it: confirmed.
                        after.anchor = Anchor::Anchored;
                    }
                    (Some(before), Some(after))
                }
                Mutation::Delete {
                    name,
                    etag,
                    owner,
                    reason,
                } => {
                    let before = self
                        .existing(&local, name, etag.as_deref(), owner.as_ref())
                        .map_err(name_child)?;
                    if before.analyst != job.actor {
                        let Some(reason) = reason else {
                            return Err(name_child(Error::invalid(
                                "REASON_REQUIRED",
                                "reason",
                                format!(
                                    "is required to delete {}'s annotation {name}: moderation is recorded with its reason",
                                    before.analyst
                                ),
                            )));
                        };
                        moderations.insert(name.id, reason.clone());
                    }
                    (Some(before), None)
                }
                Mutation::PutArticle {
                    article,
                    base,
                    reanchor,
                } => {
                    let id = &article.id;
                    let current = self.article_now(&local_articles, id);
                    match (base, &current) {
                        (None, Some(_)) => {
                            return Err(name_child(Error::AlreadyExists {
                                reason: "ARTICLE_EXISTS",
                                message: format!("{} already exists", id.name()),
                            }));
                        }
                        (Some(_), None) => return Err(name_child(Error::not_found(id.name()))),
                        (Some(b), Some(c)) if c.revision != *b => {
                            return Err(name_child(Error::Aborted {
                                reason: "ETAG_MISMATCH",
                                message: format!(
                                    "{} changed since revision {b}: it is at revision {} now; read it again and retry",
                                    id.name(),
                                    c.revision
                                ),
                            }));
                        }
                        _ => {}
                    }
                    if base.is_some()
                        && let Some(m) = self.mark_of(id)?
                    {
                        return Err(name_child(reanchoring::in_progress(id, &m)));
                    }
                    if let Some(reanchor) = reanchor {
                        let (moved, more, until) =
                            self.reanchor_chunk(&local, reanchor, None, None, revision, now)?;
                        for (a, after) in moved {
                            local.insert(a.name.id, Some(after.clone()));
                            changes.push((Some(a), Some(after), false));
                        }
                        if let Some(after) = more {
                            marks.push((
                                id.clone(),
                                Some(Mark {
                                    from: reanchor.old().revision,
                                    to: article.revision,
                                    after,
                                    until,
                                    actor: job.actor.to_string(),
                                }),
                            ));
                            started.push(Driving {
                                reanchor: reanchor.clone(),
                                actor: job.actor.clone(),
                            });
                        }
                    }
                    local_articles.insert(id.clone(), article.clone());
                    article_events.push(ArticleEvent {
                        article: article.clone(),
                        created: base.is_none(),
                    });
                    continue;
                }
                Mutation::Reanchor { reanchor } => {
                    let id = &reanchor.new_revision().id;
                    let Some(mark) = self.mark_of(id)? else {
                        continue;
                    };
                    let (moved, more, _) = self.reanchor_chunk(
                        &local,
                        reanchor,
                        Some(mark.after),
                        Some(mark.until),
                        revision,
                        now,
                    )?;
                    for (a, after) in moved {
                        local.insert(a.name.id, Some(after.clone()));
                        changes.push((Some(a), Some(after), false));
                    }
                    marks.push((id.clone(), more.map(|after| Mark { after, ..mark })));
                    continue;
                }
                Mutation::Adjudicate { adjudication, etag } => {
                    self.check_settled(&adjudication.article).map_err(name_child)?;
                    self.check_review(&adjudication.article, *etag)?;
                    let made = Adjudication {
                        create_time_us: now,
                        revision,
                        ..adjudication.clone()
                    };
                    review_events.push(ReviewEvent {
                        article: made.article.clone(),
                        revision,
                        time_us: now,
                        actor: job.actor.to_string(),
                        kind: ReviewEventKind::Adjudicated(Arc::new(made)),
                    });
                    continue;
                }
                Mutation::SignOff {
                    article,
                    reviewer,
                    article_revision,
                    etag,
                } => {
                    self.check_settled(article).map_err(name_child)?;
                    self.check_review(article, *etag)?;
                    let sign_off = Arc::new(SignOff {
                        article: article.clone(),
                        reviewer: reviewer.clone(),
                        time_us: now,
                        revision,
                        article_revision: *article_revision,
                    });
                    review_events.push(ReviewEvent {
                        article: article.clone(),
                        revision,
                        time_us: now,
                        actor: job.actor.to_string(),
                        kind: ReviewEventKind::SignedOff(sign_off),
                    });
                    continue;
                }
            };
            let id = before.as_ref().or(after.as_ref()).map(|a| a.name.id);
            if let Some(id) = id {
                local.insert(id, after.clone());
            }
            changes.push((before, after, true));
        }

        let cost: usize = changes
            .iter()
            .filter(|(_, _, answered)| *answered)
            .map(|(_, a, _)| a.as_ref().map_or(0, result_cost))
            .sum();
        if cost > self.shared.max_result_bytes {
            return Err(Error::ResourceExhausted {
                reason: "RESULT_TOO_LARGE",
                message: format!(
                    "the annotations this request returns would take about {cost} bytes, over the limit of {}: \
                     split it into smaller batches",
                    self.shared.max_result_bytes
                ),
            });
        }

        // Any change to a signed-off article withdraws its sign-off, in the
        // same revision, recorded as the first thing that changed it.
        let mut causes: Vec<(ArticleId, String)> = article_events
            .iter()
            .map(|e| {
                (
                    e.article.id.clone(),
                    format!("article corrected: revision {}", e.article.revision),
                )
            })
            .collect();
        for (before, after, _) in &changes {
            let a = after.as_ref().or(before.as_ref()).expect("a change has a state");
            let what = match (before, after) {
                (None, _) => "annotation created",
                (Some(_), Some(_)) => "annotation updated",
                (Some(_), None) => "annotation deleted",
            };
            causes.push((a.name.article.clone(), format!("{what}: {}", a.name)));
        }
        for e in &review_events {
            if let ReviewEventKind::Adjudicated(a) = &e.kind {
                causes.push((
                    e.article.clone(),
                    format!("contested span adjudicated: {}", a.name()),
                ));
            }
        }
        let mut withdrawn: Vec<ReviewEvent> = Vec::new();
        for (article, reason) in causes {
            if withdrawn.iter().any(|w| w.article == article) {
                continue;
            }
            if let Some(sign_off) = self.sign_off(&article) {
                withdrawn.push(ReviewEvent {
                    article,
                    revision,
                    time_us: now,
                    actor: job.actor.to_string(),
                    kind: ReviewEventKind::Withdrawn { sign_off, reason },
                });
            }
        }
        review_events.splice(0..0, withdrawn);

        // Accepted: stage the writes.
        let mut results = Vec::with_capacity(changes.len());
        let mut events = Vec::with_capacity(changes.len());
        // The history heads this job moves, read before anything is staged.
        // A created annotation has a fresh id, so no history: only updates
        // and deletes look theirs up.
        let mut heads = HashMap::new();
        // How many changes of each annotation this job staged so far: a
        // batch may change one annotation more than once, and each change
        // keeps its own history record.
        let mut seqs: HashMap<Uuid, u32> = HashMap::new();
        for (before, _, _) in &changes {
            if let Some(b) = before
                && let std::collections::hash_map::Entry::Vacant(e) = heads.entry(b.name.id)
            {
                e.insert(self.history_head(b.name.id)?);
            }
        }
        for article in local_articles.values() {
            self.put(
                keys::article_revision(&article.id, article.revision),
                codec::encode(&ArticleRevisionRecord::from_article(article, revision)),
            );
        }
        let mut event_refs = Vec::with_capacity(changes.len());
        for (before, after, answered) in changes {
            self.stage_change(before.as_ref(), after.as_ref(), now);
            let record = history_record(
                before.as_ref(),
                after.as_ref(),
                &job.actor,
                revision,
                now,
                &mut heads,
                before
                    .as_ref()
                    .filter(|_| after.is_none())
                    .and_then(|b| moderations.get(&b.name.id))
                    .map(String::as_str),
            );
            let id = Uuid::from_bytes(record.state.id);
            let seq = seqs.entry(id).or_insert(0);
            self.put(keys::history(id, revision, *seq), codec::encode(&record));
            // The changelog points at the history record: one copy.
            event_refs.push(EventRecord::History {
                id: record.state.id,
                seq: *seq,
            });
            *seq += 1;
            let event = Event { before, after };
            if answered {
                results.push(event.annotation().clone());
            }
            events.push(event);
        }
        for (article, mark) in marks {
            match &mark {
                Some(m) => self.put(keys::reanchoring(&article), m.encode()),
                None => self.del(keys::reanchoring(&article)),
            }
            self.marks.insert(article, mark);
        }
        self.started.extend(started);
        if let Some(req) = job.request {
            let record = RequestRecord {
                fingerprint: req.fingerprint,
                results: results.iter().map(AnnotationRecord::from).collect(),
                revision,
            };
            self.put(keys::request(req.id), codec::encode(&record));
            self.requests.insert(req.id, record);
        }
        for (id, state) in local {
            self.touched.insert(id, state);
        }
        for article in local_articles.keys() {
            self.mark(article, revision, None, true);
        }
        self.articles.extend(local_articles);
        self.history_heads.extend(heads);
        let mut seqs: HashMap<ArticleId, u32> = HashMap::new();
        let mut review_refs = Vec::with_capacity(review_events.len());
        for e in &review_events {
            let seq = seqs.entry(e.article.clone()).or_insert(0);
            let mut record = ReviewRecord::from_event(e);
            record.prev_hash = self.review_head(&e.article)?;
            record.hash = record.content_hash();
            self.review_heads.insert(e.article.clone(), record.hash);
            self.put(keys::review(&e.article, revision, *seq), codec::encode(&record));
            review_refs.push(ReviewEntry::History {
                article: e.article.as_str().to_owned(),
                seq: *seq,
            });
            *seq += 1;
            match &e.kind {
                ReviewEventKind::SignedOff(s) => self.sign_offs.insert(e.article.clone(), Some(s.clone())),
                ReviewEventKind::Withdrawn { .. } => self.sign_offs.insert(e.article.clone(), None),
                ReviewEventKind::Adjudicated(_) => None,
            };
            self.mark(&e.article, revision, None, false);
        }
        let articles = article_events.iter().map(|e| e.article.clone()).collect();
        let change = Change {
            revision,
            commit_time_us: now,
            events,
            articles: article_events,
            reviews: review_events,
        };
        let record = ChangeRecord {
            revision,
            commit_time_us: now,
            events: event_refs,
            articles: change
                .articles
                .iter()
                .map(|e| ArticleEventRecord {
                    article: e.article.id.as_str().to_owned(),
                    revision: e.article.revision,
                    created: e.created,
                })
                .collect(),
            reviews: review_refs,
        };
        self.put(keys::change(revision).to_vec(), codec::encode(&record));
        let reviews = change.reviews.clone();
        self.changes.push(change);
        self.revision = revision;
        Ok(Applied {
            annotations: results,
            articles,
            reviews,
            revision,
            replayed: false,
        })
    }

    /// The article as the job sees it: its own changes, the group's, then
    /// the published state.
    fn article_now(&self, local: &HashMap<ArticleId, Arc<Article>>, id: &ArticleId) -> Option<Arc<Article>> {
        local
            .get(id)
            .or_else(|| self.articles.get(id))
            .cloned()
            .or_else(|| {
                self.shared
                    .visible
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .text(id)
                    .cloned()
            })
    }

    /// That a span checked against `revision` of the article still means
    /// the same text: the article is still at that revision.
    fn check_article(
        &self,
        local: &HashMap<ArticleId, Arc<Article>>,
        id: &ArticleId,
        revision: u32,
    ) -> Result<()> {
        match self.article_now(local, id) {
            None => Err(Error::not_found(id.name())),
            Some(a) if a.revision != revision => Err(Error::Aborted {
                reason: "ARTICLE_CHANGED",
                message: format!(
                    "{} was corrected (revision {revision} → {}) while the request was checked: read it again and retry",
                    id.name(),
                    a.revision
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The next chunk of a correction's re-anchoring: the annotations of
    /// the article with an id after `after` (from the first, with `None`)
    /// and up to `until` (the last it has, with `None`), each placed by
    /// `reanchor` if it is still at the old revision; each one moved, before
    /// and after, the last id looked at if more ids follow it up to `until`,
    /// and `until`.
    #[allow(clippy::too_many_arguments)]
    fn reanchor_chunk(
        &mut self,
        local: &HashMap<Uuid, Option<Annotation>>,
        reanchor: &Reanchor,
        after: Option<Uuid>,
        until: Option<Uuid>,
        revision: u64,
        now: i64,
    ) -> Result<Chunk> {
        let id = &reanchor.new_revision().id;
        let (from, to) = (reanchor.old().revision, reanchor.new_revision().revision);
        // Ids in order, with the start of those only the store holds.
        let mut ids: Vec<(Uuid, Option<u32>)> = self
            .published(id, |a| a.positions().map(|(start, u)| (u, Some(start))).collect())
            .unwrap_or_default();
        ids.extend(
            self.touched
                .iter()
                .chain(local)
                .filter(|(_, a)| a.as_ref().is_some_and(|a| a.name.article == *id))
                .map(|(u, _)| (*u, None)),
        );
        let until = until
            .or_else(|| ids.iter().map(|(u, _)| *u).max())
            .unwrap_or(Uuid::nil());
        ids.retain(|(u, _)| after.is_none_or(|after| *u > after) && *u <= until);
        ids.sort_unstable();
        ids.dedup_by_key(|(u, _)| *u);
        let mut most = self.shared.reanchor_chunk.max(1);
        let mut most_bytes = reanchoring::CHUNK_BYTES;
        if let Some(l) = self.shared.engine.limits() {
            // Each moved annotation is about four keys and two copies.
            most = most.min((l.ops / 8).max(1));
            most_bytes = most_bytes.min(l.bytes / 2);
        }
        let ids = &ids[..ids.len().min(most)];
        // The records only the store holds, read together (etcd: one round
        // trip), and the history heads the chunk will move.
        let known = |u: &Uuid| local.contains_key(u) || self.touched.contains_key(u);
        let positions: Vec<(ArticleId, u32, Uuid)> = ids
            .iter()
            .filter(|(u, _)| !known(u))
            .filter_map(|(u, start)| start.map(|s| (id.clone(), s, *u)))
            .collect();
        let read = super::read_many_at(&*self.shared.engine, &positions, u64::MAX)?;
        let mut stored: HashMap<Uuid, Option<Annotation>> = positions.iter().map(|p| p.2).zip(read).collect();
        let heads: Vec<Uuid> = ids
            .iter()
            .map(|(u, _)| *u)
            .filter(|u| !self.history_heads.contains_key(u))
            .collect();
        self.read_ahead.read_heads(&*self.shared.engine, &heads)?;
        let mut moved = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for (u, _) in ids {
            if bytes >= most_bytes {
                break;
            }
            last = Some(*u);
            let a = match stored.remove(u) {
                Some(a) => a,
                None => self.current(
                    local,
                    &AnnotationName {
                        article: id.clone(),
                        id: *u,
                    },
                )?,
            };
            let Some(a) = a.filter(|a| a.name.article == *id) else {
                continue;
            };
            if a.anchor == Anchor::Orphaned || a.article_revision != from {
                continue;
            }
            let placed = reanchor.place(a.judgement.span);
            let mut after = a.clone();
            if placed.anchor != Anchor::Orphaned {
                after.judgement.span = placed.span;
                after.article_revision = to;
            }
            after.anchor = placed.anchor;
            after.update_time_us = now;
            after.revision = revision;
            bytes += 2 * result_cost(&after);
            moved.push((a, after));
        }
        let more = last
            .filter(|l| ids.last().is_some_and(|(u, _)| u != l) || self.more_between(id, local, *l, until));
        Ok((moved, more, until))
    }

    /// Whether the article has an annotation with an id in `(after, until]`.
    fn more_between(
        &self,
        id: &ArticleId,
        local: &HashMap<Uuid, Option<Annotation>>,
        after: Uuid,
        until: Uuid,
    ) -> bool {
        let within = |u: Uuid| u > after && u <= until;
        self.published(id, |a| a.ids().any(within)).unwrap_or(false)
            || self
                .touched
                .iter()
                .chain(local)
                .any(|(u, a)| within(*u) && a.as_ref().is_some_and(|a| a.name.article == *id))
    }

    /// The re-anchoring mark of the article as the group sees it.
    fn mark_of(&self, article: &ArticleId) -> Result<Option<Mark>> {
        match self.marks.get(article) {
            Some(m) => Ok(m.clone()),
            None => reanchoring::mark(&*self.shared.engine, article),
        }
    }

    /// That the article is not re-anchoring a correction: its review would
    /// be judged half-moved.
    fn check_settled(&self, article: &ArticleId) -> Result<()> {
        match self.mark_of(article)? {
            Some(m) => Err(reanchoring::in_progress(article, &m)),
            None => Ok(()),
        }
    }

    fn stage_change(&mut self, before: Option<&Annotation>, after: Option<&Annotation>, now: i64) {
        if let Some(b) = before {
            let moved = after.is_none_or(|a| a.judgement.span.start() != b.judgement.span.start());
            if moved {
                self.del(keys::position(
                    &b.name.article,
                    b.judgement.span.start(),
                    b.name.id,
                ));
            }
            if after.is_none() {
                self.del(keys::location(b.name.id));
            }
        }
        if let Some(a) = after {
            let start = a.judgement.span.start();
            self.put(
                keys::position(&a.name.article, start, a.name.id),
                codec::encode(&AnnotationRecord::from(a)),
            );
            self.put(
                keys::location(a.name.id),
                keys::location_value(start, &a.name.article),
            );
        }
        let changed = after.or(before).expect("a change has a state");
        let revision = self.revision + 1;
        self.mark(
            &changed.name.article,
            revision,
            Some(after.map_or(now, |a| a.update_time_us)),
            after.is_none(),
        );
    }

    /// Notes a change to `article` in `revision`, and when its annotations
    /// changed, if they did.
    fn mark(
        &mut self,
        article: &ArticleId,
        revision: u64,
        annotations_changed_us: Option<i64>,
        persist: bool,
    ) {
        let m = self.stats.entry(article.clone()).or_insert(StatsMark {
            annotations_changed_us: None,
            revision,
            persist,
        });
        m.revision = revision;
        m.persist |= persist;
        if annotations_changed_us.is_some() {
            m.annotations_changed_us = annotations_changed_us;
        }
    }

    /// The review's etag as the group sees it: the revision of the last
    /// change to the article.
    fn last_revision(&self, article: &ArticleId) -> u64 {
        match self.stats.get(article) {
            Some(m) => m.revision,
            None => self.published(article, |a| a.last_revision()).unwrap_or(0),
        }
    }

    /// `f` of the article's published index, if it has one.
    fn published<T>(
        &self,
        article: &ArticleId,
        f: impl FnOnce(&super::index::ArticleIndex) -> T,
    ) -> Option<T> {
        self.shared
            .visible
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .article(article)
            .map(f)
    }

    /// The sign-off in force as the group sees it.
    fn sign_off(&self, article: &ArticleId) -> Option<Arc<SignOff>> {
        match self.sign_offs.get(article) {
            Some(s) => s.clone(),
            None => self.published(article, |a| a.sign_off().cloned()).flatten(),
        }
    }

    /// That the review the caller decided on is still the article's: its
    /// etag did not move.
    fn check_review(&self, article: &ArticleId, etag: u64) -> Result<()> {
        let now = self.last_revision(article);
        if now != etag {
            return Err(Error::Aborted {
                reason: "ETAG_MISMATCH",
                message: format!(
                    "the review of {} changed while the request was checked (etag {etag} → {now}): read it again and retry",
                    article.name()
                ),
            });
        }
        Ok(())
    }

    /// The hash of the article's last review record; zeros if none.
    fn review_head(&self, article: &ArticleId) -> Result<[u8; 32]> {
        if let Some(h) = self.review_heads.get(article) {
            return Ok(*h);
        }
        match self.shared.engine.last_in(&keys::review_prefix(article))? {
            Some((_, v)) => Ok(codec::decode::<ReviewRecord>(&v)?.hash),
            None => Ok([0; 32]),
        }
    }

    /// The hash of the annotation's last history record; zeros if none.
    fn history_head(&self, id: Uuid) -> Result<[u8; 32]> {
        if let Some(h) = self
            .history_heads
            .get(&id)
            .copied()
            .or_else(|| self.read_ahead.head(id))
        {
            return Ok(h);
        }
        match self.shared.engine.last_in(&keys::history_prefix(id))? {
            Some((_, v)) => Ok(codec::decode::<HistoryRecord>(&v)?.hash),
            None => Ok([0; 32]),
        }
    }

    fn request(&self, id: Uuid) -> Result<Option<RequestRecord>> {
        if let Some(r) = self.requests.get(&id) {
            return Ok(Some(RequestRecord {
                fingerprint: r.fingerprint,
                results: r.results.clone(),
                revision: r.revision,
            }));
        }
        if let Some(r) = self.read_ahead.request(id) {
            return Ok(r);
        }
        match self.shared.engine.get(&keys::request(id))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The annotation as the job sees it: its own changes, then the group's,
    /// then the store's.
    fn current(
        &self,
        local: &HashMap<Uuid, Option<Annotation>>,
        name: &AnnotationName,
    ) -> Result<Option<Annotation>> {
        let state = match local.get(&name.id).or_else(|| self.touched.get(&name.id)) {
            Some(state) => state.clone(),
            None => match self.read_ahead.annotation(name.id) {
                Some(state) => state,
                None => super::read_annotation(&*self.shared.engine, name.id)?,
            },
        };
        Ok(state.filter(|a| a.name.article == name.article))
    }

    /// The current annotation, if it exists, belongs to `owner` (if set) and
    /// matches `etag` (if set).
    fn existing(
        &self,
        local: &HashMap<Uuid, Option<Annotation>>,
        name: &AnnotationName,
        etag: Option<&str>,
        owner: Option<&Analyst>,
    ) -> Result<Annotation> {
        let current = self
            .current(local, name)?
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        if let Some(owner) = owner
            && *owner != current.analyst
        {
            return Err(Error::PermissionDenied {
                reason: "NOT_OWNER",
                message: format!(
                    "{name} is {}'s: {owner} may change only their own annotations (nobody rewrites an analyst's judgement: a reviewer settles disagreement by adjudication, an admin may delete it with a reason)",
                    current.analyst
                ),
            });
        }
        if let Some(etag) = etag
            && etag != current.etag()
        {
            return Err(Error::Aborted {
                reason: "ETAG_MISMATCH",
                message: format!(
                    "etag {etag} does not match the current etag {} of {name}: read it again and retry",
                    current.etag()
                ),
            });
        }
        Ok(current)
    }

    /// Makes the group durable through the engine, then publishes it to
    /// readers; returns the changes committed, or why not (with them: an
    /// uncertain group is published later if it turns out to have landed).
    ///
    /// Readers are not held back meanwhile: they read at the published
    /// revision, and a record newer than that is read from the history as
    /// it was (see `Store::read_at`). The lock is taken only to move the
    /// index and the revision forward together.
    fn commit(mut self) -> std::result::Result<Vec<Change>, (CommitError, Vec<Change>)> {
        let shared = self.shared;
        if self.changes.is_empty() && self.compacted.is_none() {
            return Ok(Vec::new());
        }
        for (article, mark) in std::mem::take(&mut self.stats) {
            if !mark.persist {
                continue;
            }
            let last_update_time_us = match mark.annotations_changed_us {
                Some(t) => t,
                None => self
                    .published(&article, |a| a.last_update_time_us())
                    .flatten()
                    .unwrap_or(0),
            };
            let record = StatsRecord {
                last_update_time_us,
                last_revision: mark.revision,
            };
            self.put(keys::stats(&article), codec::encode(&record));
        }
        self.put(keys::META_REVISION, self.revision.to_be_bytes().to_vec());
        let base = shared.revision.load(Ordering::Acquire);
        let ops = std::mem::take(&mut self.ops);
        shared.committing.store(self.revision, Ordering::Release);
        if let Err(e) = shared.engine.commit(base, self.revision, ops) {
            // Other servers' commits are news again (and so is this one, if
            // it landed after all: the watch reports it).
            shared.committing.store(0, Ordering::Release);
            return Err((e, self.changes));
        }
        let t = Instant::now();
        publish(shared, self.revision, &self.changes, self.compacted);
        shared.committing.store(0, Ordering::Release);
        shared.figures.add(Phase::Publish, t);
        Ok(self.changes)
    }

    /// About how many bytes the staged key changes take.
    fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16)
            .sum()
    }
}

/// Commits one job at once, on the calling thread: for changes the store
/// makes itself while it opens (seed files), before the committer runs.
pub fn apply_now(shared: &Shared, mutation: Mutation, actor: Analyst) -> Result<Applied> {
    let (reply, _) = oneshot::channel();
    let job = Job {
        mutations: vec![mutation],
        actor,
        request: None,
        validate_only: false,
        children: None,
        reply,
    };
    let mut group = Group::new(shared);
    let applied = group.stage(&job)?;
    let started = std::mem::take(&mut group.started);
    group.commit().map_err(|(e, _)| match e {
        CommitError::Refused(e) => e,
        CommitError::Failed(e) | CommitError::Uncertain(e) => Error::internal(e),
        CommitError::Conflict => Error::internal(
            "another server changed the store while this one applied the seed files: start this server again",
        ),
    })?;
    for d in started {
        shared.reanchoring.start(d.reanchor, d.actor);
    }
    Ok(applied)
}

/// About how many bytes `a` takes in a response: its stored fields, its
/// quote (at most 4 bytes a code point) and the message overhead. An upper
/// bound, so a job under the limit answers under it.
pub fn result_cost(a: &Annotation) -> usize {
    let j = &a.judgement;
    256 + a.analyst.as_str().len()
        + j.note.len()
        + j.sources.iter().map(|s| s.len() + 3).sum::<usize>()
        + 4 * (j.span.end() - j.span.start()) as usize
}

/// How a deletion's history record names a moderation reason (in its
/// `changed` list, which a deletion otherwise leaves empty).
pub const MODERATION_PREFIX: &str = "moderation: ";

/// A chunk of a re-anchoring: each annotation moved, before and after, the
/// last id looked at if more follow, and the last id it goes to.
type Chunk = (Vec<(Annotation, Annotation)>, Option<Uuid>, Uuid);

/// The history record of one change, chained to `heads`, which it moves.
fn history_record(
    before: Option<&Annotation>,
    after: Option<&Annotation>,
    actor: &Analyst,
    revision: u64,
    now: i64,
    heads: &mut HashMap<Uuid, [u8; 32]>,
    moderation: Option<&str>,
) -> HistoryRecord {
    let (kind, changed) = match (before, after) {
        (None, _) => (HistoryKind::Created, Vec::new()),
        (Some(b), Some(a)) => {
            let anchoring = [
                ("article_revision", b.article_revision != a.article_revision),
                ("anchor_state", b.anchor != a.anchor),
            ];
            let (b, a) = (&b.judgement, &a.judgement);
            let changed = [
                ("span", b.span != a.span),
                ("verdict", b.verdict != a.verdict),
                ("note", b.note != a.note),
                ("sources", b.sources != a.sources),
            ]
            .into_iter()
            .chain(anchoring);
            (
                HistoryKind::Updated,
                changed
                    .into_iter()
                    .filter(|(_, c)| *c)
                    .map(|(f, _)| f.to_owned())
                    .collect(),
            )
        }
        // A deletion changes no field: its list carries the moderation
        // reason, when an admin deleted another's annotation (covered by the
        // record's hash like everything else).
        (Some(_), None) => (
            HistoryKind::Deleted,
            moderation
                .map(|r| vec![format!("{MODERATION_PREFIX}{r}")])
                .unwrap_or_default(),
        ),
    };
    let state = after.or(before).expect("a change has a state");
    let prev_hash = heads.get(&state.name.id).copied().unwrap_or([0; 32]);
    let mut record = HistoryRecord {
        revision,
        time_us: now,
        actor: actor.to_string(),
        kind,
        changed,
        state: AnnotationRecord::from(state),
        prev_hash,
        hash: [0; 32],
        format: 0,
    };
    record.hash = record.content_hash();
    heads.insert(state.name.id, record.hash);
    record
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

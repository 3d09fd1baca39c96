//! The single writer: every mutation of the store goes through this thread.
//!
//! It takes every job waiting in its queue (a group), checks each job's
//! preconditions against the current state (it is the only writer, so the
//! state cannot change under it), stages the accepted jobs into one sled
//! batch, applies the batch atomically, flushes once, and only then answers
//! the callers: group commit. Each accepted job gets the next revision, so
//! revisions are gap-free and in commit order.
//!
//! Only this thread calls `flush`, so sled's `flush_async` deadlock with many
//! concurrent flushers (spacejam/sled#1308) cannot happen. No sled
//! transaction is used, so no closure is ever re-run: side effects after the
//! flush run exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{self, AnnotationRecord, RequestRecord, StatsRecord};
use super::{Shared, keys};
use crate::domain::{Analyst, Annotation, AnnotationName, ArticleId, Judgement, Patch};
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
    },
    Update {
        name: AnnotationName,
        patch: Patch,
        /// Apply only if the annotation still has this etag.
        etag: Option<String>,
    },
    Delete {
        name: AnnotationName,
        etag: Option<String>,
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
    pub request: Option<RequestKey>,
    /// The annotation after each mutation (before it, for a delete).
    pub reply: oneshot::Sender<Result<Vec<Annotation>>>,
}

pub fn spawn(shared: Arc<Shared>, rx: mpsc::Receiver<Job>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("factcheck-committer".into())
        .spawn(move || run(&shared, rx))
        .expect("spawning the committer thread")
}

fn run(shared: &Shared, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_group(shared, &mut jobs);
    }
    tracing::debug!("committer stopped");
}

fn commit_group(shared: &Shared, jobs: &mut Vec<Job>) {
    let mut group = Group {
        shared,
        batch: sled::Batch::default(),
        touched: HashMap::new(),
        requests: HashMap::new(),
        stats: HashMap::new(),
        revision: shared.revision.load(Ordering::Acquire),
        writes: false,
    };
    let mut results: Vec<Result<Vec<Annotation>>> = jobs.iter().map(|job| group.stage(job)).collect();

    if group.writes
        && let Err(e) = group.commit()
    {
        tracing::error!(error = %e, "group commit failed");
        for r in &mut results {
            if r.is_ok() {
                *r = Err(Error::internal("commit failed"));
            }
        }
    }

    for (job, result) in jobs.drain(..).zip(results) {
        // A caller that went away no longer needs the answer; the write stands.
        let _ = job.reply.send(result);
    }
}

/// The state of one group while its jobs are staged.
struct Group<'a> {
    shared: &'a Shared,
    batch: sled::Batch,
    /// Annotations changed by jobs staged so far: the new state, `None` if
    /// deleted. Later jobs of the group read through this.
    touched: HashMap<Uuid, Option<Annotation>>,
    /// Request ids recorded by jobs staged so far.
    requests: HashMap<Uuid, RequestRecord>,
    /// Articles whose annotations changed, with the time of the change.
    stats: HashMap<ArticleId, i64>,
    /// The revision of the last staged job.
    revision: u64,
    /// Whether anything was staged that needs writing.
    writes: bool,
}

impl Group<'_> {
    /// Checks and stages one job; on error nothing of it is staged.
    fn stage(&mut self, job: &Job) -> Result<Vec<Annotation>> {
        if let Some(req) = job.request
            && let Some(prev) = self.request(req.id)?
        {
            if prev.fingerprint != req.fingerprint {
                return Err(Error::AlreadyExists {
                    reason: "REQUEST_ID_REUSED",
                    message: format!("request_id {} was already used by another request", req.id),
                });
            }
            return prev.results.into_iter().map(Annotation::try_from).collect();
        }

        let revision = self.revision + 1;
        let now = now_us();
        // This job's changes, read before the group's when checking later
        // mutations of the same job.
        let mut local: HashMap<Uuid, Option<Annotation>> = HashMap::new();
        let mut changes: Vec<(Option<Annotation>, Option<Annotation>)> = Vec::new();
        for m in &job.mutations {
            let (before, after) = match m {
                Mutation::Create {
                    name,
                    judgement,
                    analyst,
                } => {
                    if self.current(&local, name)?.is_some() {
                        return Err(Error::AlreadyExists {
                            reason: "ANNOTATION_EXISTS",
                            message: format!("{name} already exists"),
                        });
                    }
                    let created = Annotation {
                        name: name.clone(),
                        judgement: judgement.clone(),
                        analyst: analyst.clone(),
                        create_time_us: now,
                        update_time_us: now,
                        revision,
                    };
                    (None, Some(created))
                }
                Mutation::Update { name, patch, etag } => {
                    let before = self.existing(&local, name, etag.as_deref())?;
                    let mut after = before.clone();
                    patch.apply(&mut after.judgement);
                    after.update_time_us = now;
                    after.revision = revision;
                    (Some(before), Some(after))
                }
                Mutation::Delete { name, etag } => {
                    let before = self.existing(&local, name, etag.as_deref())?;
                    (Some(before), None)
                }
            };
            let id = before.as_ref().or(after.as_ref()).map(|a| a.name.id);
            if let Some(id) = id {
                local.insert(id, after.clone());
            }
            changes.push((before, after));
        }

        // Accepted: stage the writes.
        let mut results = Vec::with_capacity(changes.len());
        for (before, after) in changes {
            self.stage_change(before.as_ref(), after.as_ref());
            results.push(after.or(before).expect("a change has a before or an after state"));
        }
        if let Some(req) = job.request {
            let record = RequestRecord {
                fingerprint: req.fingerprint,
                results: results.iter().map(AnnotationRecord::from).collect(),
            };
            self.batch.insert(keys::request(req.id), codec::encode(&record));
            self.requests.insert(req.id, record);
        }
        for (id, state) in local {
            self.touched.insert(id, state);
        }
        self.revision = revision;
        self.writes = true;
        Ok(results)
    }

    fn stage_change(&mut self, before: Option<&Annotation>, after: Option<&Annotation>) {
        if let Some(b) = before {
            let moved = after.is_none_or(|a| a.judgement.span.start() != b.judgement.span.start());
            if moved {
                self.batch.remove(keys::position(
                    &b.name.article,
                    b.judgement.span.start(),
                    b.name.id,
                ));
            }
            if after.is_none() {
                self.batch.remove(keys::location(b.name.id));
            }
        }
        if let Some(a) = after {
            let start = a.judgement.span.start();
            self.batch.insert(
                keys::position(&a.name.article, start, a.name.id),
                codec::encode(&AnnotationRecord::from(a)),
            );
            self.batch.insert(
                keys::location(a.name.id),
                keys::location_value(start, &a.name.article),
            );
        }
        let changed = after.or(before).expect("a change has a state");
        self.stats.insert(
            changed.name.article.clone(),
            after.map_or_else(now_us, |a| a.update_time_us),
        );
    }

    fn request(&self, id: Uuid) -> Result<Option<RequestRecord>> {
        if let Some(r) = self.requests.get(&id) {
            return Ok(Some(RequestRecord {
                fingerprint: r.fingerprint,
                results: r.results.clone(),
            }));
        }
        match self.shared.tree.get(keys::request(id)).map_err(Error::internal)? {
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
            None => super::read_annotation(&self.shared.tree, name.id)?,
        };
        Ok(state.filter(|a| a.name.article == name.article))
    }

    /// The current annotation, if it exists and matches `etag`.
    fn existing(
        &self,
        local: &HashMap<Uuid, Option<Annotation>>,
        name: &AnnotationName,
        etag: Option<&str>,
    ) -> Result<Annotation> {
        let current = self
            .current(local, name)?
            .ok_or_else(|| Error::not_found(name.to_string()))?;
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

    /// Applies the batch atomically and makes it durable.
    fn commit(mut self) -> std::result::Result<(), sled::Error> {
        for (article, time) in self.stats.drain() {
            let record = StatsRecord {
                last_update_time_us: time,
            };
            self.batch.insert(keys::stats(&article), codec::encode(&record));
        }
        self.batch
            .insert(keys::META_REVISION, &self.revision.to_be_bytes());
        // Readers hold the other side of this lock, so they see a group
        // whole or not at all, and only once it is durable.
        let _visible = self.shared.visible.write().unwrap_or_else(|e| e.into_inner());
        self.shared.tree.apply_batch(self.batch)?;
        self.shared.db.flush()?;
        self.shared.revision.store(self.revision, Ordering::Release);
        Ok(())
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

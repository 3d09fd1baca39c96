//! Quorum reads of the store's revision, shared by the reads waiting for
//! one.
//!
//! A consistent read on a shared store (etcd) first learns the store's
//! revision with a quorum read, then serves once this server has taken that
//! revision in (Kubernetes' consistent reads from cache). One quorum read
//! per call made 64 GetArticleReviews in flight cost 64 etcd round trips
//! for answers the index gives in microseconds. Here a read that started
//! *after* a caller arrived answers every caller that arrived before it
//! started: that read sees every write acknowledged before any of them
//! began, which is all linearizability asks. A read already running when a
//! caller arrives does not answer it (it may have been served before that
//! caller's write was acknowledged); the caller waits for the next one,
//! which starts as soon as the running one ends. So at most one quorum read
//! is in flight, and each caller waits for at most two.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::engine::Engine;
use crate::error::{Error, Result};

/// Callers waiting for the next quorum read.
#[derive(Default)]
pub(super) struct QuorumReads {
    state: Mutex<State>,
}

/// The read task's mark: unless it ended normally (`done`), dropping it
/// clears `running` and drops the waiting callers' senders.
struct Running {
    reads: Arc<QuorumReads>,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.reads.state.lock().unwrap_or_else(|e| e.into_inner());
            state.running = false;
            state.next.clear();
        }
    }
}

#[derive(Default)]
struct State {
    /// A read is in flight (its task answers the next batch after it).
    running: bool,
    /// Callers that arrived since the read in flight started.
    next: Vec<oneshot::Sender<std::result::Result<u64, Arc<Error>>>>,
}

impl QuorumReads {
    /// The store's revision, by a quorum read that started after this call.
    pub(super) async fn revision(self: &Arc<Self>, engine: &Arc<dyn Engine>) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.next.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            // Made before the task is spawned and moved into it: if the
            // task never runs (the runtime is shutting down) or dies, its
            // drop lets the next caller start a read again and tells the
            // waiting ones; otherwise every later caller would wait on a
            // read nobody makes.
            let running = Running {
                reads: self.clone(),
                done: false,
            };
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || {
                let mut running = running;
                running.reads.run(&*engine);
                running.done = true;
            });
        }
        match rx.await {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) => Err(super::committer::clone_unavailable(&e)),
            // Its task never ran (the server is shutting down) or died.
            Err(_) => Err(Error::Unavailable),
        }
    }

    /// Reads for each batch of callers in turn, until none is waiting.
    fn run(&self, engine: &dyn Engine) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.next.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.next)
            };
            let read = engine.stored_revision().map_err(Arc::new);
            for caller in batch {
                let _ = caller.send(read.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::store::engine::{CommitError, Op, Pair};

    /// An engine whose quorum reads wait at a gate and count: the `n`th
    /// read answers `n`.
    struct Gated {
        reads: AtomicU64,
        gate: Mutex<()>,
        entered: Mutex<std::sync::mpsc::Sender<()>>,
    }

    impl Engine for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>> {
            unreachable!()
        }
        fn page(&self, _: &[u8], _: Option<&[u8]>, _: usize, _: bool) -> Result<Vec<Pair>> {
            unreachable!()
        }
        fn write(&self, _: Vec<Op>) -> Result<()> {
            unreachable!()
        }
        fn commit(&self, _: u64, _: u64, _: Vec<Op>) -> std::result::Result<(), CommitError> {
            unreachable!()
        }
        fn stored_revision(&self) -> Result<u64> {
            let _ = self.entered.lock().unwrap().send(());
            let _open = self.gate.lock().unwrap();
            Ok(self.reads.fetch_add(1, Ordering::SeqCst) + 1)
        }
        fn close(&self, _: bool) {}
    }

    /// Callers that arrive while a read is in flight are not answered by
    /// it (it may predate a write acknowledged before they came) but share
    /// the next one: two reads for three callers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The gate is a blocking lock on purpose: the read it holds runs on a
    // blocking thread, and the test opens it once the callers queued.
    #[allow(clippy::await_holding_lock)]
    async fn callers_during_a_read_share_the_next_one_not_that_one() {
        let (entered, reads_entered) = std::sync::mpsc::channel();
        let gated = Arc::new(Gated {
            reads: AtomicU64::new(0),
            gate: Mutex::new(()),
            entered: Mutex::new(entered),
        });
        let engine: Arc<dyn Engine> = gated.clone();
        let quorum = Arc::new(QuorumReads::default());
        let closed = gated.gate.lock().unwrap();
        let first = tokio::spawn({
            let (q, e) = (quorum.clone(), engine.clone());
            async move { q.revision(&e).await.unwrap() }
        });
        // The first read is in flight, held at the gate.
        let reads_entered = tokio::task::spawn_blocking(move || {
            reads_entered.recv().unwrap();
            reads_entered
        })
        .await
        .unwrap();
        let later: Vec<_> = (0..2)
            .map(|_| {
                let (q, e) = (quorum.clone(), engine.clone());
                tokio::spawn(async move { q.revision(&e).await.unwrap() })
            })
            .collect();
        // Both have arrived (queued for the next read) before the gate opens.
        while quorum.state.lock().unwrap().next.len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(closed);
        assert_eq!(first.await.unwrap(), 1);
        for l in later {
            assert_eq!(
                l.await.unwrap(),
                2,
                "a caller was answered by a read that began before it"
            );
        }
        assert_eq!(
            gated.reads.load(Ordering::SeqCst),
            2,
            "the waiting callers did not share one read"
        );
        drop(reads_entered);
    }

    /// A read whose task never runs (its runtime is shutting down) fails
    /// its caller at once, and the next caller starts a read of its own:
    /// nobody waits on a read nobody makes.
    #[test]
    fn a_read_that_never_ran_does_not_stall_the_next() {
        let (entered, _reads_entered) = std::sync::mpsc::channel();
        let engine: Arc<dyn Engine> = Arc::new(Gated {
            reads: AtomicU64::new(0),
            gate: Mutex::new(()),
            entered: Mutex::new(entered),
        });
        let quorum = Arc::new(QuorumReads::default());
        let dead = tokio::runtime::Runtime::new().unwrap();
        let handle = dead.handle().clone();
        dead.shutdown_background();
        {
            let _in = handle.enter();
            let mut call = std::pin::pin!(quorum.revision(&engine));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match call.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => assert!(r.is_err(), "{r:?}"),
                std::task::Poll::Pending => panic!("a caller waits on a read that will never be made"),
            }
        }
        let live = tokio::runtime::Runtime::new().unwrap();
        assert_eq!(live.block_on(quorum.revision(&engine)).unwrap(), 1);
    }
}

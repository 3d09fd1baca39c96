//! The etcd engine against real etcd processes, where it differs from sled:
//! answers lost between commit and reply, etcd down and back under
//! writers, etcd out of space, a second server writing under the same
//! prefix, and a cluster whose limits are too small. (Everything the two
//! engines share runs in the whole suite with `FACTCHECK_TEST_STORE=etcd`.)
//!
//! A `test = false` target, run by name: `.ci/run` installs etcd first.
//! Each test holds a fail scenario, so the tests of this file run one at a
//! time (their failpoints are process-wide).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::etcd::{ENGINE_FLAGS, EtcdCluster};
use common::*;
use factcheck::pb;
use factcheck::pb::Verdict;
use factcheck::store::{EngineConfig, Store, StoreConfig};
use tonic::Code;

const A1: &str = "001_728dec46794c22c1";

async fn server_on(cluster: &EtcdCluster, prefix: &str) -> TestServer {
    let setup = Setup {
        engine: Some(EngineConfig::Etcd(cluster.config(prefix))),
        ..Default::default()
    };
    TestServer::start_with(tempfile::tempdir().unwrap(), setup).await
}

fn create_request(start: u32, request_id: &str) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: article(A1),
        annotation: Some(new_annotation(
            pb::Span {
                start,
                end: start + 3,
            },
            Verdict::Verified,
        )),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// The `Txn` landed and its answer was lost: the call is UNAVAILABLE
/// `COMMIT_OUTCOME_UNKNOWN`; the committer learns from etcd that it landed
/// and publishes it; the client's retry with the same request id gets the
/// first result, not a second annotation; the next write goes on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_settled_and_a_retry_returns_the_first_result() {
    let scenario = fail::FailScenario::setup();
    let cluster = EtcdCluster::single(ENGINE_FLAGS).await;
    let server = server_on(&cluster, "/lost/").await;
    let mut c = server.client().await;
    let first = c
        .create_annotation(create_request(0, ""))
        .await
        .unwrap()
        .into_inner();

    fail::cfg("etcd::answer_lost", "1*return").unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let lost = c.create_annotation(create_request(10, &id)).await.unwrap_err();
    fail::cfg("etcd::answer_lost", "off").unwrap();
    assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
    assert_eq!(reason(&lost), "COMMIT_OUTCOME_UNKNOWN");

    let retried = c
        .create_annotation(create_request(10, &id))
        .await
        .unwrap()
        .into_inner();
    let etag = |a: &pb::Annotation| a.etag.trim_matches('"').parse::<u64>().unwrap();
    assert_eq!(
        etag(&retried),
        etag(&first) + 1,
        "the lost write is the next revision"
    );
    let (all, revision) = snapshot(&mut c).await;
    assert_eq!(all.len(), 2, "one annotation per request id: {all:?}");
    assert_eq!(revision, etag(&retried));
    let next = c
        .create_annotation(create_request(20, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(etag(&next), etag(&retried) + 1);
    // And it survives a restart of the server.
    let server = server.restart().await;
    let (after, _) = snapshot(&mut server.client().await).await;
    assert_eq!(after.len(), 3);
    scenario.teardown();
}

/// etcd killed -9 under 4 writers and restarted: while it is down writes
/// fail UNAVAILABLE (never INTERNAL, never a fail-stop), and once it is
/// back they go on; every acknowledged write is there, each request id once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_under_writers_loses_nothing_acknowledged() {
    let scenario = fail::FailScenario::setup();
    let mut cluster = EtcdCluster::single(ENGINE_FLAGS).await;
    let server = server_on(&cluster, "/down/").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Refusals seen by all writers, so the test waits for etcd's absence to
    // show rather than for a time.
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let mut c = server.client().await;
        let stop = stop.clone();
        let refusals = refusals.clone();
        writers.push(tokio::spawn(async move {
            let mut acked: HashMap<String, String> = HashMap::new();
            let mut unavailable = 0;
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = uuid::Uuid::new_v4().to_string();
                let start = (w * 1000 + i) % 2000;
                i += 1;
                // Retry the same request id until it is answered.
                loop {
                    match c.create_annotation(create_request(start, &id)).await {
                        Ok(a) => {
                            acked.insert(id.clone(), a.into_inner().name);
                            break;
                        }
                        Err(s) if s.code() == Code::Unavailable => {
                            unavailable += 1;
                            refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(s) => panic!("writer {w}: {s:?}"),
                    }
                }
            }
            (acked, unavailable)
        }));
    }
    let mut c = server.client().await;
    let until = |n: u64| {
        let mut c = c.clone();
        async move {
            loop {
                let (_, r) = snapshot(&mut c).await;
                if r >= n {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let before = until(40).await;
    cluster.kill(0);
    // Writes fail while it is down: wait until the writers have seen it.
    while refusals.load(std::sync::atomic::Ordering::Relaxed) < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.restart(0).await;
    until(before + 40).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = HashMap::new();
    let mut unavailable = 0;
    for w in writers {
        let (a, u) = w.await.unwrap();
        acked.extend(a);
        unavailable += u;
    }
    assert!(unavailable > 0, "no write saw etcd down");
    let (all, _) = snapshot(&mut c).await;
    let names: std::collections::HashSet<_> = all.iter().map(|a| a.name.clone()).collect();
    for (id, name) in &acked {
        assert!(names.contains(name), "acknowledged {name} (request {id}) is lost");
    }
    assert!(all.len() >= acked.len());
    scenario.teardown();
}

/// etcd out of space (a tiny `--quota-backend-bytes`): writes are refused
/// RESOURCE_EXHAUSTED `STORE_NOSPACE`, nothing is half written, reads go
/// on, and everything acknowledged before is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_refuses_writes_cleanly_and_reads_go_on() {
    let scenario = fail::FailScenario::setup();
    let flags: Vec<&str> = ENGINE_FLAGS
        .iter()
        .copied()
        .chain(["--quota-backend-bytes", "4194304"])
        .collect();
    let cluster = EtcdCluster::single(&flags).await;
    let server = server_on(&cluster, "/full/").await;
    let mut c = server.client().await;
    let mut acked = 0;
    let refused = loop {
        match large_batch(&mut c, A1).await {
            Ok(r) => acked += r.annotations.len(),
            Err(s) => break s,
        }
        assert!(acked < 100_000, "etcd never filled");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "STORE_NOSPACE");
    let (all, revision) = snapshot(&mut c).await;
    assert_eq!(
        all.len(),
        acked,
        "reads go on and hold every acknowledged write, no more"
    );
    // Still refused, and still nothing changes.
    let again = c.create_annotation(create_request(0, "")).await.unwrap_err();
    assert_eq!(reason(&again), "STORE_NOSPACE");
    assert_eq!(snapshot(&mut c).await.1, revision);
    scenario.teardown();
}

/// Two servers on one prefix: each one's commit lands on the state it was
/// checked against. A server whose `Txn` lost its guard to the other's
/// commit follows it and stages again, so both writes land, as revisions 1
/// and 2 (no fork, no fail-stop); a conditional update racing one on the
/// other server with the same etag is `ETAG_MISMATCH`; each server reads
/// and watches the other's writes; the audit chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_prefix_both_write_and_a_lost_race_is_etag_mismatch() {
    let scenario = fail::FailScenario::setup();
    let cluster = EtcdCluster::single(ENGINE_FLAGS).await;
    let a = server_on(&cluster, "/shared/").await;
    let b = server_on(&cluster, "/shared/").await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    let mut watch_b = cb
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = ca
        .create_annotation(create_request(0, ""))
        .await
        .unwrap()
        .into_inner();
    // b has not staged anything on revision 1: its guard fails, it follows
    // a's commit and lands as revision 2.
    let second = cb
        .create_annotation(create_request(10, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.etag.as_str(), second.etag.as_str()), ("\"1\"", "\"2\""));
    // The same etag, updated on both servers at once: one wins.
    let update = |note: &str| {
        let mut req = masked_update(
            pb::Annotation {
                note: note.into(),
                ..first.clone()
            },
            &["note"],
        );
        req.etag = first.etag.clone();
        req
    };
    let (mut ca2, mut cb2) = (ca.clone(), cb.clone());
    let (ra, rb) = tokio::join!(
        ca2.update_annotation(update("from a")),
        cb2.update_annotation(update("from b"))
    );
    let lost = match (ra, rb) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("exactly one update must win: {other:?}"),
    };
    assert_eq!(lost.code(), Code::Aborted, "{lost:?}");
    assert_eq!(reason(&lost), "ETAG_MISMATCH");
    // Each server reads what the other wrote, at once.
    let (on_a, rev_a) = snapshot(&mut ca).await;
    let (on_b, rev_b) = snapshot(&mut cb).await;
    assert_eq!((on_a.len(), rev_a), (2, 3));
    assert_eq!((on_b, rev_b), (on_a, rev_a));
    // b's watchers saw a's writes too, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch_b.message())
            .await
            .expect("b's watch delivers a's changes")
            .unwrap()
            .unwrap();
        if msg.kind == pb::watch_annotations_response::Kind::Events as i32 {
            seen.push(msg.revision);
        }
    }
    assert_eq!(seen, vec![1, 2, 3]);
    drop((a, b));
    let mut config = StoreConfig::new(tempfile::tempdir().unwrap().path());
    config.engine = EngineConfig::Etcd(cluster.config("/shared/"));
    let report = tokio::task::spawn_blocking(move || Store::open_for_audit(&config).unwrap().verify_audit())
        .await
        .unwrap()
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    scenario.teardown();
}

/// An etcd with its default limits (128 operations a `Txn`, 1.5 MiB a
/// request) cannot take a batch of 1,000: the server refuses to start and
/// names the flag, rather than fail the first big batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_default_limits_is_refused_at_start_naming_the_flag() {
    let scenario = fail::FailScenario::setup();
    async fn refusal(flags: &[&str]) -> String {
        let cluster = EtcdCluster::single(flags).await;
        let mut config = StoreConfig::new(tempfile::tempdir().unwrap().path());
        config.engine = EngineConfig::Etcd(cluster.config("/small/"));
        tokio::task::spawn_blocking(move || Store::open(&config).err())
            .await
            .unwrap()
            .expect("the open was refused")
            .to_string()
    }
    let err = refusal(&[]).await;
    assert!(err.contains("--max-txn-ops=65536"), "{err}");
    let err = refusal(&["--max-txn-ops", "65536"]).await;
    assert!(err.contains("--max-request-bytes="), "{err}");
    scenario.teardown();
}

/// A backup moves a desk between engines: from sled into an etcd prefix
/// and back into a sled data dir, each time the same annotations at the
/// same revision, and the next write is the next revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_moves_between_sled_and_etcd_both_ways() {
    let scenario = fail::FailScenario::setup();
    let cluster = EtcdCluster::single(ENGINE_FLAGS).await;
    let sled = TestServer::start_with(
        tempfile::tempdir().unwrap(),
        Setup {
            engine: Some(EngineConfig::Sled),
            ..Default::default()
        },
    )
    .await;
    let mut c = sled.client().await;
    for i in 0..5 {
        c.create_annotation(create_request(i * 10, "")).await.unwrap();
    }
    large_batch(&mut c, A1).await.unwrap();
    let (source, at) = snapshot(&mut c).await;

    async fn backup_of(server: &TestServer) -> tempfile::NamedTempFile {
        let mut admin = server.client_with(Some(ADMIN)).await;
        let mut stream = admin
            .backup(pb::BackupRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            bytes.extend_from_slice(&chunk.data);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        file
    }

    // sled → etcd.
    let file = backup_of(&sled).await;
    let config = cluster.config("/moved/");
    let (path, restore_config) = (file.path().to_owned(), config.clone());
    let revision =
        tokio::task::spawn_blocking(move || factcheck::store::restore_etcd(&path, &restore_config))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(revision, at);
    // Not over a store.
    let (path, again) = (file.path().to_owned(), config.clone());
    let refused = tokio::task::spawn_blocking(move || factcheck::store::restore_etcd(&path, &again))
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.to_string().contains("already holds a store"), "{refused}");
    let on_etcd = server_on(&cluster, "/moved/").await;
    let mut e = on_etcd.client().await;
    assert_eq!(snapshot(&mut e).await, (source.clone(), at));
    let next = e
        .create_annotation(create_request(100, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.etag, format!("\"{}\"", at + 1));
    let (moved, moved_at) = snapshot(&mut e).await;

    // etcd → sled.
    let file = backup_of(&on_etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    factcheck::store::restore(file.path(), &data).unwrap();
    let mut config = StoreConfig::new(&data);
    config.engine = EngineConfig::Sled;
    let store = tokio::task::spawn_blocking(move || Store::open(&config).unwrap())
        .await
        .unwrap();
    assert_eq!(store.revision(), moved_at);
    let (page, _) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            let page = s.list(&Default::default(), None, 10_000).unwrap();
            (page.annotations.len(), page.revision)
        })
        .await
        .unwrap()
    };
    assert_eq!(page, moved.len());
    scenario.teardown();
}

//! Fault injection with failpoints (the `fail` crate; the `failpoints`
//! feature is on for tests). Failpoints are global to the process, so this
//! file holds only tests that use them, each inside a `FailScenario`, which
//! runs them one at a time.

mod common;

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use common::*;
use factcheck::store::{Store, StoreConfig};
use pb::Verdict;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const KOREAN: &str = "001_728dec46794c22c1";

/// A hang is a failure here, not a wait: reads that block behind the
/// paused commit would never return.
const HANG: Duration = Duration::from_secs(20);

async fn health(server: &TestServer) -> i32 {
    HealthClient::new(server.channel().await)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Health turns NOT_SERVING and a write is refused STORE_FAILED; returns the
/// health stream, still open.
async fn assert_fail_stopped(
    server: &TestServer,
    client: &mut Client,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut statuses = HealthClient::new(server.channel().await)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(HANG, async {
        while statuses.message().await.unwrap().unwrap().status != ServingStatus::NotServing as i32 {}
    })
    .await
    .expect("health never turned NOT_SERVING");
    let err = client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(KOREAN),
            annotation: Some(new_annotation(pb::Span { start: 0, end: 3 }, Verdict::Verified)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (tonic::Code::Unavailable, "STORE_FAILED")
    );
    statuses
}

fn verdict_update(name: &str, verdict: Verdict) -> pb::UpdateAnnotationRequest {
    masked_update(
        pb::Annotation {
            name: name.into(),
            verdict: verdict as i32,
            ..Default::default()
        },
        &["verdict"],
    )
}

/// Pauses the committer at `failpoint` until the returned sender is used;
/// the receiver says when it got there.
fn pause_at(failpoint: &str) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let release_rx = Mutex::new(release_rx);
    fail::cfg_callback(failpoint, move || {
        let _ = reached_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv();
    })
    .unwrap();
    (reached, release)
}

/// Item 8 and 3: while a group is applied to sled but not yet flushed,
/// readers neither wait for it nor see it: Get, List, BatchGet, the review,
/// the history and health all answer at once, with the state before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_neither_wait_for_nor_see_a_commit_in_flight() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut client, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;

    let (reached, release) = pause_at("commit::flush");
    let mut writer = server.client().await;
    let name = a.name.clone();
    let write = tokio::spawn(async move {
        writer
            .update_annotation(verdict_update(&name, Verdict::Disputed))
            .await
    });
    tokio::task::spawn_blocking(move || reached.recv().unwrap())
        .await
        .unwrap();

    let reads = async {
        let got = client
            .get_annotation(pb::GetAnnotationRequest {
                name: a.name.clone(),
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, a, "a reader saw a commit that is not durable");
        let (all, revision) = snapshot(&mut client).await;
        assert_eq!(all, vec![a.clone()]);
        let batch = client
            .batch_get_annotations(pb::BatchGetAnnotationsRequest {
                offset_encoding: 0,
                parent: article(KOREAN),
                names: vec![a.name.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.annotations, vec![a.clone()]);
        assert_eq!(batch.revision, revision);
        let review = client
            .get_article_review(pb::GetArticleReviewRequest {
                offset_encoding: 0,
                name: format!("{}/review", article(KOREAN)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (review.verified_count, review.disputed_count, review.revision),
            (1, 0, revision)
        );
        let history = client
            .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                name: a.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(history.revisions.len(), 1);
        assert_eq!(health(&server).await, ServingStatus::Serving as i32);
    };
    tokio::time::timeout(HANG, reads)
        .await
        .expect("reads waited for the commit");

    release.send(()).unwrap();
    let updated = write.await.unwrap().unwrap().into_inner();
    assert_eq!(updated.verdict, Verdict::Disputed as i32);
    let mut client = server.client().await;
    let got = client
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, updated);
    scenario.teardown();
}

/// Item 3: a commit whose flush fails is answered COMMIT_FAILED, is never
/// visible to readers or watchers, turns health NOT_SERVING and makes the
/// store refuse writes (STORE_FAILED) even once the disk is back, until a
/// restart; after it the store is whole and its audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_never_visible_and_stops_writes_until_restart() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut client, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let mut watch = client
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = watch.message().await.unwrap().unwrap();

    fail::cfg("commit::flush", "return").unwrap();
    let err = client
        .update_annotation(verdict_update(&a.name, Verdict::Disputed))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (tonic::Code::Internal, "COMMIT_FAILED")
    );
    fail::remove("commit::flush");

    let got = client
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, a, "the failed update must not be visible");
    let (all, revision) = snapshot(&mut client).await;
    assert_eq!((all, revision), (vec![a.clone()], created.revision));

    // Fail-stop: health says so and every write is refused, the disk being
    // fine again or not.
    let statuses = assert_fail_stopped(&server, &mut client).await;
    // The watcher got nothing past the last durable revision.
    let quiet = tokio::time::timeout(Duration::from_millis(700), async {
        loop {
            let msg = watch.message().await.unwrap().unwrap();
            assert!(msg.events.is_empty(), "a watcher saw the failed commit: {msg:?}");
            assert!(msg.revision <= created.revision);
        }
    })
    .await;
    assert!(quiet.is_err());

    // A restart recovers: the store is consistent whichever way the failed
    // write went, and writes work again.
    drop((watch, statuses, client));
    let dir = server.stop().await;
    {
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        assert_eq!(store.verify_audit().unwrap().problems, Vec::<String>::new());
    }
    let server = TestServer::start_in(dir).await;
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);
    let mut client = server.client().await;
    client
        .update_annotation(verdict_update(&a.name, Verdict::Unattributed))
        .await
        .unwrap();
    scenario.teardown();
}

/// Item 3, the sync: a failed fdatasync is a failed commit too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_a_failed_sync_is_a_failed_commit() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    fail::cfg("commit::sync", "return").unwrap();
    let err = client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(KOREAN),
            annotation: Some(new_annotation(pb::Span { start: 0, end: 3 }, Verdict::Verified)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    fail::remove("commit::sync");
    assert_eq!(reason(&err), "COMMIT_FAILED");
    assert_eq!(snapshot(&mut client).await, (vec![], 0));
    scenario.teardown();
}

/// A correction whose commit fails is never half applied: readers keep the
/// old revision and every annotation on it; after a restart the article and
/// its annotations agree (all re-anchored, or none), and the audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_correction_is_all_or_nothing() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let text = seed_text(KOREAN);
    let a = create(&mut client, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let read = |c: &mut Client, name: String| {
        let mut c = c.clone();
        async move {
            c.get_annotation(pb::GetAnnotationRequest {
                name,
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };

    fail::cfg("commit::flush", "return").unwrap();
    let err = editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(KOREAN),
                text: format!("Correction appended above.\n{text}"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "COMMIT_FAILED");
    fail::cfg("commit::flush", "off").unwrap();
    assert_eq!(
        read(&mut client, a.name.clone()).await,
        a,
        "readers never see the failed correction"
    );
    let current = client
        .get_article(pb::GetArticleRequest {
            name: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (current.revision_id.as_str(), current.text.as_str()),
        ("1", text.as_str())
    );

    let dir = server.stop().await;
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    assert!(store.verify_audit().unwrap().problems.is_empty());
    drop(store);
    let server = TestServer::start_in(dir).await;
    let mut client = server.client().await;
    let article_now = client
        .get_article(pb::GetArticleRequest {
            name: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let a_now = read(&mut client, a.name.clone()).await;
    assert_eq!(
        a_now.article_revision, article_now.revision_id,
        "article and annotation agree"
    );
    assert_eq!(a_now.quote, "조태열");
    scenario.teardown();
}

/// A sign-off whose commit fails is never seen: readers keep READY; after a
/// restart the review and its history agree (signed off with its record,
/// or neither), and the audit, review chains included, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_off_is_never_half_recorded() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let text = seed_text(KOREAN);
    create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    create(&mut bob, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let review = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.get_article_review(pb::GetArticleReviewRequest {
                name: format!("{}/review", article(KOREAN)),
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let before = review(&mut rosa).await;
    assert_eq!(before.state, pb::ReviewState::Ready as i32);

    fail::cfg("commit::flush", "return").unwrap();
    let err = rosa
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name: format!("{}/review", article(KOREAN)),
            etag: before.etag.clone(),
            offset_encoding: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "COMMIT_FAILED");
    fail::cfg("commit::flush", "off").unwrap();
    assert_eq!(
        review(&mut rosa).await,
        before,
        "readers never see the failed sign-off"
    );

    let dir = server.stop().await;
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    let report = store.verify_audit().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    drop(store);
    let server = TestServer::start_in(dir).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let after = review(&mut rosa).await;
    let events = rosa
        .list_review_events(pb::ListReviewEventsRequest {
            parent: format!("{}/review", article(KOREAN)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        after.sign_off.is_some(),
        !events.is_empty(),
        "the review and its history agree: {after:?} {events:?}"
    );
    scenario.teardown();
}

/// A batch file cut off midway (the server's disk fails after its first
/// batch) resumes where it stopped when run again: the batch that landed is
/// not applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_batch_file_resumes_where_it_stopped() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("review.jsonl");
    let create = |start: u32| {
        format!(
            "{{\"op\":\"create\",\"article\":\"{KOREAN}\",\"span\":{{\"start\":{start},\"end\":{}}},\"verdict\":\"verified\"}}\n",
            start + 2
        )
    };
    // Creates, then a delete of nothing yet known, then creates again:
    // consecutive operations of one kind form a batch, so three batches.
    let mut alice = server.client().await;
    let text = seed_text(KOREAN);
    let victim = create_annotation(&mut alice, &text).await;
    let body = format!(
        "{}{}{{\"op\":\"delete\",\"name\":\"{}\"}}\n{}",
        create(0),
        create(4),
        victim,
        create(8)
    );
    std::fs::write(&file, body).unwrap();
    let apply = |url: String| {
        let path = file.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
                .args(["apply", &path])
                .env("FACTCHECK_SERVER", url)
                .env("FACTCHECK_TOKEN", ALICE)
                .output()
                .unwrap()
        })
    };
    // The first commit lands, the second fails.
    fail::cfg("commit::flush", "1*off->return").unwrap();
    let o = apply(server.url()).await.unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    fail::cfg("commit::flush", "off").unwrap();
    let server = server.restart().await;
    let mut alice = server.client().await;
    // The first batch landed; the failed one may or may not have (sled
    // had applied it in memory, and the restart's final flush may keep
    // it): either way, its request id says so.
    let (now, _) = snapshot(&mut alice).await;
    let starts: Vec<u32> = now.iter().map(|a| a.span.unwrap().start).collect();
    assert!(starts.starts_with(&[0, 4]), "{starts:?}");

    let o = apply(server.url()).await.unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("resuming: 1 of 3 batches") || err.contains("resuming: 2 of 3 batches"),
        "{err}"
    );
    let (all, _) = snapshot(&mut alice).await;
    let starts: Vec<u32> = all.iter().map(|a| a.span.unwrap().start).collect();
    assert_eq!(starts, [0, 4, 8], "each create once, the delete done");
    scenario.teardown();
}

async fn create_annotation(client: &mut Client, text: &str) -> String {
    create(client, KOREAN, find_span(text, "조태열"), Verdict::Disputed)
        .await
        .name
}

/// The checkpoint (sled made durable behind the log, then the full log
/// segment deleted) failing is a failed store: health turns NOT_SERVING and
/// writes are refused, but everything acknowledged is in the log still, and
/// after a restart it is all there and the audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_a_failed_checkpoint_stops_writes_and_loses_nothing_acknowledged() {
    let scenario = fail::FailScenario::setup();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    fail::cfg("checkpoint", "return").unwrap();
    // 11 large batches fill the first log segment, and the next group
    // starts a checkpoint.
    let mut acknowledged = 0;
    for _ in 0..14 {
        match large_batch(&mut client, KOREAN).await {
            Ok(_) => acknowledged += 30,
            Err(e) => assert_eq!(reason(&e), "STORE_FAILED"),
        }
    }
    assert_fail_stopped(&server, &mut client).await;
    fail::remove("checkpoint");

    drop(client);
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);
    let mut client = server.client().await;
    let (all, _) = snapshot(&mut client).await;
    assert_eq!(all.len(), acknowledged, "every acknowledged annotation is back");
    assert!(
        (240..14 * 30).contains(&acknowledged),
        "{acknowledged} acknowledged: the failure should come once the first segment is full"
    );
    let dir = server.stop().await;
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.verify_audit().unwrap().problems, Vec::<String>::new());
    scenario.teardown();
}

/// The copies a backup streams from in the data dir.
fn backup_copies(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backup-") && n.ends_with(".partial"))
        .collect()
}

/// Waits (bounded) until the data dir holds no backup copy.
async fn until_no_backup_copy(server: &TestServer) {
    let deadline = std::time::Instant::now() + HANG;
    while !backup_copies(server).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a backup copy stayed in the data dir: {:?}",
            backup_copies(server)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Backup is a stream: the unary call deadline does not cut it (here a
/// copy that takes 1.5 s under a 1 s deadline), and its copy in the data
/// dir is gone when the stream ends — whole, cancelled by the client after
/// one chunk, or given up by the client before the first — and a copy a
/// crash left is removed at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_outlasts_the_call_deadline_and_never_leaves_its_copy() {
    let scenario = fail::FailScenario::setup();
    let setup = Setup {
        call_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup.clone()).await;
    let mut client = server.client_with(Some(ADMIN)).await;
    // Enough data for several 1 MiB chunks.
    for _ in 0..4 {
        large_batch(&mut server.client().await, KOREAN).await.unwrap();
    }
    fail::cfg("backup::write", "sleep(1500)").unwrap();

    // Whole, past the deadline.
    let mut stream = client
        .backup(pb::BackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    let mut size = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        size = chunk.size;
        bytes.extend_from_slice(&chunk.data);
    }
    assert!(
        size > 2 << 20,
        "a backup of {size} bytes: too small to stream in chunks"
    );
    assert_eq!(bytes.len() as u64, size);
    until_no_backup_copy(&server).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let restored = tempfile::tempdir().unwrap();
    factcheck::store::restore(file.path(), &restored.path().join("data")).unwrap();

    // Cancelled after one chunk.
    let mut stream = client
        .backup(pb::BackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);
    until_no_backup_copy(&server).await;

    // Given up before the first chunk (the client's own deadline).
    let mut request = tonic::Request::new(pb::BackupRequest::default());
    request.set_timeout(Duration::from_millis(200));
    let err = client.backup(request).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "{err}"
    );
    // The committer writes that copy all the same; one more whole backup
    // queues behind it, so once it ends the abandoned copy was written and
    // must be gone.
    let mut stream = client
        .backup(pb::BackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    until_no_backup_copy(&server).await;
    fail::remove("backup::write");

    // A copy a crash left behind goes at the next start.
    let dir = server.stop().await;
    std::fs::write(dir.path().join("backup-0000.partial"), b"half a copy").unwrap();
    let server = TestServer::start_with(dir, setup).await;
    assert!(backup_copies(&server).is_empty(), "{:?}", backup_copies(&server));
    scenario.teardown();
}

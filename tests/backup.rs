//! Backup and restore (issue 15 item 7): `factcheck backup` from a running
//! server, consistent at one revision even under writes; `factcheck
//! restore` into an empty data dir; after it, the audit passes, a list and
//! a review equal the source's, and revisions continue.

use std::process::{Command, Output};

use crate::common::*;
use pb::Verdict;

const A1: &str = "001_728dec46794c22c1";

async fn cli(server: &TestServer, token: &str, args: Vec<String>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.args(args)
        .env("FACTCHECK_SERVER", server.url())
        .env("FACTCHECK_TOKEN", token);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn offline(args: &[&str]) -> (i32, String, String) {
    factcheck_cli(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_equal_store_that_goes_on() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let text = seed_text(A1);
    let a = create(&mut alice, A1, find_span(&text, "조태열"), Verdict::Verified).await;
    create(&mut bob, A1, find_span(&text, "조태열"), Verdict::Verified).await;
    let gone = create(&mut bob, A1, find_span(&text, "Korea"), Verdict::Disputed).await;
    bob.delete_annotation(pb::DeleteAnnotationRequest {
        reason: String::new(),
        name: gone.name.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let mut edited = a.clone();
    edited.note = "checked twice – 🎉".into();
    alice
        .update_annotation(masked_update(edited, &["note"]))
        .await
        .unwrap();
    let review = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.get_article_review(pb::GetArticleReviewRequest {
                name: format!("{}/review", article(A1)),
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let r = review(&mut rosa).await;
    rosa.sign_off_article_review(pb::SignOffArticleReviewRequest {
        name: r.name.clone(),
        etag: r.etag.clone(),
        offset_encoding: 0,
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store.fcbackup");
    let path = out.to_str().unwrap().to_owned();
    // Only admins back up.
    let o = cli(&server, REVIEWER, vec!["backup".into(), path.clone()]).await;
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
    let o = cli(
        &server,
        ADMIN,
        vec!["backup".into(), path.clone(), "--output".into(), "json".into()],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (source, at) = snapshot(&mut alice).await;
    assert_eq!(summary["revision"], at);
    let source_review = review(&mut rosa).await;
    let source_events = rosa
        .list_review_events(pb::ListReviewEventsRequest {
            parent: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let history = |c: &mut Client, name: String| {
        let mut c = c.clone();
        async move {
            c.list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                name,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let source_history = history(&mut alice, gone.name.clone()).await;

    // Into a data dir that holds a store: refused. A cut backup: refused,
    // and nothing written.
    let target = tempfile::tempdir().unwrap();
    let restored_dir = target.path().to_owned();
    let rd = restored_dir.to_str().unwrap().to_owned();
    let cut = dir.path().join("cut.fcbackup");
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let (code, _, err) = offline(&["restore", cut.to_str().unwrap(), "--data-dir", &rd]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cut short") || err.contains("checksum"), "{err}");
    assert!(
        !restored_dir.join("db").exists(),
        "a corrupt backup writes nothing"
    );
    // Trailing bytes after the checksum: not one whole backup.
    let long = dir.path().join("long.fcbackup");
    std::fs::write(&long, [bytes.as_slice(), b"x"].concat()).unwrap();
    let (code, _, err) = offline(&["restore", long.to_str().unwrap(), "--data-dir", &rd]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bytes after its checksum"), "{err}");
    assert!(!restored_dir.join("db").exists());
    // A data dir that is a file: said so, with no word about permissions
    // (sled: on etcd the restore goes into a prefix).
    if !crate::common::etcd::on_etcd() {
        let (code, _, err) = offline(&["restore", &path, "--data-dir", long.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("not a directory") && !err.contains("readable"),
            "{err}"
        );
    }

    // A restore killed before it finished leaves no store a server would
    // open: the server refuses the dir, saying what to do, and a second
    // restore starts over.
    let (code, _, err) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
            .args(["restore", &path, "--data-dir", &rd])
            .args(crate::common::etcd::engine_args(&restored_dir))
            .env("FACTCHECK_CRASH_AT", "restore::before_rename")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, None, "the restore was to crash: {err}");
    assert!(!restored_dir.join("db").exists(), "a half restore is a store");
    let mut refused = ChildServer::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_factcheck")),
        &restored_dir,
        &[],
    );
    let line = refused.wait_for_log("unfinished restore");
    assert!(line.contains("factcheck restore"), "{line}");
    assert!(!refused.child.wait().unwrap().success());

    let (code, out_text, err) = offline(&["restore", &path, "--data-dir", &rd]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out_text.contains(&format!("restored revision {at}")),
        "{out_text}"
    );
    let (code, _, err) = offline(&["restore", &path, "--data-dir", &rd]);
    assert_eq!(code, 2, "not over a store: {err}");
    // Nor beside another store's write-ahead log, which an open would
    // replay (sled's).
    if !crate::common::etcd::on_etcd() {
        let beside = tempfile::tempdir().unwrap();
        std::fs::create_dir(beside.path().join("wal")).unwrap();
        let (code, _, err) = offline(&["restore", &path, "--data-dir", beside.path().to_str().unwrap()]);
        assert_eq!(code, 2, "not beside a write-ahead log: {err}");
        assert!(!beside.path().join("db").exists());
    }
    let (code, out_text, err) = offline(&["audit", "verify", "--data-dir", &rd]);
    assert_eq!(code, 0, "{out_text}{err}");
    assert!(
        out_text.contains("0 problem(s)") && out_text.contains("1 article review histories"),
        "{out_text}"
    );

    // A server on the restored dir: the same annotations, review, review
    // history and annotation history; the next write is the next revision.
    let restored = TestServer::start_in(target).await;
    let mut alice2 = restored.client().await;
    let mut rosa2 = restored.client_with(Some(REVIEWER)).await;
    let (copy, copy_at) = snapshot(&mut alice2).await;
    assert_eq!((copy, copy_at), (source, at));
    let copy_review = review(&mut rosa2).await;
    assert_eq!(
        (
            copy_review.state,
            copy_review.etag.clone(),
            copy_review.sign_off.clone()
        ),
        (
            source_review.state,
            source_review.etag.clone(),
            source_review.sign_off.clone()
        )
    );
    let copy_events = rosa2
        .list_review_events(pb::ListReviewEventsRequest {
            parent: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(copy_events, source_events);
    assert_eq!(history(&mut alice2, gone.name.clone()).await, source_history);
    let next = create(&mut alice2, A1, find_span(&text, "Korea"), Verdict::Verified).await;
    assert_eq!(next.etag, format!("\"{}\"", at + 1));
    drop(server);
}

/// A backup taken while writers write is still one revision: restored, its
/// audit passes and it holds exactly the writes up to its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_is_one_revision() {
    let server = TestServer::start().await;
    let text = seed_text(A1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut c = server.client().await;
        let stop = stop.clone();
        let span = find_span(&text, "조태열");
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                create(&mut c, A1, span, [Verdict::Verified, Verdict::Disputed][w % 2]).await;
                n += 1;
            }
            n
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.fcbackup");
    let o = cli(
        &server,
        ADMIN,
        vec![
            "backup".into(),
            out.to_str().unwrap().into(),
            "--output".into(),
            "json".into(),
        ],
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let revision = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["revision"]
        .as_u64()
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let td = target.path().to_str().unwrap();
    let (code, _, err) = offline(&["restore", out.to_str().unwrap(), "--data-dir", td]);
    assert_eq!(code, 0, "{err}");
    let (code, report, err) = offline(&["audit", "verify", "--data-dir", td, "--output", "json"]);
    assert_eq!(code, 0, "{report}{err}");
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["revision"], revision);
    // Every create is one revision: the backup holds exactly those up to it.
    let restored = TestServer::start_in(target).await;
    let (copy, at) = snapshot(&mut restored.client().await).await;
    assert_eq!(at, revision);
    assert_eq!(copy.len() as u64, revision, "{} created in all", written);
}

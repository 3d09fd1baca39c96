//! Regression tests for the adversarial review (issue 10): each fails on
//! the code before its fix. Fault injection lives in `tests/faults.rs`.

use std::collections::HashMap;

use crate::common::*;
use factcheck::store::{Store, StoreConfig};
use pb::Verdict;
use proptest::prelude::*;

const KOREAN: &str = "001_728dec46794c22c1";

/// Checks the audit history of a stopped server's data dir offline, as
/// `factcheck audit verify` does.
fn verify_offline(dir: &std::path::Path) -> Vec<String> {
    let store = Store::open(&StoreConfig::new(dir)).unwrap();
    store.verify_audit().unwrap().problems
}

async fn history(client: &mut Client, name: &str) -> Vec<pb::AnnotationRevision> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                offset_encoding: 0,
                name: name.into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn update_child(name: &str, verdict: Option<Verdict>, note: Option<&str>) -> pb::UpdateAnnotationRequest {
    let mut a = pb::Annotation {
        name: name.into(),
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = verdict {
        a.verdict = v as i32;
        paths.push("verdict");
    }
    if let Some(n) = note {
        a.note = n.into();
        paths.push("note");
    }
    masked_update(a, &paths)
}

/// Item 1: a batch that changes one annotation twice keeps both changes in
/// its history (they once shared a key, and the second overwrote the first),
/// and the chain still verifies.
#[tokio::test]
async fn a_batch_changing_one_annotation_twice_keeps_both_history_records() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut client, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let batch = client
        .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
            parent: article(KOREAN),
            requests: vec![
                update_child(&a.name, Some(Verdict::Disputed), None),
                update_child(
                    &a.name,
                    None,
                    Some("the ministry spells it “Cho Tae-yul” – see its site"),
                ),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let records = history(&mut client, &a.name).await;
    let kinds: Vec<(u64, Vec<String>)> = records
        .iter()
        .map(|r| {
            (
                r.revision,
                r.changed_fields.clone().map(|m| m.paths).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (a.etag.trim_matches('"').parse().unwrap(), vec![]),
            (batch.revision, vec!["verdict".to_owned()]),
            (batch.revision, vec!["note".to_owned()]),
        ]
    );
    assert_eq!(
        records[1].annotation.as_ref().unwrap().verdict,
        Verdict::Disputed as i32
    );
    assert_eq!(records[2].previous_hash, records[1].hash);
    let dir = server.stop().await;
    assert_eq!(verify_offline(dir.path()), Vec::<String>::new());
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        start: u32,
        len: u32,
        verdict: u8,
    },
    Update {
        pick: usize,
        verdict: u8,
    },
    Delete {
        pick: usize,
    },
    /// Several changes in one batch, picks repeating.
    BatchUpdate {
        picks: Vec<(usize, u8)>,
    },
    BatchCreate {
        n: usize,
    },
}

fn verdict(v: u8) -> Verdict {
    [Verdict::Verified, Verdict::Disputed, Verdict::Unattributed][v as usize % 3]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..3900, 1u32..40, 0u8..3).prop_map(|(start, len, verdict)| Op::Create { start, len, verdict }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(pick, verdict)| Op::Update { pick, verdict }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        2 => prop::collection::vec((any::<usize>(), 0u8..3), 1..6).prop_map(|picks| Op::BatchUpdate { picks }),
        1 => (1usize..4).prop_map(|n| Op::BatchCreate { n }),
    ]
}

/// Runs `ops` (each made legal against the live set) and returns, per
/// annotation ever created, how many changes it had and whether it lives.
async fn run_ops(client: &mut Client, ops: &[Op]) -> HashMap<String, (usize, bool)> {
    let mut model: HashMap<String, (usize, bool)> = HashMap::new();
    let mut live: Vec<String> = Vec::new();
    let length = seed_text(KOREAN).chars().count() as u32;
    for op in ops {
        match op {
            Op::Create {
                start,
                len,
                verdict: v,
            } => {
                let span = pb::Span {
                    start: *start,
                    end: (start + len).min(length),
                };
                let a = create(client, KOREAN, span, verdict(*v)).await;
                model.insert(a.name.clone(), (1, true));
                live.push(a.name);
            }
            Op::BatchCreate { n } => {
                let requests = (0..*n as u32)
                    .map(|i| pb::CreateAnnotationRequest {
                        annotation: Some(new_annotation(
                            pb::Span {
                                start: i * 7,
                                end: i * 7 + 5,
                            },
                            Verdict::Verified,
                        )),
                        ..Default::default()
                    })
                    .collect();
                let created = client
                    .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                        parent: article(KOREAN),
                        requests,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                for a in created.annotations {
                    model.insert(a.name.clone(), (1, true));
                    live.push(a.name);
                }
            }
            Op::Update { pick, verdict: v } if !live.is_empty() => {
                let name = live[pick % live.len()].clone();
                client
                    .update_annotation(update_child(&name, Some(verdict(*v)), Some("updated")))
                    .await
                    .unwrap();
                model.get_mut(&name).unwrap().0 += 1;
            }
            Op::Delete { pick } if !live.is_empty() => {
                let name = live.swap_remove(pick % live.len());
                client
                    .delete_annotation(pb::DeleteAnnotationRequest {
                        reason: String::new(),
                        name: name.clone(),
                        etag: String::new(),
                    })
                    .await
                    .unwrap();
                let entry = model.get_mut(&name).unwrap();
                entry.0 += 1;
                entry.1 = false;
            }
            Op::BatchUpdate { picks } if !live.is_empty() => {
                let requests = picks
                    .iter()
                    .enumerate()
                    .map(|(i, (pick, v))| {
                        update_child(
                            &live[pick % live.len()],
                            Some(verdict(*v)),
                            Some(&format!("change {i}")),
                        )
                    })
                    .collect();
                client
                    .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
                        parent: article(KOREAN),
                        requests,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                for (pick, _) in picks {
                    model.get_mut(&live[pick % live.len()]).unwrap().0 += 1;
                }
            }
            _ => {}
        }
    }
    model
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Item 1, in general: any legal sequence of creates, updates, deletes
    /// and batches (names repeating within a batch) leaves a history with
    /// one record per change, each replaying to the stored state, and an
    /// audit that passes.
    #[test]
    fn every_change_keeps_its_history_record(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let server = TestServer::start().await;
            let mut client = server.client().await;
            let model = run_ops(&mut client, &ops).await;
            for (name, (changes, alive)) in &model {
                let records = history(&mut client, name).await;
                assert_eq!(records.len(), *changes, "{name}: one record per change");
                let last = records.last().unwrap();
                let got = client.get_annotation(pb::GetAnnotationRequest { name: name.clone(), offset_encoding: 0, ..Default::default() }).await;
                if *alive {
                    let stored = got.unwrap().into_inner();
                    let replayed = last.annotation.clone().unwrap();
                    assert_eq!(replayed, stored, "{name}: history ends in the stored state");
                } else {
                    assert_eq!(got.unwrap_err().code(), tonic::Code::NotFound);
                    assert_eq!(last.r#type, pb::annotation_event::Type::Deleted as i32);
                }
            }
            let dir = server.stop().await;
            assert_eq!(verify_offline(dir.path()), Vec::<String>::new());
        });
    }
}

/// Item 2: values over sled's blob threshold (~128 KiB; here the request
/// records of batches with a `request_id`) land in their own files under
/// `db/blobs`, which sled never syncs. A batch is durable when answered (its
/// frame is synced in the write-ahead log); the blob files are synced by the
/// checkpoint that makes sled durable, before the log segment holding their
/// groups is deleted.
#[tokio::test]
async fn sled_the_log_goes_only_after_its_blobs_are_synced_and_is_never_replayed_elsewhere() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first_segment = server.data_dir.path().join("wal").join(format!("{:016x}.wal", 1));
    assert!(first_segment.exists());
    for batch in 0..14 {
        large_batch(&mut client, KOREAN).await.unwrap();
        if batch == 0 {
            let blobs =
                std::fs::read_dir(server.data_dir.path().join("db").join("blobs")).map_or(0, |d| d.count());
            assert!(blobs >= 1, "the request record should be a blob file");
        }
    }
    // The checkpoint runs behind the committer: wait for it to delete the
    // full segment.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while first_segment.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first log segment was never checkpointed");
    assert!(
        server.store.blob_files_synced() >= 1,
        "the checkpoint deleted the log before syncing the blob files"
    );

    // What is left of the log now starts past revision 1: without the store
    // it came from, it must not be replayed into a new one. (The
    // checkpointer may still be making the next segment, under a temporary
    // name it renames, or deleting one: copy the segments that stay.)
    let wal = server.data_dir.path().join("wal");
    let kept = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&wal).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_name().to_string_lossy().ends_with(".wal") {
            continue;
        }
        match std::fs::copy(entry.path(), kept.path().join(entry.file_name())) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("copying {}: {e}", entry.path().display()),
        }
    }
    assert!(
        std::fs::read_dir(kept.path()).unwrap().count() >= 1,
        "no log segment was left to copy"
    );
    let dir = server.stop().await;
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    std::fs::remove_dir_all(dir.path().join("wal")).ok();
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    for entry in std::fs::read_dir(kept.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join("wal").join(entry.file_name())).unwrap();
    }
    let err = Store::open(&StoreConfig::new(dir.path()))
        .err()
        .expect("a foreign log was replayed");
    assert!(err.to_string().contains("not this store's log"), "{err}");
}

/// Item 4: when the seed of an article annotated once changes, even after
/// every annotation on it is deleted, the history still quotes what the
/// analyst judged: the correction is the article's next revision, and the
/// history reads the revision it was made on.
#[tokio::test]
async fn a_changed_seed_never_rewrites_what_a_deleted_annotation_quoted() {
    let seeds = tempfile::tempdir().unwrap();
    let original = seed_text(KOREAN);
    std::fs::write(seeds.path().join(format!("{KOREAN}.txt")), &original).unwrap();
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup.clone()).await;
    let mut client = server.client().await;
    let span = find_span(&original, "조태열");
    let a = create(&mut client, KOREAN, span, Verdict::Disputed).await;
    assert_eq!(a.quote, "조태열");
    client
        .delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: a.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let dir = server.stop().await;

    let corrected = original.replace("조태열", "趙兌烈");
    std::fs::write(seeds.path().join(format!("{KOREAN}.txt")), &corrected).unwrap();
    let server = TestServer::start_with(dir, setup).await;
    let mut client = server.client().await;
    let now = client
        .get_article(pb::GetArticleRequest {
            name: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.text, corrected, "the corrected seed is the current text");
    assert_eq!(now.revision_id, "2");
    assert_eq!(now.revision_author, "seeds");
    let first = client
        .get_article(pb::GetArticleRequest {
            name: format!("{}@1", article(KOREAN)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.text, original, "revision 1 keeps the text that was judged");
    let records = history(&mut client, &a.name).await;
    for r in &records {
        assert_eq!(r.annotation.as_ref().unwrap().quote, "조태열");
    }
}

/// An annotation of about 440 KB: the longest note and the most sources,
/// of four-byte characters.
fn huge(start: u32) -> pb::Annotation {
    pb::Annotation {
        note: "🙂".repeat(10_000),
        sources: (0..50).map(|i| format!("{i}{}", "😀".repeat(2_040))).collect(),
        ..new_annotation(
            pb::Span {
                start,
                end: start + 3,
            },
            Verdict::Disputed,
        )
    }
}

fn code_and_reason(status: &tonic::Status) -> (tonic::Code, String) {
    use tonic_types::StatusExt;
    (
        status.code(),
        status.get_error_details().error_info().unwrap().reason.clone(),
    )
}

/// Item 5: no response outgrows the limit. BatchGet refuses a repeated name
/// (one 78 KB request once made a 450 MB answer) and an answer over the
/// limit; a list ends its page early and pages on; a batch write whose
/// answer would be over it is refused before anything is written.
#[tokio::test]
async fn no_response_outgrows_the_limit() {
    let setup = Setup {
        max_response_bytes: 1024 * 1024,
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut client = server.client().await;
    let mut names = Vec::new();
    for i in 0..5 {
        let a = client
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(KOREAN),
                annotation: Some(huge(i * 10)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.push(a.name);
    }

    let err = client
        .batch_get_annotations(pb::BatchGetAnnotationsRequest {
            offset_encoding: 0,
            parent: article(KOREAN),
            names: vec![names[0].clone(), names[0].clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("names[1]"), "{}", err.message());

    let err = client
        .batch_get_annotations(pb::BatchGetAnnotationsRequest {
            offset_encoding: 0,
            parent: article(KOREAN),
            names: names.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (tonic::Code::ResourceExhausted, "RESPONSE_TOO_LARGE".into())
    );

    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_annotations(pb::ListAnnotationsRequest {
                parent: article(KOREAN),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(prost::Message::encoded_len(&page) <= 1024 * 1024);
        pages += 1;
        seen.extend(page.annotations.into_iter().map(|a| a.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 3, "{pages} pages");
    seen.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let (before, revision) = snapshot(&mut client).await;
    let err = client
        .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
            parent: article(KOREAN),
            requests: names
                .iter()
                .map(|n| update_child(n, Some(Verdict::Verified), None))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (tonic::Code::ResourceExhausted, "RESULT_TOO_LARGE".into())
    );
    assert_eq!(
        snapshot(&mut client).await,
        (before, revision),
        "a refused batch changes nothing"
    );
}

async fn watch(client: &mut Client, start_revision: u64) -> tonic::Streaming<pb::WatchAnnotationsResponse> {
    client
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(KOREAN),
            start_revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Item 6: a stalled watcher costs a bounded number of bytes, whatever the
/// size of the changes: the live ring announces a large change by its
/// revision only, and a stream's queue holds at most its byte budget. When
/// the client reads again it gets every change, in order, once.
#[tokio::test]
async fn a_stalled_watcher_holds_a_bounded_number_of_bytes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let a = client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(KOREAN),
            annotation: Some(huge(0)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ring = server.store.subscribe();
    let mut stalled = watch(&mut client, 0).await;
    let created = stalled.message().await.unwrap().unwrap();
    let mut revisions = Vec::new();
    for i in 0..24 {
        let verdict = [Verdict::Verified, Verdict::Disputed][i % 2];
        let updated = client
            .update_annotation(update_child(&a.name, Some(verdict), None))
            .await
            .unwrap()
            .into_inner();
        revisions.push(updated.etag.trim_matches('"').parse::<u64>().unwrap());
    }
    match ring.recv().await.unwrap() {
        factcheck::store::Live::OnDisk { revision } => assert_eq!(revision, revisions[0]),
        factcheck::store::Live::Change(c) => {
            panic!("a {} event change was kept whole in the ring", c.events.len())
        }
    }
    let peak = server.gauge.peak_queued_bytes();
    assert!(
        peak <= factcheck::watch::STREAM_BUDGET,
        "{peak} bytes queued for one stream"
    );

    let mut got = Vec::new();
    while got.len() < revisions.len() {
        let msg = stalled.message().await.unwrap().unwrap();
        if !msg.events.is_empty() {
            assert!(msg.revision > created.revision);
            got.push(msg.revision);
        }
    }
    assert_eq!(got, revisions);
}

/// Item 9: one analyst cannot take every watch slot.
#[tokio::test]
async fn one_analyst_cannot_take_every_watch_slot() {
    let mut setup = Setup::default();
    setup.watch.max_per_analyst = 3;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut alice = server.client().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(watch(&mut alice, 0).await);
    }
    let err = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (
            tonic::Code::ResourceExhausted,
            "TOO_MANY_WATCHERS_FOR_ANALYST".into()
        )
    );
    let mut bob = server.client_with(Some(BOB)).await;
    watch(&mut bob, 0).await.message().await.unwrap().unwrap();
    // A slot given back can be taken again.
    drop(held.pop());
    let mut gauge = server.gauge.subscribe();
    gauge.wait_for(|n| *n <= 3).await.unwrap();
    watch(&mut alice, 0).await.message().await.unwrap().unwrap();
}

/// Item 14: a watch from a future revision reports progress at the real
/// head, not at the revision it waits for.
#[tokio::test]
async fn progress_of_a_watch_from_the_future_is_the_real_head() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut client, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let head: u64 = a.etag.trim_matches('"').parse().unwrap();
    let mut stream = watch(&mut client, head + 1000).await;
    let created = stream.message().await.unwrap().unwrap();
    assert_eq!(created.revision, head);
    let progress = stream.message().await.unwrap().unwrap();
    assert_eq!(
        progress.kind,
        pb::watch_annotations_response::Kind::Progress as i32
    );
    assert_eq!(progress.revision, head);
}

/// A client that goes away while its stream's byte budget is full frees
/// its watch slot (and the store) at once: its queued messages once held the
/// budget, and the task, for ever.
#[tokio::test]
async fn a_watcher_gone_with_a_full_budget_gives_its_slot_back() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let a = client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(KOREAN),
            annotation: Some(huge(0)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stalled = watch(&mut client, 0).await;
    stalled.message().await.unwrap().unwrap();
    for i in 0..24 {
        let verdict = [Verdict::Verified, Verdict::Disputed][i % 2];
        client
            .update_annotation(update_child(&a.name, Some(verdict), None))
            .await
            .unwrap();
    }
    drop(stalled);
    let mut live = server.gauge.subscribe();
    tokio::time::timeout(std::time::Duration::from_secs(20), live.wait_for(|n| *n == 0))
        .await
        .expect("the watch task of a gone client never ended")
        .unwrap();
}

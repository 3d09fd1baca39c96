//! WatchAnnotations end to end: ordered, unique, reliable, resumable,
//! filtered, compacted, progress, slow watchers, released resources.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use pb::Verdict;
use pb::watch_annotations_response::Kind;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

const A1: &str = "001_728dec46794c22c1";
const A2: &str = "002_946fad7c8fee627f";

/// Bounds every wait so a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn watch(
    client: &mut Client,
    req: pb::WatchAnnotationsRequest,
) -> Streaming<pb::WatchAnnotationsResponse> {
    let mut stream = client.watch_annotations(req).await.unwrap().into_inner();
    let created = next(&mut stream).await;
    assert_eq!(created.kind, Kind::Created as i32);
    stream
}

async fn watch_all(client: &mut Client, start_revision: u64) -> Streaming<pb::WatchAnnotationsResponse> {
    watch(
        client,
        pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision,
            ..Default::default()
        },
    )
    .await
}

async fn next(stream: &mut Streaming<pb::WatchAnnotationsResponse>) -> pb::WatchAnnotationsResponse {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("no message in time")
        .expect("stream failed")
        .expect("stream ended")
}

/// EVENTS messages until one at `revision` or beyond; checks that revisions
/// strictly increase and each event's etag is its message's revision.
async fn events_through(
    stream: &mut Streaming<pb::WatchAnnotationsResponse>,
    revision: u64,
) -> Vec<pb::WatchAnnotationsResponse> {
    let mut out: Vec<pb::WatchAnnotationsResponse> = Vec::new();
    let mut seen = 0;
    while seen < revision {
        let msg = next(stream).await;
        assert!(
            msg.revision >= seen,
            "revision went back: {} after {seen}",
            msg.revision
        );
        if msg.kind == Kind::Events as i32 {
            assert!(
                msg.revision > seen || out.is_empty(),
                "duplicate revision {}",
                msg.revision
            );
            assert!(!msg.events.is_empty());
            assert!(msg.commit_time.is_some());
            for e in &msg.events {
                let a = e.annotation.as_ref().unwrap();
                if e.r#type != pb::annotation_event::Type::Deleted as i32 {
                    assert_eq!(a.etag, format!("\"{}\"", msg.revision));
                }
            }
            out.push(msg.clone());
        }
        seen = msg.revision;
    }
    out
}

/// The state the events build up: name → annotation.
fn replay(messages: &[pb::WatchAnnotationsResponse]) -> BTreeMap<String, pb::Annotation> {
    let mut state = BTreeMap::new();
    for m in messages {
        for e in &m.events {
            let a = e.annotation.clone().unwrap();
            if e.r#type == pb::annotation_event::Type::Deleted as i32 {
                assert!(state.remove(&a.name).is_some(), "deleted {} never seen", a.name);
            } else {
                if e.r#type == pb::annotation_event::Type::Updated as i32 {
                    assert_eq!(state.get(&a.name), e.previous.as_ref(), "previous of {}", a.name);
                }
                state.insert(a.name.clone(), a);
            }
        }
    }
    state
}

fn as_map(list: Vec<pb::Annotation>) -> BTreeMap<String, pb::Annotation> {
    list.into_iter().map(|a| (a.name.clone(), a)).collect()
}

/// A writer's mixed work: creates, then updates and deletes some of them.
async fn write_mix(mut client: Client, seed: u32, n: u32) -> u32 {
    let verdicts = [Verdict::Verified, Verdict::Disputed, Verdict::Unattributed];
    let mut mutations = 0;
    for i in 0..n {
        let start = (seed * 31 + i * 7) % 3000;
        let a = create(
            &mut client,
            A1,
            pb::Span {
                start,
                end: start + 5,
            },
            verdicts[(i % 3) as usize],
        )
        .await;
        mutations += 1;
        if i % 3 == 0 {
            let updated = client
                .update_annotation(pb::UpdateAnnotationRequest {
                    offset_encoding: 0,
                    annotation: Some(pb::Annotation {
                        name: a.name.clone(),
                        note: format!("re-checked by writer {seed}: “{i}”"),
                        ..Default::default()
                    }),
                    update_mask: None,
                    etag: a.etag.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            mutations += 1;
            if i % 2 == 0 {
                client
                    .delete_annotation(pb::DeleteAnnotationRequest {
                        reason: String::new(),
                        name: a.name.clone(),
                        etag: updated.etag,
                    })
                    .await
                    .unwrap();
                mutations += 1;
            }
        }
    }
    mutations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_watchers_get_every_event_once_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut watchers = Vec::new();
    for _ in 0..4 {
        watchers.push(watch_all(&mut client, 0).await);
    }
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let c = client.clone();
            tokio::spawn(write_mix(c, w, 30))
        })
        .collect();
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    let (list, head) = snapshot(&mut client).await;
    assert_eq!(head, u64::from(total));

    for mut stream in watchers {
        let messages = events_through(&mut stream, head).await;
        // One mutation per revision: every revision 1..=head exactly once.
        let revisions: Vec<u64> = messages.iter().map(|m| m.revision).collect();
        assert_eq!(revisions, (1..=head).collect::<Vec<_>>());
        assert_eq!(replay(&messages), as_map(list.clone()));
    }
}

#[tokio::test]
async fn resume_from_any_revision_after_the_client_drops() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    write_mix(client.clone(), 1, 20).await;
    let (_, head) = snapshot(&mut client).await;

    let mut full = watch_all(&mut client, 1).await;
    let history = events_through(&mut full, head).await;
    drop(full);

    for from in [1, 2, head / 2, head - 1, head] {
        // Read a few, drop, resume from the last seen + 1.
        let mut stream = watch_all(&mut client, from).await;
        let first = events_through(&mut stream, from + 2.min(head - from)).await;
        let last = first.last().unwrap().revision;
        drop(stream);
        let mut resumed = watch_all(&mut client, last + 1).await;
        let rest = if last < head {
            events_through(&mut resumed, head).await
        } else {
            Vec::new()
        };
        let got: Vec<_> = first.into_iter().chain(rest).collect();
        let expected: Vec<_> = history.iter().filter(|m| m.revision >= from).cloned().collect();
        assert_eq!(got, expected, "resumed from {from}");
    }

    // List, then watch from the list's revision + 1: no gap, no duplicate.
    let (list, revision) = snapshot(&mut client).await;
    let mut stream = watch_all(&mut client, revision + 1).await;
    let a = create(&mut client, A2, pb::Span { start: 3, end: 9 }, Verdict::Disputed).await;
    let msg = events_through(&mut stream, revision + 1).await;
    assert_eq!(msg.len(), 1);
    assert_eq!(msg[0].revision, revision + 1);
    assert_eq!(msg[0].events[0].annotation.as_ref(), Some(&a));
    assert!(!list.iter().any(|x| x.name == a.name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_server_restart() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    write_mix(client.clone(), 2, 15).await;
    let (_, head) = snapshot(&mut client).await;
    let mut before = watch_all(&mut client, 1).await;
    let history = events_through(&mut before, head).await;
    drop((before, client));

    let server = server.restart().await;
    let mut client = server.client().await;
    let mut stream = watch_all(&mut client, 1).await;
    assert_eq!(events_through(&mut stream, head).await, history);
    // And it continues live after the replay.
    let a = create(&mut client, A2, pb::Span { start: 0, end: 2 }, Verdict::Verified).await;
    let live = events_through(&mut stream, head + 1).await;
    assert_eq!(live[0].revision, head + 1);
    assert_eq!(live[0].events[0].annotation.as_ref(), Some(&a));
}

#[tokio::test]
async fn filters_deliver_exactly_the_matching_events() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut filtered = watch(
        &mut alice,
        pb::WatchAnnotationsRequest {
            parent: article(A1),
            verdict: Verdict::Disputed as i32,
            analyst: "bob".into(),
            ..Default::default()
        },
    )
    .await;
    let mut everything = watch_all(&mut alice, 0).await;

    let text = seed_text(A1);
    let span = find_span(&text, "조태열");
    // Matches: bob, A1, disputed.
    let hit = create(&mut bob, A1, span, Verdict::Disputed).await;
    // Misses: wrong analyst, wrong verdict, wrong article.
    create(&mut alice, A1, span, Verdict::Disputed).await;
    create(&mut bob, A1, span, Verdict::Verified).await;
    create(&mut bob, A2, pb::Span { start: 0, end: 4 }, Verdict::Disputed).await;
    // Leaving the selection is seen: disputed → verified.
    let moved = bob
        .update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(pb::Annotation {
                name: hit.name.clone(),
                verdict: Verdict::Verified as i32,
                ..Default::default()
            }),
            update_mask: None,
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, head) = snapshot(&mut alice).await;
    assert_eq!(head, 5);

    let all = events_through(&mut everything, head).await;
    let expected: Vec<_> = all
        .iter()
        .filter_map(|m| {
            let events: Vec<_> = m
                .events
                .iter()
                .filter(|e| {
                    [e.annotation.as_ref(), e.previous.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|a| {
                            a.name.starts_with(&article(A1))
                                && a.analyst == "bob"
                                && a.verdict == Verdict::Disputed as i32
                        })
                })
                .cloned()
                .collect();
            (!events.is_empty()).then(|| pb::WatchAnnotationsResponse { events, ..m.clone() })
        })
        .collect();
    assert_eq!(expected.len(), 2);
    let got = events_through(&mut filtered, 5).await;
    assert_eq!(got, expected);
    assert_eq!(got[0].events[0].annotation.as_ref(), Some(&hit));
    assert_eq!(got[1].events[0].annotation.as_ref(), Some(&moved));
    assert_eq!(got[1].events[0].previous.as_ref(), Some(&hit));

    // Bad filters are refused up front.
    let s = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            verdict: 12,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

/// The status a watch from `start` fails with, up front or on the stream.
async fn watch_error(client: &mut Client, start: u64) -> tonic::Status {
    let resp = client
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision: start,
            ..Default::default()
        })
        .await;
    let mut stream = match resp {
        Err(s) => return s,
        Ok(resp) => resp.into_inner(),
    };
    loop {
        match stream.message().await {
            Err(s) => return s,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch from {start} ended without an error"),
        }
    }
}

#[tokio::test]
async fn compacted_revisions_end_the_watch_with_the_oldest_kept() {
    let mut setup = Setup::default();
    setup.retention.revisions = 5;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut client = server.client().await;
    for i in 0..20 {
        create(
            &mut client,
            A2,
            pb::Span { start: i, end: i + 1 },
            Verdict::Verified,
        )
        .await;
    }
    let (_, head) = snapshot(&mut client).await;
    assert_eq!(head, 20);
    let oldest = head - 5 + 1;

    for start in [1, oldest - 1] {
        let status = watch_error(&mut client, start).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "REVISION_COMPACTED");
        assert_eq!(info.metadata.get("oldest_revision"), Some(&oldest.to_string()));
    }

    // The oldest kept revision still replays.
    let mut stream = watch_all(&mut client, oldest).await;
    let got = events_through(&mut stream, head).await;
    assert_eq!(
        got.iter().map(|m| m.revision).collect::<Vec<_>>(),
        (oldest..=head).collect::<Vec<_>>()
    );

    // Compaction survives a restart.
    drop((stream, client));
    let server = server.restart().await;
    let mut client = server.client().await;
    let failed = watch_error(&mut client, oldest - 1).await;
    assert_eq!(failed.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn an_idle_watch_gets_progress_at_the_current_revision() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, A2, pb::Span { start: 0, end: 1 }, Verdict::Verified).await;
    // A filter that matches nothing: the write is skipped, progress covers it.
    let mut stream = watch(
        &mut client,
        pb::WatchAnnotationsRequest {
            parent: article(A1),
            start_revision: 1,
            ..Default::default()
        },
    )
    .await;
    let msg = next(&mut stream).await;
    assert_eq!(msg.kind, Kind::Progress as i32);
    assert_eq!(msg.revision, 1);
    assert!(msg.events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_blocks_no_one_and_catches_up() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut c = client.clone();
    // Never read until the writes are done.
    let mut stalled = watch_all(&mut c, 0).await;
    let mut reader = watch_all(&mut c, 0).await;
    let total: u64 = 3_000;
    let reading = tokio::spawn(async move { events_through(&mut reader, total).await });

    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let mut c = client.clone();
            tokio::spawn(async move {
                for i in 0..total / 16 + u64::from(w < total % 16) {
                    let start = ((w * 97 + i * 13) % 3000) as u32;
                    // Large events, so the stalled stream's buffers (HTTP/2
                    // windows, its queue, the live ring) all overflow.
                    let mut a = new_annotation(
                        pb::Span {
                            start,
                            end: start + 3,
                        },
                        Verdict::Verified,
                    );
                    a.note = "“checked” – ".repeat(400);
                    c.create_annotation(pb::CreateAnnotationRequest {
                        parent: article(A1),
                        annotation: Some(a),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    tokio::time::timeout(PATIENCE, async {
        for w in writers {
            w.await.unwrap();
        }
    })
    .await
    .expect("writes were held up by a stalled watcher");

    let read = tokio::time::timeout(PATIENCE, reading).await.unwrap().unwrap();
    assert_eq!(read.len() as u64, total);
    // The stalled one now reads everything, in order, exactly once.
    let caught_up = events_through(&mut stalled, total).await;
    assert_eq!(caught_up, read);
    assert!(
        server.gauge.fell_behind() > 0,
        "the stalled watcher never left the live ring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_released_when_clients_go_and_end_on_shutdown() {
    let server = TestServer::start().await;
    let mut gauge = server.gauge.subscribe();
    let mut client = server.client().await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(watch_all(&mut client, 0).await);
    }
    assert_eq!(server.gauge.live(), 10);
    drop(streams);
    tokio::time::timeout(PATIENCE, gauge.wait_for(|n| *n == 0))
        .await
        .expect("watchers not released")
        .unwrap();

    // Shutdown ends open streams with UNAVAILABLE, promptly.
    let mut stream = watch_all(&mut client, 0).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown waited on a watch stream");
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    drop(stopped);
}

#[tokio::test]
async fn too_many_watchers_are_refused() {
    let mut setup = Setup::default();
    setup.watch.max_watchers = 2;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut client = server.client().await;
    let _a = watch_all(&mut client, 0).await;
    let _b = watch_all(&mut client, 0).await;
    let s = client
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    let unauthenticated = server
        .client_with(None)
        .await
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

//! The real binary as a child process: SIGKILL in the middle of writes,
//! SIGTERM with streams and calls open, SIGHUP after token changes, and the
//! offline audit check.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use pb::Verdict;
use rand::{Rng, SeedableRng};
use tonic::Code;

const ARTICLES: [(&str, u32); 3] = [
    ("000_9260bb247249f31b", 3470),
    ("001_728dec46794c22c1", 3985),
    ("002_946fad7c8fee627f", 6215),
];

/// A write whose outcome the writer never heard: it may or may not be in.
#[derive(Debug)]
enum Doubt {
    Create { tag: String },
    Batch { tag: String, size: usize },
    Update { name: String, tag: String, verdict: i32 },
    Delete { name: String },
}

/// One writer's view: what the server acknowledged, per annotation
/// (`None`: acknowledged deleted), and the write it was in when the server
/// died.
#[derive(Default)]
struct Writer {
    acked: HashMap<String, Option<pb::Annotation>>,
    doubt: Option<Doubt>,
}

/// Writes until the first failure (the kill), recording every acknowledgement
/// and announcing it on `acks`.
async fn write_until_failure(
    mut c: Client,
    mut w: Writer,
    id: usize,
    cycle: usize,
    seed: u64,
    acks: tokio::sync::mpsc::UnboundedSender<()>,
) -> Writer {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for op in 0.. {
        let tag = format!("w{id}-c{cycle}-op{op} – “tagged”");
        let live: Vec<String> = w
            .acked
            .iter()
            .filter(|(_, a)| a.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let (article, len) = ARTICLES[rng.random_range(0..ARTICLES.len())];
        let start = rng.random_range(0..len - 1);
        let span = pb::Span {
            start,
            end: rng.random_range(start + 1..=len.min(start + 80)),
        };
        let verdict = rng.random_range(1..=3);
        let annotation = pb::Annotation {
            span: Some(span),
            verdict,
            note: tag.clone(),
            ..Default::default()
        };
        match rng.random_range(0..10) {
            0..=3 => {
                let r = c
                    .create_annotation(pb::CreateAnnotationRequest {
                        parent: article_name(article),
                        annotation: Some(annotation),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(a) => {
                        let a = a.into_inner();
                        w.acked.insert(a.name.clone(), Some(a));
                        let _ = acks.send(());
                    }
                    Err(_) => {
                        w.doubt = Some(Doubt::Create { tag });
                        return w;
                    }
                }
            }
            4..=5 => {
                let size = rng.random_range(2..20);
                let requests = (0..size)
                    .map(|_| pb::CreateAnnotationRequest {
                        annotation: Some(annotation.clone()),
                        ..Default::default()
                    })
                    .collect();
                let r = c
                    .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                        parent: article_name(article),
                        requests,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => {
                        for a in r.into_inner().annotations {
                            w.acked.insert(a.name.clone(), Some(a));
                        }
                        let _ = acks.send(());
                    }
                    Err(_) => {
                        w.doubt = Some(Doubt::Batch { tag, size });
                        return w;
                    }
                }
            }
            6..=8 if !live.is_empty() => {
                let name = live[rng.random_range(0..live.len())].clone();
                let r = c
                    .update_annotation(masked_update(
                        pb::Annotation {
                            name: name.clone(),
                            verdict,
                            note: tag.clone(),
                            ..Default::default()
                        },
                        &["verdict", "note"],
                    ))
                    .await;
                match r {
                    Ok(a) => {
                        w.acked.insert(name, Some(a.into_inner()));
                        let _ = acks.send(());
                    }
                    Err(_) => {
                        w.doubt = Some(Doubt::Update { name, tag, verdict });
                        return w;
                    }
                }
            }
            _ if !live.is_empty() => {
                let name = live[rng.random_range(0..live.len())].clone();
                let r = c
                    .delete_annotation(pb::DeleteAnnotationRequest {
                        reason: String::new(),
                        name: name.clone(),
                        etag: String::new(),
                    })
                    .await;
                match r {
                    Ok(_) => {
                        w.acked.insert(name, None);
                        let _ = acks.send(());
                    }
                    Err(_) => {
                        w.doubt = Some(Doubt::Delete { name });
                        return w;
                    }
                }
            }
            _ => {}
        }
    }
    unreachable!()
}

fn article_name(id: &str) -> String {
    format!("articles/{id}")
}

/// Checks the stored annotations against what each writer was told, settles
/// each doubt by what is stored (checking it is one of the two allowed
/// outcomes), and returns how many doubts there were.
fn reconcile(writers: &mut [Writer], stored: &HashMap<String, pb::Annotation>) -> usize {
    let mut doubts = 0;
    let mut claimed = 0;
    for w in writers.iter_mut() {
        let doubt = w.doubt.take();
        doubts += usize::from(doubt.is_some());
        let doubted = match &doubt {
            Some(Doubt::Update { name, .. } | Doubt::Delete { name }) => Some(name.clone()),
            _ => None,
        };
        for (name, acked) in w.acked.iter_mut() {
            let now = stored.get(name);
            if Some(name) == doubted.as_ref() {
                match &doubt {
                    Some(Doubt::Update { tag, verdict, .. }) => {
                        let now = now.expect("an annotation being updated is never lost");
                        let before = acked.as_ref().unwrap();
                        let old = now == before;
                        let new = now.note == *tag
                            && now.verdict == *verdict
                            && now.span == before.span
                            && now.sources == before.sources;
                        assert!(old || new, "{name}: neither before nor after the update: {now:?}");
                    }
                    Some(Doubt::Delete { .. }) => {
                        assert!(now.is_none() || now == acked.as_ref(), "{name}: half deleted");
                    }
                    _ => unreachable!(),
                }
                *acked = now.cloned();
            } else {
                assert_eq!(now, acked.as_ref(), "{name}: not as acknowledged");
            }
        }
        if let Some(Doubt::Create { tag } | Doubt::Batch { tag, .. }) = &doubt {
            let found: Vec<&pb::Annotation> = stored.values().filter(|a| a.note == *tag).collect();
            let allowed = match &doubt {
                Some(Doubt::Batch { size, .. }) => vec![0, *size],
                _ => vec![0, 1],
            };
            assert!(
                allowed.contains(&found.len()),
                "{tag}: {} of {allowed:?} created: a batch was half applied",
                found.len()
            );
            for a in found {
                w.acked.insert(a.name.clone(), Some(a.clone()));
            }
        }
        claimed += w.acked.values().filter(|a| a.is_some()).count();
    }
    assert_eq!(claimed, stored.len(), "stored annotations nobody wrote");
    doubts
}

/// Replays the whole changelog from revision 1 and returns the state it
/// builds and the head revision.
async fn replay_changelog(c: &mut Client) -> (HashMap<String, pb::Annotation>, u64) {
    let mut stream = c
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let head = first.revision;
    let mut state = HashMap::new();
    let mut next = 1;
    while next <= head {
        let m = stream.message().await.unwrap().unwrap();
        if m.kind != pb::watch_annotations_response::Kind::Events as i32 {
            continue;
        }
        assert_eq!(m.revision, next, "the changelog has a gap or a repeat");
        next += 1;
        for e in m.events {
            let a = e.annotation.unwrap();
            if e.r#type == pb::annotation_event::Type::Deleted as i32 {
                state.remove(&a.name);
            } else {
                state.insert(a.name.clone(), a);
            }
        }
    }
    (state, head)
}

/// How one cycle of [`crash_cycles`] ends.
#[derive(Clone)]
enum Crash {
    /// SIGKILL once a random number of writes were acknowledged.
    Kill,
    /// The server aborts itself at a failpoint (`FACTCHECK_CRASH_AT`, test
    /// builds only): exactly at a log rotation or a checkpoint.
    At(&'static str),
    /// `FAILPOINTS` holds the server at a failpoint for good (the
    /// checkpointer, say, so segments pile up); SIGKILL after `n` writes
    /// were acknowledged.
    KillWhileHeld(&'static str, usize),
}

/// Starts the server on one data dir again and again, writes with four
/// writers until it dies (as `crashes` says), and checks after each restart
/// that everything acknowledged is there exactly, that the changelog and
/// histories agree, and that no revision a client saw is handed out again.
/// Returns how many writes were in flight at a crash.
async fn crash_cycles(
    extra: &[&str],
    crashes: &[Crash],
    seed: u64,
) -> (usize, Vec<Writer>, std::path::PathBuf, tempfile::TempDir) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut writers: Vec<Writer> = (0..4).map(|_| Writer::default()).collect();
    let mut doubts = 0;
    // The highest revision any client was told of.
    let mut seen_revision = 0u64;
    for cycle in 0..=crashes.len() {
        let server = ChildServer::start(&data_dir, extra);
        let token = server.admin_token();
        let mut c = server.client(&token).await;

        // After the previous crash: everything acknowledged, exactly.
        let (all, revision) = snapshot(&mut c).await;
        let stored: HashMap<String, pb::Annotation> = all.into_iter().map(|a| (a.name.clone(), a)).collect();
        doubts += reconcile(&mut writers, &stored);
        assert!(
            revision >= seen_revision,
            "the store is at revision {revision} after a crash, but a client was told of {seen_revision}: \
             the revisions between would be handed out again"
        );
        // The changelog, the revision counter and the history agree with it.
        let (replayed, head) = replay_changelog(&mut c).await;
        assert_eq!(head, revision);
        assert_eq!(replayed, stored, "the changelog disagrees with the data");
        for a in stored.values() {
            let etag: u64 = a.etag.trim_matches('"').parse().unwrap();
            assert!(etag <= revision);
            let h = c
                .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                    name: a.name.clone(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .revisions;
            assert_eq!(
                h.last().unwrap().annotation.as_ref(),
                Some(a),
                "history disagrees"
            );
        }
        let Some(crash) = crashes.get(cycle).cloned() else {
            break;
        };
        drop(c);
        drop(server);
        let mut server = match &crash {
            Crash::Kill => ChildServer::start(&data_dir, extra),
            Crash::At(point) => {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
                cmd.env("FACTCHECK_CRASH_AT", point);
                let mut s = ChildServer::spawn(cmd, &data_dir, extra);
                s.wait_until_serving();
                s
            }
            Crash::KillWhileHeld(point, _) => {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
                cmd.env("FAILPOINTS", format!("{point}=pause"));
                let mut s = ChildServer::spawn(cmd, &data_dir, extra);
                s.wait_until_serving();
                s
            }
        };
        let c = server.client(&token).await;

        // Four writers until the server dies, with writes in flight.
        let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = std::mem::take(&mut writers)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let c = c.clone();
                let seed = rng.random();
                tokio::spawn(write_until_failure(c, w, i, cycle, seed, acks.clone()))
            })
            .collect();
        drop(acks);
        match crash {
            Crash::Kill | Crash::KillWhileHeld(..) => {
                let n = match crash {
                    Crash::KillWhileHeld(_, n) => n,
                    _ => rng.random_range(20..300),
                };
                for _ in 0..n {
                    acked.recv().await.expect("the writers stopped before the kill");
                }
                server.child.kill().unwrap();
            }
            Crash::At(point) => {
                let name = point.rsplit_once(':').map_or(point, |(n, _)| n);
                server.wait_for_log(&format!("crashing at failpoint {name}"));
            }
        }
        let status = server.child.wait().unwrap();
        if matches!(crash, Crash::At(_)) {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
        }
        for t in tasks {
            writers.push(t.await.unwrap());
        }
        for w in &writers {
            for a in w.acked.values().flatten() {
                seen_revision = seen_revision.max(a.etag.trim_matches('"').parse().unwrap());
            }
        }
    }
    (doubts, writers, data_dir, dir)
}

fn crash_seed() -> u64 {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CRASH_SEED={seed}");
    seed
}

/// The log rotates every few writes (4 KiB segments), and the server
/// crashes exactly where rotation is delicate: as the log moves to a new
/// segment, with the checkpointer held so full segments pile up behind the
/// one written (recovery once stopped at the first segment's padding and
/// lost every acknowledged write after it), before a checkpoint, and after
/// sled was flushed but before the segments went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_crashes_at_log_rotation_and_checkpoint_lose_nothing_acknowledged() {
    let crashes = [
        Crash::KillWhileHeld("checkpoint", 60),
        Crash::At("wal::rotate:5"),
        Crash::At("checkpoint:3"),
        Crash::At("checkpoint::flushed:2"),
        Crash::At("wal::segment_made:4"),
        Crash::Kill,
    ];
    let (doubts, writers, data_dir, _dir) =
        crash_cycles(&["--wal-segment-bytes", "4096"], &crashes, crash_seed()).await;
    println!("{doubts} writes were in flight at a crash");
    let live: usize = writers
        .iter()
        .map(|w| w.acked.values().filter(|a| a.is_some()).count())
        .sum();
    assert!(live > 50, "only {live} annotations: the writers barely ran");
    let (code, out, err) = factcheck_cli(&["audit", "verify", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 problem(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_nothing_acknowledged_and_halves_nothing() {
    // Tiny segments: a kill lands near a rotation as often as not.
    let crashes = vec![Crash::Kill; 11];
    let (doubts, writers, data_dir, _dir) =
        crash_cycles(&["--wal-segment-bytes", "8192"], &crashes, crash_seed()).await;
    assert!(doubts > 0, "no kill landed while a write was in flight");
    println!("{doubts} writes were in flight at a kill");
    let live: usize = writers
        .iter()
        .map(|w| w.acked.values().filter(|a| a.is_some()).count())
        .sum();
    assert!(live > 100, "only {live} annotations: the writers barely ran");

    // And the history's hash chains are intact, offline.
    let (code, out, err) = factcheck_cli(&["audit", "verify", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 problem(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_ends_streams_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ChildServer::start(&data_dir, &[]);
    let token = server.admin_token();
    let c = server.client(&token).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = c
            .clone()
            .watch_annotations(pb::WatchAnnotationsRequest {
                parent: "articles/-".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        streams.push(s);
    }
    // Writers keep calling until the server stops answering.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0.. {
                    let r = c
                        .create_annotation(pb::CreateAnnotationRequest {
                            parent: article_name(ARTICLES[i % 3].0),
                            annotation: Some(new_annotation(
                                pb::Span {
                                    start: n % 100,
                                    end: n % 100 + 5,
                                },
                                Verdict::Verified,
                            )),
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(a) => acked.push(a.into_inner()),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Let every writer get calls through, then stop the server under them.
    let mut events = 0;
    while events < 50 {
        let m = streams[0].message().await.unwrap().unwrap();
        events += m.events.len();
    }
    server.signal("TERM");
    for mut s in streams {
        let end = loop {
            match s.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a watch stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let exit = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || server.child.wait()),
    )
    .await
    .expect("the server exits within the grace period")
    .unwrap()
    .unwrap();
    assert!(exit.success(), "{exit:?}");

    // Every call that was answered is there after a restart.
    let server = ChildServer::start(&data_dir, &[]);
    let mut c = server.client(&token).await;
    let (all, _) = snapshot(&mut c).await;
    let stored: HashMap<String, pb::Annotation> = all.into_iter().map(|a| (a.name.clone(), a)).collect();
    assert!(acked.len() >= 50);
    for a in &acked {
        assert_eq!(stored.get(&a.name), Some(a));
    }
}

/// The tokens file and SIGHUP: how a server on sled takes token changes.
/// On etcd the tokens live in the cluster and reach every server at once
/// (tests/cluster.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_tokens_added_and_revoked_take_effect_on_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ChildServer::start(&data_dir, &[]);
    let dd = data_dir.to_str().unwrap();
    let mut admin = server.client(&server.admin_token()).await;

    let (code, token, err) = factcheck_cli(&["token", "add", "rita", "--role", "reader", "--data-dir", dd]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(
        !std::fs::read_to_string(data_dir.join("tokens.json"))
            .unwrap()
            .contains(&token)
    );
    let (_, list, _) = factcheck_cli(&["token", "list", "--data-dir", dd]);
    assert!(list.contains("rita\treader"), "{list}");
    assert!(list.contains("admin\tadmin"), "{list}");

    // Not yet: the server reads the file on SIGHUP.
    let mut rita = server.client(&token).await;
    let s = rita
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    server.signal("HUP");
    server.wait_for_log("reloaded tokens");
    rita.list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap();
    let s = rita
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article_name(ARTICLES[1].0),
            annotation: Some(new_annotation(pb::Span { start: 0, end: 3 }, Verdict::Verified)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);

    // A broken file is not loaded: everyone keeps their access.
    let good = std::fs::read_to_string(data_dir.join("tokens.json")).unwrap();
    std::fs::write(data_dir.join("tokens.json"), "{ not json").unwrap();
    server.signal("HUP");
    server.wait_for_log("tokens not reloaded");
    rita.list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap();
    std::fs::write(data_dir.join("tokens.json"), good).unwrap();

    let (code, _, err) = factcheck_cli(&["token", "revoke", "rita", "--data-dir", dd]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = factcheck_cli(&["token", "revoke", "nobody", "--data-dir", dd]);
    assert_eq!(code, 2);
    server.signal("HUP");
    server.wait_for_log("reloaded tokens");
    let s = rita
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    // The admin's connection, open all along, still works.
    admin
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap();
}

#[test]
fn serve_refuses_a_non_loopback_address_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .arg("--seeds")
        .arg(seeds_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without TLS"),
        "{err}"
    );
    assert!(err.contains("--insecure"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_audit_verify_finds_an_edited_history_record() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ChildServer::start(&data_dir, &[]);
    let mut c = server.client(&server.admin_token()).await;
    let text = seed_text(ARTICLES[1].0);
    let a = c
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article_name(ARTICLES[1].0),
            annotation: Some(pb::Annotation {
                span: Some(find_span(&text, "조태열")),
                verdict: Verdict::Disputed as i32,
                note: "original claim".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.update_annotation(masked_update(
        pb::Annotation {
            name: a.name.clone(),
            verdict: Verdict::Verified as i32,
            ..Default::default()
        },
        &["verdict"],
    ))
    .await
    .unwrap();
    drop(c);
    server.signal("TERM");
    server.wait_for_log("stopped");
    drop(server);

    let dd = data_dir.to_str().unwrap();
    let (code, out, err) = factcheck_cli(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 histories, 2 records, 0 problem(s)"), "{out}");

    // Someone with access to the files rewrites what the first record said.
    {
        let db = sled::open(data_dir.join("db")).unwrap();
        let tree = db.open_tree("factcheck").unwrap();
        let (key, value) = tree
            .scan_prefix(b"h")
            .map(Result::unwrap)
            .find(|(_, v)| v.windows(14).any(|w| w == b"original claim"))
            .unwrap();
        let mut raw = value.to_vec();
        let at = raw.windows(14).position(|w| w == b"original claim").unwrap();
        raw[at..at + 14].copy_from_slice(b"verified claim");
        tree.insert(key, raw).unwrap();
        db.flush().unwrap();
    }
    let (code, out, _) = factcheck_cli(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN"), "{out}");
    assert!(out.contains("hash does not match"), "{out}");
}

/// A store that failed (its checkpoint fails, as on a disk that filled at a
/// rotation) still stops on SIGTERM within the grace period, cleanly: sled's
/// final flush, which can wait forever for a failed disk (held here by a
/// failpoint), is skipped, since the log holds everything acknowledged. And
/// what was acknowledged before the failure is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_sigterm_after_a_fail_stop_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.env("FAILPOINTS", "checkpoint=return;store::final_flush=pause");
    let mut server = ChildServer::spawn(cmd, &data_dir, &["--wal-segment-bytes", "4096"]);
    server.wait_until_serving();
    let token = server.admin_token();
    let mut c = server.client(&token).await;
    let mut acked = Vec::new();
    let span = pb::Span { start: 0, end: 10 };
    loop {
        let r = c
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article_name(ARTICLES[0].0),
                annotation: Some(new_annotation(span, Verdict::Verified)),
                ..Default::default()
            })
            .await;
        match r {
            Ok(a) => acked.push(a.into_inner().name),
            Err(_) => break,
        }
        assert!(acked.len() < 10_000, "the store never failed");
    }
    server.wait_for_log("checkpoint failed");
    server.signal("TERM");
    server.wait_for_log("stopped");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(server);

    let server = ChildServer::start(&data_dir, &[]);
    let mut c = server.client(&token).await;
    for name in acked {
        c.get_annotation(pb::GetAnnotationRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{name} lost: {e}"));
    }
}

/// A correction of more annotations than a chunk re-anchors the rest after
/// its revision, chunk by chunk (issue 21, item 4). A server killed with
/// chunks left finishes them when it starts again; meanwhile a further
/// correction, an adjudication and a sign-off are refused with the move as
/// their reason, readers see each annotation at
/// the revision its span points into, and other writes to the article go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_left_half_re_anchored_by_a_kill_is_finished_at_the_next_start() {
    const TEXT: &str =
        "조태열 met “officials” in Seoul – talks went on 🙂 for hours; אמר השר; exports rose.\n";
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
    // No chunk after the correction's own revision is ever made.
    cmd.env("FAILPOINTS", "reanchor::chunk=return");
    let mut server = ChildServer::spawn(cmd, &data_dir, &["--reanchor-chunk", "2"]);
    server.wait_until_serving();
    let admin = server.admin_token();
    let mut c = server.client(&admin).await;
    let (created, quotes) = article_with_words(
        &mut c,
        "half-moved",
        TEXT,
        &["조태열", "“officials”", "Seoul", "talks", "🙂", "אמר", "exports"],
    )
    .await;
    let corrected = format!("Correction – 조태열’s title was wrong.\n{TEXT}");
    let correct = |text: &str, etag: &str| pb::UpdateArticleRequest {
        article: Some(pb::Article {
            name: article_name("half-moved"),
            text: text.into(),
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["text".into()],
        }),
        etag: etag.into(),
    };
    // Answered only once every annotation is moved: never, here.
    let first = tokio::spawn({
        let mut c = c.clone();
        let request = correct(&corrected, &created.etag);
        async move { c.update_article(request).await }
    });
    server.wait_for_log("re-anchored in chunks");

    let by_revision = |annotations: &[pb::Annotation]| {
        let mut counts = std::collections::BTreeMap::new();
        for a in annotations {
            *counts.entry(a.article_revision.clone()).or_insert(0) += 1;
        }
        counts.into_iter().collect::<Vec<_>>()
    };
    let half = first_page(&mut c, "half-moved").await;
    assert_eq!(
        by_revision(&half),
        vec![("1".to_owned(), 5), ("2".to_owned(), 2)],
        "the first chunk moved with the text"
    );
    // Spans still on the old text cover nothing of the new one: no overlaps
    // query finds them, and the review counts them as moving until moved.
    let whole = pb::Span {
        start: 0,
        end: corrected.chars().count() as u32,
    };
    let overlapping = |mut c: Client| async move {
        c.list_annotations(pb::ListAnnotationsRequest {
            parent: article_name("half-moved"),
            page_size: 100,
            overlaps: Some(whole),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .annotations
        .len()
    };
    let review = |mut c: Client| async move {
        c.get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article_name("half-moved")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    };
    assert_eq!(overlapping(c.clone()).await, 2);
    let half_review = review(c.clone()).await;
    assert_eq!(
        (
            half_review.moving_count,
            half_review.orphaned_count,
            half_review.needs_review_count,
            half_review.state()
        ),
        (5, 0, 0, pb::ReviewState::InProgress),
        "the unmoved are counted as moving, not as orphans"
    );
    let moved_cover: u32 = half
        .iter()
        .filter(|a| a.article_revision == "2")
        .map(|a| a.span.map_or(0, |s| s.end - s.start))
        .sum();
    assert_eq!(
        half_review.covered_code_points, moved_cover,
        "only the moved cover the new text"
    );
    let refused = c
        .update_article(correct(TEXT, "\"2\""))
        .await
        .expect_err("a correction of a half-moved article");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert_eq!(reason(&refused), "REANCHORING_IN_PROGRESS");
    // Nor is the half-moved review judged: refused for the move, not for
    // the orphans it makes meanwhile (NEEDS_RE_REVIEW, NOT_CONTESTED).
    let refused = c
        .create_adjudication(pb::CreateAdjudicationRequest {
            parent: article_name("half-moved"),
            adjudication: Some(pb::Adjudication {
                span: Some(find_span(&corrected, "Correction")),
                verdict: Verdict::Disputed as i32,
                rationale: "the title was wrong".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("an adjudication of a half-moved article");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert_eq!(reason(&refused), "REANCHORING_IN_PROGRESS");
    assert!(refused.message().contains("5 to go"), "{refused:?}");
    let refused = c
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name: format!("{}/review", article_name("half-moved")),
            etag: half_review.etag.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a sign-off of a half-moved article");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert_eq!(reason(&refused), "REANCHORING_IN_PROGRESS");
    let added = c
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article_name("half-moved"),
            annotation: Some(pb::Annotation {
                span: Some(find_span(&corrected, "Correction")),
                verdict: Verdict::Disputed as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.article_revision, "2");
    first.abort();
    drop(c);
    // SIGKILL.
    drop(server);

    let mut server = ChildServer::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_factcheck")),
        &data_dir,
        &["--reanchor-chunk", "2"],
    );
    server.wait_until_serving_and_logged(&["re-anchoring finished"]);
    let mut c = server.client(&admin).await;
    let all = first_page(&mut c, "half-moved").await;
    assert_eq!(by_revision(&all), vec![("2".to_owned(), 8)]);
    assert_eq!(overlapping(c.clone()).await, 8);
    let settled = review(c.clone()).await;
    assert_eq!((settled.moving_count, settled.orphaned_count), (0, 0));
    for a in &all {
        if a.name == added.name {
            continue;
        }
        assert_eq!(a.quote, quotes[&a.name], "{}", a.name);
        assert_eq!(a.anchor_state, pb::AnchorState::Moved as i32, "{}", a.name);
    }
    let again = c
        .update_article(correct(TEXT, "\"2\""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision_id, "3");
}

//! A cluster: a 3-member etcd cluster on loopback and 3 `factcheck serve
//! --store etcd` replicas (the real binary, each preferring its own etcd
//! member), driven by real gRPC clients that spread their calls over the
//! replicas and go to another one when theirs fails, as behind a load
//! balancer. Needs the `etcd` binary (Debian `etcd-server`): `.ci/run` runs
//! it by name (`cargo test --release --test cluster`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::etcd::{ENGINE_FLAGS, EtcdCluster};
use common::*;
use factcheck::pb;
use factcheck::pb::Verdict;
use factcheck::pb::watch_annotations_response::Kind;
use tonic::Code;

/// The longest article of the seeds: room for many distinct spans.
const ARTICLE: &str = "002_946fad7c8fee627f";
const PREFIX: &str = "/cluster/";

/// The etcd members and the factcheck replicas over them.
struct Cluster {
    etcd: EtcdCluster,
    replicas: Vec<Option<ChildServer>>,
    /// Each replica's data dir (its pid file, its backup copies; no data).
    dirs: Vec<tempfile::TempDir>,
    /// The admin token every replica accepts (the tokens live in etcd).
    token: String,
    /// Analysts alice and bob, reviewer rosa.
    alice: String,
    bob: String,
    rosa: String,
    /// Flags every replica gets besides the store's.
    extra: Vec<String>,
}

impl Cluster {
    async fn start(replicas: usize) -> Cluster {
        Self::start_with(replicas, &[]).await
    }

    async fn start_with(replicas: usize, extra: &[&str]) -> Cluster {
        let etcd = EtcdCluster::start(3, ENGINE_FLAGS).await;
        let mut cluster = Cluster {
            etcd,
            replicas: Vec::new(),
            dirs: Vec::new(),
            token: String::new(),
            alice: String::new(),
            bob: String::new(),
            rosa: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // The first replica finds no tokens in etcd and makes an admin's;
        // the others use the same ones, and so does the CLI.
        cluster.add_replica();
        cluster.token = cluster.replicas[0].as_ref().unwrap().admin_token();
        cluster.alice = cluster.token_cli(&["add", "alice", "--role", "analyst"]);
        cluster.bob = cluster.token_cli(&["add", "bob", "--role", "analyst"]);
        cluster.rosa = cluster.token_cli(&["add", "rosa", "--role", "reviewer"]);
        for _ in 1..replicas {
            cluster.add_replica();
        }
        cluster
    }

    /// The flags of replica `i`: the cluster's endpoints, its own member
    /// first (so each member serves one replica).
    fn args(&self, i: usize) -> Vec<String> {
        let mut endpoints = self.etcd.endpoints();
        let n = endpoints.len();
        endpoints.rotate_left(i % n);
        let args = vec![
            "--store".to_owned(),
            "etcd".to_owned(),
            "--etcd-endpoints".to_owned(),
            endpoints.join(","),
            "--etcd-prefix".to_owned(),
            PREFIX.to_owned(),
        ];
        args
    }

    /// `factcheck token ARGS --store etcd ...` against the cluster; its
    /// output.
    fn token_cli(&self, args: &[&str]) -> String {
        let store = self.args(0);
        let mut all = vec!["token"];
        all.extend(args);
        all.extend(store.iter().map(String::as_str));
        let (code, out, err) = factcheck_cli(&all);
        assert_eq!(code, 0, "token {args:?}: {err}");
        out.trim().to_owned()
    }

    /// Starts one more replica; returns its index.
    fn add_replica(&mut self) -> usize {
        let i = self.replicas.len();
        let dir = tempfile::tempdir().unwrap();
        let mut args = self.args(i);
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ChildServer::start(dir.path(), &args);
        self.replicas.push(Some(server));
        self.dirs.push(dir);
        i
    }

    /// Starts one more replica from `command` (the binary with an
    /// environment of the caller's) with `extra` flags; returns its index.
    fn add_replica_from(&mut self, command: std::process::Command, extra: &[&str]) -> usize {
        let i = self.replicas.len();
        let dir = tempfile::tempdir().unwrap();
        let mut args = self.args(i);
        args.extend(self.extra.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = ChildServer::spawn(command, dir.path(), &args);
        server.wait_until_serving();
        self.replicas.push(Some(server));
        self.dirs.push(dir);
        i
    }

    async fn client(&self, i: usize) -> Client {
        self.client_as(i, &self.token).await
    }

    async fn client_as(&self, i: usize, token: &str) -> Client {
        self.replicas[i]
            .as_ref()
            .expect("the replica runs")
            .client(token)
            .await
    }

    /// A client of every replica, in order (the killed ones' connections
    /// fail, as a balancer's would).
    async fn clients(&self) -> Vec<Client> {
        let mut out = Vec::new();
        for r in self.replicas.iter().flatten() {
            out.push(r.client(&self.token).await);
        }
        out
    }

    /// kill -9 replica `i`.
    fn kill(&mut self, i: usize) {
        let mut r = self.replicas[i].take().expect("the replica runs");
        r.child.kill().unwrap();
        r.child.wait().unwrap();
    }

    /// `factcheck audit verify` against the cluster.
    fn audit(&self) {
        let args = self.args(1);
        let mut all = vec!["audit", "verify"];
        all.extend(args.iter().map(String::as_str));
        let (code, out, err) = factcheck_cli(&all);
        assert_eq!(code, 0, "audit verify failed:\n{out}\n{err}");
    }
}

fn create_request(start: u32, request_id: String) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: article(ARTICLE),
        annotation: Some(new_annotation(
            pb::Span {
                start,
                end: start + 2,
            },
            Verdict::Verified,
        )),
        request_id,
        ..Default::default()
    }
}

/// Whether a client that got `status` should try the call on another
/// replica (with the same request id): the replica or its etcd member is
/// gone or cut off, not the request wrong.
fn retry_elsewhere(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) || (status.code() == Code::Internal && reason(status).is_empty())
}

/// Creates on one replica, retrying with the same request id while the
/// call is `UNAVAILABLE`: stopping an etcd member may stop the leader, and
/// the cluster then takes a moment to elect another ("leader changed").
async fn create_retrying(client: &mut Client, req: pb::CreateAnnotationRequest) -> pb::Annotation {
    for _ in 0..400 {
        match client.create_annotation(req.clone()).await {
            Ok(a) => return a.into_inner(),
            Err(e) if e.code() == Code::Unavailable => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the cluster stayed unavailable for over 8 s");
}

/// Creates `n` annotations, each with its own request id, starting on
/// replica `first` and moving to the next replica whenever one fails:
/// the acknowledged annotations.
async fn writer(clients: Vec<Client>, w: u32, n: u32, first: usize) -> Vec<pb::Annotation> {
    let mut acked = Vec::new();
    let mut r = first;
    for k in 0..n {
        let req = create_request((w * 1500 + k * 3) % 6200, uuid::Uuid::new_v4().to_string());
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 400, "writer {w} could not write {k} anywhere");
            let mut client = clients[r % clients.len()].clone();
            let call = client.create_annotation(req.clone());
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(a)) => {
                    acked.push(a.into_inner());
                    break;
                }
                Ok(Err(e)) if retry_elsewhere(&e) => {}
                Ok(Err(e)) => panic!("writer {w}, write {k}: {e:?}"),
                Err(_) => {}
            }
            r += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r += 1;
    }
    acked
}

/// Every annotation, read through replica `i`.
async fn everything(cluster: &Cluster, i: usize) -> (BTreeMap<String, pb::Annotation>, u64) {
    let (all, revision) = snapshot(&mut cluster.client(i).await).await;
    (all.into_iter().map(|a| (a.name.clone(), a)).collect(), revision)
}

/// Asserts that the store holds exactly the acknowledged annotations: none
/// lost, none made twice by a retry.
async fn holds_exactly(cluster: &Cluster, i: usize, acked: &[pb::Annotation]) -> u64 {
    let (stored, revision) = everything(cluster, i).await;
    let names: HashSet<&String> = acked.iter().map(|a| &a.name).collect();
    assert_eq!(names.len(), acked.len(), "two acknowledged writes share a name");
    for a in acked {
        let s = stored
            .get(&a.name)
            .unwrap_or_else(|| panic!("acknowledged {} ({}) is lost", a.name, a.etag));
        assert_eq!(s.etag, a.etag, "{} changed", a.name);
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "the store holds writes nobody was answered for (a retry applied twice)"
    );
    revision
}

/// The revisions of the EVENTS messages of a watch until `through`,
/// asserting they increase one by one (dense revisions: every write here
/// is a change the watch matches).
async fn watched_through(
    stream: &mut tonic::Streaming<pb::WatchAnnotationsResponse>,
    from: u64,
    through: u64,
) -> Vec<String> {
    let mut next = from;
    let mut names = Vec::new();
    while next <= through {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("the watch stopped at revision {next} of {through}"))
            .expect("the watch failed")
            .expect("the watch ended");
        if msg.kind != Kind::Events as i32 {
            continue;
        }
        assert_eq!(msg.revision, next, "a gap or a duplicate in the watch");
        names.extend(
            msg.events
                .iter()
                .filter_map(|e| e.annotation.as_ref().map(|a| a.name.clone())),
        );
        next += 1;
    }
    names
}

/// Waits until replica `i` has delivered `n` revisions of writes: on a
/// watch, not by polling.
async fn until_written(cluster: &Cluster, i: usize, n: u64) {
    let mut watch = watch_from(&mut cluster.client(i).await, 1).await;
    watched_through(&mut watch, 1, n).await;
}

async fn watch_from(
    client: &mut Client,
    start_revision: u64,
) -> tonic::Streaming<pb::WatchAnnotationsResponse> {
    client
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// 1. kill -9 of a replica under 4 writers that retry elsewhere with the
/// same request ids: nothing acknowledged is lost, nothing applied twice,
/// a watcher on another replica sees every revision once, in order, and
/// the audit chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_writers_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3).await;
    let mut watcher = watch_from(&mut cluster.client(2).await, 1).await;
    let clients = cluster.clients().await;
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(clients.clone(), w, 60, w as usize)))
        .collect();
    // Kill replica 0 once writes flow through the cluster.
    until_written(&cluster, 1, 40).await;
    cluster.kill(0);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(acked.len(), 240);
    let revision = holds_exactly(&cluster, 1, &acked).await;
    assert_eq!(revision, 240, "every revision is one acknowledged write");
    let names = watched_through(&mut watcher, 1, revision).await;
    assert_eq!(names.len(), 240);
    cluster.audit();
}

/// 2. kill -9 of the etcd leader under load: writes pause (UNAVAILABLE,
/// retried) and go on; nothing acknowledged is lost; a watcher on every
/// replica sees every revision once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_under_load_loses_nothing_and_watches_have_no_gap() {
    let mut cluster = Cluster::start(3).await;
    let mut watchers = Vec::new();
    for i in 0..3 {
        watchers.push(watch_from(&mut cluster.client(i).await, 1).await);
    }
    let clients = cluster.clients().await;
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(writer(clients.clone(), w, 80, w as usize)))
        .collect();
    until_written(&cluster, 1, 30).await;
    let leader = cluster.etcd.leader().await;
    cluster.etcd.kill(leader);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    cluster.etcd.restart(leader).await;
    let revision = holds_exactly(&cluster, (leader + 1) % 3, &acked).await;
    for (i, w) in watchers.iter_mut().enumerate() {
        let names = watched_through(w, 1, revision).await;
        let names: HashSet<String> = names.into_iter().collect();
        for a in &acked {
            assert!(names.contains(&a.name), "replica {i}'s watch missed {}", a.name);
        }
    }
    cluster.audit();
}

/// 3. One etcd member stopped (SIGSTOP): the replica that prefers it
/// answers reads with every acknowledged write or refuses them, never
/// stale; after SIGCONT it serves everything. Then the member and that
/// replica stopped together while the others write: continued, the replica
/// never answers from before those writes, and reports SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_etcd_member_is_stopped_never_answers_stale() {
    let mut cluster = Cluster::start(3).await;
    let mut c0 = cluster.client(0).await;
    let mut c2 = cluster.client(2).await;
    cluster.etcd.stop(2);
    for k in 0..5 {
        let a = create_retrying(&mut c0, create_request(k * 3, uuid::Uuid::new_v4().to_string())).await;
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            c2.get_annotation(pb::GetAnnotationRequest {
                name: a.name.clone(),
                ..Default::default()
            }),
        )
        .await
        .expect("a read on the cut-off replica answers or fails within its bound");
        match read {
            Ok(found) => assert_eq!(found.into_inner().etag, a.etag),
            Err(e) => assert!(
                matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
                "a stale read must be refused, not answered: {e:?}"
            ),
        }
    }
    cluster.etcd.cont(2);
    let a = create_retrying(&mut c0, create_request(40, uuid::Uuid::new_v4().to_string())).await;
    let found = c2
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.etag, a.etag);

    // Now the member and the replica that uses it, both stopped while the
    // others write; continued, the replica's first answers already hold
    // every write, and its health says SERVING.
    cluster.etcd.stop(2);
    cluster.replicas[2].as_ref().unwrap().signal("STOP");
    let mut written = Vec::new();
    for k in 0..5 {
        written.push(
            create_retrying(
                &mut c0,
                create_request(60 + k * 3, uuid::Uuid::new_v4().to_string()),
            )
            .await,
        );
    }
    cluster.replicas[2].as_ref().unwrap().signal("CONT");
    cluster.etcd.cont(2);
    for a in &written {
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            c2.get_annotation(pb::GetAnnotationRequest {
                name: a.name.clone(),
                ..Default::default()
            }),
        )
        .await
        .expect("the continued replica answers");
        match found {
            Ok(found) => assert_eq!(found.into_inner().etag, a.etag),
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "a stale read must be refused: {e:?}"),
        }
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!(
            "http://{}",
            cluster.replicas[2].as_ref().unwrap().addr
        ))
        .unwrap()
        .connect()
        .await
        .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// 4. A changelog kept short (`--changelog-retention 20`), trimmed by
/// whichever replica commits: a watcher from before what is kept gets
/// `FAILED_PRECONDITION` `REVISION_COMPACTED` (as on one server) on any
/// replica, relists, watches on
/// from the list's revision and misses no change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_the_kept_changelog_relists_and_misses_nothing() {
    let cluster = Cluster::start_with(3, &["--changelog-retention", "20"]).await;
    let clients = cluster.clients().await;
    let first = writer(clients.clone(), 0, 60, 0).await;
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let e = match c
            .watch_annotations(pb::WatchAnnotationsRequest {
                parent: "articles/-".into(),
                start_revision: 1,
                ..Default::default()
            })
            .await
        {
            Err(e) => e,
            Ok(s) => match s.into_inner().message().await {
                Err(e) => e,
                Ok(m) => panic!("replica {i} watches from a trimmed revision: {m:?}"),
            },
        };
        assert_eq!(e.code(), Code::FailedPrecondition, "replica {i}: {e:?}");
        assert_eq!(reason(&e), "REVISION_COMPACTED");
    }
    // Relist, then watch from the list's revision on another replica.
    let (listed, at) = everything(&cluster, 1).await;
    assert_eq!(listed.len(), 60);
    let mut watcher = watch_from(&mut cluster.client(2).await, at + 1).await;
    let second = writer(clients.clone(), 1, 40, 1).await;
    let seen = watched_through(&mut watcher, at + 1, at + 40).await;
    let mut all: HashSet<String> = listed.into_keys().collect();
    all.extend(seen);
    let acked: HashSet<String> = first.iter().chain(&second).map(|a| a.name.clone()).collect();
    assert_eq!(all, acked, "the relist and the watch together hold every change");
    cluster.audit();
}

/// 5. 50 updates with the same etag, spread over the 3 replicas at once:
/// exactly one wins, 49 are `ETAG_MISMATCH`; a sign-off with the review's
/// etag racing an annotation write on another replica never stands on a
/// state it did not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writers_on_different_replicas_exactly_one_wins() {
    let cluster = Cluster::start(3).await;
    let clients = cluster.clients().await;
    let a = clients[0]
        .clone()
        .create_annotation(create_request(0, String::new()))
        .await
        .unwrap()
        .into_inner();
    let updates: Vec<_> = (0..50)
        .map(|k| {
            let mut c = clients[k % 3].clone();
            let mut req = masked_update(
                pb::Annotation {
                    note: format!("update {k}"),
                    ..a.clone()
                },
                &["note"],
            );
            req.etag = a.etag.clone();
            tokio::spawn(async move { c.update_annotation(req).await })
        })
        .collect();
    let mut won = Vec::new();
    for u in updates {
        match u.await.unwrap() {
            Ok(x) => won.push(x.into_inner()),
            Err(e) => {
                assert_eq!(e.code(), Code::Aborted, "{e:?}");
                assert_eq!(reason(&e), "ETAG_MISMATCH");
            }
        }
    }
    assert_eq!(won.len(), 1, "exactly one conditional update wins");
    // Every replica reads the winner.
    for c in &clients {
        let got = c
            .clone()
            .get_annotation(pb::GetAnnotationRequest {
                name: a.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((got.note, got.etag), (won[0].note.clone(), won[0].etag.clone()));
    }

    // A sign-off on replica 1 with the review's etag, racing an analyst's
    // write to the article on replica 2: either the write came first and
    // the sign-off is refused, or the sign-off landed first and the write
    // withdrew it. Two analysts agree, so the review is READY.
    let other = article("003_28f3322794e5657e");
    let on = |token: &str, i: usize| {
        let token = token.to_owned();
        let cluster = &cluster;
        async move { cluster.client_as(i, &token).await }
    };
    let (mut alice, mut bob) = (on(&cluster.alice, 2).await, on(&cluster.bob, 0).await);
    for (c, start) in [(&mut alice, 0), (&mut bob, 10)] {
        c.create_annotation(pb::CreateAnnotationRequest {
            parent: other.clone(),
            ..create_request(start, String::new())
        })
        .await
        .unwrap();
    }
    let name = format!("{other}/review");
    let review = on(&cluster.rosa, 1)
        .await
        .get_article_review(pb::GetArticleReviewRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(review.state, pb::ReviewState::Ready as i32, "{review:?}");
    let mut signer = on(&cluster.rosa, 1).await;
    let sign = signer.sign_off_article_review(pb::SignOffArticleReviewRequest {
        name: name.clone(),
        etag: review.etag.clone(),
        ..Default::default()
    });
    let write = alice.create_annotation(pb::CreateAnnotationRequest {
        parent: other.clone(),
        ..create_request(30, String::new())
    });
    let (signed, written) = tokio::join!(sign, write);
    written.unwrap();
    let after = clients[0]
        .clone()
        .get_article_review(pb::GetArticleReviewRequest {
            name,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match signed {
        Ok(_) => assert_ne!(
            after.state,
            pb::ReviewState::SignedOff as i32,
            "a sign-off stands on a state it did not see"
        ),
        Err(e) => {
            assert_eq!(e.code(), Code::Aborted, "{e:?}");
            assert_eq!(reason(&e), "ETAG_MISMATCH");
        }
    }
}

/// 6. A write acknowledged by one replica is read on another at once,
/// 1,000 times: never stale. Every other read says so with the write's
/// revision (`min_revision`, no round trip to etcd when the replica has
/// it); the rest rely on the quorum read. Then every replica answers a read
/// as of a past revision (`read_revision`) with what was listed then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_write_on_another_replica_a_thousand_times() {
    let cluster = Cluster::start(3).await;
    let clients = cluster.clients().await;
    let mut listed = Vec::new();
    for k in 0..1000u32 {
        let a = clients[k as usize % 3]
            .clone()
            .create_annotation(create_request((k * 5) % 6200, String::new()))
            .await
            .unwrap()
            .into_inner();
        let written: u64 = a.etag.trim_matches('"').parse().unwrap();
        let reader = (k as usize + 1) % 3;
        let got = clients[reader]
            .clone()
            .get_annotation(pb::GetAnnotationRequest {
                name: a.name.clone(),
                min_revision: if k % 2 == 0 { written } else { 0 },
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("write {k} on replica {}, read on {reader}: {e:?}", k % 3));
        assert_eq!(got.into_inner().etag, a.etag, "write {k}: a stale read");
        // The review on the third replica counts it too.
        if k % 100 == 99 {
            let third = (k as usize + 2) % 3;
            let (all, revision) = snapshot(&mut clients[third].clone()).await;
            assert_eq!((all.len(), revision), (k as usize + 1, u64::from(k) + 1));
            listed.push((all, revision));
        }
    }
    for (then, at) in listed.iter().step_by(3) {
        for (i, c) in clients.iter().enumerate() {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = c
                    .clone()
                    .list_annotations(pb::ListAnnotationsRequest {
                        parent: "articles/-".into(),
                        page_size: 1000,
                        page_token,
                        read_revision: *at,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(page.revision, *at);
                all.extend(page.annotations);
                page_token = page.next_page_token;
                if page_token.is_empty() {
                    break;
                }
            }
            assert_eq!(&all, then, "replica {i} as of {at}");
        }
    }
}

/// 8. A replica started while the others serve writes comes up with the
/// same state, by one list and then the watch, and serves from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_comes_up_serving_the_same_state() {
    let mut cluster = Cluster::start(2).await;
    let clients = cluster.clients().await;
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(writer(clients.clone(), w, 100, w as usize)))
        .collect();
    until_written(&cluster, 1, 30).await;
    let i = cluster.add_replica();
    let mut fresh = cluster.client(i).await;
    let mut watcher = watch_from(&mut fresh, 1).await;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let revision = holds_exactly(&cluster, i, &acked).await;
    let (on_first, first_revision) = everything(&cluster, 0).await;
    let (on_new, new_revision) = everything(&cluster, i).await;
    assert_eq!(first_revision, new_revision);
    assert_eq!(on_first, on_new);
    assert_eq!(
        watched_through(&mut watcher, 1, revision).await.len(),
        acked.len()
    );
    // It writes too, and the others read it.
    let a = fresh
        .create_annotation(create_request(6000, String::new()))
        .await
        .unwrap()
        .into_inner();
    let got = cluster
        .client(0)
        .await
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.etag, a.etag);
}

/// 7. A token revoked through the CLI against the cluster: its open watch
/// streams on every replica end `UNAUTHENTICATED` within a second, and
/// every replica refuses it from then on; the other tokens go on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_everywhere_and_its_streams_end_within_a_second() {
    let cluster = Cluster::start(3).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut alice = cluster.client_as(i, &cluster.alice).await;
        streams.push(watch_from(&mut alice, 0).await);
    }
    let listed = cluster.token_cli(&["list"]);
    assert!(listed.contains("alice\tanalyst"), "{listed}");
    cluster.token_cli(&["revoke", "alice"]);
    let revoked = std::time::Instant::now();
    for (i, stream) in streams.iter_mut().enumerate() {
        let ended = loop {
            let left = Duration::from_secs(1).saturating_sub(revoked.elapsed());
            match tokio::time::timeout(left, stream.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(other) => break other,
                Err(_) => panic!("replica {i}: alice's stream still open 1 s after the revocation"),
            }
        };
        let e = ended.expect_err("the stream ends with an error");
        assert_eq!(e.code(), Code::Unauthenticated, "replica {i}: {e:?}");
    }
    for i in 0..3 {
        let e = cluster
            .client_as(i, &cluster.alice)
            .await
            .list_articles(pb::ListArticlesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "replica {i}: {e:?}");
        cluster
            .client_as(i, &cluster.bob)
            .await
            .list_articles(pb::ListArticlesRequest::default())
            .await
            .unwrap_or_else(|e| panic!("replica {i} refused bob: {e:?}"));
    }
}

/// 9. The clients, unchanged, against any replica: the CLI annotates
/// through one replica and lists through another; the Python client's
/// example runs its batch through the third and the CLI sees it on the
/// first (needs `FACTCHECK_PYTHON`, as `tests/python_client.rs`: `.ci/run`
/// sets it); the web app's transport (grpc-web over HTTP/1.1, as the page
/// calls) watches on one replica and sees the writes made on the others;
/// every replica serves the page itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_python_and_web_clients_work_against_any_replica() {
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let cluster = Cluster::start(3).await;
    let url = |i: usize| format!("http://{}", cluster.replicas[i].as_ref().unwrap().addr);
    let cli = |i: usize, token: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
            .args(args)
            .env("FACTCHECK_SERVER", url(i))
            .env("FACTCHECK_TOKEN", token)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "factcheck {args:?} on replica {i}: {stderr}"
        );
        stdout
    };

    // The web app's transport, watching on replica 2.
    let http = HttpClient::builder(TokioExecutor::new()).build_http();
    let svc = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http);
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {}", cluster.rosa).parse().unwrap();
    let mut web = pb::fact_check_service_client::FactCheckServiceClient::with_origin(
        tonic::service::interceptor::InterceptedService::new(svc, Auth::new(Some(header))),
        url(2).try_into().unwrap(),
    );
    let mut stream = web
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert_eq!(created.kind, Kind::Created as i32);

    // The CLI: annotate by quote on replica 0, list on replica 1.
    let korean = "001_728dec46794c22c1";
    cli(
        0,
        &cluster.alice,
        &[
            "annotate",
            korean,
            "--quote",
            "조태열",
            "--verdict",
            "disputed",
            "--note",
            "spelling",
        ],
    );
    let listed = cli(1, &cluster.bob, &["list", korean, "--output", "json"]);
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["quote"], "조태열");
    assert_eq!(rows[0]["analyst"], "alice");

    // The Python client's example on replica 2, read back by the CLI on 0.
    let python = std::env::var("FACTCHECK_PYTHON")
        .expect("FACTCHECK_PYTHON: a Python with clients/python installed (.ci/run makes one)");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("phrases.csv");
    std::fs::write(&csv, "phrase,verdict,note\nKim Jong Un,verified,named\n").unwrap();
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/python/examples/batch_review.py"
        ))
        .args([korean, csv.to_str().unwrap()])
        .env("FACTCHECK_SERVER", url(2))
        .env("FACTCHECK_TOKEN", &cluster.bob)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let made: usize = seed_text(korean).matches("Kim Jong Un").count();
    assert!(
        made > 0 && said.contains(&format!("created {made} annotations")),
        "{said}"
    );
    let listed = cli(
        0,
        &cluster.alice,
        &["list", korean, "--analyst", "bob", "--output", "json"],
    );
    assert_eq!(listed.lines().count(), made, "{listed}");

    // The watch on replica 2 saw both writes, in order, over grpc-web.
    let mut revisions = Vec::new();
    while revisions.len() < 2 {
        let m = stream.message().await.unwrap().unwrap();
        if !m.events.is_empty() {
            revisions.push((m.revision, m.events.len()));
        }
    }
    assert_eq!(revisions, vec![(1, 1), (2, made)]);

    // Every replica serves the web app.
    for i in 0..3 {
        let page = http_get(&format!("{}/", url(i))).await;
        assert!(page.contains("<html"), "replica {i}: {page:.200}");
    }
}

/// A GET over plain HTTP/1.1, its body as text.
async fn http_get(url: &str) -> String {
    use http_body_util::BodyExt;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let res = http.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// A replica that stops moving a correction's chunks while staying up (a
/// failpoint halts them: as one cut off from etcd would) holds the article
/// half-moved. Another replica asked to judge it refuses for the move, and
/// once the mark has stood still for a while takes the re-anchoring up and
/// finishes it: every annotation on the new text, quotes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_anchoring_stalled_on_one_replica_is_finished_by_another() {
    const TEXT: &str = "조태열 met “officials” in Seoul – talks went on 🙂 for hours; אמר השר.\n";
    let mut cluster = Cluster::start(1).await;
    let mut halted = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
    halted.env("FAILPOINTS", "reanchor::chunk=return");
    let h = cluster.add_replica_from(halted, &["--reanchor-chunk", "1"]);
    let mut on_halted = cluster.client(h).await;
    let (created, quotes) = article_with_words(
        &mut on_halted,
        "stalled",
        TEXT,
        &["조태열", "“officials”", "🙂", "אמר"],
    )
    .await;
    let corrected = format!("Correction – the minister’s title.\n{TEXT}");
    // Never answered: its server moves no chunk.
    let correction = tokio::spawn({
        let mut c = on_halted.clone();
        let request = pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article("stalled"),
                text: corrected,
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["text".into()],
            }),
            etag: created.etag,
        };
        async move { c.update_article(request).await }
    });
    cluster.replicas[h]
        .as_ref()
        .unwrap()
        .wait_for_log("re-anchored in chunks");

    let review_name = format!("{}/review", article("stalled"));
    let mut other = cluster.client_as(0, &cluster.rosa).await;
    let review = |mut c: Client| {
        let name = review_name.clone();
        async move {
            c.get_article_review(pb::GetArticleReviewRequest {
                name,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let half = review(other.clone()).await;
    assert_eq!(half.moving_count, 3, "the first chunk moved one of four");
    let refused = other
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name: review_name.clone(),
            etag: half.etag.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a sign-off of a half-moved article");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert_eq!(reason(&refused), "REANCHORING_IN_PROGRESS");
    cluster.replicas[0]
        .as_ref()
        .unwrap()
        .wait_for_log("taking up the unfinished re-anchoring");
    cluster.replicas[0]
        .as_ref()
        .unwrap()
        .wait_for_log("re-anchoring finished");
    assert_eq!(review(other.clone()).await.moving_count, 0);
    let all = first_page(&mut other, "stalled").await;
    assert_eq!(all.len(), 4);
    for a in &all {
        assert_eq!(a.article_revision, "2", "{}", a.name);
        assert_eq!(a.quote, quotes[&a.name], "{}", a.name);
        assert_eq!(a.anchor_state, pb::AnchorState::Moved as i32, "{}", a.name);
    }
    assert!(!correction.is_finished());
    correction.abort();
    cluster.audit();
}

/// The other side of the test above: a replica whose chunks are slow but
/// moving (a failpoint delays each) keeps its re-anchoring. Another replica
/// that refuses a further correction for it looks, sees the mark move, and
/// leaves it: no two drivers colliding on every chunk. The correction is
/// answered once its own driver has moved every annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_anchoring_moving_slowly_on_one_replica_is_left_to_it() {
    const TEXT: &str =
        "조태열 met “officials” in Seoul – talks went on 🙂 for hours; אמר השר as exports rose sharply.\n";
    const WORDS: [&str; 12] = [
        "조태열",
        "met",
        "“officials”",
        "Seoul",
        "talks",
        "went",
        "🙂",
        "hours",
        "אמר",
        "השר",
        "exports",
        "sharply",
    ];
    let mut cluster = Cluster::start(1).await;
    let mut slow = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
    slow.env("FAILPOINTS", "reanchor::chunk=sleep(250)");
    let h = cluster.add_replica_from(slow, &["--reanchor-chunk", "1"]);
    let mut on_slow = cluster.client(h).await;
    let (created, quotes) = article_with_words(&mut on_slow, "slow", TEXT, &WORDS).await;
    let correct = |text: String, etag: String| pb::UpdateArticleRequest {
        article: Some(pb::Article {
            name: article("slow"),
            text,
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["text".into()],
        }),
        etag,
    };
    let corrected = format!("Correction – the minister’s title.\n{TEXT}");
    let correction = tokio::spawn({
        let mut c = on_slow.clone();
        let request = correct(corrected.clone(), created.etag);
        async move { c.update_article(request).await }
    });
    cluster.replicas[h]
        .as_ref()
        .unwrap()
        .wait_for_log("re-anchored in chunks");

    let mut other = cluster.client(0).await;
    let current = other
        .get_article(pb::GetArticleRequest {
            name: article("slow"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = other
        .update_article(correct(TEXT.into(), current.etag))
        .await
        .expect_err("a correction of a half-moved article");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert_eq!(reason(&refused), "REANCHORING_IN_PROGRESS");
    let looked = cluster.replicas[0]
        .as_ref()
        .unwrap()
        .wait_for_any_log(&["left to it", "taking up the unfinished re-anchoring"]);
    assert!(looked.contains("left to it"), "{looked}");

    let answered = correction.await.unwrap().expect("the correction, once moved");
    assert_eq!(answered.into_inner().revision_id, "2");
    let all = first_page(&mut other, "slow").await;
    assert_eq!(all.len(), WORDS.len());
    for a in &all {
        assert_eq!(a.article_revision, "2", "{}", a.name);
        assert_eq!(a.quote, quotes[&a.name], "{}", a.name);
    }
}

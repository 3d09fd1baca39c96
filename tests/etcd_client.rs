//! `factcheck::etcd` against real etcd processes (`tests/common/etcd.rs`):
//! one member, or a 3-member cluster, on loopback.
//!
//! Needs the `etcd` binary (Debian: `apt-get install etcd-server`), so plain
//! `cargo test` leaves this file out (`test = false` in Cargo.toml); run it
//! with `cargo test --release --test etcd_client`.

mod common;

use std::time::{Duration, Instant};

use common::etcd::{EtcdCluster, TestPki};
use factcheck::etcd::{
    AlarmKind, CmpOp, Compare, Delete, EtcdClient, EtcdConfig, EtcdError, EventKind, Get, Keys, LimitsError,
    OpResult, Put, Txn, WatchOptions, Watcher, probe_limits,
};

/// Retries `f` while etcd is unavailable (an election), for at most `within`.
async fn until_available<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
}

async fn next(w: &mut Watcher) -> factcheck::etcd::WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch response within 10 s")
        .unwrap()
}

/// Two writers compare the same mod revision: exactly one wins, the other
/// sees the winner's write in its `or_else` read, and nothing is
/// overwritten. Create-if-absent, version and value compares the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn txn_compare_on_mod_revision_lost_race_loses() {
    let etcd = EtcdCluster::single(&[]).await;
    let c = etcd.client().await;
    let first = c.put(Put::new("a", "v0")).await.unwrap();
    let write = |value: &'static str| {
        let c = c.clone();
        async move {
            c.txn(
                Txn::new()
                    .when([Compare::mod_revision("a", CmpOp::Equal, first.revision)])
                    .and_then([Put::new("a", value)])
                    .or_else([Get::key("a")]),
            )
            .await
            .unwrap()
        }
    };
    for round in 0..20 {
        let (x, y) = tokio::join!(write("x"), write("y"));
        if round > 0 {
            // from the second round on, both compare a stale revision
            assert!(!x.succeeded && !y.succeeded, "{x:?} {y:?}");
            continue;
        }
        assert!(
            x.succeeded != y.succeeded,
            "exactly one of two racing writes wins: {x:?} {y:?}"
        );
        let (winner, loser, value) = if x.succeeded { (x, y, "x") } else { (y, x, "y") };
        let [OpResult::Get(seen)] = &loser.results[..] else {
            panic!("{loser:?}")
        };
        assert_eq!(
            seen.kvs[0].value,
            value.as_bytes(),
            "the loser reads the winner's write"
        );
        assert_eq!(seen.kvs[0].mod_revision, winner.revision);
        assert!(winner.revision > first.revision);
        let now = c.range(Get::key("a")).await.unwrap();
        assert_eq!(
            (now.kvs[0].value.as_slice(), now.kvs[0].version),
            (value.as_bytes(), 2)
        );
    }

    let create = |v: &'static str| {
        Txn::new()
            .when([Compare::create_revision("new", CmpOp::Equal, 0)])
            .and_then([Put::new("new", v)])
    };
    assert!(c.txn(create("1")).await.unwrap().succeeded);
    assert!(
        !c.txn(create("2")).await.unwrap().succeeded,
        "a second create-if-absent loses"
    );
    let by_version = Txn::new()
        .when([Compare::version("new", CmpOp::Equal, 1)])
        .and_then([Put::new("new", "3")]);
    assert!(c.txn(by_version.clone()).await.unwrap().succeeded);
    assert!(
        !c.txn(by_version).await.unwrap().succeeded,
        "the version moved on"
    );
    let by_value = |v: &'static str| {
        Txn::new()
            .when([Compare::value("new", CmpOp::Equal, v)])
            .and_then([Delete::key("new").prev_kv()])
    };
    assert!(!c.txn(by_value("1")).await.unwrap().succeeded);
    let r = c.txn(by_value("3")).await.unwrap();
    let [OpResult::Delete(d)] = &r.results[..] else {
        panic!("{r:?}")
    };
    assert_eq!(
        (d.deleted, d.prev[0].key.as_slice()),
        (1, b"new".as_slice()),
        "keys come back without the prefix"
    );
    assert!(c.range(Get::key("new")).await.unwrap().kvs.is_empty());

    // a client on another prefix sees none of it
    let other = EtcdClient::connect(&etcd.config("/other/")).await.unwrap();
    assert_eq!(other.range(Get::prefix("")).await.unwrap().count, 0);
    assert_eq!(c.range(Get::prefix("")).await.unwrap().count, 1);
}

/// A watch from an old revision replays exactly the writes from there, in
/// order, then delivers new writes live, still in order, with no gap or
/// duplicate; keys outside the watched prefix never show.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_a_revision_replays_then_goes_live_in_order() {
    let etcd = EtcdCluster::single(&[]).await;
    let c = etcd.client().await;
    let mut revisions = Vec::new();
    for i in 0..30 {
        let r = c
            .put(Put::new(format!("w/{}", i % 7), format!("{i}")))
            .await
            .unwrap();
        c.put(Put::new("elsewhere", "x")).await.unwrap();
        revisions.push((r.revision, EventKind::Put, format!("w/{}", i % 7)));
    }
    let r = c.delete(Delete::key("w/3")).await.unwrap();
    revisions.push((r.revision, EventKind::Delete, "w/3".into()));
    let start = revisions[10].0;
    let mut w = c
        .watch(
            WatchOptions::new(Keys::Prefix(b"w/".to_vec()))
                .from_revision(start)
                .prev_kv(),
        )
        .await
        .unwrap();
    assert_eq!(w.next_revision(), start);

    // live writes, concurrently with the replay
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..40 {
                let r = c
                    .put(Put::new(format!("w/live{}", i % 5), format!("{i}")))
                    .await
                    .unwrap();
                out.push((r.revision, EventKind::Put, format!("w/live{}", i % 5)));
            }
            out
        })
    };
    let mut expected: Vec<_> = revisions[10..].to_vec();
    let total = expected.len() + 40;
    let mut seen = Vec::new();
    while seen.len() < total {
        let batch = next(&mut w).await;
        for e in &batch.events {
            assert!(
                e.kv.mod_revision <= batch.revision,
                "the header revision covers its events"
            );
            seen.push((
                e.kv.mod_revision,
                e.kind,
                String::from_utf8(e.kv.key.clone()).unwrap(),
            ));
            if e.kind == EventKind::Put && e.kv.version > 1 {
                assert!(e.prev.is_some(), "prev_kv asked for");
            }
        }
    }
    expected.extend(writer.await.unwrap());
    assert_eq!(
        seen, expected,
        "every write from the start revision, once, in order"
    );
    assert_eq!(w.next_revision(), expected.last().unwrap().0 + 1);

    // a progress request is answered by an empty batch at least as new
    w.request_progress().await.unwrap();
    let p = next(&mut w).await;
    assert!(
        p.is_progress() && p.revision >= expected.last().unwrap().0,
        "nothing more: {p:?}"
    );
}

/// A compaction makes reads and watches before it a typed error naming the
/// oldest revision held; from that revision on both still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_is_a_typed_error_with_the_oldest_revision() {
    let etcd = EtcdCluster::single(&[]).await;
    let c = etcd.client().await;
    assert_eq!(c.oldest_revision().await.unwrap(), 1, "nothing compacted yet");
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(c.put(Put::new("k", format!("{i}"))).await.unwrap().revision);
    }
    let at = revs[10];
    c.compact(at, true).await.unwrap();
    assert_eq!(c.oldest_revision().await.unwrap(), at);

    let mut w = c
        .watch(WatchOptions::new(Keys::One(b"k".to_vec())).from_revision(at - 3))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e,
        EtcdError::Compacted {
            requested: at - 3,
            oldest: at
        }
    );
    assert!(
        e.to_string()
            .contains(&format!("the oldest revision it holds is {at}")),
        "{e}"
    );

    let e = c.range(Get::key("k").at_revision(at - 1)).await.unwrap_err();
    assert_eq!(
        e,
        EtcdError::Compacted {
            requested: at - 1,
            oldest: at
        }
    );
    let old = c.range(Get::key("k").at_revision(at)).await.unwrap();
    assert_eq!(old.kvs[0].value, b"10");
    assert!(
        matches!(c.compact(at - 1, false).await, Err(EtcdError::Compacted { oldest, .. }) if oldest == at)
    );

    // from the oldest revision held: replayed from there
    let mut w = c
        .watch(WatchOptions::new(Keys::One(b"k".to_vec())).from_revision(at))
        .await
        .unwrap();
    let b = next(&mut w).await;
    let got: Vec<i64> = b.events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(got, revs[10..].to_vec());
}

/// A default etcd refuses the batches the server needs, and the probe says
/// which flag to set to what; one started with those flags passes; probes
/// write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limits_probe_names_the_flags_needed() {
    let (default, big) = tokio::join!(
        EtcdCluster::single(&[]),
        EtcdCluster::single(&["--max-txn-ops", "1000", "--max-request-bytes", "4194304"])
    );
    let c = default.client().await;
    let before = c.current_revision().await.unwrap();
    let e = probe_limits(&c, 1000, 3 << 20).await.unwrap_err();
    assert_eq!(e, LimitsError::TooFewOps { needed: 1000 });
    assert!(e.to_string().contains("--max-txn-ops=1000"), "{e}");
    assert!(
        probe_limits(&c, 128, 0).await.is_ok(),
        "etcd's default allows 128"
    );
    assert_eq!(
        probe_limits(&c, 129, 0).await,
        Err(LimitsError::TooFewOps { needed: 129 })
    );
    // just under the default 1.5 MiB passes, 2 MiB does not
    probe_limits(&c, 100, 1_500_000).await.unwrap();
    let e = probe_limits(&c, 100, 2 << 20).await.unwrap_err();
    assert_eq!(e, LimitsError::TooFewBytes { needed: 2 << 20 });
    assert!(
        e.to_string()
            .contains(&format!("--max-request-bytes={}", (2 << 20) + 1024)),
        "{e}"
    );
    // over etcd's gRPC limit too (--max-request-bytes + 512 KiB): the same
    assert_eq!(
        probe_limits(&c, 100, 3 << 20).await,
        Err(LimitsError::TooFewBytes { needed: 3 << 20 })
    );
    assert_eq!(
        c.current_revision().await.unwrap(),
        before,
        "the probes wrote nothing"
    );

    let c = big.client().await;
    probe_limits(&c, 1000, 3 << 20).await.unwrap();
    // over 4 MiB but under its gRPC limit (4.5 MiB): only etcd's own check
    // of a proposal's size refuses it, which a read-only probe would miss
    assert_eq!(
        probe_limits(&c, 1000, 4_300_000).await,
        Err(LimitsError::TooFewBytes { needed: 4_300_000 })
    );
    assert_eq!(
        probe_limits(&c, 1001, 0).await,
        Err(LimitsError::TooFewOps { needed: 1001 })
    );
    // and a real 1000-op transaction goes through, in one revision
    let r = c
        .txn(Txn::new().and_then((0..1000).map(|i| Put::new(format!("b/{i:04}"), "v"))))
        .await
        .unwrap();
    let all = c.range(Get::prefix("b/")).await.unwrap();
    assert_eq!(all.count, 1000);
    assert!(all.kvs.iter().all(|kv| kv.mod_revision == r.revision));
}

/// With a tiny `--quota-backend-bytes`, writes end in the NOSPACE alarm: the
/// typed no-space error, reads go on, the alarm is listed; compaction,
/// defragmentation and disarming bring writes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nospace_alarm_is_the_typed_no_space_error() {
    let etcd = EtcdCluster::single(&["--quota-backend-bytes", "4194304"]).await;
    let c = etcd.client().await;
    assert!(c.alarms().await.unwrap().is_empty());
    let value = vec![b'x'; 200_000];
    let mut written = Vec::new();
    let error = loop {
        match c
            .put(Put::new(format!("big/{}", written.len()), value.clone()))
            .await
        {
            Ok(r) => written.push(r.revision),
            Err(e) => break e,
        }
        assert!(written.len() < 200, "a 4 MiB quota took 40 MB");
    };
    assert_eq!(error, EtcdError::NoSpace, "after {} writes", written.len());
    assert!(!written.is_empty());
    let alarms = c.alarms().await.unwrap();
    assert!(alarms.iter().any(|a| a.kind == AlarmKind::NoSpace), "{alarms:?}");
    // every write is refused, a transaction as well, and reads go on
    assert_eq!(
        c.put(Put::new("small", "1")).await.unwrap_err(),
        EtcdError::NoSpace
    );
    let txn = Txn::new()
        .when([Compare::version("small", CmpOp::Equal, 0)])
        .and_then([Put::new("small", "1")]);
    assert_eq!(c.txn(txn).await.unwrap_err(), EtcdError::NoSpace);
    assert_eq!(
        c.range(Get::prefix("big/")).await.unwrap().count as usize,
        written.len()
    );
    let status = c.status().await.unwrap();
    assert!(status.errors.iter().any(|e| e.contains("NOSPACE")), "{status:?}");
    // The limits probe still goes through: it deletes (a delete costs no
    // quota and etcd takes deletes under the alarm) and writes nothing, so
    // a server can start on a full cluster and serve reads.
    assert_eq!(probe_limits(&c, 10, 1000).await, Ok(()));

    // the operator's way out
    c.delete(Delete::prefix("big/")).await.unwrap_or_default();
    let now = c.current_revision().await.unwrap();
    c.compact(now, true).await.unwrap();
    c.defragment_of(0).await.unwrap();
    for a in alarms {
        c.alarm_disarm(a).await.unwrap();
    }
    assert!(c.alarms().await.unwrap().is_empty());
    c.put(Put::new("small", "1")).await.unwrap();
}

/// Leases: a key put with a lease lives while it is kept alive and goes
/// with it; member status and member list of one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_status_and_member_list() {
    let etcd = EtcdCluster::single(&[]).await;
    let c = etcd.client().await;
    let lease = c.lease_grant(30).await.unwrap();
    assert!(lease.ttl >= 30);
    c.put(Put::new("owned", "me").lease(lease.id)).await.unwrap();
    let mut keep = c.lease_keep_alive(lease.id).await.unwrap();
    assert!(keep.keep_alive().await.unwrap() > 0);
    let kv = &c.range(Get::key("owned")).await.unwrap().kvs[0];
    assert_eq!(kv.lease, lease.id);
    c.lease_revoke(lease.id).await.unwrap();
    assert!(
        c.range(Get::key("owned")).await.unwrap().kvs.is_empty(),
        "revoking deletes the lease's keys"
    );
    assert_eq!(
        keep.keep_alive().await.unwrap(),
        0,
        "a revoked lease cannot be renewed"
    );
    assert!(
        matches!(
            c.lease_keep_alive(lease.id).await,
            Err(EtcdError::Other {
                code: tonic::Code::NotFound,
                ..
            })
        ),
        "nor kept alive"
    );

    let s = c.status().await.unwrap();
    assert!(
        s.is_leader() && s.db_size > 0 && s.raft_index > 0 && !s.version.is_empty(),
        "{s:?}"
    );
    assert_eq!(s.revision, c.current_revision().await.unwrap());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].client_urls, etcd.endpoints());
    assert_eq!(members[0].id, s.member_id);
}

/// A 3-member cluster keeps answering after its leader is killed -9: a new
/// leader is elected among the others, writes go on through the same
/// client (after at most an election's `UNAVAILABLE`), nothing acknowledged
/// is lost, and the member restarted catches up. A stopped (SIGSTOP) member
/// makes calls to it fail `Unavailable` in bounded time, not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_member_cluster_survives_its_leader_killed() {
    let mut etcd = EtcdCluster::start(3, &[]).await;
    let old = etcd.leader().await;
    let mut config = etcd.config("/test/");
    config.request_timeout = Duration::from_secs(2);
    // the leader first: the client prefers it, so its death must be failed over
    config.endpoints.swap(0, old);
    let c = EtcdClient::connect(&config).await.unwrap();
    let members = c.member_list().await.unwrap();
    assert_eq!(members.len(), 3);
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(
            c.put(Put::new(format!("k/{i}"), "before"))
                .await
                .unwrap()
                .revision,
        );
    }
    // (the same one, unless the machine's load made etcd elect another)
    let old = etcd.leader().await;
    // a watch on a follower, opened before the kill, goes on after it
    let follower = (old + 1) % 3;
    let watching = EtcdClient::connect(&EtcdConfig::new(
        [etcd.members[follower].client_url.clone()],
        "/test/",
    ))
    .await
    .unwrap();
    let mut w = watching
        .watch(WatchOptions::new(Keys::Prefix(b"k/".to_vec())))
        .await
        .unwrap();

    let killed_at = Instant::now();
    etcd.kill(old);
    for i in 20..40 {
        let put = Put::new(format!("k/{i}"), "after");
        acked.push(
            until_available(Duration::from_secs(30), || c.put(put.clone()))
                .await
                .revision,
        );
    }
    eprintln!("20 writes after the leader's kill took {:?}", killed_at.elapsed());
    let new = etcd.leader().await;
    assert_ne!(new, old);
    let all = until_available(Duration::from_secs(10), || c.range(Get::prefix("k/"))).await;
    assert_eq!(all.count, 40, "nothing acknowledged is lost");
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.extend(next(&mut w).await.events.iter().map(|e| e.kv.mod_revision));
    }
    assert_eq!(
        seen,
        acked[20..].to_vec(),
        "the follower's watch saw every write after the kill, in order"
    );

    etcd.restart(old).await;
    let back = etcd.member_client(old);
    let last = *acked.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.status().await.map_or(true, |s| s.revision < last) {
        assert!(Instant::now() < deadline, "the restarted member did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await; // between two polls
    }
    let r = back.range(Get::prefix("k/").serializable()).await.unwrap();
    assert_eq!(r.count, 40, "the restarted member holds every write");

    // SIGSTOP a follower: the others go on; calls to it time out as
    // unavailable; after SIGCONT it catches up
    let stopped = (etcd.leader().await + 1) % 3;
    etcd.stop(stopped);
    let to_stopped = etcd.member_client(stopped);
    let t = Instant::now();
    let e = to_stopped.range(Get::key("k/0")).await.unwrap_err();
    assert!(
        e.is_unavailable() && t.elapsed() < Duration::from_secs(5),
        "{e} after {:?}",
        t.elapsed()
    );
    let last = until_available(Duration::from_secs(10), || c.put(Put::new("k/40", "during")))
        .await
        .revision;
    etcd.cont(stopped);
    let deadline = Instant::now() + Duration::from_secs(30);
    while to_stopped.status().await.map_or(true, |s| s.revision < last) {
        assert!(Instant::now() < deadline, "the continued member did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await; // between two polls
    }
}

/// TLS with client certificates: a client with the CA and a certificate
/// signed by it works; one without a certificate, or in clear text, is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_client_certificate() {
    let pki = TestPki::generate();
    let etcd = EtcdCluster::start_tls(1, &[], &pki).await;
    assert!(etcd.endpoints()[0].starts_with("https://"));
    let c = etcd.client().await;
    let r = c.put(Put::new("tls", "yes")).await.unwrap();
    assert_eq!(
        c.range(Get::key("tls")).await.unwrap().kvs[0].mod_revision,
        r.revision
    );

    let mut config = etcd.config("/test/");
    config.tls.as_mut().unwrap().identity_pem = None;
    let e = EtcdClient::connect(&config).await.unwrap_err();
    assert!(e.is_unavailable(), "no client certificate: {e}");
    let mut config = etcd.config("/test/");
    config.tls = None;
    let e = EtcdClient::connect(&config).await.unwrap_err();
    assert!(
        e.to_string().contains("https"),
        "an https endpoint without TLS settings: {e}"
    );
    let mut config = EtcdConfig::new([etcd.endpoints()[0].replace("https://", "http://")], "/test/");
    config.request_timeout = Duration::from_secs(2);
    let e = EtcdClient::connect(&config).await.unwrap_err();
    assert!(e.is_unavailable(), "clear text to a TLS port: {e}");
}

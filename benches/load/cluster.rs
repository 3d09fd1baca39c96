//! Figure 7: a cluster. A 3-member etcd cluster on this machine and 1 or 3
//! `factcheck serve --store etcd` replicas over it: creates, consistent
//! reads and watch fan-out, each against etcd's own Put and Range on the
//! same cluster in the same run (etcd is the ceiling: every create is a
//! `Txn` through its leader, every consistent read a quorum read).

use super::*;

/// Three etcd members on loopback, stopped on drop.
pub struct EtcdCluster {
    members: Vec<Child>,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub async fn start() -> Option<EtcdCluster> {
        let binary = Etcd::binary()?;
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (port(), port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new(&binary)
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--max-txn-ops", "65536", "--max-request-bytes", "8389632"])
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            members.push(child);
            urls.push(url);
        }
        let cluster = EtcdCluster {
            members,
            urls,
            _dir: dir,
        };
        // Ready when every member answers a Put (a quorum exists then).
        let deadline = Instant::now() + Duration::from_secs(60);
        'members: for url in &cluster.urls {
            while Instant::now() < deadline {
                if let Ok(Ok(mut c)) =
                    tokio::time::timeout(Duration::from_secs(1), EtcdClient::connect(url.clone())).await
                    && tokio::time::timeout(Duration::from_secs(2), c.put(put_req(0)))
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    continue 'members;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("the 3-member etcd cluster did not form within 60 s: no cluster rows");
            return None;
        }
        Some(cluster)
    }

    /// `n` clients, spread over the members.
    pub async fn clients(&self, n: usize) -> Vec<EtcdClient> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(EtcdClient::connect(self.urls[i % 3].clone()).await.unwrap());
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// A linearizable Range of one key (what a consistent read costs etcd).
async fn ranges(clients: &[EtcdClient], concurrency: usize, time: Duration) -> Figure {
    Figure::of(|| {
        closed_loop(clients, concurrency, time, |mut c: EtcdClient, _| async move {
            c.range(etcdpb::RangeRequest {
                key: b"annotations/000000000000".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        })
    })
    .await
}

/// `GetAnnotation` of `names` in turn; with `min_revision` (the revision
/// the client's last write returned) when set, else consistent.
async fn gets(
    clients: &[Client],
    names: Arc<Vec<String>>,
    concurrency: usize,
    time: Duration,
    min_revision: u64,
) -> Figure {
    Figure::of(|| {
        let names = names.clone();
        closed_loop(clients, concurrency, time, move |mut c: Client, i| {
            let name = names[i % names.len()].clone();
            async move {
                c.get_annotation(pb::GetAnnotationRequest {
                    name,
                    min_revision,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        })
    })
    .await
}

/// `n` watch streams spread over `servers` (100 streams per connection),
/// while a writer on the first server creates at 50/s for `time`: commit
/// (the writer's answer) to delivery p50 and p99 in µs, deliveries lost,
/// and the replicas' RSS growth per stream in KiB.
async fn spread_fan_out(
    servers: &[&Server],
    readers: &[String],
    n: usize,
    time: Duration,
) -> (f64, f64, u64, f64) {
    let rss_before: f64 = servers.iter().map(|s| s.rss_mib()).sum();
    let mut streams = Vec::new();
    let per_channel = 100;
    let mut channel = None;
    for i in 0..n {
        if i % per_channel == 0 {
            channel = Some(servers[(i / per_channel) % servers.len()].channel().await);
        }
        // A server lets one analyst hold 1,000 streams: 900 streams a token.
        let header: MetadataValue<Ascii> = format!("Bearer {}", readers[(i / 900) % readers.len()])
            .parse()
            .unwrap();
        let mut c = FactCheckServiceClient::with_interceptor(channel.clone().unwrap(), Bearer(header));
        let mut s = c
            .watch_annotations(pb::WatchAnnotationsRequest {
                parent: "articles/003_28f3322794e5657e".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap(); // CREATED
        streams.push(s);
    }
    let rss_per_stream_kib =
        (servers.iter().map(|s| s.rss_mib()).sum::<f64>() - rss_before) * 1024.0 / n as f64;
    let events = (time.as_secs_f64() * 50.0) as usize;
    let epoch = Instant::now();
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut got: Vec<(u64, Duration)> = Vec::new();
                while got.len() < events {
                    match tokio::time::timeout(Duration::from_secs(20), s.message()).await {
                        Ok(Ok(Some(m))) if m.kind == 2 => got.push((m.revision, epoch.elapsed())),
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                got
            })
        })
        .collect();
    let (mut writers, _) = servers[0].clients(1).await;
    let writer = &mut writers[0];
    let mut acks = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..events {
        tick.tick().await;
        let a = writer
            .create_annotation(create_req("003_28f3322794e5657e", i))
            .await
            .unwrap()
            .into_inner();
        let rev: u64 = a.etag.trim_matches('"').parse().unwrap();
        acks.insert(rev, epoch.elapsed());
    }
    let mut lat = Vec::new();
    let mut received = 0usize;
    let mut by_server = vec![0usize; servers.len()];
    for (i, r) in receivers.into_iter().enumerate() {
        let got = r.await.unwrap();
        by_server[(i / per_channel) % servers.len()] += got.len();
        for (rev, at) in got {
            received += 1;
            if let Some(ack) = acks.get(&rev) {
                lat.push(at.saturating_sub(*ack).as_micros() as u64);
            }
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    let lost = (events * n) as u64 - received as u64;
    if lost > 0 {
        eprintln!(
            "deliveries per replica: {by_server:?} of {} each",
            events * n / servers.len()
        );
    }
    (pct(0.5), pct(0.99), lost, rss_per_stream_kib)
}

/// Figure 7, into `report`.
pub async fn figure(report: &mut Report, plan: &Plan, tmp: &Path) {
    let Some(etcd) = EtcdCluster::start().await else {
        report.note("7. Cluster: etcd not installed (Debian package etcd-server): no cluster rows".into());
        return;
    };
    let etcd_clients = etcd.clients(8).await;
    let put64 = puts(&etcd_clients, 64, plan.rep).await;
    report.row("7. 3-member etcd: Put, 64 in flight (ceiling)", &put64, None);
    let range64 = ranges(&etcd_clients, 64, plan.rep).await;
    report.row(
        "7. 3-member etcd: Range (linearizable), 64 in flight",
        &range64,
        None,
    );

    let args = |i: usize| {
        let mut urls = etcd.urls.clone();
        urls.rotate_left(i);
        vec![
            "--store".to_owned(),
            "etcd".to_owned(),
            "--etcd-endpoints".to_owned(),
            urls.join(","),
            "--etcd-prefix".to_owned(),
            "/bench-cluster/".to_owned(),
        ]
    };
    let start = |i: usize, token: Option<&str>| {
        let a = args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut s = Server::start_with(&tmp.join(format!("replica-{i}")), &a);
        if let Some(t) = token {
            s.token = t.to_owned();
        }
        s
    };
    let first = start(0, None);
    let (one, _) = first.clients(8).await;
    let create_one = creates(&one, 64, plan.rep).await;
    report.row("7. 1 replica: CreateAnnotation, 64 in flight", &create_one, None);
    let second = start(1, Some(&first.token));
    let third = start(2, Some(&first.token));
    let mut all = Vec::new();
    for s in [&first, &second, &third] {
        all.extend(s.clients(3).await.0);
    }
    let create_three = creates(&all, 64, plan.rep).await;
    report.row(
        "7. 3 replicas: CreateAnnotation, 64 in flight",
        &create_three,
        None,
    );
    let mut names = Vec::new();
    let mut c = all[0].clone();
    let mut written = 0;
    for i in 0..200 {
        let a = c
            .create_annotation(create_req(BIG, i))
            .await
            .unwrap()
            .into_inner();
        written = a.etag.trim_matches('"').parse().unwrap();
        names.push(a.name);
    }
    let names = Arc::new(names);
    let get_three = gets(&all, names.clone(), 64, plan.rep, 0).await;
    report.row(
        "7. 3 replicas: GetAnnotation (consistent), 64 in flight",
        &get_three,
        None,
    );
    let get_min = gets(&all, names, 64, plan.rep, written).await;
    report.row(
        "7. 3 replicas: GetAnnotation with min_revision (the last write's), 64 in flight",
        &get_min,
        None,
    );
    let review_three = reviews(&all, plan.rep).await;
    report.row(
        "7. 3 replicas: GetArticleReview (consistent), 64 in flight",
        &review_three,
        None,
    );
    report.note(format!(
        "7. Cluster ÷ etcd: CreateAnnotation {:.2}× Put with 1 replica, {:.2}× with 3; GetAnnotation {:.2}× Range ({:.2}× with min_revision), GetArticleReview {:.2}× Range (3 replicas, 64 in flight)",
        create_one.rate() / put64.rate(),
        create_three.rate() / put64.rate(),
        get_three.rate() / range64.rate(),
        get_min.rate() / range64.rate(),
        review_three.rate() / range64.rate(),
    ));
    // What a replica's memory grows by per annotation it follows (the
    // index entry, interned analyst, review inputs; notes stay in etcd), and
    // how long a new replica takes to list a store that size.
    let loaded = if plan.quick { 5_000 } else { 100_000 };
    let before = third.rss_mib();
    let mut loader = all[0].clone();
    batch_load(&mut loader, "000_9260bb247249f31b", loaded, 0).await;
    let mut reader = third.clients(1).await.0.remove(0);
    reader
        .get_article(pb::GetArticleRequest {
            name: "articles/000_9260bb247249f31b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let per_annotation = (third.rss_mib() - before) * 1024.0 * 1024.0 / loaded as f64;
    let t = Instant::now();
    let fourth = start(3, Some(&first.token));
    let startup = t.elapsed();
    report.note(format!(
        "7. A replica following {loaded} more annotations grew {per_annotation:.0} bytes per annotation (RSS); a new replica then listed the whole store (every annotation of this figure) and served in {:.2} s",
        startup.as_secs_f64()
    ));
    drop(fourth);
    let n: usize = if plan.quick { 300 } else { 10_000 };
    // Readers for the streams, added through the CLI to the tokens the
    // cluster keeps in etcd.
    let readers: Vec<String> = (0..n.div_ceil(900))
        .map(|i| {
            let out = Command::new(env!("CARGO_BIN_EXE_factcheck"))
                .args(["token", "add", &format!("watcher{i}"), "--role", "reader"])
                .args(args(0))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .collect();
    let (p50, p99, lost, kib) =
        spread_fan_out(&[&first, &second, &third], &readers, n, plan.watch_time).await;
    report.note(format!(
        "7. Watch fan-out over 3 replicas, {n} streams (100 per connection), creates at 50/s on one replica: commit→delivery p50 {:.2} ms, p99 {:.2} ms, lost {lost}; replicas' RSS +{kib:.1} KiB per stream",
        p50 / 1000.0,
        p99 / 1000.0
    ));
    drop((first, second, third));
}

//! `cargo bench --bench load [-- --quick]`: the server under load, measured
//! against the gRPC floor (`grpc.health.v1.Health/Check` on the same server,
//! at the same concurrency, in the same run).
//!
//! It starts the release `factcheck serve` binary as a child process on a
//! temp data dir and drives it over loopback with tonic clients. Every figure
//! is the median of 3 repetitions (min–max beside it). The table goes to
//! stdout and to `docs/BENCHMARKS.md` (not with `--quick`, which is CI's smoke
//! run and judges nothing).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factcheck::pb;
use factcheck::pb::fact_check_service_client::FactCheckServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

type Client = FactCheckServiceClient<InterceptedService<Channel, Bearer>>;

#[path = "load/cluster.rs"]
mod cluster;

/// etcd's KV.Put, generated from etcd's protos in `proto/etcd` (build.rs).
use factcheck::etcd::pb::etcdserverpb as etcdpb;
type EtcdClient = etcdpb::kv_client::KvClient<Channel>;

/// An etcd server on a temp dir, on loopback, stopped on drop: the peer
/// whose durable Put the creates are compared with. `None` without an
/// `etcd` binary on PATH (Debian: `etcd-server`).
struct Etcd {
    child: Child,
    url: String,
    version: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn binary() -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join("etcd"))
            .find(|p| p.is_file())
    }

    async fn start() -> Option<Etcd> {
        let binary = Self::binary()?;
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| {
                v.lines()
                    .next()
                    .map(|l| l.trim().trim_start_matches("etcd Version:").trim().to_owned())
            })
            .unwrap_or_default();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (client, peer) = (port(), port());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(&binary)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            // What factcheck's etcd engine needs (its rows below); a Put
            // does not notice them.
            .args(["--max-txn-ops", "65536", "--max-request-bytes", "8389632"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let etcd = Etcd {
            child,
            url,
            version,
            _dir: dir,
        };
        // Ready when a Put is answered (each try bounded; no fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(1), EtcdClient::connect(etcd.url.clone())).await
                && tokio::time::timeout(Duration::from_secs(2), c.put(put_req(0)))
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                return Some(etcd);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("etcd did not answer within 30 s: no etcd rows");
        None
    }

    async fn clients(&self, n: usize) -> Vec<EtcdClient> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(EtcdClient::connect(self.url.clone()).await.unwrap());
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Put of about an annotation's size: a key per operation.
fn put_req(i: usize) -> etcdpb::PutRequest {
    etcdpb::PutRequest {
        key: format!("annotations/{i:012}").into_bytes(),
        value: vec![b'x'; 200],
        ..Default::default()
    }
}

async fn puts(clients: &[EtcdClient], concurrency: usize, time: Duration) -> Figure {
    Figure::of(|| {
        closed_loop(clients, concurrency, time, |mut c: EtcdClient, i| async move {
            c.put(put_req(i)).await.unwrap();
        })
    })
    .await
}

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Sizes of one run.
struct Plan {
    quick: bool,
    /// Length of one repetition of a closed-loop figure.
    rep: Duration,
    /// Annotations on the article of figure 2.
    big_article: usize,
    /// Watcher counts of figure 3.
    watchers: [usize; 2],
    /// How long creates are paced at 50/s in figure 3.
    watch_time: Duration,
    /// Batches of 1000 in figure 4, per repetition.
    batches: usize,
    /// Annotations loaded for figure 5.
    growth: usize,
    /// Annotations (with 10 KB notes) on the article corrected in figure 6.
    corrected: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                rep: Duration::from_millis(300),
                big_article: 1_000,
                watchers: [10, 50],
                watch_time: Duration::from_millis(600),
                batches: 2,
                growth: 20_000,
                corrected: 2_000,
            }
        } else {
            Plan {
                quick,
                rep: Duration::from_secs(3),
                big_article: 10_000,
                watchers: [100, 1_000],
                watch_time: Duration::from_secs(6),
                batches: 10,
                growth: 1_000_000,
                corrected: 20_000,
            }
        }
    }
}

const BIG: &str = "002_946fad7c8fee627f";

/// The seed articles and their lengths in code points.
const ARTICLES: [(&str, usize); 5] = [
    ("000_9260bb247249f31b", 3470),
    ("001_728dec46794c22c1", 3985),
    (BIG, 6215),
    ("003_28f3322794e5657e", 3010),
    ("004_8a3ee0e763f8382c", 4969),
];

fn length_of(article: &str) -> usize {
    ARTICLES
        .iter()
        .find(|(a, _)| *a == article)
        .expect("a seed article")
        .1
}

struct Server {
    child: Child,
    addr: String,
    token: String,
    data_dir: PathBuf,
    /// Reads the server's log; ends with the committer's figures line.
    figures: Option<std::thread::JoinHandle<Option<String>>>,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// With `extra` flags (`--store etcd ...`).
    fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let mut child = Command::new(env!("CARGO_BIN_EXE_factcheck"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--seeds")
            .arg(&seeds)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,factcheck::server=info,factcheck::store=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited");
            if let Some(rest) = line.split("serving addr=").nth(1) {
                break rest.trim().to_owned();
            }
        };
        // The committer's figures, logged when the store closes.
        let figures = std::thread::spawn(move || {
            let mut found = None;
            for line in stderr.lines().map_while(std::result::Result::ok) {
                // A server that fails says why, beside the bench's own output.
                if line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("server: {line}");
                }
                if let Some(rest) = line.split("figures=").nth(1) {
                    found = Some(rest.trim().trim_matches('"').to_owned());
                }
            }
            found
        });
        // A replica after the first of a cluster finds the tokens made:
        // its caller gives it the first one's.
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Server {
            child,
            addr,
            token,
            data_dir: data_dir.to_owned(),
            figures: Some(figures),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn clients(&self, n: usize) -> (Vec<Client>, Vec<HealthClient<Channel>>) {
        let header: MetadataValue<Ascii> = format!("Bearer {}", self.token).parse().unwrap();
        let mut clients = Vec::new();
        let mut health = Vec::new();
        for _ in 0..n {
            let ch = self.channel().await;
            clients.push(FactCheckServiceClient::with_interceptor(
                ch.clone(),
                Bearer(header.clone()),
            ));
            health.push(HealthClient::new(ch));
        }
        (clients, health)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Stops the server: its data dir, and the committer's figures (where
    /// its time went: see `src/store/figures.rs`).
    fn stop(mut self) -> (PathBuf, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let figures = self
            .figures
            .take()
            .and_then(|t| t.join().ok().flatten())
            .unwrap_or_else(|| "not logged".into());
        (std::mem::take(&mut self.data_dir), figures)
    }
}

impl Drop for Server {
    /// A panicking bench must not leave the server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Closed-loop throughput and latency of one repetition.
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `concurrency` tasks call `op` back to back for `time`.
async fn closed_loop<C, F, Fut>(conns: &[C], concurrency: usize, time: Duration, op: F) -> Sample
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let conn = conns[t % conns.len()].clone();
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    op(conn.clone(), t * 1_000_000 + i).await;
                    lat.push(t0.elapsed().as_micros() as u32);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Sample {
        rate: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Median and range of 3 repetitions of one figure.
struct Figure {
    samples: Vec<Sample>,
}

impl Figure {
    async fn of<Fut: std::future::Future<Output = Sample>>(mut rep: impl FnMut() -> Fut) -> Figure {
        let mut samples = Vec::new();
        for _ in 0..3 {
            samples.push(rep().await);
        }
        Figure { samples }
    }

    fn median(&self, f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self.samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    }

    fn rate(&self) -> f64 {
        self.median(|s| s.rate).0
    }
}

fn fmt_range((m, lo, hi): (f64, f64, f64), unit: &str) -> String {
    format!("{m:.0}{unit} ({lo:.0}–{hi:.0})")
}

struct Report {
    rows: Vec<[String; 6]>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, name: &str, f: &Figure, floor: Option<&Figure>) {
        let ratio = floor.map_or("–".to_owned(), |fl| format!("{:.2}", f.rate() / fl.rate()));
        self.rows.push([
            name.to_owned(),
            fmt_range(f.median(|s| s.rate), "/s"),
            fmt_range(f.median(|s| s.p50_us), " µs"),
            fmt_range(f.median(|s| s.p99_us), " µs"),
            ratio,
            String::new(),
        ]);
        println!("{}", self.rows.last().unwrap().join(" | "));
    }

    fn note(&mut self, s: String) {
        println!("{s}");
        self.notes.push(s);
    }
}

fn span_for(len: usize, i: usize) -> pb::Span {
    let start = (i * 7919 % (len - 200)) as u32;
    pb::Span {
        start,
        end: start + 20 + (i % 150) as u32,
    }
}

fn verdict_for(i: usize) -> i32 {
    (i % 3) as i32 + 1
}

fn create_req(article: &str, i: usize) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: format!("articles/{article}"),
        annotation: Some(pb::Annotation {
            span: Some(span_for(length_of(article), i)),
            verdict: verdict_for(i),
            note: "benchmark".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn batch_load(client: &mut Client, article: &str, n: usize, offset: usize) {
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        client
            .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                parent: format!("articles/{article}"),
                requests: (0..k).map(|i| create_req(article, offset + done + i)).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        done += k;
    }
}

async fn floor(health: &[HealthClient<Channel>], concurrency: usize, time: Duration) -> Figure {
    Figure::of(|| {
        closed_loop(
            health,
            concurrency,
            time,
            |mut h: HealthClient<Channel>, _| async move {
                h.check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .unwrap();
            },
        )
    })
    .await
}

async fn creates(clients: &[Client], concurrency: usize, time: Duration) -> Figure {
    Figure::of(|| {
        closed_loop(clients, concurrency, time, |mut c: Client, i| async move {
            c.create_annotation(create_req("000_9260bb247249f31b", i))
                .await
                .unwrap();
        })
    })
    .await
}

async fn reviews(clients: &[Client], time: Duration) -> Figure {
    reviews_of(clients, time, BIG, 0).await
}

/// `GetArticleReview` of `article`, as of `read_revision` (0: now).
async fn reviews_of(clients: &[Client], time: Duration, article: &'static str, read_revision: u64) -> Figure {
    Figure::of(|| {
        closed_loop(clients, 64, time, move |mut c: Client, _| async move {
            c.get_article_review(pb::GetArticleReviewRequest {
                name: format!("articles/{article}/review"),
                read_revision,
                ..Default::default()
            })
            .await
            .unwrap();
        })
    })
    .await
}

async fn lists(clients: &[Client], time: Duration, page_size: i32) -> Figure {
    Figure::of(|| {
        closed_loop(clients, 64, time, move |mut c: Client, i| async move {
            let start = (i * 37 % 6000) as u32;
            c.list_annotations(pb::ListAnnotationsRequest {
                parent: format!("articles/{BIG}"),
                page_size,
                overlaps: Some(pb::Span {
                    start,
                    end: start + 50,
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        })
    })
    .await
}

/// Figure 3: creates at 50/s, `n` watchers on their own connections.
async fn fan_out(server: &Server, writer: &mut Client, n: usize, time: Duration) -> (f64, f64, u64, usize) {
    let header: MetadataValue<Ascii> = format!("Bearer {}", server.token).parse().unwrap();
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut c = FactCheckServiceClient::with_interceptor(server.channel().await, Bearer(header.clone()));
        let mut s = c
            .watch_annotations(pb::WatchAnnotationsRequest {
                parent: "articles/003_28f3322794e5657e".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap(); // CREATED
        streams.push((c, s));
    }
    let events = (time.as_secs_f64() * 50.0) as usize;
    let epoch = Instant::now();
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|(_c, mut s)| {
            tokio::spawn(async move {
                let _keep = _c;
                let mut got: Vec<(u64, Duration)> = Vec::new();
                while got.len() < events {
                    match tokio::time::timeout(Duration::from_secs(10), s.message()).await {
                        Ok(Ok(Some(m))) if m.kind == 2 => got.push((m.revision, epoch.elapsed())),
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                got
            })
        })
        .collect();
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
    for r in receivers {
        for (rev, at) in r.await.unwrap() {
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
    (pct(0.5), pct(0.99), lost, events)
}

/// Figure 6: one correction of an article with `n` annotations of one word
/// each, every one with a 10 KB note, 5% of the article's words edited in
/// place; meanwhile 8 writers create annotations on another article, back
/// to back. Creates at 8 in flight are measured alone first, the baseline.
/// The server's RSS is sampled every 10 ms. A note for the report.
async fn correction(server: &Server, clients: &[Client], n: usize, rep: Duration) -> String {
    const ID: &str = "correction-bench";
    let words: Vec<&str> = "the minister said exports rose in May talks with Seoul budget officials"
        .split(' ')
        .collect();
    // Three words for each annotation; each word edited with chance 1 in 20.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut old, mut new, mut spans) = (String::new(), String::new(), Vec::new());
    for i in 0..3 * n {
        let w = words[(next() % 12) as usize];
        if i % 3 == 0 {
            let start = old.len() as u32; // ASCII: bytes are code points
            spans.push(pb::Span {
                start,
                end: start + w.len() as u32,
            });
        }
        old.push_str(w);
        if next() % 20 == 0 {
            new.push_str(&"Q".repeat(w.len()));
        } else {
            new.push_str(w);
        }
        old.push(' ');
        new.push(' ');
    }
    let mut c = clients[2].clone();
    let created = c
        .create_article(pb::CreateArticleRequest {
            article_id: ID.into(),
            article: Some(pb::Article {
                text: old,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let note = "n".repeat(10_000);
    for chunk in spans.chunks(200) {
        c.batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: format!("articles/{ID}"),
            requests: chunk
                .iter()
                .map(|&span| pb::CreateAnnotationRequest {
                    annotation: Some(pb::Annotation {
                        span: Some(span),
                        verdict: 1,
                        note: note.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // The baseline: the same writers, no correction.
    let writers = &clients[3..];
    let base = closed_loop(writers, 8, rep, |mut c: Client, i| async move {
        c.create_annotation(create_req("001_728dec46794c22c1", i))
            .await
            .unwrap();
    })
    .await;
    let rss_before = server.rss_mib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = server.child.id();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                    .map_or(0.0, |kb| kb / 1024.0);
                peak = peak.max(rss);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mut c = writers[t % writers.len()].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut lat, mut failed) = (Vec::new(), 0);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t0 = Instant::now();
                    // A stalled write runs into the server's deadline: counted.
                    failed += c
                        .create_annotation(create_req("001_728dec46794c22c1", 50_000_000 + t * 1_000_000 + i))
                        .await
                        .is_err() as usize;
                    lat.push(t0.elapsed().as_micros() as u32);
                    i += 1;
                }
                (lat, failed)
            })
        })
        .collect();
    // Let the writers get going first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let outcome = c
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: format!("articles/{ID}"),
                text: new,
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["text".into()],
            }),
            etag: created.etag,
        })
        .await;
    let answered = t.elapsed().as_secs_f64();
    let outcome = match outcome {
        Ok(_) => format!("answered in {answered:.2} s"),
        Err(e) => format!("failed after {answered:.2} s ({:?})", e.code()),
    };
    // A call cut by the server's deadline may still land: wait for it (the
    // writers and the RSS sampler go on meanwhile).
    let mut landed = None;
    while t.elapsed() < Duration::from_secs(300) {
        let now = c
            .get_article(pb::GetArticleRequest {
                name: format!("articles/{ID}"),
                ..Default::default()
            })
            .await
            .map(|a| a.into_inner().revision_id);
        if now.is_ok_and(|r| r == "2") {
            landed = Some(t.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = landed.map_or("not landed after 300 s".to_owned(), |l| {
        format!("landed after {l:.2} s")
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (l, f) = task.await.unwrap();
        lat.extend(l);
        failed += f;
    }
    let peak = sampler.await.unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    format!(
        "6. Correction of an article with {n} annotations (10 KB notes, 5% of words edited in place) under 8 writers to another article: \
         {outcome}, {took}; server RSS {rss_before:.0} → peak {peak:.0} MiB ({:.1}×); the writers' creates meanwhile: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} done, {failed} failed (alone before: p50 {:.1} ms, p99 {:.1} ms: p99 {:.0}×)",
        peak / rss_before.max(1.0),
        pct(0.5),
        pct(0.99),
        *lat.last().unwrap() as f64 / 1000.0,
        lat.len(),
        base.p50_us / 1000.0,
        base.p99_us / 1000.0,
        pct(0.99) * 1000.0 / base.p99_us.max(1.0),
    )
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    total
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--only=1,4`: the floors and these figures, for working on them (5
    // also runs 2, its baseline); such a run writes nothing here.
    let only: Option<Vec<u32>> = std::env::args().find_map(|a| {
        a.strip_prefix("--only=")
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
    });
    let wants = |n: u32| {
        only.as_ref()
            .is_none_or(|o| o.contains(&n) || (n <= 2 && o.contains(&5)))
    };
    let mut plan = Plan::new(quick);
    // For working on figure 6 at a size between the two runs.
    if let Some(n) = std::env::var("FACTCHECK_BENCH_CORRECTED")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        plan.corrected = n;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let (clients, health) = server.clients(8).await;
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    let t0 = Instant::now();

    // Figure 1: durable creates at 1 and 64 in flight, against the floor.
    let floor1 = floor(&health[..1], 1, plan.rep).await;
    let floor64 = floor(&health, 64, plan.rep).await;
    report.row("Health/Check (floor), 1 in flight", &floor1, None);
    report.row("Health/Check (floor), 64 in flight", &floor64, None);
    let mut base64 = None;
    if wants(1) {
        let create1 = creates(&clients[..1], 1, plan.rep).await;
        report.row("1. CreateAnnotation, 1 in flight", &create1, Some(&floor1));
        let create64 = creates(&clients, 64, plan.rep).await;
        report.row("1. CreateAnnotation, 64 in flight", &create64, Some(&floor64));
        // The peer: etcd's durable Put, the same client library and harness,
        // in the same run.
        match Etcd::start().await {
            Some(etcd) => {
                let etcd_clients = etcd.clients(8).await;
                let put1 = puts(&etcd_clients[..1], 1, plan.rep).await;
                report.row(
                    &format!("1. etcd {} Put, 1 in flight", etcd.version),
                    &put1,
                    Some(&floor1),
                );
                let put64 = puts(&etcd_clients, 64, plan.rep).await;
                report.row(
                    &format!("1. etcd {} Put, 64 in flight", etcd.version),
                    &put64,
                    Some(&floor64),
                );
                report.note(format!(
                    "1. CreateAnnotation ÷ etcd Put: {:.2}× at 1 in flight, {:.2}× at 64 in flight (targets 1.0× and 1.5×)",
                    create1.rate() / put1.rate(),
                    create64.rate() / put64.rate()
                ));
                // The same server on the etcd engine, on this etcd: each
                // group of creates is one Txn, so etcd's Put is its ceiling.
                let on_etcd = Server::start_with(
                    &tmp.path().join("etcd-data"),
                    &[
                        "--store",
                        "etcd",
                        "--etcd-endpoints",
                        &etcd.url,
                        "--etcd-prefix",
                        "/bench/",
                    ],
                );
                let (eclients, _) = on_etcd.clients(8).await;
                let ecreate1 = creates(&eclients[..1], 1, plan.rep).await;
                report.row(
                    "1e. etcd engine: CreateAnnotation, 1 in flight",
                    &ecreate1,
                    Some(&put1),
                );
                let ecreate64 = creates(&eclients, 64, plan.rep).await;
                report.row(
                    "1e. etcd engine: CreateAnnotation, 64 in flight",
                    &ecreate64,
                    Some(&put64),
                );
                let lib = factcheck::etcd::EtcdClient::connect(&factcheck::etcd::EtcdConfig::new(
                    [etcd.url.clone()],
                    "/bench/",
                ))
                .await
                .unwrap();
                let stored = || async {
                    let all = lib.range(factcheck::etcd::Get::prefix(Vec::new())).await.unwrap();
                    let logical: usize = all.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
                    (logical as f64, lib.status().await.unwrap().db_size as f64)
                };
                let before = stored().await;
                batch_load(&mut eclients[0].clone(), BIG, plan.big_article, 0).await;
                let after = stored().await;
                report.note(format!(
                    "1e. etcd engine: {:.0} bytes of keys and values per annotation (its record, location, history record, changelog entry; 9-byte notes); etcd's db file grew {:.0} bytes per annotation (bbolt pages and etcd's own history until compaction)",
                    (after.0 - before.0) / plan.big_article as f64,
                    (after.1 - before.1) / plan.big_article as f64
                ));
                let ereview = reviews(&eclients, plan.rep).await;
                report.row(
                    &format!(
                        "1e. etcd engine: GetArticleReview, {} annotations, 64 in flight",
                        plan.big_article
                    ),
                    &ereview,
                    Some(&floor64),
                );
                let elist = lists(&eclients, plan.rep, 100).await;
                report.row(
                    &format!(
                        "1e. etcd engine: ListAnnotations overlaps, page 100, {} annotations, 64 in flight",
                        plan.big_article
                    ),
                    &elist,
                    Some(&floor64),
                );
                report.note(format!(
                    "1e. etcd engine CreateAnnotation ÷ etcd Put: {:.2}× at 1 in flight, {:.2}× at 64 in flight (target ≥ 0.5× at 64)",
                    ecreate1.rate() / put1.rate(),
                    ecreate64.rate() / put64.rate()
                ));
                let (_, figures) = on_etcd.stop();
                report.note(format!("1e. Committer on etcd (µs per group): {figures}"));
            }
            None => report
                .note("1. etcd Put: etcd not installed (Debian package etcd-server): no etcd rows".into()),
        }
        base64 = Some(create64);
    }

    // Figure 2: an article with many annotations.
    let mut loader = clients[0].clone();
    let mut big = None;
    if wants(2) {
        batch_load(&mut loader, BIG, plan.big_article, 0).await;
        let review = reviews(&clients, plan.rep).await;
        report.row(
            &format!(
                "2. GetArticleReview, {} annotations, 64 in flight",
                plan.big_article
            ),
            &review,
            Some(&floor64),
        );
        let list = lists(&clients, plan.rep, 100).await;
        report.row(
            &format!(
                "2. ListAnnotations overlaps, page 100, {} annotations, 64 in flight",
                plan.big_article
            ),
            &list,
            Some(&floor64),
        );
        // A page of 100 is ~25 KiB of protobuf: the same query with a page
        // of 20 says how much of the time is the page itself.
        let list20 = lists(&clients, plan.rep, 20).await;
        report.row(
            &format!(
                "2. ListAnnotations overlaps, page 20, {} annotations, 64 in flight",
                plan.big_article
            ),
            &list20,
            Some(&floor64),
        );
        big = Some((review, list));

        // As of a past revision: the article rebuilt from today's records,
        // the changelog since and the history of each annotation changed
        // since (README "Reads as of a past revision").
        const PAST: &str = "003_28f3322794e5657e";
        batch_load(&mut loader, PAST, plan.big_article, 0).await;
        let at = loader
            .list_annotations(pb::ListAnnotationsRequest {
                parent: format!("articles/{PAST}"),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .revision;
        let since = plan.big_article / 10;
        batch_load(&mut loader, PAST, since, plan.big_article).await;
        let now = reviews_of(&clients, plan.rep, PAST, 0).await;
        report.row(
            &format!(
                "2. GetArticleReview now, {} annotations, 64 in flight",
                plan.big_article + since
            ),
            &now,
            Some(&floor64),
        );
        let past = reviews_of(&clients, plan.rep, PAST, at).await;
        report.row(
            &format!(
                "2. GetArticleReview as of a past revision ({} annotations then, {since} created since), 64 in flight",
                plan.big_article
            ),
            &past,
            Some(&floor64),
        );
    }

    // Figure 3: watch fan-out.
    let mut writer = clients[1].clone();
    if wants(3) {
        for n in plan.watchers {
            let (p50, p99, lost, events) = fan_out(&server, &mut writer, n, plan.watch_time).await;
            report.note(format!(
                "3. Watch fan-out, {n} streams, {events} creates at 50/s: ack→event p50 {:.2} ms, p99 {:.2} ms, lost {lost}",
                p50 / 1000.0,
                p99 / 1000.0
            ));
        }
    }

    // Figure 4: batches of 1000.
    if wants(4) {
        let batches = plan.batches;
        let mut offset = 1_000_000;
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            batch_load(&mut loader, "004_8a3ee0e763f8382c", batches * 1000, offset).await;
            offset += batches * 1000;
            rates.push((batches * 1000) as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        report.note(format!(
            "4. BatchCreateAnnotations of 1000: {:.0} annotations/s ({:.0}–{:.0})",
            rates[1], rates[0], rates[2]
        ));
    }

    // Figure 5: growth.
    if let (Some(create64), Some((review, list))) = (base64.as_ref(), big.as_ref().filter(|_| wants(5))) {
        let t = Instant::now();
        let per = plan.growth / ARTICLES.len();
        let loaders: Vec<_> = ARTICLES
            .iter()
            .enumerate()
            .map(|(k, (a, _))| {
                let mut c = clients[k % clients.len()].clone();
                let a = a.to_string();
                tokio::spawn(async move { batch_load(&mut c, &a, per, 10_000_000 + k * per).await })
            })
            .collect();
        for l in loaders {
            l.await.unwrap();
        }
        let load_secs = t.elapsed().as_secs_f64();
        let rss_loaded = server.rss_mib();
        drop((clients, health, loader, writer));
        let (dir, figures) = server.stop();
        report.note(format!(
            "Committer, figures 1–5 loading (µs per group): {figures}"
        ));
        let disk = dir_size(&dir) as f64 / (1024.0 * 1024.0);
        let t = Instant::now();
        let server = Server::start(&dir);
        let ch = server.channel().await;
        let mut hc = HealthClient::new(ch);
        loop {
            let s = hc
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap()
                .into_inner();
            if s.status == 1 {
                break;
            }
        }
        let restart = t.elapsed().as_secs_f64();
        let (clients, _health) = server.clients(8).await;
        let create64_big = creates(&clients, 64, plan.rep).await;
        let review_big = reviews(&clients, plan.rep).await;
        let list_big = lists(&clients, plan.rep, 100).await;
        let rss_after = server.rss_mib();
        report.note(format!(
            "5. Growth: loaded {} annotations in {load_secs:.1} s; disk {disk:.0} MiB; RSS {rss_loaded:.0} MiB after loading, {rss_after:.0} MiB after restart and figures; restart to SERVING {restart:.2} s",
            plan.growth
        ));
        report.row(
            &format!("5. CreateAnnotation, 64 in flight, at {}", plan.growth),
            &create64_big,
            Some(create64),
        );
        report.row(
            &format!("5. GetArticleReview at {}", plan.growth),
            &review_big,
            Some(review),
        );
        report.row(
            &format!("5. ListAnnotations overlaps at {}", plan.growth),
            &list_big,
            Some(list),
        );
        drop(clients);
        let (_, figures) = server.stop();
        report.note(format!(
            "Committer, figure 5 after the restart (µs per group): {figures}"
        ));
    } else {
        drop((clients, health, loader, writer));
        let (_, figures) = server.stop();
        report.note(format!("Committer (µs per group): {figures}"));
    }
    // Figure 6: a correction of an article with many annotations, on a
    // server of its own (its 200 MB of notes would change figure 5's).
    if wants(6) {
        let server = Server::start(&tmp.path().join("data6"));
        let (clients, _health) = server.clients(8).await;
        let note = correction(&server, &clients, plan.corrected, plan.rep).await;
        report.note(note);
        drop(clients);
        let (_, figures) = server.stop();
        report.note(format!("Committer, figure 6 (µs per group): {figures}"));
    }
    // Figure 7: a 3-member etcd cluster and 1, then 3, replicas over it.
    if wants(7) {
        cluster::figure(&mut report, &plan, tmp.path()).await;
    }
    let total = t0.elapsed();

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "| figure | calls/s (min–max) | p50 | p99 | ratio |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for r in &report.rows {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
    let _ = writeln!(md);
    for n in &report.notes {
        let _ = writeln!(md, "- {n}");
    }
    let _ = writeln!(
        md,
        "\nMachine: {nproc} cores; {date}; run took {:.0} s.",
        total.as_secs_f64()
    );
    println!("\n{md}");
    if !plan.quick && only.is_none() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let marker = "<!-- results -->";
        let head = doc.split(marker).next().unwrap_or("").trim_end();
        let _ = std::fs::write(&path, format!("{head}\n\n{marker}\n\n{md}"));
        println!("written to {}", path.display());
    }
}

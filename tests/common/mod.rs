//! A real server on a real socket: `127.0.0.1:0`, a temp data dir, the seed
//! articles, and tonic clients with bearer tokens.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use factcheck::auth::Tokens;
use factcheck::domain::Role;
use factcheck::pb::fact_check_service_client::FactCheckServiceClient;
use factcheck::server::Options;
use factcheck::store::{Retention, Store, StoreConfig};
use factcheck::watch::{WatchGauge, WatchOptions};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use factcheck::pb;

/// Real etcd processes: one member or a cluster (`tests/etcd_client.rs`).
pub mod etcd;

/// Analysts.
pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
/// Reader `rita`.
pub const READER: &str = "reader-token";
/// Reviewer `rosa`.
pub const REVIEWER: &str = "reviewer-token";
pub const ADMIN: &str = "admin-token";

pub type Client = FactCheckServiceClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` when it has a token.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    pub fn new(header: Option<MetadataValue<Ascii>>) -> Self {
        Self(header)
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// What a test may change about the server.
#[derive(Clone, Debug)]
pub struct Setup {
    pub retention: Retention,
    pub watch: WatchOptions,
    /// PEM certificate chain and key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub call_timeout: Duration,
    /// The seeds directory; the repository's `seeds/` when `None`.
    pub seeds: Option<PathBuf>,
    /// The response limit, and the store's limit of what a write answers.
    pub max_response_bytes: usize,
    /// Origins allowed to call over grpc-web from their pages.
    pub cors_origins: Vec<String>,
    /// Serve the web app.
    pub web: bool,
    /// Where to listen; `127.0.0.1:0` when `None`.
    pub listen: Option<SocketAddr>,
    /// The store's engine; the run's (`FACTCHECK_TEST_STORE`) when `None`.
    pub engine: Option<factcheck::store::EngineConfig>,
    /// Most annotations a correction re-anchors per revision; the store's
    /// default when `None`.
    pub reanchor_chunk: Option<usize>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            watch: WatchOptions {
                progress_interval: Duration::from_millis(200),
                max_watchers: 2_000,
                max_per_analyst: 2_000,
            },
            tls: None,
            call_timeout: factcheck::server::DEFAULT_CALL_TIMEOUT,
            seeds: None,
            max_response_bytes: factcheck::store::DEFAULT_MAX_RESPONSE_BYTES,
            cors_origins: Vec::new(),
            web: true,
            listen: None,
            engine: None,
            reanchor_chunk: None,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: TempDir,
    pub gauge: Arc<WatchGauge>,
    pub setup: Setup,
    /// The server's store, to observe what no RPC shows.
    pub store: Store,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

pub fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

pub fn seed_text(id: &str) -> String {
    std::fs::read_to_string(seeds_dir().join(format!("{id}.txt"))).unwrap()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Starts a server on `data_dir`, which may hold an earlier server's data.
    pub async fn start_in(data_dir: TempDir) -> Self {
        Self::start_with(data_dir, Setup::default()).await
    }

    pub async fn start_with(data_dir: TempDir, setup: Setup) -> Self {
        let mut config = StoreConfig::new(data_dir.path());
        config.engine = setup
            .engine
            .clone()
            .unwrap_or_else(|| etcd::engine_for(data_dir.path()));
        config.retention = setup.retention;
        config.seeds_dir = Some(setup.seeds.clone().unwrap_or_else(seeds_dir));
        config.cache_capacity_bytes = 32 * 1024 * 1024;
        config.max_result_bytes = setup.max_response_bytes;
        if let Some(chunk) = setup.reanchor_chunk {
            config.reanchor_chunk = chunk;
        }
        let store = tokio::task::spawn_blocking(move || Store::open(&config))
            .await
            .unwrap()
            .unwrap();
        let tokens = Tokens::from_roles([
            (ALICE, "alice", Role::Analyst),
            (BOB, "bob", Role::Analyst),
            (READER, "rita", Role::Reader),
            (REVIEWER, "rosa", Role::Reviewer),
            (ADMIN, "ada", Role::Admin),
        ])
        .unwrap();
        let listener =
            tokio::net::TcpListener::bind(setup.listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let gauge = Arc::new(WatchGauge::default());
        let options = Options {
            watch: setup.watch.clone(),
            watch_gauge: gauge.clone(),
            tls: setup.tls.clone(),
            call_timeout: setup.call_timeout,
            max_response_bytes: setup.max_response_bytes,
            cors_origins: setup.cors_origins.clone(),
            web: setup.web,
            ..Options::default()
        };
        let served = store.clone();
        let handle = tokio::spawn(async move {
            factcheck::server::run_with(listener, served, Arc::new(tokens), options, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            data_dir,
            gauge,
            setup,
            store,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    /// A client that sends `token` (or no authorization header at all).
    pub async fn client_with(&self, token: Option<&str>) -> Client {
        let header = token.map(|t| format!("Bearer {t}").parse().unwrap());
        FactCheckServiceClient::with_interceptor(self.channel().await, Auth(header))
    }

    pub async fn client(&self) -> Client {
        self.client_with(Some(ALICE)).await
    }

    /// Restarts on the same data dir with the same setup.
    pub async fn restart(self) -> Self {
        let setup = self.setup.clone();
        let dir = self.stop().await;
        Self::start_with(dir, setup).await
    }

    /// Shuts the server down gracefully and hands back its data dir.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.handle.take().unwrap().await.unwrap();
        // Watch tasks end on their own once shutdown begins; each holds the
        // store (and so sled's lock on the data dir) until it has.
        let mut live = self.gauge.subscribe();
        live.wait_for(|n| *n == 0).await.unwrap();
        self.data_dir
    }
}

/// The field named by the status's BadRequest details.
pub fn violated_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    bad.field_violations[0].field.clone()
}

/// The reason of the status's ErrorInfo.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
        .reason
        .clone()
}

pub fn article(id: &str) -> String {
    format!("articles/{id}")
}

/// The first 100 annotations of article `id`.
pub async fn first_page(client: &mut Client, id: &str) -> Vec<pb::Annotation> {
    client
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(id),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .annotations
}

/// Creates article `id` with `text`, then one VERIFIED annotation on the
/// first occurrence of each of `words`; returns the article and each
/// annotation's quote by name.
pub async fn article_with_words(
    client: &mut Client,
    id: &str,
    text: &str,
    words: &[&str],
) -> (pb::Article, std::collections::BTreeMap<String, String>) {
    let created = client
        .create_article(pb::CreateArticleRequest {
            article_id: id.into(),
            article: Some(pb::Article {
                text: text.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut quotes = std::collections::BTreeMap::new();
    for w in words {
        let a = client
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(id),
                annotation: Some(pb::Annotation {
                    span: Some(find_span(text, w)),
                    verdict: pb::Verdict::Verified as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        quotes.insert(a.name, a.quote);
    }
    (created, quotes)
}

/// The code-point span of the `n`th occurrence of `needle` in `text`.
pub fn find_span(text: &str, needle: &str) -> pb::Span {
    let byte = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    let start = text[..byte].chars().count() as u32;
    pb::Span {
        start,
        end: start + needle.chars().count() as u32,
    }
}

pub fn new_annotation(span: pb::Span, verdict: pb::Verdict) -> pb::Annotation {
    pb::Annotation {
        span: Some(span),
        verdict: verdict as i32,
        note: "checked against the wire report".into(),
        sources: vec!["https://example.org/source".into()],
        ..Default::default()
    }
}

pub async fn create(
    client: &mut Client,
    article_id: &str,
    span: pb::Span,
    verdict: pb::Verdict,
) -> pb::Annotation {
    client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(article_id),
            annotation: Some(new_annotation(span, verdict)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every annotation of every article, and the revision, read page by page.
/// A batch of 30 annotations with 16.5 KB notes and a `request_id`: about
/// 1.5 MB of log frame (the records and the request's outcome, a value
/// over sled's blob threshold), so 11 fill a 16 MiB log segment.
pub async fn large_batch(
    client: &mut Client,
    article_id: &str,
) -> Result<pb::BatchCreateAnnotationsResponse, tonic::Status> {
    let note = "“조태열” – checked 🙂 ".repeat(500);
    let requests = (0..30)
        .map(|i| pb::CreateAnnotationRequest {
            annotation: Some(pb::Annotation {
                note: note.clone(),
                ..new_annotation(pb::Span { start: i, end: i + 3 }, pb::Verdict::Disputed)
            }),
            ..Default::default()
        })
        .collect();
    client
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(article_id),
            requests,
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn snapshot(client: &mut Client) -> (Vec<pb::Annotation>, u64) {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_annotations(pb::ListAnnotationsRequest {
                parent: "articles/-".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.annotations);
        if page.next_page_token.is_empty() {
            return (all, page.revision);
        }
        token = page.next_page_token;
    }
}

/// The real `factcheck serve` binary as a child process.
pub struct ChildServer {
    pub child: std::process::Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The server's log lines, as they come.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ChildServer {
    /// Starts the binary on `data_dir` with the seeds and `extra` flags, and
    /// returns once it logs its address.
    pub fn start(data_dir: &std::path::Path, extra: &[&str]) -> ChildServer {
        let mut server = Self::spawn(
            std::process::Command::new(env!("CARGO_BIN_EXE_factcheck")),
            data_dir,
            extra,
        );
        server.wait_until_serving();
        server
    }

    /// Waits for the log line with the server's address.
    pub fn wait_until_serving(&mut self) {
        let line = self.wait_for_log("serving addr=");
        self.addr = line.split("serving addr=").nth(1).unwrap().trim().to_owned();
    }

    /// Starts `command` (the binary, with whatever environment or limits
    /// the caller set) as `serve` on `data_dir`; returns at once.
    pub fn spawn(
        mut command: std::process::Command,
        data_dir: &std::path::Path,
        extra: &[&str],
    ) -> ChildServer {
        use std::io::BufRead;
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--seeds"])
            .arg(seeds_dir())
            .arg("--data-dir")
            .arg(data_dir)
            .args(if extra.contains(&"--store") {
                Vec::new()
            } else {
                etcd::engine_args(data_dir)
            })
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = std::sync::mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                }
            }
        });
        ChildServer {
            child,
            addr: String::new(),
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// Waits for a log line containing `needle` and returns it; panics if
    /// the server exits first.
    /// A line that never comes fails the test after a minute rather than
    /// hanging it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_any_log(&[needle])
    }

    /// Waits for the first log line containing any of `needles` and
    /// returns it (as [`ChildServer::wait_for_log`]).
    pub fn wait_for_any_log(&self, needles: &[&str]) -> String {
        let needle = needles.join("\" or \"");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // What it said instead, for the failure message.
        let mut seen: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if needles.iter().any(|n| line.contains(n)) => return line,
                Ok(line) => seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "the server never logged \"{needle}\"; it logged:\n{}",
                        seen.join("\n")
                    )
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the server exited before logging \"{needle}\"; it logged:\n{}",
                        seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits until the server has logged each of `needles` (in any order)
    /// and its address.
    pub fn wait_until_serving_and_logged(&mut self, needles: &[&str]) {
        let mut left: Vec<&str> = needles.to_vec();
        left.push("serving addr=");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen: Vec<String> = Vec::new();
        while !left.is_empty() {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.log.recv_timeout(wait).unwrap_or_else(|e| {
                panic!(
                    "waiting for {left:?}: {e}; the server logged:\n{}",
                    seen.join("\n")
                )
            });
            if let Some(addr) = line.split("serving addr=").nth(1) {
                self.addr = addr.trim().to_owned();
            }
            left.retain(|n| !line.contains(n));
            seen.push(line);
        }
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn client(&self, token: &str) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FactCheckServiceClient::with_interceptor(
            channel,
            Auth(Some(format!("Bearer {token}").parse().unwrap())),
        )
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `factcheck` binary with `args`; its exit code and output.
pub fn factcheck_cli(args: &[&str]) -> (i32, String, String) {
    // The offline commands read the store itself: on the test engine. On
    // etcd the tokens live in the store too.
    let offline = matches!(args.first(), Some(&"audit") | Some(&"restore") | Some(&"token"));
    let engine = match args.iter().position(|a| *a == "--data-dir") {
        Some(i) if offline && !args.contains(&"--store") => {
            etcd::engine_args(std::path::Path::new(args[i + 1]))
        }
        _ => Vec::new(),
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
        .args(args)
        .args(engine)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An update of the `paths` of `annotation` (which names it), without etag.
pub fn masked_update(annotation: pb::Annotation, paths: &[&str]) -> pb::UpdateAnnotationRequest {
    pb::UpdateAnnotationRequest {
        offset_encoding: 0,
        annotation: Some(annotation),
        update_mask: Some(pbjson_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        etag: String::new(),
    }
}

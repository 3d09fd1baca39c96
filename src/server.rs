//! Serving: the gRPC services on a listener the caller bound, until the
//! shutdown future the caller chose resolves.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::auth::Tokens;
use crate::pb::fact_check_service_server::FactCheckServiceServer;
use crate::service::Service;
use crate::store::Store;
use crate::watch::{WatchGauge, WatchOptions};

/// The largest request the server decodes: the limit is deliberate, so that a
/// large batch is refused with RESOURCE_EXHAUSTED, not buffered.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const SERVICE_NAME: &str = "factcheck.v1.FactCheckService";

/// How long calls in flight may take to finish once shutdown begins; after
/// that the remaining connections are closed.
/// The methods whose answer is a stream: the call deadline does not apply
/// to them (a watch is open for hours; a backup of a large store takes as
/// long as its copy takes). A test checks this against the proto.
pub const STREAMING_METHODS: [&str; 3] = ["WatchAnnotations", "WatchArticleReviews", "Backup"];

pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The deadline of a unary call unless the client asks for a shorter one.
pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Server settings beyond the store and the tokens.
#[derive(Clone, Debug)]
pub struct Options {
    pub watch: WatchOptions,
    /// Counts live watch streams; keep a clone to observe them.
    pub watch_gauge: Arc<WatchGauge>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Deadline of every unary call (a shorter `grpc-timeout` from the client
    /// wins); watch streams are not bounded by it.
    pub call_timeout: std::time::Duration,
    /// The largest response in bytes: lists end their page early, BatchGet
    /// refuses beyond it. Give the store the same as its
    /// `max_result_bytes`, which bounds what a write answers.
    pub max_response_bytes: usize,
    /// The connection cap and the first-byte timeout.
    pub connections: crate::listener::Limits,
    /// Most concurrent HTTP/2 streams (calls, watches) on one connection.
    pub max_streams_per_connection: u32,
    /// Serve the web app at `/`.
    pub web: bool,
    /// Origins whose pages may call the API (CORS); none: only the server's
    /// own web app.
    pub cors_origins: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch: WatchOptions::default(),
            watch_gauge: Arc::default(),
            tls: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_response_bytes: crate::store::DEFAULT_MAX_RESPONSE_BYTES,
            connections: crate::listener::Limits::default(),
            max_streams_per_connection: 200,
            web: true,
            cors_origins: Vec::new(),
        }
    }
}

/// tonic refuses a request above the size limit with OUT_OF_RANGE; gRPC's
/// status codes say RESOURCE_EXHAUSTED. Our own OUT_OF_RANGE answers (a
/// `read_revision` out of reach) always carry an ErrorInfo: one without is
/// tonic's.
fn oversized_is_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if res
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
        && !res.headers().contains_key("grpc-status-details-bin")
    {
        let headers = res.headers_mut();
        let code = (tonic::Code::ResourceExhausted as i32).to_string();
        headers.insert("grpc-status", code.parse().expect("digits are a valid header"));
        let message = format!("request is larger than the limit of {MAX_REQUEST_BYTES} bytes");
        headers.insert("grpc-message", message.parse().expect("ascii is a valid header"));
    }
    res
}

/// What tonic and tonic-web say, as INTERNAL, of a request whose gRPC
/// framing is broken (a cut frame, a compressed flag with no encoding, bad
/// base64 in grpc-web text): the client's fault, not ours.
const MALFORMED_FRAMING: [&str; 5] = [
    "Unexpected EOF decoding stream",
    "protocol error: received message with",
    "Error decompressing",
    "tonic-web:",
    "malformed base64",
];

/// A request that does not frame as gRPC is INVALID_ARGUMENT with the
/// reason MALFORMED_REQUEST (as one that does not decode), not INTERNAL
/// without details. Our own INTERNAL answers always carry an ErrorInfo, so
/// one without is tonic's.
fn malformed_is_invalid_argument<B>(mut res: http::Response<B>) -> http::Response<B> {
    let internal = (tonic::Code::Internal as i32).to_string();
    let headers = res.headers();
    let tonics = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == internal.as_bytes())
        && !headers.contains_key("grpc-status-details-bin");
    if !tonics {
        return res;
    }
    let message = headers
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if !MALFORMED_FRAMING.iter().any(|p| message.contains(p)) {
        return res;
    }
    let status = tonic::Status::from(crate::error::Error::invalid(
        "MALFORMED_REQUEST",
        "request",
        format!("the request is not well-formed gRPC: {message}"),
    ));
    let headers = res.headers_mut();
    headers.remove("grpc-message");
    if status.add_header(headers).is_err() {
        tracing::warn!("cannot rewrite a malformed request's status");
    }
    res
}

/// The per-call deadline of the service's unary calls, answered with
/// DEADLINE_EXCEEDED. tonic's own `Server::timeout` would also cut streams
/// short of nothing but answer CANCELLED, so it is not used.
///
/// It is also the first to see each request, so it tells the connection
/// that a complete request came (its handshake is over) and whether it
/// carried a valid token (an authenticated connection is never evicted at
/// the connection cap): see [`crate::listener`].
#[derive(Clone)]
struct Deadline<S> {
    inner: S,
    limit: std::time::Duration,
    tokens: Arc<Tokens>,
}

/// Tells the request's connection that a complete request came.
fn request_arrived<B>(req: &http::Request<B>, tokens: &Tokens) {
    use crate::listener::ConnInfo;
    let state = req.extensions().get::<ConnInfo>().map(|c| &c.state).or_else(|| {
        req.extensions()
            .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
            .map(|c| &c.get_ref().state)
    });
    if let Some(state) = state
        && !state.authenticated()
    {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        state.request_arrived(tokens.authenticate(header).is_ok());
    }
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A grpc-web client needs its own content type back, even on a
        // trailers-only answer.
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .filter(|v| v.as_bytes().starts_with(b"application/grpc-web"))
            .cloned();
        request_arrived(&req, &self.tokens);
        let path = req.uri().path();
        let unary = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(SERVICE_NAME))
            .and_then(|p| p.strip_prefix('/'))
            .is_some_and(|method| !STREAMING_METHODS.contains(&method));
        let call = self.inner.call(req);
        if !unary {
            return Box::pin(call);
        }
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(response) => response,
                Err(_) => {
                    let mut res = tonic::Status::deadline_exceeded(format!(
                        "the call took longer than the server's deadline of {limit:?}: \
                         a write may still have landed; retry it with the same request_id"
                    ))
                    .into_http();
                    if let Some(ct) = content_type {
                        res.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                    }
                    Ok(res)
                }
            }
        })
    }
}

/// The CORS layer for `origins` (none: no layer, so browsers refuse every
/// other origin): preflights, the headers a grpc-web client sends, and the
/// gRPC status headers it must read, as the grpc-web spec says.
fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, String> {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| {
            http::HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| format!("--cors-origin {o:?} is not a valid origin"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(tower_http::cors::AllowOrigin::list(origins))
            .allow_methods([http::Method::POST])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
            ])
            .max_age(std::time::Duration::from_secs(24 * 3600)),
    ))
}

/// [`run_with`] with default options.
pub async fn run(
    listener: TcpListener,
    store: Store,
    tokens: Arc<Tokens>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    run_with(listener, store, tokens, Options::default(), shutdown).await
}

/// Serves until `shutdown` resolves, then ends watch streams (UNAVAILABLE)
/// and lets in-flight calls finish (for at most [`SHUTDOWN_GRACE`]).
///
/// Health reports SERVING for the service (and overall) while it runs and
/// NOT_SERVING once shutdown begins. Health and reflection need no token.
pub async fn run_with(
    listener: TcpListener,
    store: Store,
    tokens: Arc<Tokens>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let deadline_tokens = tokens.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc's ErrorInfo and BadRequest: so grpcurl decodes the
        // error details every refusal carries instead of printing base64.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc's ErrorInfo and BadRequest: so grpcurl decodes the
        // error details every refusal carries instead of printing base64.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");

    // Fail-stop: once a commit fails the store refuses writes, and health
    // says so, for a load balancer or supervisor to act on. On etcd, also
    // while this server cannot see other servers' commits (its watch on the
    // store is broken): it would answer stale reads, so the balancer should
    // send calls elsewhere until it is back.
    let mut failed = store.failed();
    let mut in_sync = store.in_sync();
    let reporter = health.clone();
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            let now = !*failed.borrow_and_update() && *in_sync.borrow_and_update();
            if now != serving {
                serving = now;
                let status = if now {
                    tracing::info!("the store is reachable and followed again: reporting SERVING");
                    ServingStatus::Serving
                } else if *failed.borrow() {
                    tracing::error!(
                        "the store failed a commit: reporting NOT_SERVING; restart the server once the disk is fixed"
                    );
                    ServingStatus::NotServing
                } else {
                    tracing::warn!("cannot follow the store's changes: reporting NOT_SERVING until it can");
                    ServingStatus::NotServing
                };
                reporter.set_service_status(SERVICE_NAME, status).await;
                reporter.set_service_status("", status).await;
            }
            if *failed.borrow() {
                break;
            }
            tokio::select! {
                r = failed.changed() => if r.is_err() { break },
                r = in_sync.changed() => if r.is_err() { break },
            }
        }
    });

    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let service = Service::new(
        store,
        options.watch,
        options.watch_gauge,
        stopping.clone(),
        options.max_response_bytes,
        tokens.clone(),
    );
    let factcheck = FactCheckServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let factcheck = tonic::service::interceptor::InterceptedService::new(factcheck, tokens.interceptor());

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving");
    }
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing calls in flight");
        let _ = stopping_tx.send(true);
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health.set_service_status("", ServingStatus::NotServing).await;
    };
    let incoming = crate::listener::incoming(listener, options.connections);
    let limit = options.call_timeout;
    let cors = cors(&options.cors_origins).unwrap_or_else(|e| {
        tracing::error!("{e}: allowing no other origin");
        None
    });
    let mut builder = Server::builder()
        // Browsers speak grpc-web, over HTTP/1.1 as well as HTTP/2.
        .accept_http1(true)
        // A client may not open unbounded streams on one connection, and a
        // peer that stops answering pings is dropped.
        .max_concurrent_streams(options.max_streams_per_connection)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        // Outermost first: CORS answers preflights. grpc-web is translated
        // per service (below), so the web app's pages, which are not gRPC,
        // reach the fallback.
        .layer(tower::util::option_layer(cors))
        .layer(tower::util::MapResponseLayer::new(|res| {
            malformed_is_invalid_argument(oversized_is_resource_exhausted(res))
        }))
        .layer(tower::layer::layer_fn(move |inner| Deadline {
            inner,
            limit,
            tokens: deadline_tokens.clone(),
        }));
    if let Some((cert, key)) = &options.tls {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        builder = builder.tls_config(tls)?;
    }
    use tower::Layer;
    let web = tonic_web::GrpcWebLayer::new();
    let routes = tonic::service::Routes::builder()
        .add_service(web.layer(health_service))
        .add_service(web.layer(reflection_v1))
        .add_service(web.layer(reflection_v1alpha))
        .add_service(web.layer(factcheck))
        .clone()
        .routes()
        .into_axum_router();
    let routes = if options.web {
        routes.fallback(crate::web::asset)
    } else {
        routes.fallback(crate::web::disabled)
    };
    let serve = builder
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return result,
        _ = stopping.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still open after the grace period: closing them");
            Ok(())
        }
    }
}

//! grpc-web on the gRPC port, CORS, and the embedded web app, driven by
//! tonic-web's grpc-web client over HTTP/1.1 and by plain HTTP requests.
//! The browser itself is driven in `tests/browser.rs`.

use crate::common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pb::Verdict;
use tonic::metadata::MetadataValue;
use tonic_web::GrpcWebClientLayer;

const KOREAN: &str = "001_728dec46794c22c1";

type WebService = tonic_web::GrpcWebClientService<
    HttpClient<hyper_util::client::legacy::connect::HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>,
>;

/// A grpc-web client over HTTP/1.1 sending `token`.
fn web_client(
    server: &TestServer,
    token: Option<&str>,
) -> pb::fact_check_service_client::FactCheckServiceClient<
    tonic::service::interceptor::InterceptedService<WebService, Auth>,
> {
    let http = HttpClient::builder(TokioExecutor::new()).build_http();
    let svc = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    let header: Option<MetadataValue<_>> = token.map(|t| format!("Bearer {t}").parse().unwrap());
    pb::fact_check_service_client::FactCheckServiceClient::with_origin(
        tonic::service::interceptor::InterceptedService::new(svc, Auth::new(header)),
        server.url().try_into().unwrap(),
    )
}

/// Every RPC works over grpc-web, the watch stream included, with tokens,
/// roles and error details as over gRPC.
#[tokio::test]
async fn grpc_web_over_http1_serves_calls_streams_and_errors() {
    let server = TestServer::start().await;
    let mut web = web_client(&server, Some(ALICE));
    let articles = web
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(articles.articles.len(), 5);
    let me = web
        .get_caller(pb::GetCallerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.analyst.as_str(), me.role.as_str()), ("alice", "analyst"));

    let mut stream = web
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    let text = seed_text(KOREAN);
    let mut grpc = server.client_with(Some(BOB)).await;
    let a = create(&mut grpc, KOREAN, find_span(&text, "조태열"), Verdict::Disputed).await;
    let msg = loop {
        let m = stream.message().await.unwrap().unwrap();
        if !m.events.is_empty() {
            break m;
        }
    };
    assert_eq!(msg.revision, created.revision + 1);
    assert_eq!(msg.events[0].annotation.as_ref().unwrap().quote, "조태열");

    // Refusals carry the same code and details.
    let err = web_client(&server, None)
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = web_client(&server, Some(READER))
        .delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: a.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    use tonic_types::StatusExt;
    assert_eq!(
        err.get_error_details().error_info().unwrap().reason,
        "ROLE_REQUIRED"
    );
    let err = web
        .get_annotation(pb::GetAnnotationRequest {
            offset_encoding: 0,
            name: "articles/nope/annotations/x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

async fn raw(
    server: &TestServer,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<bytes::Bytes> {
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = http.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

/// CORS: an allowed origin's preflight names the headers grpc-web needs;
/// another origin gets no CORS header, so its browser refuses.
#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let setup = Setup {
        cors_origins: vec!["https://cms.example.org".into()],
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let path = "/factcheck.v1.FactCheckService/ListArticles";
    let preflight = |origin| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web,x-user-agent",
            ),
        ]
    };
    let ok = raw(
        &server,
        http::Method::OPTIONS,
        path,
        &preflight("https://cms.example.org"),
    )
    .await;
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://cms.example.org");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "x-grpc-web", "x-user-agent"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    // The call itself exposes the status headers to the page.
    let call = raw(
        &server,
        http::Method::POST,
        path,
        &[
            ("origin", "https://cms.example.org"),
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
    )
    .await;
    assert_eq!(
        call.headers()["access-control-allow-origin"],
        "https://cms.example.org"
    );
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let other = raw(
        &server,
        http::Method::OPTIONS,
        path,
        &preflight("https://evil.example.com"),
    )
    .await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // With no --cors-origin, no origin is allowed.
    let server = TestServer::start().await;
    let none = raw(
        &server,
        http::Method::OPTIONS,
        path,
        &preflight("https://cms.example.org"),
    )
    .await;
    assert!(none.headers().get("access-control-allow-origin").is_none());
}

/// The web app is served at `/` with a strict CSP, its assets beside it;
/// `--no-web` turns it off; gRPC is unaffected either way.
#[tokio::test]
async fn the_web_app_is_served_from_the_binary() {
    let server = TestServer::start().await;
    let page = raw(&server, http::Method::GET, "/", &[]).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    assert!(html.contains("app.js"));
    let js = raw(&server, http::Method::GET, "/app.js", &[]).await;
    assert_eq!(js.status(), 200);
    assert!(
        js.body().len() > 10_000,
        "the bundle is {} bytes",
        js.body().len()
    );
    assert_eq!(raw(&server, http::Method::GET, "/nope", &[]).await.status(), 404);

    let setup = Setup {
        web: false,
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    assert_eq!(raw(&server, http::Method::GET, "/", &[]).await.status(), 404);
    let mut client = server.client().await;
    client
        .list_articles(pb::ListArticlesRequest::default())
        .await
        .unwrap();
}

/// grpc-web-text (base64 bodies, as browsers without binary streams send)
/// is served too.
#[tokio::test]
async fn grpc_web_text_is_served() {
    use base64::Engine;
    let server = TestServer::start().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    // One uncompressed frame holding an empty ListArticlesRequest.
    let frame = b64.encode([0u8, 0, 0, 0, 0]);
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(format!(
        "{}/factcheck.v1.FactCheckService/ListArticles",
        server.url()
    ))
    .header("content-type", "application/grpc-web-text")
    .header("accept", "application/grpc-web-text")
    .header("x-grpc-web", "1")
    .header("authorization", format!("Bearer {ALICE}"))
    .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
    .unwrap();
    let res = http.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web-text")
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    // Base64 chunks, each padded: decode them one by one.
    let mut bytes = Vec::new();
    for chunk in body.split(|&b| b == b'=').filter(|c| !c.is_empty()) {
        let mut c = chunk.to_vec();
        while c.len() % 4 != 0 {
            c.push(b'=');
        }
        bytes.extend(b64.decode(&c).unwrap());
    }
    // A data frame with the five articles, then a trailer frame with status 0.
    assert_eq!(bytes[0], 0);
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    let list: pb::ListArticlesResponse = prost::Message::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(list.articles.len(), 5);
    let trailer = String::from_utf8_lossy(&bytes[5 + len + 5..]).to_ascii_lowercase();
    assert!(trailer.contains("grpc-status:0"), "{trailer}");
}

/// The status of a gRPC or grpc-web answer: from its headers (trailers
/// only), its HTTP/2 trailers, or grpc-web's trailer frame in the body.
fn answer_status(
    headers: &http::HeaderMap,
    trailers: Option<&http::HeaderMap>,
    body: &[u8],
    text: bool,
) -> tonic::Status {
    use base64::Engine;
    if headers.contains_key("grpc-status") {
        return tonic::Status::from_header_map(headers).unwrap();
    }
    if let Some(t) = trailers.filter(|t| t.contains_key("grpc-status")) {
        return tonic::Status::from_header_map(t).unwrap();
    }
    let bytes = if text {
        let mut out = Vec::new();
        for chunk in body.split(|&b| b == b'=').filter(|c| !c.is_empty()) {
            let mut c = chunk.to_vec();
            while c.len() % 4 != 0 {
                c.push(b'=');
            }
            out.extend(base64::engine::general_purpose::STANDARD.decode(&c).unwrap());
        }
        out
    } else {
        body.to_vec()
    };
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        if bytes[at] & 0x80 != 0 {
            let mut map = http::HeaderMap::new();
            for line in String::from_utf8_lossy(&bytes[at + 5..at + 5 + len]).split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    map.insert(
                        http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                        v.trim().parse().unwrap(),
                    );
                }
            }
            return tonic::Status::from_header_map(&map).unwrap();
        }
        at += 5 + len;
    }
    panic!("no status in the answer: {headers:?} {body:?}");
}

/// Broken gRPC framing — a cut frame, the compressed flag with no
/// encoding, bad base64 in grpc-web text — is the client's error:
/// INVALID_ARGUMENT with ErrorInfo MALFORMED_REQUEST, over HTTP/2 and over
/// grpc-web (it was INTERNAL without details).
#[tokio::test]
async fn malformed_framing_is_invalid_argument_over_http2_and_grpc_web() {
    use base64::Engine;
    let server = TestServer::start().await;
    let path = format!("{}/factcheck.v1.FactCheckService/ListArticles", server.url());
    let cut: &[u8] = &[0, 0, 0, 0, 10, 1, 2];
    let compressed: &[u8] = &[1, 0, 0, 0, 0];
    let bearer = format!("Bearer {ALICE}");

    // HTTP/2, as gRPC.
    let h2 = HttpClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for body in [cut, compressed] {
        let req = http::Request::post(&path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", &bearer)
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body)))
            .unwrap();
        let res = h2.request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let status = answer_status(&parts.headers, trailers.as_ref(), &collected.to_bytes(), false);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{status:?}");
    }

    // grpc-web, binary and text, over HTTP/1.1.
    let h1 = HttpClient::builder(TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>();
    let b64 = base64::engine::general_purpose::STANDARD;
    let cases: [(&str, Vec<u8>); 4] = [
        ("application/grpc-web+proto", cut.to_vec()),
        ("application/grpc-web+proto", compressed.to_vec()),
        ("application/grpc-web-text", b64.encode(cut).into_bytes()),
        ("application/grpc-web-text", b"!!not base64!!".to_vec()),
    ];
    for (content_type, body) in cases {
        let req = http::Request::post(&path)
            .header("content-type", content_type)
            .header("accept", content_type)
            .header("x-grpc-web", "1")
            .header("authorization", &bearer)
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let res = h1.request(req).await.unwrap();
        let (parts, body_in) = res.into_parts();
        let bytes = body_in.collect().await.unwrap().to_bytes();
        let status = answer_status(&parts.headers, None, &bytes, content_type.ends_with("text"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{content_type} {body:?}: {status:?}"
        );
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{content_type}: {status:?}");
    }
}

//! The web app, embedded in the binary: `GET /` serves it from the same
//! port as the API, which it calls over grpc-web. The sources and how the
//! bundle is built are in `web/` (see `web/README.md`); the built bundle is
//! committed, so building the crate never needs Node.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// The page, its script and its style.
const INDEX_HTML: &[u8] = include_bytes!("../web/static/index.html");
const APP_CSS: &[u8] = include_bytes!("../web/static/app.css");
const APP_JS: &[u8] = include_bytes!("../web/dist/app.js");

/// The page may load only its own script and style, and call only its own
/// origin: no CDN, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answers a request no gRPC service took: an asset of the web app, or
/// 404. gRPC requests for unknown services get UNIMPLEMENTED, as before.
pub async fn asset(req: Request<Body>) -> Response<Body> {
    if is_grpc(&req) {
        return unimplemented();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let (body, kind, file) = match req.uri().path() {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8", "static/index.html"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8", "dist/app.js"),
        "/app.css" => (APP_CSS, "text/css; charset=utf-8", "static/app.css"),
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    // While working on the app: `FACTCHECK_WEB_DEV_DIR=web` serves the
    // files of a `web/` checkout as they are on disk, without rebuilding
    // the binary. Unset (always, in production), the embedded ones.
    let body = match std::env::var_os("FACTCHECK_WEB_DEV_DIR") {
        Some(dir) => match std::fs::read(std::path::Path::new(&dir).join(file)) {
            Ok(bytes) => Body::from(bytes),
            Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
        },
        None => Body::from(body),
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// Without the web app: 404 for pages, UNIMPLEMENTED for gRPC.
pub async fn disabled(req: Request<Body>) -> Response<Body> {
    if is_grpc(&req) {
        return unimplemented();
    }
    plain(StatusCode::NOT_FOUND, "the web app is off (--no-web)\n")
}

fn is_grpc(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn unimplemented() -> Response<Body> {
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::Unimplemented as i32),
    );
    h.insert("grpc-message", HeaderValue::from_static("no such service"));
    res
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    /// The web app's client is generated from `web/proto.binpb`, the
    /// descriptor set `build.rs` compiles from `proto/`: it must be the
    /// current one. `FACTCHECK_WRITE_WEB_DESCRIPTOR=1` rewrites it; then
    /// run `npm run build` in `web/`.
    #[test]
    fn the_web_app_is_generated_from_the_current_protos() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/web/proto.binpb");
        let committed = std::fs::read(path).unwrap_or_default();
        if committed == crate::pb::FILE_DESCRIPTOR_SET {
            return;
        }
        if std::env::var_os("FACTCHECK_WRITE_WEB_DESCRIPTOR").is_some() {
            std::fs::write(path, crate::pb::FILE_DESCRIPTOR_SET).unwrap();
            return;
        }
        panic!(
            "web/proto.binpb is not the descriptor set of proto/: run \
             `FACTCHECK_WRITE_WEB_DESCRIPTOR=1 cargo test --release --lib web`, then `npm ci && npm run build` in web/"
        );
    }
}

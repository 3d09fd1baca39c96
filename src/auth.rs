//! Bearer tokens: who is calling.
//!
//! The tokens file maps SHA-256 hashes of tokens to analyst names; the tokens
//! themselves are never stored. With no tokens file the server creates one
//! holding a fresh `admin` token, whose clear text it writes once to
//! `<data-dir>/admin-token` (mode 0600), so a first run needs no set-up and
//! the server is still never open to anonymous callers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::domain::{Analyst, Caller};
use crate::error::Error;

/// The file name of the tokens file the server creates in the data dir.
pub const DEFAULT_TOKENS_FILE: &str = "tokens.json";
/// The file name of the first admin token, in clear text, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The tokens file, as JSON.
#[derive(Serialize, Deserialize, Default)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Serialize, Deserialize)]
struct TokenEntry {
    /// Who the token belongs to: becomes `Annotation.analyst`.
    analyst: String,
    /// Lowercase hex SHA-256 of the token.
    sha256: String,
}

/// Known tokens, by hash.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Analyst>,
}

impl Tokens {
    /// Tokens given in clear text; for tests and embedding.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Error> {
        let mut tokens = Tokens::default();
        for (token, analyst) in pairs {
            let analyst = Analyst::parse(analyst).map_err(|e| Error::invalid("analyst", e))?;
            tokens.by_hash.insert(hash(token), analyst);
        }
        Ok(tokens)
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::internal(format!("cannot read the tokens file {}: {e}", path.display())))?;
        let file: TokensFile = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("cannot parse the tokens file {}: {e}", path.display())))?;
        let mut tokens = Tokens::default();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let bad =
                |what: &str| Error::internal(format!("tokens file {}: entry {i}: {what}", path.display()));
            let analyst = Analyst::parse(&entry.analyst).map_err(|e| bad(&format!("analyst {e}")))?;
            let digest: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| bad("sha256 is not 64 hex digits"))?;
            tokens.by_hash.insert(digest, analyst);
        }
        Ok(tokens)
    }

    /// Loads `explicit`, or `<data_dir>/tokens.json`, creating the latter
    /// with a fresh admin token if it does not exist.
    pub fn load_or_init(explicit: Option<&Path>, data_dir: &Path) -> Result<(Self, PathBuf), Error> {
        if let Some(path) = explicit {
            return Ok((Self::load(path)?, path.to_owned()));
        }
        let path = data_dir.join(DEFAULT_TOKENS_FILE);
        if !path.exists() {
            let token = new_token();
            let file = TokensFile {
                tokens: vec![TokenEntry {
                    analyst: "admin".into(),
                    sha256: hex::encode(hash(&token)),
                }],
            };
            let admin_path = data_dir.join(ADMIN_TOKEN_FILE);
            // A leftover from a run that died before writing the tokens file.
            let _ = std::fs::remove_file(&admin_path);
            write_private(&admin_path, format!("{token}\n").as_bytes())?;
            let json = serde_json::to_string_pretty(&file).expect("plain struct");
            write_private(&path, json.as_bytes())?;
            tracing::info!(
                token_file = %admin_path.display(),
                "created a tokens file with an admin token: send it as 'authorization: Bearer <token>'"
            );
        }
        Ok((Self::load(&path)?, path))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The caller named by an `authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, Error> {
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing authorization header: send 'authorization: Bearer <token>'".into(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthenticated("authorization header is not 'Bearer <token>'".into()))?;
        self.by_hash
            .get(&hash(token))
            .map(|analyst| Caller {
                analyst: analyst.clone(),
            })
            .ok_or_else(|| Error::Unauthenticated("unknown token".into()))
    }

    /// A tonic interceptor that puts the [`Caller`] in the request extensions.
    pub fn interceptor(
        self: std::sync::Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |mut req: Request<()>| {
            let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
            let caller = self.authenticate(header)?;
            req.extensions_mut().insert(caller);
            Ok(req)
        }
    }
}

/// A fresh random token: 32 bytes, URL-safe base64.
pub fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))
}

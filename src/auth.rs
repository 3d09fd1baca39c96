//! Bearer tokens: who is calling, and with which [`Role`].
//!
//! The tokens file maps SHA-256 hashes of tokens to analyst names and roles;
//! the tokens themselves are never stored. The server reads it at start and
//! again on [`Tokens::reload`] (SIGHUP), without dropping connections. With no tokens file the server creates one
//! holding a fresh `admin` token, whose clear text it writes once to
//! `<data-dir>/admin-token` (mode 0600), so a first run needs no set-up and
//! the server is still never open to anonymous callers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::domain::{Analyst, Caller, Role};
use crate::error::Error;

/// The file name of the tokens file the server creates in the data dir.
pub const DEFAULT_TOKENS_FILE: &str = "tokens.json";
/// The file name of the first admin token, in clear text, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The tokens file, as JSON.
#[derive(Serialize, Deserialize, Default)]
pub struct TokensFile {
    pub tokens: Vec<TokenEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TokenEntry {
    /// Who the token belongs to: becomes `Annotation.analyst`.
    pub analyst: String,
    /// What the token may do; `analyst` when absent (files from before
    /// roles existed).
    #[serde(default = "default_role")]
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

fn default_role() -> Role {
    Role::Analyst
}

impl TokensFile {
    /// Reads and checks a tokens file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::internal(format!("cannot read the tokens file {}: {e}", path.display())))?;
        let file: TokensFile = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("cannot parse the tokens file {}: {e}", path.display())))?;
        file.by_hash()
            .map_err(|e| Error::internal(format!("tokens file {}: {e}", path.display())))?;
        Ok(file)
    }

    /// Writes the file whole, through a temporary file of its own and a
    /// rename, so a server reloading it never reads half of it. Mode 0600.
    /// A read-modify-write goes through [`TokensFile::update`].
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_string_pretty(self).expect("plain struct");
        let suffix: u64 = rand::random();
        let tmp = path.with_extension(format!("json.{suffix:016x}.tmp"));
        write_private(&tmp, json.as_bytes())?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::internal(format!("cannot replace {}: {e}", path.display()))
        })?;
        // The rename itself must survive a crash.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Reads the file (empty if it does not exist), lets `change` modify
    /// it, and writes it back, all under an exclusive lock on
    /// `<file>.lock`: concurrent `token add` and `token revoke` runs each
    /// see the others' changes, none is lost.
    pub fn update<R>(path: &Path, change: impl FnOnce(&mut TokensFile) -> R) -> Result<R, Error> {
        let lock_path = path.with_extension("json.lock");
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&lock_path)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| Error::internal(format!("cannot lock {}: {e}", lock_path.display())))?;
        let mut file = if path.exists() {
            TokensFile::read(path)?
        } else {
            TokensFile::default()
        };
        let out = change(&mut file);
        file.write(path)?;
        // The lock is released when `lock` is closed.
        drop(lock);
        Ok(out)
    }

    fn by_hash(&self) -> Result<HashMap<[u8; 32], Caller>, String> {
        let mut by_hash = HashMap::new();
        for (i, entry) in self.tokens.iter().enumerate() {
            let analyst = Analyst::parse(&entry.analyst).map_err(|e| format!("entry {i}: analyst {e}"))?;
            let digest: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("entry {i}: sha256 is not 64 hex digits"))?;
            by_hash.insert(
                digest,
                Caller {
                    analyst,
                    role: entry.role,
                },
            );
        }
        Ok(by_hash)
    }

    /// Adds a fresh token for `analyst` with `role`; returns it in clear
    /// text, the only time it is ever shown.
    pub fn add(&mut self, analyst: &Analyst, role: Role) -> String {
        let token = new_token();
        self.tokens.push(TokenEntry {
            analyst: analyst.to_string(),
            role,
            sha256: hex::encode(hash(&token)),
        });
        token
    }

    /// Removes every token of `analyst`; how many there were.
    pub fn revoke(&mut self, analyst: &str) -> usize {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.analyst != analyst);
        before - self.tokens.len()
    }
}

/// Known tokens, by hash; reloadable from the file they came from.
#[derive(Debug)]
pub struct Tokens {
    by_hash: RwLock<Arc<HashMap<[u8; 32], Caller>>>,
    /// Where [`Tokens::reload`] reads from; `None` for tokens given in code.
    path: Option<PathBuf>,
    /// +1 on every reload: open streams check their token again.
    reloads: tokio::sync::watch::Sender<u64>,
    /// Set while the tokens kept in etcd cannot be followed (the watch on
    /// them is broken): a revocation might be missed, so every call is
    /// refused meanwhile (fail closed).
    blind: std::sync::atomic::AtomicBool,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::with(HashMap::new(), None)
    }
}

/// The refusal of every call while the tokens cannot be seen.
fn blind() -> Error {
    Error::StoreUnavailable {
        reason: "TOKENS_UNKNOWN",
        message: "this server cannot currently see the tokens kept in etcd (a token may have been revoked \
                  unseen): refusing every call until it can; retry, or another server"
            .into(),
    }
}

/// The SHA-256 of the token a call came with, in its request extensions
/// beside the [`Caller`]: a long-lived stream checks it again on reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl Tokens {
    /// Tokens given in clear text, each with the analyst role; for tests
    /// and embedding.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Error> {
        Self::from_roles(pairs.into_iter().map(|(t, a)| (t, a, Role::Analyst)))
    }

    /// Tokens given in clear text with their analysts and roles.
    pub fn from_roles<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, Role)>,
    ) -> Result<Self, Error> {
        let mut by_hash = HashMap::new();
        for (token, analyst, role) in entries {
            let analyst =
                Analyst::parse(analyst).map_err(|e| Error::invalid("INVALID_NAME", "analyst", e))?;
            by_hash.insert(hash(token), Caller { analyst, role });
        }
        Ok(Self::with(by_hash, None))
    }

    fn with(by_hash: HashMap<[u8; 32], Caller>, path: Option<PathBuf>) -> Self {
        Tokens {
            by_hash: RwLock::new(Arc::new(by_hash)),
            path,
            reloads: tokio::sync::watch::channel(0).0,
            blind: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Changes each time the tokens are reloaded.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Whether the token with `hash` still names `caller` with a role that
    /// may `action` at `role` or above: UNAUTHENTICATED if it was revoked,
    /// PERMISSION_DENIED if its role no longer allows it.
    pub fn recheck(&self, hash: &TokenHash, caller: &Caller, role: Role, action: &str) -> Result<(), Error> {
        match self.current().get(&hash.0) {
            Some(now) if now.analyst == caller.analyst => now.require(role, action),
            _ => Err(Error::Unauthenticated(format!(
                "the token of {} was revoked",
                caller.analyst
            ))),
        }
    }

    /// Reads a tokens file; [`Tokens::reload`] reads it again.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let by_hash = TokensFile::read(path)?.by_hash().map_err(Error::internal)?;
        Ok(Self::with(by_hash, Some(path.to_owned())))
    }

    /// Reads the tokens file again; on error the tokens stay as they were.
    /// Returns how many tokens are now known.
    pub fn reload(&self) -> Result<usize, Error> {
        let Some(path) = &self.path else {
            return Ok(self.len());
        };
        let by_hash = TokensFile::read(path)?.by_hash().map_err(Error::internal)?;
        let n = by_hash.len();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_hash);
        self.reloads.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// Tokens kept elsewhere than in a file (etcd): these from now on.
    pub fn from_file(file: &TokensFile) -> Result<Self, Error> {
        Ok(Self::with(file.by_hash().map_err(Error::internal)?, None))
    }

    /// Replaces every token with `file`'s, as a reload does: open streams
    /// check their token again, and a revoked one's end.
    pub fn replace(&self, file: &TokensFile) -> Result<usize, Error> {
        let by_hash = file.by_hash().map_err(Error::internal)?;
        let n = by_hash.len();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_hash);
        self.reloads.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// While `blind`, every call is refused `UNAVAILABLE`: the tokens may
    /// have changed unseen.
    ///
    /// Open streams are left running: ending every stream of the server
    /// whenever etcd elects a leader would have every client reconnect at
    /// once. The tokens are read again before the server sees again, and
    /// the streams of a token revoked meanwhile end then.
    pub fn set_blind(&self, blind: bool) {
        self.blind.store(blind, std::sync::atomic::Ordering::Release);
    }

    fn current(&self) -> Arc<HashMap<[u8; 32], Caller>> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads `explicit`, or `<data_dir>/tokens.json`, creating the latter
    /// with a fresh admin token if it does not exist.
    pub fn load_or_init(explicit: Option<&Path>, data_dir: &Path) -> Result<(Self, PathBuf), Error> {
        if let Some(path) = explicit {
            return Ok((Self::load(path)?, path.to_owned()));
        }
        let path = data_dir.join(DEFAULT_TOKENS_FILE);
        if !path.exists() {
            let admin_path = data_dir.join(ADMIN_TOKEN_FILE);
            TokensFile::update(&path, |file| {
                if !file.tokens.is_empty() {
                    // A `token add` got there first.
                    return Ok(());
                }
                let token = file.add(&Analyst::parse("admin").expect("a valid name"), Role::Admin);
                // A leftover from a run that died before writing the tokens file.
                let _ = std::fs::remove_file(&admin_path);
                write_private(&admin_path, format!("{token}\n").as_bytes())
            })??;
            tracing::info!(
                token_file = %admin_path.display(),
                "created a tokens file with an admin token: send it as 'authorization: Bearer <token>'"
            );
        }
        Ok((Self::load(&path)?, path))
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The caller named by an `authorization` header value, and its
    /// token's hash.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<(Caller, TokenHash), Error> {
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing authorization header: send 'authorization: Bearer <token>'".into(),
            )
        })?;
        let header = std::str::from_utf8(header)
            .ok()
            .filter(|h| h.is_ascii())
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the authorization header is not ASCII: tokens are URL-safe base64 (A-Z, a-z, 0-9, '-', '_')"
                        .into(),
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthenticated("authorization header is not 'Bearer <token>'".into()))?;
        if self.blind.load(std::sync::atomic::Ordering::Acquire) {
            return Err(blind());
        }
        let digest = hash(token);
        self.current()
            .get(&digest)
            .cloned()
            .map(|caller| (caller, TokenHash(digest)))
            .ok_or_else(|| Error::Unauthenticated("unknown token".into()))
    }

    /// A tonic interceptor that puts the [`Caller`] in the request extensions.
    pub fn interceptor(self: Arc<Self>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |mut req: Request<()>| {
            let header = req.metadata().get("authorization").map(|v| v.as_bytes());
            let (caller, token) = self.authenticate(header)?;
            req.extensions_mut().insert(caller);
            req.extensions_mut().insert(token);
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

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
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

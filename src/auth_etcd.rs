//! Tokens kept in the etcd cluster, for servers that share a store there
//! (`serve --store etcd` without `--tokens`).
//!
//! One key under the store's prefix, [`TOKENS_KEY`], holds what a tokens
//! file holds ([`TokensFile`]: names, roles and SHA-256 hashes, never the
//! tokens), so every replica sees the same tokens. `factcheck token
//! add/list/revoke --store etcd` changes it with a compare-and-swap on the
//! key's `mod_revision`, so two admins adding tokens at once both land.
//! Each server reads it at start and then watches it: a revocation reaches
//! every server as one watch event, in milliseconds, and its open streams
//! end ([`Tokens::replace`]). While a server's watch is broken it cannot
//! know whether a token was revoked, so it refuses every call
//! (`UNAVAILABLE` `TOKENS_UNKNOWN`: fail closed) until the watch is back and
//! the key read again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{ADMIN_TOKEN_FILE, Tokens, TokensFile};
use crate::domain::{Analyst, Role};
use crate::error::{Error, Result};
use crate::etcd::{CmpOp, Compare, EtcdClient, EtcdConfig, EtcdError, Get, Keys, Put, Txn, WatchOptions};

/// The key of the tokens, under the store's prefix: outside the store's
/// key layout (which never starts with a zero byte), so backups leave it.
pub const TOKENS_KEY: &[u8] = b"\x00tokens";

fn etcd_error(e: EtcdError) -> Error {
    match e {
        EtcdError::Unavailable(_) => Error::StoreUnavailable {
            reason: "STORE_UNAVAILABLE",
            message: format!("etcd cannot be reached: {e}"),
        },
        other => Error::internal(format!("etcd: {other}")),
    }
}

/// The tokens as stored, their key's `mod_revision` (0: no key yet) and
/// the etcd revision of the read.
async fn read(client: &EtcdClient) -> Result<(TokensFile, i64, i64)> {
    let found = client
        .range(Get::key(TOKENS_KEY.to_vec()))
        .await
        .map_err(etcd_error)?;
    let at = found.revision;
    match found.kvs.into_iter().next() {
        Some(kv) => Ok((parse(&kv.value)?, kv.mod_revision, at)),
        None => Ok((TokensFile::default(), 0, at)),
    }
}

fn parse(bytes: &[u8]) -> Result<TokensFile> {
    let file: TokensFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("the tokens kept in etcd do not parse: {e}")))?;
    Ok(file)
}

/// Changes the tokens with `change`, atomically: read, change, write if
/// nobody wrote meanwhile, else again.
pub async fn update<R>(client: &EtcdClient, mut change: impl FnMut(&mut TokensFile) -> R) -> Result<R> {
    loop {
        let (mut file, mod_revision, _) = read(client).await?;
        let out = change(&mut file);
        let value = serde_json::to_vec_pretty(&file).map_err(Error::internal)?;
        let guard = if mod_revision == 0 {
            Compare::version(TOKENS_KEY.to_vec(), CmpOp::Equal, 0)
        } else {
            Compare::mod_revision(TOKENS_KEY.to_vec(), CmpOp::Equal, mod_revision)
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([Put::new(TOKENS_KEY.to_vec(), value)]);
        if client.txn(txn).await.map_err(etcd_error)?.succeeded {
            return Ok(out);
        }
    }
}

/// The tokens a server on etcd uses: read from the cluster (made, with a
/// fresh admin token written to `<data_dir>/admin-token`, if the cluster
/// has none yet), then followed for as long as the server runs.
pub async fn serve(config: &EtcdConfig, data_dir: &Path) -> Result<Arc<Tokens>> {
    let client = EtcdClient::connect(config).await.map_err(etcd_error)?;
    let admin_path = data_dir.join(ADMIN_TOKEN_FILE);
    let made = update(&client, |file| {
        if !file.tokens.is_empty() {
            return None;
        }
        Some(file.add(&Analyst::parse("admin").expect("a valid name"), Role::Admin))
    })
    .await?;
    if let Some(token) = made {
        let _ = std::fs::remove_file(&admin_path);
        crate::auth::write_private(&admin_path, format!("{token}\n").as_bytes())?;
        tracing::info!(
            token_file = %admin_path.display(),
            "the cluster had no tokens: added an admin token; send it as 'authorization: Bearer <token>'"
        );
    }
    let (file, _, at) = read(&client).await?;
    let tokens = Arc::new(Tokens::from_file(&file)?);
    tracing::info!(tokens = tokens.len(), "loaded the tokens kept in etcd");
    tokio::spawn(follow(client, tokens.clone(), at + 1));
    Ok(tokens)
}

/// Follows the tokens key: reads it, watches it from just after that read,
/// replaces the tokens on every change. Whenever the watch breaks the
/// tokens are blind (every call refused) until the key has been read again
/// and a new watch is open: a revocation made meanwhile is never missed,
/// and a watch never starts from a revision etcd has compacted.
async fn follow(client: EtcdClient, tokens: Arc<Tokens>, mut from: i64) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            match read(&client).await {
                Ok((file, _, at)) => {
                    if let Err(e) = tokens.replace(&file) {
                        tracing::error!(error = %e, "the tokens kept in etcd are unreadable: keeping the previous ones");
                    }
                    from = at + 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the tokens kept in etcd: refusing calls until it can");
                    continue;
                }
            }
        }
        first = false;
        let options = WatchOptions::new(Keys::One(TOKENS_KEY.to_vec())).from_revision(from);
        let mut watcher = match client.watch(options).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the tokens kept in etcd: refusing calls until it can");
                tokens.set_blind(true);
                continue;
            }
        };
        tokens.set_blind(false);
        backoff = Duration::from_millis(50);
        loop {
            match watcher.next().await {
                Ok(batch) => {
                    for e in batch.events {
                        let file = match e.kind {
                            crate::etcd::EventKind::Put => parse(&e.kv.value),
                            crate::etcd::EventKind::Delete => Ok(TokensFile::default()),
                        };
                        match file.and_then(|f| tokens.replace(&f)) {
                            Ok(n) => tracing::info!(tokens = n, "the tokens kept in etcd changed: reloaded"),
                            Err(e) => {
                                tracing::error!(error = %e, "the tokens kept in etcd changed to something unreadable: keeping the previous ones")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the watch on the tokens kept in etcd broke: refusing calls until it is back");
                    tokens.set_blind(true);
                    break;
                }
            }
        }
    }
}

/// Runs `update` for a command-line tool, on a runtime of its own.
pub fn update_blocking<R: Send + 'static>(
    config: &EtcdConfig,
    change: impl FnMut(&mut TokensFile) -> R + Send + 'static,
) -> Result<R> {
    block(config, move |client| async move { update(&client, change).await })
}

/// Reads the tokens for a command-line tool.
pub fn read_blocking(config: &EtcdConfig) -> Result<TokensFile> {
    block(
        config,
        |client| async move { read(&client).await.map(|(f, _, _)| f) },
    )
}

/// Runs `f` with a client on a runtime of its own, on a thread of its own:
/// the caller may itself be inside a runtime (the CLI's).
fn block<T, F, Fut>(config: &EtcdConfig, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(EtcdClient) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::internal)?;
                runtime.block_on(async {
                    let client = EtcdClient::connect(config).await.map_err(etcd_error)?;
                    f(client).await
                })
            })
            .join()
            .map_err(|_| Error::internal("the etcd call panicked"))?
    })
}

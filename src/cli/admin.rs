//! Offline commands: the tokens file and the audit check. They touch files
//! in the data dir, not a running server.

use serde_json::json;

use crate::auth::TokensFile;
use crate::config::{AuditAction, OutputFormat, TokenAction};
use crate::domain::{Analyst, Role};
use crate::store::{Store, StoreConfig};

use super::{CliError, Result};

/// Streams a backup from the server into `out`, through `out.partial`.
pub async fn backup(client: &crate::config::ClientArgs, out: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let mut c = super::connect(client).await?;
    let mut stream = c.backup(crate::pb::BackupRequest {}).await?.into_inner();
    let partial = out.with_extension("partial");
    let io = |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", partial.display()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
    let (mut revision, mut size, mut written) = (0, 0, 0u64);
    while let Some(chunk) = stream.message().await.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })? {
        file.write_all(&chunk.data).map_err(io)?;
        written += chunk.data.len() as u64;
        (revision, size) = (chunk.revision, chunk.size);
    }
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    if written != size || written == 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(CliError::Other(format!(
            "the backup stream ended after {written} of {size} bytes: nothing written"
        )));
    }
    std::fs::rename(&partial, out).map_err(io)?;
    match client.output {
        OutputFormat::Json => outln!(
            "{}",
            json!({ "file": out.display().to_string(), "revision": revision, "bytes": written })
        ),
        OutputFormat::Text => outln!(
            "backed up revision {revision} ({written} bytes) to {}",
            out.display()
        ),
    }
    Ok(())
}

pub fn restore(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    store: &crate::config::StoreArgs,
    output: OutputFormat,
) -> Result<()> {
    if let crate::store::EngineConfig::Etcd(etcd) = store.engine().map_err(CliError::Usage)? {
        let revision = crate::store::restore_etcd(file, &etcd).map_err(|e| match e {
            crate::error::Error::InvalidArgument { description, .. } => CliError::Usage(description),
            e => CliError::Other(e.to_string()),
        })?;
        let prefix = String::from_utf8_lossy(&etcd.prefix).into_owned();
        match output {
            OutputFormat::Json => outln!("{}", json!({ "etcdPrefix": prefix, "revision": revision })),
            OutputFormat::Text => outln!(
                "restored revision {revision} into the etcd prefix {prefix}: start servers with --store etcd --etcd-prefix {prefix} (tokens are not in backups)"
            ),
        }
        return Ok(());
    }
    let revision = crate::store::restore(file, data_dir).map_err(|e| match e {
        crate::error::Error::InvalidArgument { description, .. } => CliError::Usage(description),
        e => CliError::Other(e.to_string()),
    })?;
    match output {
        OutputFormat::Json => outln!(
            "{}",
            json!({ "dataDir": data_dir.display().to_string(), "revision": revision })
        ),
        OutputFormat::Text => outln!(
            "restored revision {revision} into {}: start a server with --data-dir {} (tokens are not in backups: it makes a new admin token unless given --tokens)",
            data_dir.display(),
            data_dir.display()
        ),
    }
    Ok(())
}

/// Where `token` commands change the tokens: a file, or etcd.
enum Place {
    File(std::path::PathBuf),
    Etcd(crate::etcd::EtcdConfig),
}

impl Place {
    fn of(file: &crate::config::TokensFileArgs) -> Result<Place> {
        match file.store.engine().map_err(CliError::Usage)? {
            crate::store::EngineConfig::Etcd(config) if file.tokens.is_none() => Ok(Place::Etcd(config)),
            _ => Ok(Place::File(file.path())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::File(path) => path.display().to_string(),
            Place::Etcd(config) => format!(
                "etcd at {} (prefix {})",
                config.endpoints.join(","),
                String::from_utf8_lossy(&config.prefix)
            ),
        }
    }

    /// When a running server takes a change in.
    fn when(&self) -> &'static str {
        match self {
            Place::File(_) => "after SIGHUP",
            Place::Etcd(_) => "at once, on every server of the cluster",
        }
    }

    fn update<R: Send + 'static>(
        &self,
        change: impl FnMut(&mut TokensFile) -> R + Send + 'static,
    ) -> Result<R> {
        match self {
            Place::File(path) => TokensFile::update(path, change).map_err(|e| CliError::Other(e.to_string())),
            Place::Etcd(config) => {
                crate::auth_etcd::update_blocking(config, change).map_err(|e| CliError::Other(e.to_string()))
            }
        }
    }

    /// The tokens, or a usage error if there is no tokens file.
    fn read(&self) -> Result<TokensFile> {
        match self {
            Place::File(path) => {
                if !path.exists() {
                    return Err(CliError::Usage(format!(
                        "no tokens file at {}: pass the server's --data-dir (or --tokens FILE)",
                        path.display()
                    )));
                }
                TokensFile::read(path).map_err(|e| CliError::Other(e.to_string()))
            }
            Place::Etcd(config) => {
                crate::auth_etcd::read_blocking(config).map_err(|e| CliError::Other(e.to_string()))
            }
        }
    }
}

pub fn token(action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Add {
            file,
            name,
            role,
            output,
        } => {
            let analyst =
                Analyst::parse(&name).map_err(|e| CliError::Usage(format!("invalid name {name:?}: {e}")))?;
            let place = Place::of(&file)?;
            if let Place::File(path) = &place {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    return Err(CliError::Usage(format!(
                        "no data dir at {}: pass the server's --data-dir (or --tokens FILE), or run where the server keeps its data",
                        dir.display()
                    )));
                }
                if !path.exists() {
                    eprintln!(
                        "no tokens file in {} yet: creating {} (if the server's data dir is elsewhere, pass --data-dir)",
                        dir.display(),
                        path.display()
                    );
                }
            }
            let role = Role::from(role);
            let added = analyst.clone();
            let token = place.update(move |tokens| tokens.add(&added, role))?;
            match output {
                OutputFormat::Json => outln!(
                    "{}",
                    json!({ "analyst": analyst.as_str(), "role": role.to_string(), "token": token, "file": place.describe() })
                ),
                OutputFormat::Text => {
                    eprintln!(
                        "added {} {role} token for {analyst} to {}: a running server uses it {}. It is shown only now:",
                        if matches!(role, Role::Admin | Role::Analyst) {
                            "an"
                        } else {
                            "a"
                        },
                        place.describe(),
                        place.when()
                    );
                    outln!("{token}");
                }
            }
            Ok(())
        }
        TokenAction::List { file, output } => {
            let tokens = Place::of(&file)?.read()?;
            for t in &tokens.tokens {
                let prefix = &t.sha256[..12.min(t.sha256.len())];
                match output {
                    OutputFormat::Json => outln!(
                        "{}",
                        json!({ "analyst": t.analyst, "role": t.role.to_string(), "sha256Prefix": prefix })
                    ),
                    OutputFormat::Text => outln!("{}\t{}\t{prefix}…", t.analyst, t.role),
                }
            }
            Ok(())
        }
        TokenAction::Revoke { file, name, output } => {
            let place = Place::of(&file)?;
            place.read()?;
            let who = name.clone();
            match place.update(move |tokens| tokens.revoke(&who))? {
                0 => Err(CliError::Usage(format!(
                    "no token of {name:?} in {}",
                    place.describe()
                ))),
                n => {
                    match output {
                        OutputFormat::Json => outln!("{}", json!({ "analyst": name, "revoked": n })),
                        OutputFormat::Text => eprintln!(
                            "revoked {n} token(s) of {name}: a running server refuses them, and ends their watch streams, {}",
                            place.when()
                        ),
                    }
                    Ok(())
                }
            }
        }
    }
}

pub fn audit(action: AuditAction) -> Result<()> {
    match action {
        AuditAction::Verify {
            data_dir,
            store,
            output,
        } => {
            let engine = store.engine().map_err(CliError::Usage)?;
            if matches!(engine, crate::store::EngineConfig::Sled) && !data_dir.join("db").exists() {
                return Err(CliError::Usage(format!("no store in {}", data_dir.display())));
            }
            let mut config = StoreConfig::new(&data_dir);
            config.engine = engine;
            let store = Store::open_for_audit(&config).map_err(|e| {
                let e = e.to_string();
                if e.contains("WouldBlock") || e.contains("could not acquire lock") {
                    CliError::Other(format!(
                        "the store in {} is open in a running server: stop the server first (audit verify reads the store offline)",
                        data_dir.display()
                    ))
                } else {
                    CliError::Other(e)
                }
            })?;
            let report = store.verify_audit().map_err(|e| CliError::Other(e.to_string()))?;
            if output == OutputFormat::Json {
                outln!(
                    "{}",
                    json!({
                        "histories": report.chains,
                        "reviewHistories": report.review_chains,
                        "records": report.records,
                        "problems": report.problems,
                        "revision": store.revision(),
                        "intact": report.problems.is_empty(),
                    })
                );
                return if report.problems.is_empty() {
                    Ok(())
                } else {
                    Err(CliError::Other("the audit history is not intact".into()))
                };
            }
            for p in &report.problems {
                outln!("BROKEN {p}");
            }
            outln!(
                "{} histories, {} records, {} problem(s), at revision {} ({} article review histories)",
                report.chains,
                report.records,
                report.problems.len(),
                store.revision(),
                report.review_chains
            );
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(CliError::Other("the audit history is not intact".into()))
            }
        }
    }
}

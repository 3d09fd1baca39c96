//! Offline commands: the tokens file and the audit check. They touch files
//! in the data dir, not a running server.

use crate::auth::TokensFile;
use crate::config::{AuditAction, TokenAction};
use crate::domain::{Analyst, Role};
use crate::store::{Store, StoreConfig};

use super::{CliError, Result};

pub fn token(action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Add { file, name, role } => {
            let analyst =
                Analyst::parse(&name).map_err(|e| CliError::Usage(format!("invalid name {name:?}: {e}")))?;
            let path = file.path();
            let role = Role::from(role);
            let token = TokensFile::update(&path, |tokens| tokens.add(&analyst, role))
                .map_err(|e| CliError::Other(e.to_string()))?;
            eprintln!(
                "added a {role} token for {analyst} to {}: a running server uses it after SIGHUP. It is shown only now:",
                path.display()
            );
            outln!("{token}");
            Ok(())
        }
        TokenAction::List { file } => {
            let tokens = TokensFile::read(&file.path()).map_err(|e| CliError::Other(e.to_string()))?;
            for t in &tokens.tokens {
                outln!(
                    "{}\t{}\t{}…",
                    t.analyst,
                    t.role,
                    &t.sha256[..12.min(t.sha256.len())]
                );
            }
            Ok(())
        }
        TokenAction::Revoke { file, name } => {
            let path = file.path();
            if !path.exists() {
                return Err(CliError::Other(format!("no tokens file at {}", path.display())));
            }
            match TokensFile::update(&path, |tokens| tokens.revoke(&name))
                .map_err(|e| CliError::Other(e.to_string()))?
            {
                0 => Err(CliError::Usage(format!(
                    "no token of {name:?} in {}",
                    path.display()
                ))),
                n => {
                    eprintln!(
                        "revoked {n} token(s) of {name}: a running server refuses them, and ends their watch streams, after SIGHUP"
                    );
                    Ok(())
                }
            }
        }
    }
}

pub fn audit(action: AuditAction) -> Result<()> {
    match action {
        AuditAction::Verify { data_dir } => {
            if !data_dir.join("db").exists() {
                return Err(CliError::Usage(format!("no store in {}", data_dir.display())));
            }
            let store = Store::open(&StoreConfig::new(&data_dir)).map_err(|e| {
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

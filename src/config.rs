//! The command line: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "factcheck",
    version,
    about = "Annotate the claims in news articles, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FACTCHECK_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory of the store, the tokens file and the first admin token.
    #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
    pub data_dir: PathBuf,

    /// Directory of seed articles (`*.txt`; the id is the file stem).
    #[arg(long, env = "FACTCHECK_SEEDS", default_value = "seeds")]
    pub seeds: PathBuf,

    /// Tokens file (JSON: analyst names and SHA-256 hashes of tokens).
    /// Default: `<data-dir>/tokens.json`, created with an admin token if absent.
    #[arg(long, env = "FACTCHECK_TOKENS")]
    pub tokens: Option<PathBuf>,

    /// sled's page cache in MiB: the main term of the server's memory.
    #[arg(long, env = "FACTCHECK_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,
}

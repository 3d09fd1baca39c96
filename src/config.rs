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
    /// List the articles.
    Articles(ClientArgs),
    /// Show an article's text.
    Article {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id, e.g. 001_728dec46794c22c1.
        id: String,
        /// Highlight the annotated spans with their verdicts.
        #[arg(long)]
        spans: bool,
    },
    /// Annotate a span of an article, found by quote or given by offsets.
    Annotate {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
        /// The exact text to annotate; refused if it occurs more than once
        /// unless --occurrence picks one.
        #[arg(long, conflicts_with = "span", required_unless_present = "span")]
        quote: Option<String>,
        /// Which occurrence of --quote, from 1.
        #[arg(long, requires = "quote")]
        occurrence: Option<usize>,
        /// Code-point offsets START:END (END exclusive).
        #[arg(long, value_parser = parse_span)]
        span: Option<(u32, u32)>,
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        #[arg(long, default_value = "")]
        note: String,
        /// A URL or citation; repeat for several.
        #[arg(long = "source")]
        sources: Vec<String>,
    },
    /// List annotations of one article, or of all.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id; all articles when omitted.
        id: Option<String>,
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        #[arg(long)]
        analyst: Option<String>,
    },
    /// Where the review of an article stands.
    Review {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
    },
    /// Change an annotation's verdict, note, sources or span.
    Update {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}
        name: String,
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        #[arg(long)]
        note: Option<String>,
        /// Replaces all sources; repeat for several.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Remove every source.
        #[arg(long, conflicts_with = "sources")]
        clear_sources: bool,
        #[arg(long, value_parser = parse_span)]
        span: Option<(u32, u32)>,
        /// Only if the annotation still has this etag.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete an annotation.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}
        name: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Print changes as they happen; reconnects and resumes by itself.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id; all articles when omitted.
        id: Option<String>,
        /// First revision to print (inclusive); default: from now.
        #[arg(long = "from")]
        from: Option<u64>,
    },
    /// Apply a JSONL file of operations (create, update, delete) as atomic
    /// batches, after validating every line.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// The file, or - for standard input.
        file: String,
        /// Validate everything, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Export annotations as JSONL (readable by apply) or W3C Web Annotations.
    Export {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id; all articles when omitted.
        id: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

/// How to reach the server, and how to print.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "FACTCHECK_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// Bearer token. Default: the admin token the server wrote in --data-dir.
    #[arg(long, env = "FACTCHECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Where a server on this machine keeps its data (for its admin token).
    #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
    pub data_dir: PathBuf,

    /// `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One create operation a line: `factcheck apply` reads it back.
    Jsonl,
    /// A W3C Web Annotation JSON-LD collection.
    W3c,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictArg {
    Verified,
    Disputed,
    Unattributed,
}

fn parse_span(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(':').ok_or("expected START:END")?;
    let start = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a code-point offset"))?;
    let end = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a code-point offset"))?;
    Ok((start, end))
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

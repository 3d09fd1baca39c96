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
    /// Publish a new article from a UTF-8 text file (reviewers and admins).
    Publish {
        #[command(flatten)]
        client: ClientArgs,
        /// The new article's id: ASCII letters, digits, '_', '-', '.'.
        id: String,
        /// The text file, or - for standard input.
        file: String,
        #[command(flatten)]
        fields: ArticleFields,
    },
    /// Correct an article from a UTF-8 text file: its next revision, every
    /// annotation on it re-anchored (reviewers and admins).
    Correct {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
        /// The corrected text, or - for standard input.
        file: String,
        #[command(flatten)]
        fields: ArticleFields,
        /// Correct only if the article is still at this revision (its etag,
        /// with or without the quotes).
        #[arg(long)]
        etag: Option<String>,
    },
    /// Every article's review: state, counts, coverage, agreement.
    Reviews {
        #[command(flatten)]
        client: ClientArgs,
        /// Only reviews in this state.
        #[arg(long, value_enum)]
        state: Option<ReviewStateArg>,
    },
    /// Settle a contested span with a final verdict and a rationale
    /// (reviewers and admins).
    Resolve {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
        /// The contested span as `factcheck review` prints it: START:END in
        /// code points.
        #[arg(value_parser = parse_span)]
        span: (u32, u32),
        /// The final verdict for the span.
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        /// Why this verdict: required.
        #[arg(long)]
        rationale: String,
        /// Settle only if the review is still at this etag (with or without
        /// the quotes).
        #[arg(long)]
        etag: Option<String>,
    },
    /// Sign off an article's review (reviewers and admins): refused while
    /// a contested span is unresolved, while an annotation needs re-review,
    /// or when you are the only analyst who annotated it.
    Signoff {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
        /// The etag of the review you checked (`factcheck review` prints
        /// it); default: the current one, printed before signing off.
        #[arg(long)]
        etag: Option<String>,
    },
    /// An article's review history: adjudications, sign-offs, withdrawals.
    ReviewLog {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
    },
    /// List an article's revisions: who made each, when, the text's SHA-256.
    Revisions {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
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
        /// What the analyst found.
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        /// Why: the reasoning, for whoever reads the annotation.
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
        /// Only annotations with this verdict.
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        /// Only annotations by this analyst.
        #[arg(long)]
        analyst: Option<String>,
        /// Read as of this store revision (a sign-off's, a write's) rather
        /// than now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Where the review of an article stands.
    Review {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id.
        id: String,
        /// Read as of this store revision (a sign-off's, a write's) rather
        /// than now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Show one annotation.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}, or the bare uuid `list`
        /// prints.
        name: String,
        /// Read as of this store revision (a sign-off's, a write's) rather
        /// than now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Every state an annotation has had: who changed it, when, and how.
    History {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}, or the bare uuid of a
        /// live annotation.
        name: String,
    },
    /// Change an annotation's verdict, note, sources or span.
    Update {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}, or the bare uuid `list`
        /// prints.
        name: String,
        /// The new verdict.
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        /// The new note.
        #[arg(long)]
        note: Option<String>,
        /// Replaces all sources; repeat for several.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Remove every source.
        #[arg(long, conflicts_with = "sources")]
        clear_sources: bool,
        /// The new span: START:END in code points (END exclusive).
        #[arg(long, value_parser = parse_span)]
        span: Option<(u32, u32)>,
        /// Only if the annotation still has this etag (with or without the
        /// quotes).
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete an annotation.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// articles/{article}/annotations/{uuid}, or the bare uuid `list`
        /// prints.
        name: String,
        /// Only if the annotation still has this etag (with or without the
        /// quotes).
        #[arg(long)]
        etag: Option<String>,
        /// Why (admins deleting another analyst's annotation, moderation:
        /// required then, and recorded in its history).
        #[arg(long)]
        reason: Option<String>,
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
        /// `jsonl` operations, or `w3c` Web Annotations (as Hypothesis and
        /// `export --format w3c` write them) to anchor on the current text.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ApplyFormat,
        /// With --format w3c: apply the annotations that anchor and list the
        /// others, instead of refusing the whole file.
        #[arg(long)]
        skip_unanchored: bool,
        /// Apply the file again even if it was applied before. Without it,
        /// each batch's request_id comes from the file's content, so a
        /// re-run is a no-op ("already applied") and a run cut off midway
        /// resumes where it stopped.
        #[arg(long)]
        again: bool,
    },
    /// Back up a running server's store (admins): every article, annotation,
    /// history and review at one revision, not the tokens.
    Backup {
        #[command(flatten)]
        client: ClientArgs,
        /// The backup file to write (replaced only once it is whole).
        out: PathBuf,
    },
    /// Restore a backup into an empty data dir (offline); then start a
    /// server on it. Tokens are not in backups: the server makes a new admin
    /// token, or give it the old tokens file with --tokens.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data dir to create; it must hold no store.
        #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
        data_dir: PathBuf,
        /// With --store etcd, the restore goes into an empty etcd prefix.
        #[command(flatten)]
        store: StoreArgs,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Manage the tokens file (offline; a running server rereads it on SIGHUP).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Check the audit history of a data dir (offline: stop the server first).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Export annotations as JSONL (readable by apply) or W3C Web Annotations.
    Export {
        #[command(flatten)]
        client: ClientArgs,
        /// Article id; all articles when omitted.
        id: Option<String>,
        /// What to write.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// With --format w3c: the base of the IRIs written (articles,
        /// analysts, the collection); default: --server. An article's own
        /// source URL, when it has one, is its target's source. With
        /// --format claimreview: the base of each ClaimReview's `url`.
        #[arg(long)]
        public_url: Option<String>,
        /// With --format claimreview: the fact-checking organization's name
        /// (the ClaimReview `author`).
        #[arg(long, required_if_eq("format", "claimreview"))]
        publisher: Option<String>,
        /// With --format claimreview: the organization's URL.
        #[arg(long, required_if_eq("format", "claimreview"))]
        publisher_url: Option<String>,
    },
}

/// An article's title and source URL, for `publish` and `correct`.
#[derive(Args, Debug, Clone)]
pub struct ArticleFields {
    /// The title; default: the text's first line (publish), unchanged
    /// (correct).
    #[arg(long)]
    pub title: Option<String>,
    /// Where the article is published, an absolute http(s) URL.
    #[arg(long)]
    pub source_url: Option<String>,
}

/// Where the tokens file is.
#[derive(Args, Debug, Clone)]
pub struct TokensFileArgs {
    /// The server's data dir, whose `tokens.json` is used.
    #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
    pub data_dir: PathBuf,
    /// A tokens file elsewhere (as given to `serve --tokens`).
    #[arg(long, env = "FACTCHECK_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// With --store etcd: the tokens the cluster's servers share, kept in
    /// etcd under --etcd-prefix (a change reaches every server at once).
    #[command(flatten)]
    pub store: StoreArgs,
}

impl TokensFileArgs {
    pub fn path(&self) -> PathBuf {
        self.tokens
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::auth::DEFAULT_TOKENS_FILE))
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Add a token for NAME with a role; prints the token, once.
    Add {
        #[command(flatten)]
        file: TokensFileArgs,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
        /// The analyst name the token acts as.
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List the tokens' names and roles (never the tokens).
    List {
        #[command(flatten)]
        file: TokensFileArgs,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Remove every token of NAME.
    Revoke {
        #[command(flatten)]
        file: TokensFileArgs,
        /// The analyst name whose tokens go.
        name: String,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Check every annotation's history chain and that it agrees with the
    /// stored annotations; exit 1 on any break.
    Verify {
        /// The data dir of a stopped server.
        #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
        data_dir: PathBuf,
        /// With --store etcd, the store in an etcd prefix (no server need
        /// stop: the check reads one consistent state per key range).
        #[command(flatten)]
        store: StoreArgs,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// Read, list and watch.
    Reader,
    /// Also create annotations, and update or delete their own (nobody else
    /// changes an analyst's annotations).
    Analyst,
    /// Also adjudicate contested spans (not ones they annotated), sign off
    /// reviews (not of articles they annotated), create and correct
    /// articles.
    Reviewer,
    /// Everything: also tokens, backups, and deleting anyone's annotation
    /// for moderation (with --reason).
    Admin,
}

impl From<RoleArg> for crate::domain::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Reader => Self::Reader,
            RoleArg::Analyst => Self::Analyst,
            RoleArg::Reviewer => Self::Reviewer,
            RoleArg::Admin => Self::Admin,
        }
    }
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

    /// PEM file of the CA that signed the server's certificate (https://).
    #[arg(long, env = "FACTCHECK_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

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
pub enum ReviewStateArg {
    NotStarted,
    InProgress,
    NeedsAdjudication,
    Ready,
    SignedOff,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyFormat {
    /// One operation a line.
    Jsonl,
    /// A W3C Web Annotation document (collection, page, list or one).
    W3c,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One create operation a line: `factcheck apply` reads it back.
    Jsonl,
    /// A W3C Web Annotation JSON-LD collection.
    W3c,
    /// schema.org ClaimReview JSON-LD for signed-off articles: one per
    /// adjudicated or uncontested claim.
    Claimreview,
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

/// An origin as browsers send it: `scheme://host[:port]`, no path.
fn parse_origin(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?} is not an origin: it must start with http:// or https://"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.is_ascii() || rest.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not an origin: scheme://host[:port], no path"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// Which engine holds the store: sled in the data dir, or an etcd cluster.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// `sled`: embedded, in --data-dir (the default). `etcd`: an etcd v3
    /// cluster (--etcd-endpoints), for servers that share one store.
    #[arg(long = "store", env = "FACTCHECK_STORE", value_enum, default_value = "sled")]
    pub engine: EngineArg,

    /// With --store etcd: the members' client URLs, comma-separated
    /// (`http://10.0.0.1:2379,...`; `https://` with --etcd-ca).
    #[arg(long, env = "FACTCHECK_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// With --store etcd: the prefix of every key, so several deployments
    /// can share one cluster.
    #[arg(long, env = "FACTCHECK_ETCD_PREFIX", default_value = "/factcheck/")]
    pub etcd_prefix: String,

    /// With --store etcd: the CA that signed the members' certificates (PEM).
    #[arg(long, env = "FACTCHECK_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// With --store etcd: a client certificate for etcd (PEM), with --etcd-key.
    #[arg(long, env = "FACTCHECK_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,

    /// With --store etcd: the client certificate's key (PEM).
    #[arg(long, env = "FACTCHECK_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineArg {
    Sled,
    Etcd,
}

impl StoreArgs {
    /// The engine these flags choose; an error names the flag missing.
    pub fn engine(&self) -> Result<crate::store::EngineConfig, String> {
        match self.engine {
            EngineArg::Sled => Ok(crate::store::EngineConfig::Sled),
            EngineArg::Etcd => {
                if self.etcd_endpoints.is_empty() {
                    return Err("--store etcd needs --etcd-endpoints (or FACTCHECK_ETCD_ENDPOINTS)".into());
                }
                if self.etcd_cert.is_some() != self.etcd_key.is_some() {
                    return Err("--etcd-cert and --etcd-key go together".into());
                }
                let mut config =
                    crate::etcd::EtcdConfig::new(self.etcd_endpoints.clone(), self.etcd_prefix.as_bytes());
                if self.etcd_ca.is_some() || self.etcd_cert.is_some() {
                    config.tls = Some(
                        crate::etcd::EtcdTls::from_files(
                            self.etcd_ca.as_deref(),
                            self.etcd_cert.as_deref(),
                            self.etcd_key.as_deref(),
                        )
                        .map_err(|e| format!("etcd TLS files: {e}"))?,
                    );
                }
                Ok(crate::store::EngineConfig::Etcd(config))
            }
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FACTCHECK_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Directory of the store, the tokens file and the first admin token.
    #[arg(long, env = "FACTCHECK_DATA_DIR", default_value = "./factcheck-data")]
    pub data_dir: PathBuf,

    /// Directory of seed articles (`*.txt`; the id is the file stem).
    #[arg(long, env = "FACTCHECK_SEEDS", default_value = "seeds")]
    pub seeds: PathBuf,

    /// Tokens file (JSON: analyst names and SHA-256 hashes of tokens).
    /// Default: `<data-dir>/tokens.json`, created with an admin token if
    /// absent; with --store etcd, the tokens kept in etcd under the prefix
    /// (created the same way), shared by every server of the cluster.
    #[arg(long, env = "FACTCHECK_TOKENS")]
    pub tokens: Option<PathBuf>,

    /// sled's page cache in MiB: the main term of the server's memory.
    #[arg(long, env = "FACTCHECK_CACHE_MB", default_value_t = 128)]
    pub cache_mb: u64,

    /// Whether an acknowledged write must survive power loss: after each group
    /// commit, `fdatasync` the store's log (`true`), or rely on sled's flush,
    /// which survives a crash of the process but not of the machine (`false`).
    #[arg(long, env = "FACTCHECK_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub sync: bool,

    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "FACTCHECK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FACTCHECK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow listening on a non-loopback address without TLS, which sends
    /// bearer tokens in clear text.
    #[arg(long, env = "FACTCHECK_INSECURE")]
    pub insecure: bool,

    /// Deadline of a unary call, in seconds, unless the client sets a
    /// shorter one; watch streams have none.
    #[arg(long, env = "FACTCHECK_CALL_TIMEOUT", default_value_t = 30)]
    pub call_timeout_secs: u64,

    /// The largest response, in MiB: a list ends its page early (with a
    /// next_page_token), a BatchGet or batch write whose answer would be
    /// larger is refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "FACTCHECK_MAX_RESPONSE_MB", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_response_mb: u64,

    /// Analysts who must have annotated an article before its review can be
    /// READY: two pairs of eyes by default.
    #[arg(long, env = "FACTCHECK_REVIEW_MIN_ANALYSTS", default_value_t = crate::domain::DEFAULT_MIN_ANALYSTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub review_min_analysts: u32,

    /// How much of the changelog is kept for watchers that resume (and for
    /// replicas that fall behind, on etcd): a number of revisions (`100000`),
    /// an age (`90s`, `30m`, `12h`, `7d`), or both (`100000,7d`); an entry
    /// goes once it is past either. A watch from before what is kept gets
    /// FAILED_PRECONDITION `REVISION_COMPACTED` and relists. Default: a million
    /// revisions or a week.
    #[arg(long, env = "FACTCHECK_CHANGELOG_RETENTION", value_parser = parse_retention)]
    pub changelog_retention: Option<crate::store::Retention>,

    /// The size of a write-ahead log segment in bytes. For tests: a few KiB
    /// makes the log rotate every few writes, the moment a crash is most
    /// interesting.
    #[arg(long, env = "FACTCHECK_WAL_SEGMENT_BYTES", hide = true, default_value_t = crate::store::WAL_SEGMENT_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub wal_segment_bytes: u64,

    /// Most annotations a correction re-anchors per revision: the rest go
    /// in the next ones, so other writers wait for one chunk, not the whole
    /// correction. Tests set a few.
    #[arg(long, env = "FACTCHECK_REANCHOR_CHUNK", hide = true, default_value_t = crate::store::REANCHOR_CHUNK, value_parser = clap::value_parser!(u64).range(1..))]
    pub reanchor_chunk: u64,

    /// Most open connections; more wait in the kernel's backlog until one
    /// closes (logged). Lowered to fit the process's file-descriptor limit.
    #[arg(long, env = "FACTCHECK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// A connection that sends nothing for this many seconds is closed.
    #[arg(long, env = "FACTCHECK_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Most concurrent HTTP/2 streams (calls) on one connection.
    #[arg(long, env = "FACTCHECK_MAX_STREAMS_PER_CONNECTION", default_value_t = 200)]
    pub max_streams_per_connection: u32,

    /// An origin (`https://cms.example.org`) whose pages may call the API
    /// over grpc-web (CORS); repeat for several. None by default: only the
    /// server's own web app.
    #[arg(long = "cors-origin", env = "FACTCHECK_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Do not serve the web app at `/`.
    #[arg(long, env = "FACTCHECK_NO_WEB")]
    pub no_web: bool,

    /// Most watch streams one analyst may hold open, so one token cannot
    /// take every watch slot.
    #[arg(long, env = "FACTCHECK_MAX_WATCHERS_PER_ANALYST", default_value_t = 1000)]
    pub max_watchers_per_analyst: usize,
}

/// Creates the data dir readable by its owner only (0700), and makes the
/// files created in it 0600 (the process umask). An existing dir that
/// others may read is warned about, not changed: its owner chose.
pub fn private_data_dir(dir: &std::path::Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // SAFETY: umask only sets the process's file-creation mask.
        unsafe { libc::umask(0o077) };
        if dir.exists() {
            let meta = std::fs::metadata(dir)
                .map_err(|e| format!("cannot read the data dir {}: {e}", dir.display()))?;
            if !meta.is_dir() {
                return Err(format!("the data dir {} is not a directory", dir.display()));
            }
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the data dir is readable by other users, who can read every annotation and token hash: chmod 700 it"
                );
            }
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))
}

/// `--changelog-retention`: revisions, an age, or both, comma-separated.
pub fn parse_retention(text: &str) -> Result<crate::store::Retention, String> {
    let mut retention = crate::store::Retention::default();
    let (mut revisions, mut age) = (false, false);
    for part in text.split(',').map(str::trim) {
        if let Ok(n) = part.parse::<u64>() {
            if n == 0 || revisions {
                return Err(format!("{part:?}: give one number of revisions, at least 1"));
            }
            retention.revisions = n;
            revisions = true;
            continue;
        }
        let (number, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len()));
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => {
                return Err(format!(
                    "{part:?} is neither a number of revisions nor an age like 90s, 30m, 12h or 7d"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .ok()
            .filter(|n| *n > 0 && !age)
            .ok_or_else(|| format!("{part:?}: give one age, at least 1{unit}"))?;
        retention.age = std::time::Duration::from_secs(n.saturating_mul(seconds));
        age = true;
    }
    Ok(retention)
}

//! The `factcheck` client commands: pleasant for people, reliable for
//! scripts (`--output json`, documented exit codes, one-line errors).

/// `println!` for client output: when stdout's reader has gone away
/// (`factcheck list | head -1`), the command ends as a Unix tool does, by
/// SIGPIPE, instead of panicking on EPIPE.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

pub mod admin;
mod apply;
mod json;
mod publish;
mod w3c;
mod workflow;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::json;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::config::{ClientArgs, Command, ExportFormat, OutputFormat, VerdictArg};
use crate::pb;
use crate::pb::fact_check_service_client::FactCheckServiceClient;

/// How a command failed; each kind has its own exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or input: exit 2 (clap's own usage errors exit 2 too).
    Usage(String),
    /// The server refused the request: exit 3.
    Refused(Box<Rejection>),
    /// The server could not be reached: exit 4.
    Connection(String),
    /// Anything else, such as an unreadable file: exit 1.
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Refused(_) => 3,
            CliError::Connection(_) => 4,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Refused(r) => &r.message,
            CliError::Usage(m) | CliError::Connection(m) | CliError::Other(m) => m,
        }
    }

    /// The error as one JSON object, for `--output json`: `code` (the gRPC
    /// code's name for a refusal, else `USAGE`, `UNREACHABLE` or `FAILED`),
    /// `reason` (the server's ErrorInfo reason), `field`, `message`, `line`
    /// (of the `apply` input), and `exit`.
    pub fn to_json(&self) -> serde_json::Value {
        let (code, reason, field, line) = match self {
            CliError::Refused(r) => (r.code.clone(), Some(r.reason.clone()), r.field.clone(), r.line),
            CliError::Usage(m) => ("USAGE".to_owned(), None, None, line_of(m)),
            CliError::Connection(_) => ("UNREACHABLE".to_owned(), None, None, None),
            CliError::Other(m) => ("FAILED".to_owned(), None, None, line_of(m)),
        };
        json!({
            "code": code,
            "reason": reason,
            "field": field,
            "message": self.message(),
            "line": line,
            "exit": self.exit_code(),
        })
    }

    /// This error, as that of line `line` of an input file.
    pub fn at_line(self, line: usize) -> Self {
        match self {
            CliError::Usage(m) => CliError::Usage(format!("line {line}: {m}")),
            CliError::Refused(mut r) => {
                r.message = format!("line {line}: {}", r.message);
                r.line = Some(line);
                CliError::Refused(r)
            }
            e => e,
        }
    }
}

/// A refusal by the server, as a script needs it.
#[derive(Debug)]
pub struct Rejection {
    /// One line for people: the code, the server's message, the field.
    pub message: String,
    /// The gRPC code, e.g. `INVALID_ARGUMENT`.
    pub code: String,
    /// The ErrorInfo reason, e.g. `SPAN_OUT_OF_RANGE`.
    pub reason: String,
    /// The field a BadRequest names, if any.
    pub field: Option<String>,
    /// The line of the input file it concerns (`apply`).
    pub line: Option<usize>,
}

/// The line a `line N: ...` message names.
fn line_of(message: &str) -> Option<usize> {
    message.strip_prefix("line ")?.split(':').next()?.parse().ok()
}

impl From<Status> for CliError {
    fn from(s: Status) -> Self {
        let mut message = format!("{}: {}", code_name(s.code()), s.message());
        let details = s.get_error_details();
        let field = details
            .bad_request()
            .and_then(|bad| bad.field_violations.first())
            .map(|v| v.field.clone());
        if let Some(f) = &field
            && !s.message().contains(f.as_str())
        {
            message.push_str(&format!(" (field {f})"));
        }
        if is_connection_failure(&s) {
            return CliError::Connection(message);
        }
        let reason = details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| grpc_code_name(s.code()));
        CliError::Refused(Box::new(Rejection {
            message,
            code: grpc_code_name(s.code()),
            reason,
            field,
            line: None,
        }))
    }
}

/// `INVALID_ARGUMENT`, as the gRPC spec spells a code.
fn grpc_code_name(code: Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

fn is_connection_failure(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
        || s.code() == Code::Unknown && s.message().contains("transport")
}

fn code_name(code: Code) -> String {
    // "Invalid argument" -> "invalid argument"
    code.description().to_lowercase()
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = FactCheckServiceClient<InterceptedService<Channel, Bearer>>;

/// Connects to the server named by `args`.
pub async fn connect(args: &ClientArgs) -> Result<Client> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let path = args.data_dir.join(crate::auth::ADMIN_TOKEN_FILE);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_owned())
                .map_err(|_| {
                    CliError::Usage(format!(
                        "no token: pass --token, set FACTCHECK_TOKEN, or run where {} exists",
                        path.display()
                    ))
                })?
        }
    };
    let header = format!("Bearer {token}")
        .parse()
        .map_err(|_| CliError::Usage("the token has characters a header cannot carry".into()))?;
    let server = server_url(&args.server, args.ca_cert.is_some());
    let mut endpoint = Channel::from_shared(server.clone())
        .map_err(|e| CliError::Usage(format!("--server {:?} is not a URL: {e}", args.server)))?
        .connect_timeout(Duration::from_secs(5));
    if server.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &args.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| CliError::Usage(format!("cannot read --ca-cert {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Usage(format!("TLS set-up failed: {}", source_chain(&e))))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| CliError::Connection(format!("cannot reach {}: {}", args.server, source_chain(&e))))?;
    Ok(FactCheckServiceClient::with_interceptor(channel, Bearer(header))
        .max_decoding_message_size(64 * 1024 * 1024))
}

/// `--server` as a URL: `host:port` without a scheme means http, or https
/// when a CA certificate is given (as grpcurl and etcdctl take it).
pub fn server_url(server: &str, tls: bool) -> String {
    if server.contains("://") {
        server.to_owned()
    } else if tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Layers often repeat their inner error's text.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

pub fn verdict_pb(v: VerdictArg) -> pb::Verdict {
    match v {
        VerdictArg::Verified => pb::Verdict::Verified,
        VerdictArg::Disputed => pb::Verdict::Disputed,
        VerdictArg::Unattributed => pb::Verdict::Unattributed,
    }
}

/// An update of the fields given, with a mask naming exactly them; `None`
/// if no field is given.
pub fn update_request(
    name: String,
    verdict: Option<i32>,
    note: Option<String>,
    sources: Option<Vec<String>>,
    span: Option<pb::Span>,
    etag: Option<String>,
) -> Option<pb::UpdateAnnotationRequest> {
    let paths: Vec<String> = [
        ("verdict", verdict.is_some()),
        ("note", note.is_some()),
        ("sources", sources.is_some()),
        ("span", span.is_some()),
    ]
    .into_iter()
    .filter(|&(_, set)| set)
    .map(|(p, _)| p.to_owned())
    .collect();
    if paths.is_empty() {
        return None;
    }
    Some(pb::UpdateAnnotationRequest {
        offset_encoding: 0,
        annotation: Some(pb::Annotation {
            name,
            verdict: verdict.unwrap_or_default(),
            note: note.unwrap_or_default(),
            sources: sources.unwrap_or_default(),
            span,
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask { paths }),
        etag: etag.unwrap_or_default(),
    })
}

/// `articles/-/annotations/{uuid}` for a bare uuid (the server finds its
/// article), else `name` as given.
fn bare_to_wildcard(name: &str) -> String {
    match uuid::Uuid::try_parse(name) {
        Ok(id) => format!("articles/-/annotations/{id}"),
        Err(_) => name.to_owned(),
    }
}

/// The full name of an annotation given by name or by bare uuid: a bare
/// uuid is looked up (it must name a live annotation).
async fn full_name(c: &mut Client, name: &str) -> Result<String> {
    if uuid::Uuid::try_parse(name).is_err() {
        return Ok(name.to_owned());
    }
    let a = c
        .get_annotation(pb::GetAnnotationRequest {
            name: bare_to_wildcard(name),
            offset_encoding: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(a.name)
}

/// Prints an annotation's history, oldest first.
async fn history(c: &mut Client, output: OutputFormat, name: &str) -> Result<()> {
    let mut token = String::new();
    loop {
        let page = c
            .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                name: name.to_owned(),
                page_size: 1000,
                page_token: token,
                offset_encoding: 0,
            })
            .await?
            .into_inner();
        for r in &page.revisions {
            match output {
                OutputFormat::Json => outln!("{}", json::message(r)),
                OutputFormat::Text => {
                    let a = r.annotation.clone().unwrap_or_default();
                    let kind = pb::annotation_event::Type::try_from(r.r#type)
                        .map(|t| t.as_str_name().to_lowercase())
                        .unwrap_or_default();
                    let changed = match &r.changed_fields {
                        Some(m) if !m.paths.is_empty() => format!(" ({})", m.paths.join(", ")),
                        _ => String::new(),
                    };
                    outln!(
                        "{:>8}  {}  {:<12}  {kind}{changed}: {} — {}",
                        r.revision,
                        json::time(r.change_time.as_ref()).as_str().unwrap_or_default(),
                        r.actor,
                        json::verdict_str(a.verdict),
                        ellipsize(&a.quote, 50)
                    );
                }
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

pub fn article_name(id: &str) -> String {
    if id.starts_with("articles/") {
        id.to_owned()
    } else {
        format!("articles/{id}")
    }
}

/// Runs a client command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(_) => unreachable!("serve is not a client command"),
        Command::Token { action } => admin::token(action),
        Command::Audit { action } => tokio::task::spawn_blocking(move || admin::audit(action))
            .await
            .map_err(|e| CliError::Other(e.to_string()))?,
        Command::Articles(client) => articles(&client).await,
        Command::Publish {
            client,
            id,
            file,
            fields,
        } => publish::publish(&client, &id, &file, fields).await,
        Command::Correct {
            client,
            id,
            file,
            fields,
            etag,
        } => publish::correct(&client, &id, &file, fields, etag).await,
        Command::Revisions { client, id } => publish::revisions(&client, &id).await,
        Command::Reviews { client, state } => reviews(&client, state).await,
        Command::Backup { client, out } => admin::backup(&client, &out).await,
        Command::Restore {
            file,
            data_dir,
            store,
            output,
        } => admin::restore(&file, &data_dir, &store, output),
        Command::Resolve {
            client,
            id,
            span,
            verdict,
            rationale,
            etag,
        } => workflow::resolve(&client, &id, span, verdict, rationale, etag).await,
        Command::Signoff { client, id, etag } => workflow::signoff(&client, &id, etag).await,
        Command::ReviewLog { client, id } => workflow::review_log(&client, &id).await,
        Command::Article { client, id, spans } => article(&client, &id, spans).await,
        Command::Annotate {
            client,
            id,
            quote,
            occurrence,
            span,
            verdict,
            note,
            sources,
        } => {
            let mut c = connect(&client).await?;
            let article = get_article(&mut c, &id).await?;
            let (span, expected_quote) = match (quote, span) {
                (Some(q), _) => (find_quote(&article.text, &q, occurrence)?, q),
                (None, Some((start, end))) => (pb::Span { start, end }, String::new()),
                (None, None) => return Err(CliError::Usage("give --quote or --span".into())),
            };
            let created = c
                .create_annotation(pb::CreateAnnotationRequest {
                    offset_encoding: 0,
                    parent: article.name.clone(),
                    annotation: Some(pb::Annotation {
                        span: Some(span),
                        verdict: verdict_pb(verdict) as i32,
                        note,
                        sources,
                        ..Default::default()
                    }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    expected_quote,
                })
                .await?
                .into_inner();
            print_annotation(client.output, &created);
            Ok(())
        }
        Command::List {
            client,
            id,
            verdict,
            analyst,
            at,
        } => {
            let mut c = connect(&client).await?;
            let req = pb::ListAnnotationsRequest {
                parent: id
                    .as_deref()
                    .map_or_else(|| "articles/-".to_owned(), article_name),
                page_size: 1000,
                verdict: verdict.map_or(0, |v| verdict_pb(v) as i32),
                analyst: analyst.unwrap_or_default(),
                read_revision: at.unwrap_or(0),
                ..Default::default()
            };
            let all = list_all(&mut c, req).await?;
            match client.output {
                OutputFormat::Json => all.iter().for_each(|a| outln!("{}", json::message(a))),
                OutputFormat::Text => {
                    // Across articles, each row says which (a bare ID is
                    // enough for get, history, update and delete).
                    let article_of = |a: &pb::Annotation| match id {
                        Some(_) => String::new(),
                        None => format!("{:<24}  ", a.name.split('/').nth(1).unwrap_or_default()),
                    };
                    let article_head = if id.is_some() {
                        String::new()
                    } else {
                        format!("{:<24}  ", "ARTICLE")
                    };
                    outln!(
                        "{article_head}{:<36}  {:>11}  {:<12}  {:<12}  QUOTE",
                        "ID",
                        "SPAN",
                        "VERDICT",
                        "ANALYST"
                    );
                    for a in &all {
                        let s = a.span.unwrap_or_default();
                        outln!(
                            "{}{:<36}  {:>11}  {:<12}  {:<12}  {}",
                            article_of(a),
                            a.name.rsplit('/').next().unwrap_or_default(),
                            format!("{}:{}", s.start, s.end),
                            json::verdict_str(a.verdict),
                            a.analyst,
                            ellipsize(&a.quote, 60)
                        );
                    }
                    eprintln!("{} annotations", all.len());
                }
            }
            Ok(())
        }
        Command::Review { client, id, at } => {
            let mut c = connect(&client).await?;
            let r = c
                .get_article_review(pb::GetArticleReviewRequest {
                    offset_encoding: 0,
                    name: format!("{}/review", article_name(&id)),
                    read_revision: at.unwrap_or(0),
                    ..Default::default()
                })
                .await?
                .into_inner();
            match client.output {
                OutputFormat::Json => outln!("{}", json::message(&r)),
                OutputFormat::Text => print_review(&r),
            }
            Ok(())
        }
        Command::Update {
            client,
            name,
            verdict,
            note,
            sources,
            clear_sources,
            span,
            etag,
        } => {
            let sources = (!sources.is_empty() || clear_sources).then_some(sources);
            let mut c = connect(&client).await?;
            let name = full_name(&mut c, &name).await?;
            let span = span.map(|(start, end)| pb::Span { start, end });
            let verdict = verdict.map(|v| verdict_pb(v) as i32);
            let request = update_request(name, verdict, note, sources, span, etag).ok_or_else(|| {
                CliError::Usage(
                    "nothing to update: give --verdict, --note, --source, --clear-sources or --span".into(),
                )
            })?;
            let updated = c.update_annotation(request).await?.into_inner();
            print_annotation(client.output, &updated);
            Ok(())
        }
        Command::Get { client, name, at } => {
            let mut c = connect(&client).await?;
            let a = c
                .get_annotation(pb::GetAnnotationRequest {
                    name: bare_to_wildcard(&name),
                    offset_encoding: 0,
                    read_revision: at.unwrap_or(0),
                    ..Default::default()
                })
                .await?
                .into_inner();
            print_annotation(client.output, &a);
            Ok(())
        }
        Command::History { client, name } => {
            let mut c = connect(&client).await?;
            let name = full_name(&mut c, &name).await?;
            history(&mut c, client.output, &name).await
        }
        Command::Delete {
            client,
            name,
            etag,
            reason,
        } => {
            let mut c = connect(&client).await?;
            let name = full_name(&mut c, &name).await?;
            c.delete_annotation(pb::DeleteAnnotationRequest {
                name: name.clone(),
                etag: etag.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            })
            .await?;
            match client.output {
                OutputFormat::Json => outln!("{}", json!({ "deleted": name })),
                OutputFormat::Text => outln!("deleted {name}"),
            }
            Ok(())
        }
        Command::Watch { client, id, from } => watch(&client, id.as_deref(), from).await,
        Command::Apply {
            client,
            file,
            dry_run,
            format,
            skip_unanchored,
            again,
        } => {
            let options = apply::ApplyOptions {
                file: &file,
                dry_run,
                format,
                skip_unanchored,
                again,
            };
            apply::apply(&client, options).await
        }
        Command::Export {
            client,
            id,
            format: ExportFormat::Claimreview,
            public_url,
            publisher,
            publisher_url,
        } => {
            let mut c = connect(&client).await?;
            let publisher = workflow::Publisher {
                name: publisher.unwrap_or_default(),
                url: publisher_url.unwrap_or_default(),
                public_url: public_url
                    .unwrap_or_else(|| server_url(&client.server, client.ca_cert.is_some()))
                    .trim_end_matches('/')
                    .to_owned(),
            };
            let items = workflow::claim_reviews(&mut c, id.as_deref(), &publisher).await?;
            outln!("{:#}", serde_json::Value::Array(items));
            Ok(())
        }
        Command::Export {
            client,
            id,
            format,
            public_url,
            ..
        } => {
            let mut c = connect(&client).await?;
            let req = pb::ListAnnotationsRequest {
                parent: id
                    .as_deref()
                    .map_or_else(|| "articles/-".to_owned(), article_name),
                page_size: 1000,
                ..Default::default()
            };
            let all = list_all(&mut c, req).await?;
            let w3c = match format {
                ExportFormat::W3c => {
                    let base =
                        public_url.unwrap_or_else(|| server_url(&client.server, client.ca_cert.is_some()));
                    let iris = w3c::Iris {
                        base: base.trim_end_matches('/').to_owned(),
                    };
                    Some(w3c::collection(&mut c, &all, &iris).await?)
                }
                ExportFormat::Jsonl | ExportFormat::Claimreview => None,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = match w3c {
                None => all
                    .iter()
                    .try_for_each(|a| writeln!(out, "{}", apply::export_line(a))),
                Some(doc) => writeln!(out, "{doc:#}"),
            };
            match written.and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => broken_pipe(),
                r => r.map_err(|e| CliError::Other(format!("cannot write the export: {e}"))),
            }
        }
    }
}

async fn reviews(client: &ClientArgs, state: Option<crate::config::ReviewStateArg>) -> Result<()> {
    use crate::config::ReviewStateArg as S;
    let state = state.map_or(pb::ReviewState::Unspecified, |s| match s {
        S::NotStarted => pb::ReviewState::NotStarted,
        S::InProgress => pb::ReviewState::InProgress,
        S::NeedsAdjudication => pb::ReviewState::NeedsAdjudication,
        S::Ready => pb::ReviewState::Ready,
        S::SignedOff => pb::ReviewState::SignedOff,
    });
    let mut c = connect(client).await?;
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = c
            .list_article_reviews(pb::ListArticleReviewsRequest {
                page_size: 1000,
                page_token: token,
                state: state as i32,
                offset_encoding: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.reviews);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let state_name = |r: &pb::ArticleReview| json::review_state_str(r.state);
    match client.output {
        OutputFormat::Json => all.iter().for_each(|r| outln!("{}", json::message(r))),
        OutputFormat::Text => {
            outln!(
                "{:<22}  {:<18}  {:>5}  {:>8}  {:>9}  {:>6}  ALPHA",
                "ARTICLE",
                "STATE",
                "TOTAL",
                "ANALYSTS",
                "CONTESTED",
                "COVER"
            );
            for r in &all {
                outln!(
                    "{:<22}  {:<18}  {:>5}  {:>8}  {:>9}  {:>5.1}%  {}",
                    r.name.trim_start_matches("articles/").trim_end_matches("/review"),
                    state_name(r),
                    r.total_count,
                    r.analyst_count,
                    r.contested_span_count,
                    r.covered_fraction * 100.0,
                    r.krippendorff_alpha
                        .map_or_else(|| "–".to_owned(), |a| format!("{a:.3}"))
                );
            }
        }
    }
    Ok(())
}

/// Writes one line of output to stdout; see [`outln!`].
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            broken_pipe();
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Ends the process as a Unix tool whose reader went away: by SIGPIPE
/// (Rust ignores it, so it is restored first), exit status 141 in a shell.
pub fn broken_pipe() -> ! {
    #[cfg(unix)]
    // SAFETY: restores SIGPIPE's default action and raises it; the process
    // ends here, so no other code observes the change.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

async fn articles(client: &ClientArgs) -> Result<()> {
    let mut c = connect(client).await?;
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = c
            .list_articles(pb::ListArticlesRequest {
                offset_encoding: 0,
                page_size: 1000,
                page_token: token,
                view: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.articles);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match client.output {
        OutputFormat::Json => all.iter().for_each(|a| outln!("{}", json::message(a))),
        OutputFormat::Text => {
            outln!("{:<22}  {:>6}  TITLE", "ID", "LENGTH");
            for a in &all {
                outln!(
                    "{:<22}  {:>6}  {}",
                    a.name.trim_start_matches("articles/"),
                    a.length,
                    ellipsize(&a.title, 70)
                );
            }
        }
    }
    Ok(())
}

async fn get_article(c: &mut Client, id: &str) -> Result<pb::Article> {
    Ok(c.get_article(pb::GetArticleRequest {
        offset_encoding: 0,
        name: article_name(id),
        view: pb::ArticleView::Full as i32,
        ..Default::default()
    })
    .await?
    .into_inner())
}

async fn article(client: &ClientArgs, id: &str, spans: bool) -> Result<()> {
    let mut c = connect(client).await?;
    let article = get_article(&mut c, id).await?;
    let annotations = if spans {
        list_all(
            &mut c,
            pb::ListAnnotationsRequest {
                parent: article.name.clone(),
                page_size: 1000,
                ..Default::default()
            },
        )
        .await?
    } else {
        Vec::new()
    };
    match client.output {
        OutputFormat::Json => {
            let mut v = json::message(&article);
            if spans {
                v["annotations"] = annotations.iter().map(json::message).collect();
            }
            outln!("{v}");
        }
        OutputFormat::Text if spans && std::io::stdout().is_terminal() => {
            outln!("{}", highlight(&article.text, &annotations));
            outln!(
                "\n\x1b[42m verified \x1b[0m \x1b[41m disputed \x1b[0m \x1b[43m unattributed \x1b[0m \x1b[45m contested \x1b[0m"
            );
        }
        OutputFormat::Text => {
            outln!("{}", article.text);
            if spans {
                outln!("");
                for a in &annotations {
                    let s = a.span.unwrap_or_default();
                    outln!(
                        "[{}:{}] {}: {}",
                        s.start,
                        s.end,
                        json::verdict_str(a.verdict),
                        ellipsize(&a.quote, 70)
                    );
                }
            }
        }
    }
    Ok(())
}

/// The text with each annotated run coloured by its verdicts (ANSI).
fn highlight(text: &str, annotations: &[pb::Annotation]) -> String {
    let chars: Vec<char> = text.chars().collect();
    // Per code point: a bit per verdict.
    let mut marks = vec![0u8; chars.len()];
    for a in annotations {
        let s = a.span.unwrap_or_default();
        let bit = 1u8 << (a.verdict.clamp(1, 3) - 1);
        for m in &mut marks[(s.start as usize).min(chars.len())..(s.end as usize).min(chars.len())] {
            *m |= bit;
        }
    }
    let color = |m: u8| match m {
        0 => "",
        1 => "\x1b[42m",
        2 => "\x1b[41m",
        4 => "\x1b[43m",
        _ => "\x1b[45m",
    };
    let mut out = String::with_capacity(text.len() * 2);
    let mut current = 0u8;
    for (ch, &m) in chars.iter().zip(&marks) {
        if m != current {
            out.push_str("\x1b[0m");
            out.push_str(color(m));
            current = m;
        }
        out.push(*ch);
    }
    out.push_str("\x1b[0m");
    out
}

/// The code-point span of `quote` in `text`: its only occurrence, or the
/// `occurrence`th (from 1).
pub fn find_quote(text: &str, quote: &str, occurrence: Option<usize>) -> Result<pb::Span> {
    if quote.is_empty() {
        return Err(CliError::Usage("--quote is empty".into()));
    }
    let hits: Vec<usize> = text.match_indices(quote).map(|(i, _)| i).collect();
    let byte = match (hits.len(), occurrence) {
        (0, _) => {
            return Err(CliError::Usage(format!(
                "{quote:?} does not occur in the article"
            )));
        }
        (_, Some(n)) => *hits.get(n.wrapping_sub(1)).ok_or_else(|| {
            CliError::Usage(format!(
                "--occurrence {n}: {quote:?} occurs {} time(s)",
                hits.len()
            ))
        })?,
        (1, None) => hits[0],
        (n, None) => {
            return Err(CliError::Usage(format!(
                "{quote:?} occurs {n} times: pick one with --occurrence 1..{n}"
            )));
        }
    };
    let start = text[..byte].chars().count() as u32;
    Ok(pb::Span {
        start,
        end: start + quote.chars().count() as u32,
    })
}

pub async fn list_all(c: &mut Client, mut req: pb::ListAnnotationsRequest) -> Result<Vec<pb::Annotation>> {
    let mut all = Vec::new();
    loop {
        let page = c.list_annotations(req.clone()).await?.into_inner();
        all.extend(page.annotations);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        req.page_token = page.next_page_token;
    }
}

fn print_annotation(format: OutputFormat, a: &pb::Annotation) {
    match format {
        OutputFormat::Json => outln!("{}", json::message(a)),
        OutputFormat::Text => {
            let s = a.span.unwrap_or_default();
            outln!("{}", a.name);
            outln!("  span     {}:{}  {:?}", s.start, s.end, a.quote);
            outln!("  verdict  {}", json::verdict_str(a.verdict));
            if !a.note.is_empty() {
                outln!("  note     {}", a.note);
            }
            for src in &a.sources {
                outln!("  source   {src}");
            }
            outln!("  analyst  {}", a.analyst);
            outln!("  etag     {}", a.etag);
        }
    }
}

fn print_review(r: &pb::ArticleReview) {
    outln!("{}", r.name);
    outln!(
        "  state        {} (needs {} analysts; {} to re-review, {} orphaned)",
        json::review_state_str(r.state),
        r.min_analysts,
        r.needs_review_count,
        r.orphaned_count
    );
    if r.moving_count > 0 {
        outln!(
            "  moving       {} annotations onto the corrected text (sign-off and adjudication wait)",
            r.moving_count
        );
    }
    if let Some(a) = r.krippendorff_alpha {
        outln!("  agreement    Krippendorff's alpha {a:.3}");
    }
    outln!(
        "  annotations  {} ({} verified, {} disputed, {} unattributed)",
        r.total_count,
        r.verified_count,
        r.disputed_count,
        r.unattributed_count
    );
    outln!(
        "  covered      {} code points ({:.1}%)",
        r.covered_code_points,
        r.covered_fraction * 100.0
    );
    outln!("  analysts     {}", r.analyst_count);
    if let Some(t) = &r.last_update_time {
        outln!("  last update  {}", json::rfc3339(t));
    }
    outln!("  revision     {} (etag {})", r.revision, r.etag);
    if let Some(s) = &r.sign_off {
        outln!(
            "  signed off   by {} at {}",
            s.reviewer,
            json::time(s.sign_off_time.as_ref()).as_str().unwrap_or_default()
        );
    }
    if r.contested_spans.is_empty() {
        outln!("  contested    none");
    } else {
        outln!(
            "  contested    {} ({} unresolved)",
            r.contested_span_count,
            r.unresolved_contested_span_count
        );
        for c in &r.contested_spans {
            let s = c.span.unwrap_or_default();
            let verdicts: Vec<&str> = c.verdicts.iter().map(|&v| json::verdict_str(v)).collect();
            let settled = match &c.adjudication {
                Some(a) => format!(" → {} by {}", json::verdict_str(a.verdict), a.reviewer),
                None => String::new(),
            };
            outln!(
                "    [{}:{}] {}{settled} — {}",
                s.start,
                s.end,
                verdicts.join(" vs "),
                ellipsize(&c.quote, 60)
            );
        }
    }
}

pub fn ellipsize(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

async fn watch(client: &ClientArgs, id: Option<&str>, from: Option<u64>) -> Result<()> {
    let parent = id.map_or_else(|| "articles/-".to_owned(), article_name);
    // The next revision to print; 0 until the first CREATED says "now".
    let mut next = from.unwrap_or(0);
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = async {
            let mut c = connect(client).await?;
            let mut stream = c
                .watch_annotations(pb::WatchAnnotationsRequest {
                    parent: parent.clone(),
                    start_revision: next,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                backoff = Duration::from_millis(200);
                match pb::watch_annotations_response::Kind::try_from(msg.kind) {
                    Ok(pb::watch_annotations_response::Kind::Created) => {
                        if next == 0 {
                            next = msg.revision + 1;
                        }
                        // On stderr, so JSON output stays pure.
                        eprintln!("watching {parent} from revision {next}");
                    }
                    Ok(pb::watch_annotations_response::Kind::Events) => {
                        match client.output {
                            // The message itself, as grpcurl prints it.
                            OutputFormat::Json => outln!("{}", json::message(&msg)),
                            OutputFormat::Text => {
                                for e in &msg.events {
                                    print_event(msg.revision, e);
                                }
                            }
                        }
                        let _ = std::io::stdout().flush();
                        // A revision in parts: resume from it until whole.
                        if !msg.more {
                            next = msg.revision + 1;
                        }
                    }
                    Ok(pb::watch_annotations_response::Kind::Progress) => next = msg.revision + 1,
                    _ => {}
                }
            }
            Ok::<(), CliError>(())
        }
        .await;
        match outcome {
            Err(CliError::Connection(m)) => {
                eprintln!("{m}: reconnecting in {backoff:?}, resuming from revision {next}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
            // The server ended the stream without an error: resume.
            Ok(()) => {}
        }
    }
}

fn print_event(revision: u64, e: &pb::AnnotationEvent) {
    let kind = match pb::annotation_event::Type::try_from(e.r#type) {
        Ok(pb::annotation_event::Type::Created) => "created",
        Ok(pb::annotation_event::Type::Updated) => "updated",
        Ok(pb::annotation_event::Type::Deleted) => "deleted",
        _ => "unknown",
    };
    let a = e.annotation.clone().unwrap_or_default();
    outln!(
        "{revision:>8}  {kind:<8} {}  {:<12} {:<10} {}",
        a.name,
        json::verdict_str(a.verdict),
        a.analyst,
        ellipsize(&a.quote, 50)
    );
}

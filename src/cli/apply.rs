//! `factcheck apply`: a JSONL file of operations, validated in full before
//! anything is written, then applied as atomic batches.
//!
//! One operation a line:
//!
//! ```json
//! {"op":"create","article":"001_728dec46794c22c1","quote":"조태열","verdict":"disputed","note":"…","sources":["…"]}
//! {"op":"create","article":"001_728dec46794c22c1","span":{"start":2843,"end":2846},"verdict":"verified"}
//! {"op":"update","name":"articles/…/annotations/…","verdict":"disputed","etag":"\"12\""}
//! {"op":"delete","name":"articles/…/annotations/…"}
//! ```
//!
//! A create names its span by `span`, by `quote` (with `occurrence` when the
//! quote occurs more than once), or both (the quote then guards the span).
//! An update changes the fields it names. `analyst` is accepted and ignored
//! (the caller's token decides it), so `export` output applies as it is.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::time::Duration;

use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic_types::StatusExt;

use super::{CliError, Client, Result, connect, find_quote, json::verdict_from_str, json::verdict_str};
use crate::config::{ApplyFormat, ClientArgs, OutputFormat};
use crate::pb;

/// Children per batch request; below the server's maximum of 1000.
const BATCH: usize = 500;
/// Encoded bytes per batch request; below the server's 4 MiB limit.
const BATCH_BYTES: usize = 2 * 1024 * 1024;

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct SpanJson {
    start: u32,
    end: u32,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Create {
        article: String,
        span: Option<SpanJson>,
        quote: Option<String>,
        occurrence: Option<usize>,
        verdict: String,
        #[serde(default)]
        note: String,
        #[serde(default)]
        sources: Vec<String>,
        /// Informational only: exports carry it.
        #[allow(dead_code)]
        analyst: Option<String>,
    },
    Update {
        name: String,
        verdict: Option<String>,
        note: Option<String>,
        sources: Option<Vec<String>>,
        span: Option<SpanJson>,
        etag: Option<String>,
    },
    Delete {
        name: String,
        etag: Option<String>,
    },
}

/// An export line: a create that `apply` reads back.
pub fn export_line(a: &pb::Annotation) -> serde_json::Value {
    let s = a.span.unwrap_or_default();
    let article = a
        .name
        .strip_prefix("articles/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    json!({
        "op": "create",
        "article": article,
        "span": { "start": s.start, "end": s.end },
        "quote": a.quote,
        "verdict": verdict_str(a.verdict),
        "note": a.note,
        "sources": a.sources,
        "analyst": a.analyst,
    })
}

/// One batch request of one kind, with the file line of each child.
enum Batch {
    Create(Vec<pb::CreateAnnotationRequest>),
    Update(Vec<pb::UpdateAnnotationRequest>),
    Delete(Vec<pb::DeleteAnnotationRequest>),
}

struct Planned {
    batch: Batch,
    lines: Vec<usize>,
    bytes: usize,
}

impl Planned {
    fn len(&self) -> usize {
        self.lines.len()
    }

    fn kind(&self) -> &'static str {
        match self.batch {
            Batch::Create(_) => "create",
            Batch::Update(_) => "update",
            Batch::Delete(_) => "delete",
        }
    }
}

fn verdict(line: usize, s: &str) -> Result<i32> {
    verdict_from_str(s).map(|v| v as i32).ok_or_else(|| {
        CliError::Usage(format!(
            "line {line}: verdict {s:?} is not verified, disputed or unattributed"
        ))
    })
}

/// The file as text: UTF-8, a byte-order mark at the start dropped (as
/// Windows editors write one); invalid UTF-8 is refused naming its line.
pub fn read_input(file: &str) -> Result<String> {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| CliError::Other(format!("cannot read {file}: {e}")))?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = body[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let column = at - body[..at].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            Err(CliError::Usage(format!(
                "line {line}: {file} is not valid UTF-8 (byte {column} of the line); save it as UTF-8"
            )))
        }
    }
}

/// What `apply` reads.
pub struct ApplyOptions<'a> {
    pub file: &'a str,
    pub dry_run: bool,
    pub format: ApplyFormat,
    /// W3C: apply the annotations that anchor and report the others,
    /// instead of refusing the file.
    pub skip_unanchored: bool,
    /// Fresh request ids: apply even a file applied before.
    pub again: bool,
}

/// The namespace of the request ids `apply` derives from a file.
const APPLY_NAMESPACE: uuid::Uuid = uuid::uuid!("6f1d3c52-3f9a-4d3e-9f54-2b7c0e8a9d11");

/// The request id of batch `k` of `batches` of a file: the same file, by
/// the same analyst, in the same format, gives the same ids.
fn derived_request_id(
    digest: &[u8; 32],
    analyst: &str,
    format: ApplyFormat,
    k: usize,
    batches: usize,
) -> String {
    let mut name = digest.to_vec();
    name.extend_from_slice(format!("\0{analyst}\0{format:?}\0{k}/{batches}").as_bytes());
    uuid::Uuid::new_v5(&APPLY_NAMESPACE, &name).to_string()
}

pub async fn apply(args: &ClientArgs, o: ApplyOptions<'_>) -> Result<()> {
    let ApplyOptions {
        file,
        dry_run,
        format,
        skip_unanchored,
        again,
    } = o;
    let text = read_input(file)?;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).into();
    let mut client = connect(args).await?;
    let mut ops = Vec::new();
    match format {
        ApplyFormat::Jsonl => {
            for (i, line) in text.lines().enumerate() {
                let line_no = i + 1;
                if line.trim().is_empty() {
                    continue;
                }
                let op: Op = serde_json::from_str(line)
                    .map_err(|e| CliError::Usage(format!("line {line_no}: not a valid operation: {e}")))?;
                ops.push((line_no, op));
            }
        }
        ApplyFormat::W3c => {
            let (anchored, failed) = super::w3c::anchor_all(&mut client, &text)
                .await
                .map_err(|e| CliError::Usage(format!("{file}: {}", e.message())))?;
            let report: Vec<String> = failed
                .iter()
                .map(|(n, why)| format!("annotation {n}: cannot be anchored: {why}"))
                .collect();
            if !report.is_empty() && !skip_unanchored {
                return Err(CliError::Usage(format!(
                    "{}\n{} of {} annotations cannot be anchored on the current text; nothing was applied \
                     (--skip-unanchored applies the others)",
                    report.join("\n"),
                    failed.len(),
                    failed.len() + anchored.len()
                )));
            }
            for line in &report {
                eprintln!("{line}");
            }
            for (n, a) in anchored {
                ops.push((
                    n,
                    Op::Create {
                        article: a.article,
                        span: Some(SpanJson {
                            start: a.start,
                            end: a.end,
                        }),
                        quote: Some(a.quote),
                        occurrence: None,
                        verdict: a.verdict,
                        note: a.note,
                        sources: a.sources,
                        analyst: None,
                    },
                ));
            }
        }
    }
    if ops.is_empty() {
        return Err(CliError::Usage(format!("{file} holds no operations")));
    }

    let plan = plan(&mut client, ops).await?;
    let total: usize = plan.iter().map(Planned::len).sum();

    let analyst = client
        .get_caller(pb::GetCallerRequest {})
        .await?
        .into_inner()
        .analyst;
    let request_ids: Vec<String> = (0..plan.len())
        .map(|k| match again {
            true => uuid::Uuid::new_v4().to_string(),
            false => derived_request_id(&digest, &analyst, format, k, plan.len()),
        })
        .collect();
    let bar = progress_bar(args, (total * 2) as u64);
    // Validate every batch before writing anything. A batch this file
    // applied before answers with its revision: it is skipped.
    let mut applied_before = Vec::with_capacity(plan.len());
    for (p, id) in plan.iter().zip(&request_ids) {
        let revision = send(&mut client, p, true, Some(id)).await.map_err(|e| match e {
            CliError::Refused(mut r) if r.reason == "REQUEST_ID_REUSED" => {
                r.message = format!(
                    "{}: this file was applied before, but its operations now mean something else \
                         (an article changed?); --again applies it anew",
                    r.message
                );
                CliError::Refused(r)
            }
            e => e,
        })?;
        applied_before.push(revision > 0);
        bar.inc(p.len() as u64);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in &plan {
        *counts.entry(p.kind()).or_default() += p.len();
    }
    if dry_run {
        bar.finish_and_clear();
        summary(args, total, plan.len(), &counts, None, true);
        return Ok(());
    }

    let mut revisions = Vec::new();
    let already = applied_before.iter().filter(|&&a| a).count();
    if already == plan.len() {
        bar.finish_and_clear();
        match args.output {
            OutputFormat::Json => outln!(
                "{}",
                json!({ "operations": total, "batches": plan.len(), "alreadyApplied": plan.len() })
            ),
            OutputFormat::Text => outln!(
                "already applied: all {} batches of this file were applied before; nothing written (--again applies it anew)",
                plan.len()
            ),
        }
        return Ok(());
    }
    if already > 0 {
        eprintln!(
            "resuming: {already} of {} batches of this file were applied before; applying the rest",
            plan.len()
        );
    }
    for (k, p) in plan.iter().enumerate() {
        if applied_before[k] {
            bar.inc(p.len() as u64);
            continue;
        }
        let request_id = &request_ids[k];
        let revision = send(&mut client, p, false, Some(request_id))
            .await
            .map_err(|e| match e {
                CliError::Refused(mut r) if k > 0 => {
                    r.message = format!(
                        "{} (batches 1 to {k}, lines {} to {}, were applied before this one)",
                        r.message,
                        plan[0].lines[0],
                        plan[k - 1].lines.last().copied().unwrap_or_default()
                    );
                    CliError::Refused(r)
                }
                e => e,
            })?;
        revisions.push(revision);
        bar.inc(p.len() as u64);
    }
    bar.finish_and_clear();
    let range = (
        revisions.first().copied().unwrap_or(0),
        revisions.last().copied().unwrap_or(0),
    );
    summary(args, total, plan.len(), &counts, Some(range), false);
    Ok(())
}

fn progress_bar(args: &ClientArgs, len: u64) -> indicatif::ProgressBar {
    if args.output == OutputFormat::Json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("validating, then applying");
    bar
}

fn summary(
    args: &ClientArgs,
    total: usize,
    batches: usize,
    counts: &HashMap<&str, usize>,
    revisions: Option<(u64, u64)>,
    dry_run: bool,
) {
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    match args.output {
        OutputFormat::Json => outln!(
            "{}",
            json!({
                "operations": total,
                "created": n("create"),
                "updated": n("update"),
                "deleted": n("delete"),
                "batches": batches,
                "dryRun": dry_run,
                "firstRevision": revisions.map(|r| r.0),
                "lastRevision": revisions.map(|r| r.1),
            })
        ),
        OutputFormat::Text if dry_run => outln!(
            "validated {total} operations ({} create, {} update, {} delete) in {batches} batches; nothing written",
            n("create"),
            n("update"),
            n("delete")
        ),
        OutputFormat::Text => outln!(
            "applied {total} operations ({} created, {} updated, {} deleted) in {batches} batches, revisions {} to {}",
            n("create"),
            n("update"),
            n("delete"),
            revisions.map_or(0, |r| r.0),
            revisions.map_or(0, |r| r.1)
        ),
    }
}

/// Resolves quotes, checks verdicts and groups the operations into batches.
async fn plan(client: &mut Client, ops: Vec<(usize, Op)>) -> Result<Vec<Planned>> {
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut plan: Vec<Planned> = Vec::new();
    for (line, op) in ops {
        let batch = match op {
            Op::Create {
                article,
                span,
                quote,
                occurrence,
                verdict: v,
                note,
                sources,
                analyst: _,
            } => {
                let parent = super::article_name(&article);
                let (span, expected_quote) = match (span, quote) {
                    (Some(s), q) => (
                        pb::Span {
                            start: s.start,
                            end: s.end,
                        },
                        q.unwrap_or_default(),
                    ),
                    (None, Some(q)) => {
                        if !texts.contains_key(&parent) {
                            let a = client
                                .get_article(pb::GetArticleRequest {
                                    offset_encoding: 0,
                                    name: parent.clone(),
                                    view: pb::ArticleView::Full as i32,
                                    ..Default::default()
                                })
                                .await
                                .map_err(|s| CliError::from(s).at_line(line))?
                                .into_inner();
                            texts.insert(parent.clone(), a.text);
                        }
                        let span =
                            find_quote(&texts[&parent], &q, occurrence).map_err(|e| e.at_line(line))?;
                        (span, q)
                    }
                    (None, None) => {
                        return Err(CliError::Usage(format!(
                            "line {line}: a create needs span or quote"
                        )));
                    }
                };
                Batch::Create(vec![pb::CreateAnnotationRequest {
                    offset_encoding: 0,
                    parent,
                    annotation: Some(pb::Annotation {
                        span: Some(span),
                        verdict: verdict(line, &v)?,
                        note,
                        sources,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                    expected_quote,
                }])
            }
            Op::Update {
                name,
                verdict: v,
                note,
                sources,
                span,
                etag,
            } => {
                let verdict = v.map(|v| verdict(line, &v)).transpose()?;
                let span = span.map(|s| pb::Span {
                    start: s.start,
                    end: s.end,
                });
                let request =
                    super::update_request(name, verdict, note, sources, span, etag).ok_or_else(|| {
                        CliError::Usage(format!(
                            "line {line}: an update needs verdict, note, sources or span"
                        ))
                    })?;
                Batch::Update(vec![request])
            }
            Op::Delete { name, etag } => Batch::Delete(vec![pb::DeleteAnnotationRequest {
                name,
                etag: etag.unwrap_or_default(),
                reason: String::new(),
            }]),
        };
        push(&mut plan, batch, line)?;
    }
    Ok(plan)
}

/// Appends a one-child batch to the last batch if it is of the same kind and
/// has room, else starts a new one. An operation too large for any request
/// the server accepts is refused here, naming its line.
fn push(plan: &mut Vec<Planned>, one: Batch, line: usize) -> Result<()> {
    let size = match &one {
        Batch::Create(v) => v[0].encoded_len(),
        Batch::Update(v) => v[0].encoded_len(),
        Batch::Delete(v) => v[0].encoded_len(),
    } + 8;
    if size > BATCH_BYTES {
        return Err(CliError::Usage(format!(
            "line {line}: the operation is {size} bytes, over the {BATCH_BYTES} a request may carry \
             (a note holds at most 10,000 characters, a source 2,048)"
        )));
    }
    if let Some(last) = plan.last_mut()
        && last.len() < BATCH
        && last.bytes + size <= BATCH_BYTES
    {
        let joined = match (&mut last.batch, one) {
            (Batch::Create(all), Batch::Create(mut v)) => {
                all.append(&mut v);
                None
            }
            (Batch::Update(all), Batch::Update(mut v)) => {
                all.append(&mut v);
                None
            }
            (Batch::Delete(all), Batch::Delete(mut v)) => {
                all.append(&mut v);
                None
            }
            (_, other) => Some(other),
        };
        match joined {
            None => {
                last.lines.push(line);
                last.bytes += size;
            }
            Some(other) => plan.push(Planned {
                batch: other,
                lines: vec![line],
                bytes: size,
            }),
        }
        return Ok(());
    }
    plan.push(Planned {
        batch: one,
        lines: vec![line],
        bytes: size,
    });
    Ok(())
}

/// Sends one batch; a refusal names the file line of the failing child.
/// Connection failures are retried with the same request id.
async fn send(
    client: &mut Client,
    p: &Planned,
    validate_only: bool,
    request_id: Option<&str>,
) -> Result<u64> {
    let request_id = request_id.unwrap_or_default().to_owned();
    let mut delay = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        let result = match &p.batch {
            Batch::Create(v) => client
                .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                    offset_encoding: 0,
                    parent: "articles/-".into(),
                    requests: v.clone(),
                    request_id: request_id.clone(),
                    validate_only,
                })
                .await
                .map(|r| r.into_inner().revision),
            Batch::Update(v) => client
                .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
                    offset_encoding: 0,
                    parent: "articles/-".into(),
                    requests: v.clone(),
                    request_id: request_id.clone(),
                    validate_only,
                })
                .await
                .map(|r| r.into_inner().revision),
            Batch::Delete(v) => client
                .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
                    parent: "articles/-".into(),
                    requests: v.clone(),
                    request_id: request_id.clone(),
                    validate_only,
                })
                .await
                .map(|r| r.into_inner().revision),
        };
        let status = match result {
            Ok(revision) => return Ok(revision),
            Err(status) => status,
        };
        let line = status
            .get_error_details()
            .error_info()
            .and_then(|i| i.metadata.get("child").cloned())
            .and_then(|c| {
                c.strip_prefix("requests[")?
                    .strip_suffix(']')?
                    .parse::<usize>()
                    .ok()
            })
            .and_then(|i| p.lines.get(i).copied());
        match (CliError::from(status), line) {
            (CliError::Connection(m), _) if tries < 5 && !request_id.is_empty() => {
                tries += 1;
                eprintln!("{m}: retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            (e, Some(line)) => return Err(e.at_line(line)),
            (e, None) => return Err(e),
        }
    }
}

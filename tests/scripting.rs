//! Scripting the command line (issue 15): bare ids, `get` and `history`,
//! machine-readable errors, re-runnable batch files, file input errors, a
//! scheme-less server, and the offline commands' JSON and pid file. Every
//! test runs the real binary against a real server.

use std::process::{Command, Output};

use crate::common::*;
use pb::Verdict;
use serde_json::Value;

const A1: &str = "001_728dec46794c22c1";

async fn run(server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.args(args)
        .env("FACTCHECK_SERVER", server)
        .env("FACTCHECK_TOKEN", ALICE)
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one JSON object `--output json` writes to stderr on failure.
fn json_error(o: &Output) -> Value {
    serde_json::from_str(err(o).trim()).unwrap_or_else(|e| panic!("not one JSON object: {:?}: {e}", err(o)))
}

async fn count(client: &mut Client) -> usize {
    snapshot(client).await.0.len()
}

/// What `list` prints is enough to act on: a bare id works for `get`,
/// `history`, `update` and `delete`; across articles, `list` says which
/// article; JSON has full names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_id_from_list_is_enough_to_act_on() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut alice = server.client().await;
    let text = seed_text(A1);
    let a = create(&mut alice, A1, find_span(&text, "조태열"), Verdict::Verified).await;
    let id = a.name.rsplit('/').next().unwrap().to_owned();

    let o = run(&url, &["list"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let row = out(&o).lines().find(|l| l.contains(&id)).unwrap().to_owned();
    assert!(row.starts_with(A1), "the article is in the row: {row}");
    assert!(out(&o).starts_with("ARTICLE"), "{}", out(&o));
    let o = run(&url, &["list", "--output", "json"]).await;
    let listed: Value = serde_json::from_str(out(&o).lines().next().unwrap()).unwrap();
    assert_eq!(listed["name"], a.name.as_str());

    let o = run(&url, &["get", &id, "--output", "json"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let got: Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(got["name"], a.name.as_str());
    // The canonical mapping: what grpcurl prints for the same message.
    assert_eq!(got["verdict"], "VERDICT_VERIFIED");
    assert_eq!(got["articleRevision"], "1");
    assert_eq!(got["anchorState"], "ANCHOR_STATE_ANCHORED");
    let o = run(
        &url,
        &[
            "update",
            &id,
            "--verdict",
            "disputed",
            "--etag",
            a.etag.trim_matches('"'),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = run(&url, &["history", &id]).await;
    assert!(o.status.success(), "{}", err(&o));
    let history = out(&o);
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(
        history.contains("created") && history.contains("updated (verdict)"),
        "{history}"
    );
    let o = run(&url, &["delete", &id]).await;
    assert!(o.status.success(), "{}", err(&o));
    // History by full name still works after the deletion.
    let o = run(&url, &["history", &a.name, "--output", "json"]).await;
    assert_eq!(out(&o).lines().count(), 3, "{}", out(&o));
    let o = run(&url, &["get", &id, "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(3));
    let e = json_error(&o);
    assert_eq!(
        (e["code"].as_str(), e["reason"].as_str()),
        (Some("NOT_FOUND"), Some("ANNOTATION_NOT_FOUND"))
    );
    // A malformed id is a usage of a name, refused by the server by name.
    let o = run(&url, &["get", "not-a-name", "--output", "json"]).await;
    assert_eq!(json_error(&o)["reason"], "INVALID_NAME");
}

/// With `--output json`, every failure is one JSON object on stderr with a
/// specific reason and the field; `apply` adds the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_machine_readable() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut alice = server.client().await;
    let text = seed_text(A1);
    let a = create(&mut alice, A1, find_span(&text, "조태열"), Verdict::Verified).await;

    let o = run(
        &url,
        &["update", &a.name, "--span", "0:99999999", "--output", "json"],
    )
    .await;
    assert_eq!(o.status.code(), Some(3));
    let e = json_error(&o);
    assert_eq!(e["code"], "INVALID_ARGUMENT");
    assert_eq!(e["reason"], "SPAN_OUT_OF_RANGE");
    assert_eq!(e["field"], "annotation.span.end");
    assert_eq!(e["exit"], 3);
    let o = run(
        &url,
        &[
            "update",
            &a.name,
            "--verdict",
            "disputed",
            "--etag",
            "999",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(json_error(&o)["reason"], "ETAG_MISMATCH");
    let o = run(
        &url,
        &[
            "annotate",
            "no-such-article",
            "--span",
            "0:1",
            "--verdict",
            "verified",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(json_error(&o)["reason"], "ARTICLE_NOT_FOUND");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":0,\"end\":3}},\"verdict\":\"verified\"}}\n\
             {{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":5,\"end\":99999999}},\"verdict\":\"verified\"}}\n"
        ),
    )
    .unwrap();
    let o = run(&url, &["apply", file.to_str().unwrap(), "--output", "json"]).await;
    let e = json_error(&o);
    assert_eq!(
        (e["reason"].as_str(), e["line"].as_u64()),
        (Some("SPAN_OUT_OF_RANGE"), Some(2)),
        "{e}"
    );
    std::fs::write(&file, "{\"op\":\"create\"\n").unwrap();
    let o = run(&url, &["apply", file.to_str().unwrap(), "--output", "json"]).await;
    let e = json_error(&o);
    assert_eq!(
        (e["code"].as_str(), e["line"].as_u64(), e["exit"].as_u64()),
        (Some("USAGE"), Some(1), Some(2))
    );

    // The server's reasons are specific too (what the CLI passes on).
    let s = alice
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(A1),
            annotation: Some(new_annotation(find_span(&text, "조태열"), Verdict::Verified)),
            expected_quote: "조태영".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "EXPECTED_QUOTE_MISMATCH");
    assert_eq!(count(&mut alice).await, 1, "refusals change nothing");
}

/// Running the same batch file twice applies it once: the second run says
/// so. `--again` applies it anew. A BOM is dropped; invalid UTF-8 and an
/// operation too large for a request are refused naming their line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_applies_once_and_file_errors_name_their_line() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut alice = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("review.jsonl");
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(
        format!(
            "{{\"op\":\"create\",\"article\":\"{A1}\",\"quote\":\"조태열\",\"verdict\":\"disputed\"}}\n\
             {{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":0,\"end\":3}},\"verdict\":\"verified\"}}\n"
        )
        .bytes(),
    );
    std::fs::write(&file, &body).unwrap();
    let path = file.to_str().unwrap();
    let o = run(&url, &["apply", path]).await;
    assert!(o.status.success(), "a BOM is fine: {}", err(&o));
    assert_eq!(count(&mut alice).await, 2);
    let o = run(&url, &["apply", path]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("already applied"), "{}", out(&o));
    assert_eq!(count(&mut alice).await, 2, "a re-run is a no-op");
    let o = run(&url, &["apply", path, "--output", "json"]).await;
    let summary: Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(summary["alreadyApplied"], 1);
    // Canonical verdict names are accepted too.
    let canonical = dir.path().join("canonical.jsonl");
    std::fs::write(
        &canonical,
        format!("{{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":10,\"end\":12}},\"verdict\":\"VERDICT_UNATTRIBUTED\"}}\n"),
    )
    .unwrap();
    let o = run(&url, &["apply", canonical.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(count(&mut alice).await, 3);
    let o = run(
        &url,
        &[
            "delete",
            &snapshot(&mut alice)
                .await
                .0
                .iter()
                .find(|a| a.span.unwrap().start == 10)
                .unwrap()
                .name,
        ],
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = run(&url, &["apply", path, "--again"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(count(&mut alice).await, 4);

    let bad = dir.path().join("latin1.jsonl");
    let mut body = format!("{{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":0,\"end\":3}},\"verdict\":\"verified\"}}\n").into_bytes();
    body.extend(b"{\"op\":\"create\",\"note\":\"caf\xE9\"}\n");
    std::fs::write(&bad, &body).unwrap();
    let o = run(&url, &["apply", bad.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("line 2") && err(&o).contains("UTF-8"),
        "{}",
        err(&o)
    );

    let huge = dir.path().join("huge.jsonl");
    let note = "n".repeat(6 * 1024 * 1024);
    std::fs::write(
        &huge,
        format!(
            "{{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":0,\"end\":3}},\"verdict\":\"verified\"}}\n\
             {{\"op\":\"create\",\"article\":\"{A1}\",\"span\":{{\"start\":0,\"end\":3}},\"verdict\":\"verified\",\"note\":\"{note}\"}}\n"
        ),
    )
    .unwrap();
    let o = run(&url, &["apply", huge.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("line 2"), "{}", err(&o));
    assert_eq!(count(&mut alice).await, 4, "nothing of a refused file is written");

    // A server address without a scheme.
    let bare = url.trim_start_matches("http://").to_owned();
    let o = run(&bare, &["articles"]).await;
    assert!(o.status.success(), "--server host:port: {}", err(&o));
}

/// The offline commands speak JSON too; `token add` in the wrong place says
/// where it looked; the server writes its pid file into its data dir.
#[test]
fn offline_commands_speak_json_and_the_pid_file_names_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ChildServer::start(&data, &[]);
    let pid = std::fs::read_to_string(data.join("factcheck.pid")).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    let dd = data.to_str().unwrap();
    let (code, out, err) = factcheck_cli(&[
        "token",
        "add",
        "rita",
        "--role",
        "reader",
        "--data-dir",
        dd,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let added: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (added["analyst"].as_str(), added["role"].as_str()),
        (Some("rita"), Some("reader"))
    );
    let (code, out, _) = factcheck_cli(&["token", "list", "--data-dir", dd, "--output", "json"]);
    assert_eq!(code, 0);
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["analyst"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        names.contains(&"rita".to_owned()) && names.contains(&"admin".to_owned()),
        "{names:?}"
    );
    let nowhere = dir.path().join("no-such-dir");
    let (code, _, err) = factcheck_cli(&[
        "token",
        "add",
        "x",
        "--role",
        "reader",
        "--data-dir",
        nowhere.to_str().unwrap(),
        // The tokens file's own refusals (on etcd the tokens are the store's).
        "--store",
        "sled",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains(nowhere.to_str().unwrap()), "{err}");
    let (code, _, err) = factcheck_cli(&[
        "token",
        "list",
        "--data-dir",
        nowhere.to_str().unwrap(),
        "--store",
        "sled",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("tokens file"), "{err}");
    drop(server);
    let (code, out, err) = factcheck_cli(&["audit", "verify", "--data-dir", dd, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["intact"], true);
}

//! The `factcheck` command line, run as a user runs it, against a real server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use serde_json::Value;

const A0: &str = "000_9260bb247249f31b";
const A1: &str = "001_728dec46794c22c1";
const A2: &str = "002_946fad7c8fee627f";

fn command(server: &str, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.args(args)
        .env("FACTCHECK_SERVER", server)
        .env("FACTCHECK_TOKEN", token)
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the binary off the async runtime's thread, with optional stdin.
async fn run(server: &TestServer, args: &[&str], stdin: Option<String>) -> Output {
    let mut cmd = command(&server.url(), ALICE, args);
    tokio::task::spawn_blocking(move || {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn annotate_by_quote_over_non_ascii_text() {
    let server = TestServer::start().await;
    let out = run(
        &server,
        &[
            "annotate",
            A1,
            "--quote",
            "조태열",
            "--verdict",
            "disputed",
            "--note",
            "romanisation differs",
            "--source",
            "https://example.org/a",
            "--source",
            "https://example.org/b",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let created = &json_lines(&out)[0];
    assert_eq!(created["quote"], "조태열");
    // The canonical proto3 JSON mapping, as grpcurl prints it.
    assert_eq!(created["verdict"], "VERDICT_DISPUTED");
    assert_eq!(created["analyst"], "alice");
    assert!(
        created["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("articles/{A1}/annotations/"))
    );
    let time = created["createTime"].as_str().unwrap();
    assert!(
        time.contains('T') && (time.ends_with('Z') || time.ends_with("+00:00")),
        "{time}"
    );
    let expected = find_span(&seed_text(A1), "조태열");
    assert_eq!(created["span"]["start"], expected.start);
    assert_eq!(created["span"]["end"], expected.end);
    assert_eq!(created["sources"].as_array().unwrap().len(), 2);

    // A quote with curly quotes and an apostrophe, by text.
    let out = run(
        &server,
        &[
            "annotate",
            A2,
            "--quote",
            "the Kremlin’s offensive",
            "--verdict",
            "verified",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("the Kremlin’s offensive"));

    // Ambiguous: refused as a usage error, nothing written.
    let out = run(
        &server,
        &["annotate", A0, "--quote", "North Korea", "--verdict", "verified"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--occurrence"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one clear line: {}",
        stderr(&out)
    );
    let out = run(
        &server,
        &[
            "annotate",
            A0,
            "--quote",
            "North Korea",
            "--occurrence",
            "2",
            "--verdict",
            "verified",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let second = &json_lines(&out)[0];
    let text = seed_text(A0);
    let first_byte = text.find("North Korea").unwrap();
    let second_byte = first_byte + 1 + text[first_byte + 1..].find("North Korea").unwrap();
    assert_eq!(second["span"]["start"], text[..second_byte].chars().count());

    // list and review, as JSON.
    let out = run(&server, &["list", "--output", "json"], None).await;
    assert_eq!(json_lines(&out).len(), 3);
    let out = run(
        &server,
        &["list", A1, "--verdict", "disputed", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(json_lines(&out).len(), 1);
    let out = run(&server, &["review", A1, "--output", "json"], None).await;
    let review = &json_lines(&out)[0];
    assert_eq!(review["totalCount"], 1);
    assert_eq!(review["disputedCount"], 1);
    assert_eq!(review["coveredCodePoints"], 3);
    let out = run(&server, &["articles", "--output", "json"], None).await;
    let articles = json_lines(&out);
    assert_eq!(articles.len(), 5);
    assert_eq!(articles[1]["length"], 3985);

    // update and delete by name.
    let name = created["name"].as_str().unwrap();
    let out = run(
        &server,
        &[
            "update",
            name,
            "--verdict",
            "verified",
            "--clear-sources",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let updated = &json_lines(&out)[0];
    assert_eq!(updated["verdict"], "VERDICT_VERIFIED");
    // Default values are left out, as the mapping says: no sources.
    assert!(updated.get("sources").is_none(), "{updated}");
    let stale = created["etag"].as_str().unwrap();
    let out = run(&server, &["delete", name, "--etag", stale], None).await;
    assert_eq!(out.status.code(), Some(3), "a stale etag is a server refusal");
    assert!(stderr(&out).contains("etag"), "{}", stderr(&out));
    let out = run(&server, &["delete", name], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A 2,000-line JSONL file of creates over every article.
fn big_file() -> Vec<String> {
    let texts: Vec<(&str, usize)> = [A0, A1, A2]
        .iter()
        .map(|id| (*id, seed_text(id).chars().count()))
        .collect();
    (0..2000)
        .map(|i| {
            let (id, len) = texts[i % 3];
            let start = (i * 7) % (len - 10);
            let verdict = ["verified", "disputed", "unattributed"][i % 3];
            serde_json::json!({
                "op": "create",
                "article": id,
                "span": { "start": start, "end": start + 1 + i % 9 },
                "verdict": verdict,
                "note": format!("batch review line {} – “checked”", i + 1),
                "sources": [format!("https://example.org/{i}")],
            })
            .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_all_or_nothing_before_writing_and_lands_completely() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let lines = big_file();

    // One bad line, deep in the file: nothing at all is written.
    let mut bad = lines.clone();
    let bad_span =
        serde_json::json!({"op":"create","article":A1,"span":{"start":5,"end":999999},"verdict":"verified"});
    bad[1899] = bad_span.to_string();
    let out = run(&server, &["apply", "-"], Some(bad.join("\n"))).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 1900"), "{}", stderr(&out));
    assert_eq!(snapshot(&mut client).await, (vec![], 0));

    // A line that is not an operation: a usage error naming it.
    let mut garbled = lines.clone();
    garbled[1899] = "{\"op\":\"create\",\"artcle\":\"x\"}".into();
    let out = run(&server, &["apply", "-"], Some(garbled.join("\n"))).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 1900"), "{}", stderr(&out));
    assert_eq!(snapshot(&mut client).await, (vec![], 0));

    // --dry-run validates everything and writes nothing.
    let out = run(
        &server,
        &["apply", "-", "--dry-run", "--output", "json"],
        Some(lines.join("\n")),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["operations"], 2000);
    assert_eq!(summary["dryRun"], true);
    assert_eq!(snapshot(&mut client).await, (vec![], 0));

    // The real thing, from a file: every line lands, in 4 atomic batches.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("review.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = run(
        &server,
        &["apply", path.to_str().unwrap(), "--output", "json"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["created"], 2000);
    assert_eq!(summary["batches"], 4);
    assert_eq!(summary["firstRevision"], 1);
    assert_eq!(summary["lastRevision"], 4);
    let (all, revision) = snapshot(&mut client).await;
    assert_eq!((all.len(), revision), (2000, 4));
    assert!(all.iter().any(|a| a.note == "batch review line 2000 – “checked”"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_apply_into_a_fresh_server_reproduces_the_annotations() {
    let source = TestServer::start().await;
    let mut client = source.client().await;
    let t1 = seed_text(A1);
    for (needle, verdict) in [
        ("조태열", pb::Verdict::Disputed),
        ("South Korean diplomat", pb::Verdict::Verified),
    ] {
        create(&mut client, A1, find_span(&t1, needle), verdict).await;
    }
    let t2 = seed_text(A2);
    create(
        &mut client,
        A2,
        find_span(&t2, "“payment”"),
        pb::Verdict::Unattributed,
    )
    .await;

    let out = run(&source, &["export"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = stdout(&out);
    assert_eq!(exported.lines().count(), 3);

    let target = TestServer::start().await;
    let out = run(&target, &["apply", "-"], Some(exported)).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // The same annotations but for their ids, times and etags.
    let strip = |list: Vec<pb::Annotation>| -> Vec<pb::Annotation> {
        list.into_iter()
            .map(|a| pb::Annotation {
                name: a.name.split('/').nth(1).unwrap().to_owned(),
                create_time: None,
                update_time: None,
                etag: String::new(),
                ..a
            })
            .collect()
    };
    let (before, _) = snapshot(&mut client).await;
    let (after, _) = snapshot(&mut target.client().await).await;
    assert_eq!(strip(after), strip(before));

    // W3C export: position and quote selectors, motivation assessing.
    let out = run(&source, &["export", A1, "--format", "w3c"], None).await;
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["@context"], "http://www.w3.org/ns/anno.jsonld");
    let items = doc["first"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let name = items
        .iter()
        .find(|i| i["target"]["selector"][1]["exact"] == "조태열")
        .unwrap();
    assert_eq!(name["motivation"], "assessing");
    assert_eq!(name["target"]["selector"][0]["type"], "TextPositionSelector");
    assert_eq!(
        name["target"]["selector"][0]["start"],
        find_span(&t1, "조태열").start
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_events_as_they_come() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut cmd = command(&server.url(), ALICE, &["watch", A1, "--output", "json"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // The watch is live once it says so.
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(
        ready.starts_with("watching articles/001_728dec46794c22c1 from revision 1"),
        "{ready}"
    );

    let text = seed_text(A1);
    let created = create(&mut client, A1, find_span(&text, "조태열"), pb::Verdict::Verified).await;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    // The watch message itself, in the canonical mapping (uint64 as a
    // string, enums by name).
    let msg: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(msg["kind"], "EVENTS");
    assert_eq!(msg["revision"], "1");
    let event = &msg["events"][0];
    assert_eq!(event["type"], "CREATED");
    assert_eq!(event["annotation"]["quote"], "조태열");
    assert_eq!(event["annotation"]["name"], created.name.as_str());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn exit_codes_tell_usage_refusal_and_connection_apart() {
    let server = TestServer::start().await;
    // Usage: a missing required flag (clap) and a bad span.
    let out = run(&server, &["annotate", A1, "--quote", "x"], None).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &server,
        &["annotate", A1, "--span", "7", "--verdict", "verified"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    // Refused by the server: not found, and an invalid span.
    let missing = format!("articles/{A1}/annotations/{}", uuid::Uuid::now_v7());
    let out = run(&server, &["delete", &missing], None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = run(
        &server,
        &["annotate", A1, "--span", "10:5", "--verdict", "verified"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("annotation.span.end"), "{}", stderr(&out));
    // Refused: a wrong token.
    let mut cmd = command(&server.url(), "nope", &["articles"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // Connection: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cmd = command(&format!("http://{closed}"), ALICE, &["articles"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// A newsroom's corrections from the shell: publish a text file, annotate
/// it, correct it (an etag typed without its quotes), read its revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_correct_and_list_revisions_from_files() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.txt");
    let second = dir.path().join("second.txt");
    // A BOM, as Windows editors write one.
    std::fs::write(
        &first,
        "\u{feff}Minister 조태열 said exports rose 5% in May 🎉.\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "Correction below.\nMinister 조태열 said exports rose 6% in May 🎉.\n",
    )
    .unwrap();
    let url = server.url();
    let as_reviewer = move |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                command(&url, REVIEWER, &args).output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let out = run(&server, &["publish", "desk", &path(&first)], None).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "an analyst may not publish: {}",
        stderr(&out)
    );
    let out = as_reviewer(vec![
        "publish".into(),
        "desk".into(),
        path(&first),
        "--source-url".into(),
        "https://news.example/desk".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "published articles/desk revision 1 (etag \"1\")"
    );

    let out = run(
        &server,
        &[
            "annotate",
            "desk",
            "--quote",
            "exports rose 5%",
            "--verdict",
            "verified",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = as_reviewer(vec![
        "correct".into(),
        "desk".into(),
        path(&second),
        "--etag".into(),
        "1".into(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (
            v["revisionId"].as_str(),
            v["needsReviewCount"].as_u64(),
            v["sourceUrl"].as_str()
        ),
        (Some("2"), Some(1), Some("https://news.example/desk"))
    );
    // A stale etag is refused and changes nothing.
    let out = as_reviewer(vec![
        "correct".into(),
        "desk".into(),
        path(&first),
        "--etag".into(),
        "\"1\"".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let out = run(&server, &["revisions", "desk", "--output", "json"], None).await;
    let revisions = json_lines(&out);
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[1]["name"], "articles/desk@2");
    assert!(revisions.iter().all(|r| r["revisionAuthor"] == "rosa"));
    let out = run(&server, &["list", "desk", "--output", "json"], None).await;
    let listed = json_lines(&out);
    assert_eq!(listed[0]["quote"], "exports rose 6%");
}

/// An etag typed in a shell loses its quotes (`--etag "2"` arrives as `2`):
/// accepted with or without them, and a stale one is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_is_accepted_with_or_without_its_quotes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(A1);
    let a = create(&mut client, A1, find_span(&text, "조태열"), pb::Verdict::Verified).await;
    let bare = a.etag.trim_matches('"').to_owned();
    assert_ne!(bare, a.etag);
    let out = run(
        &server,
        &["update", &a.name, "--verdict", "disputed", "--etag", &bare],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Now stale, quoted or not.
    for stale in [bare.clone(), a.etag.clone()] {
        let out = run(
            &server,
            &["update", &a.name, "--verdict", "verified", "--etag", &stale],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    }
    // Over gRPC too.
    let current = client
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    client
        .delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: a.name.clone(),
            etag: current.etag.trim_matches('"').to_owned(),
        })
        .await
        .unwrap();
}

/// `factcheck list | head -1`: once the reader is gone the command ends
/// quietly, as Unix tools do (SIGPIPE), instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let text = seed_text(A1);
    // Enough output to outgrow a pipe's buffer (64 KiB).
    let requests: Vec<pb::CreateAnnotationRequest> = (0..1000)
        .map(|i| pb::CreateAnnotationRequest {
            annotation: Some(new_annotation(
                pb::Span { start: i, end: i + 1 },
                pb::Verdict::Verified,
            )),
            ..Default::default()
        })
        .collect();
    client
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A1),
            requests,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(text.chars().count() > 1000);
    for args in [&["list", A1][..], &["export"][..]] {
        let mut cmd = command(&server.url(), ALICE, args);
        let status_and_err = tokio::task::spawn_blocking(move || {
            let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            let mut first = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            // The reader is gone: the pipe is closed.
            let out = child.wait_with_output().unwrap();
            (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
                first,
            )
        })
        .await
        .unwrap();
        let (status, err, first) = status_and_err;
        assert!(!first.is_empty());
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            status.success() || status.signal() == Some(13),
            "{args:?}: {status:?}"
        );
    }
}

/// `--at REVISION` on `list`, `get` and `review`: what was there then, an
/// annotation deleted since included; a revision not yet written is a
/// clear error and exit status.
#[tokio::test]
async fn list_get_and_review_at_a_past_revision() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let a = create(
        &mut client,
        A1,
        find_span(&seed_text(A1), "조태열"),
        pb::Verdict::Disputed,
    )
    .await;
    let then = snapshot(&mut client).await.1.to_string();
    client
        .delete_annotation(pb::DeleteAnnotationRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let now = run(&server, &["list", A1, "--output", "json"], None).await;
    assert!(json_lines(&now).is_empty(), "{}", stdout(&now));
    let past = run(&server, &["list", A1, "--at", &then, "--output", "json"], None).await;
    let listed = json_lines(&past);
    assert_eq!(listed.len(), 1, "{}", stderr(&past));
    assert_eq!(listed[0]["name"], a.name.as_str());
    assert_eq!(listed[0]["quote"], "조태열");

    let got = run(
        &server,
        &["get", &a.name, "--at", &then, "--output", "json"],
        None,
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(json_lines(&got)[0]["verdict"], "VERDICT_DISPUTED");
    let review = run(&server, &["review", A1, "--at", &then, "--output", "json"], None).await;
    assert_eq!(json_lines(&review)[0]["disputedCount"], 1, "{}", stdout(&review));

    let future = run(&server, &["review", A1, "--at", "999999"], None).await;
    assert!(!future.status.success());
    assert!(
        stderr(&future).contains("newer than any the store has written"),
        "{}",
        stderr(&future)
    );
}

//! W3C Web Annotations: the export meets the Web Annotation Data Model's
//! rules, and `apply --format w3c` anchors annotations by quote and context
//! even when their positions are stale.

use std::process::{Command, Output, Stdio};

use crate::common::*;
use serde_json::{Value, json};

const A2: &str = "002_946fad7c8fee627f";

async fn run(server: &TestServer, args: &[&str], stdin: Option<String>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.args(args)
        .env("FACTCHECK_SERVER", server.url())
        .env("FACTCHECK_TOKEN", ALICE)
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
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

/// Terms of the Web Annotation JSON-LD context
/// (<http://www.w3.org/ns/anno.jsonld>) an export may use.
const TERMS: &[&str] = &[
    "@context",
    "id",
    "type",
    "motivation",
    "purpose",
    "creator",
    "created",
    "modified",
    "generator",
    "generated",
    "body",
    "target",
    "source",
    "selector",
    "value",
    "format",
    "language",
    "exact",
    "prefix",
    "suffix",
    "start",
    "end",
    "name",
    "nickname",
    "email",
    "homepage",
    "label",
    "total",
    "first",
    "last",
    "next",
    "prev",
    "partOf",
    "startIndex",
    "items",
    "refinedBy",
    "state",
    "scope",
    "rights",
    "canonical",
    "via",
    "audience",
    "accessibility",
    "textDirection",
    "bodyValue",
    "stylesheet",
    "styleClass",
];

/// The Motivation instances of the model: the only values of `motivation`
/// and `purpose`.
const MOTIVATIONS: &[&str] = &[
    "assessing",
    "bookmarking",
    "classifying",
    "commenting",
    "describing",
    "editing",
    "highlighting",
    "identifying",
    "linking",
    "moderating",
    "questioning",
    "replying",
    "tagging",
];

fn absolute_iri(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    match s.split_once(':') {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme.chars().next().unwrap().is_ascii_alphabetic()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !rest.is_empty()
                && (!matches!(scheme, "http" | "https") || rest.starts_with("//") && rest.len() > 2)
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn date_time(v: &Value) -> bool {
    // xsd:dateTime in UTC, as the model says timestamps SHOULD be.
    v.as_str().is_some_and(|s| {
        s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T'
    })
}

/// Every key anywhere in `v` is a term of the context.
fn keys_are_terms(v: &Value, at: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if !TERMS.contains(&k.as_str()) {
                    problems.push(format!("{at}: {k:?} is not a term of the anno.jsonld context"));
                }
                keys_are_terms(child, &format!("{at}.{k}"), problems);
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| keys_are_terms(c, &format!("{at}[{i}]"), problems)),
        _ => {}
    }
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        v => vec![v],
    }
}

/// The model's MUSTs (and the SHOULDs we have data for) on one annotation.
fn check_annotation(a: &Value, at: &str, p: &mut Vec<String>) {
    let mut need = |ok: bool, what: &str| {
        if !ok {
            p.push(format!("{at}: {what}"));
        }
    };
    need(absolute_iri(&a["id"]), "id MUST be one absolute IRI");
    need(
        list(&a["type"]).contains(&&json!("Annotation")),
        "type MUST include Annotation",
    );
    need(
        list(&a["motivation"])
            .iter()
            .all(|m| MOTIVATIONS.contains(&m.as_str().unwrap_or(""))),
        "motivation is a Motivation",
    );
    let targets = list(&a["target"]);
    need(!targets.is_empty(), "MUST have a target");
    for t in targets {
        need(
            absolute_iri(&t["source"]),
            "target.source MUST be an absolute IRI",
        );
        for s in list(&t["selector"]) {
            match s["type"].as_str() {
                Some("TextQuoteSelector") => {
                    need(
                        s["exact"].as_str().is_some_and(|e| !e.is_empty()),
                        "TextQuoteSelector MUST have exact",
                    );
                    need(
                        s["prefix"].is_string() && s["suffix"].is_string(),
                        "TextQuoteSelector SHOULD have prefix and suffix",
                    );
                }
                Some("TextPositionSelector") => {
                    need(
                        s["start"].is_u64() && s["end"].is_u64(),
                        "TextPositionSelector MUST have non-negative start and end",
                    );
                    need(
                        s["start"].as_u64() <= s["end"].as_u64(),
                        "start MUST NOT be after end",
                    );
                }
                other => need(false, &format!("unexpected selector {other:?}")),
            }
        }
    }
    for b in list(&a["body"]) {
        need(
            list(&b["purpose"])
                .iter()
                .all(|m| MOTIVATIONS.contains(&m.as_str().unwrap_or(""))),
            "purpose is a Motivation",
        );
        match b["type"].as_str() {
            Some("TextualBody") => need(b["value"].is_string(), "TextualBody MUST have a value"),
            Some("SpecificResource") => need(
                absolute_iri(&b["source"]),
                "SpecificResource MUST have one source IRI",
            ),
            other => need(false, &format!("unexpected body type {other:?}")),
        }
    }
    need(
        absolute_iri(&a["creator"]["id"]) && a["creator"]["name"].is_string(),
        "creator is an agent with an id and a name",
    );
    need(
        date_time(&a["created"]) && date_time(&a["modified"]),
        "created and modified are UTC xsd:dateTime",
    );
}

/// The model's MUSTs on a collection with its first page embedded.
fn check_collection(doc: &Value) -> Vec<String> {
    let mut p = Vec::new();
    keys_are_terms(doc, "$", &mut p);
    let context = list(&doc["@context"]);
    if context.first() != Some(&&json!("http://www.w3.org/ns/anno.jsonld")) {
        p.push("@context MUST be (or start with) the anno.jsonld context".into());
    }
    if !absolute_iri(&doc["id"]) || doc["type"] != "AnnotationCollection" {
        p.push("the collection MUST have an id IRI and type AnnotationCollection".into());
    }
    if !doc["generator"]["id"].is_string() || !date_time(&doc["generated"]) {
        p.push("generator and generated SHOULD be given".into());
    }
    let page = &doc["first"];
    if !absolute_iri(&page["id"]) || page["type"] != "AnnotationPage" || page["partOf"] != doc["id"] {
        p.push(
            "the page MUST have an id IRI, type AnnotationPage, and SHOULD be partOf the collection".into(),
        );
    }
    if !page["startIndex"].is_u64() {
        p.push("the page SHOULD have a startIndex".into());
    }
    let items = page["items"].as_array().map(Vec::len);
    if items.map(|n| n as u64) != doc["total"].as_u64() {
        p.push("total SHOULD count the items".into());
    }
    for (i, a) in page["items"].as_array().into_iter().flatten().enumerate() {
        check_annotation(a, &format!("items[{i}]"), &mut p);
    }
    p
}

/// The export meets the model, with enough context to tell 002's repeated
/// paragraphs apart, and links its sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_w3c_export_meets_the_web_annotation_data_model() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let text = seed_text(A2);
    let repeated = "For North Korea, strengthening its air defences";
    let second = text.rfind(repeated).unwrap();
    let start = text[..second].chars().count() as u32;
    let mut a = new_annotation(
        pb::Span {
            start,
            end: start + repeated.chars().count() as u32,
        },
        pb::Verdict::Disputed,
    );
    a.sources = vec![
        "https://example.org/ministry".into(),
        "Ministry briefing, 4 Nov".into(),
    ];
    alice
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(A2),
            annotation: Some(a),
            ..Default::default()
        })
        .await
        .unwrap();
    create(
        &mut alice,
        A2,
        find_span(&text, "“payment”"),
        pb::Verdict::Unattributed,
    )
    .await;

    let out = run(
        &server,
        &[
            "export",
            "--format",
            "w3c",
            "--public-url",
            "https://factcheck.example/",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = check_collection(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let items = doc["first"]["items"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["target"]["selector"][1]["exact"] == repeated)
        .unwrap();
    assert_eq!(
        item["target"]["source"],
        format!("https://factcheck.example/articles/{A2}")
    );
    assert_eq!(item["creator"]["id"], "https://factcheck.example/analysts/alice");
    let quote = &item["target"]["selector"][1];
    let prefix: String = text[..second]
        .chars()
        .rev()
        .take(32)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(quote["prefix"], prefix);
    assert_eq!(quote["prefix"].as_str().unwrap().chars().count(), 32);
    let bodies = item["body"].as_array().unwrap();
    assert!(bodies.contains(
        &json!({ "type": "SpecificResource", "purpose": "linking", "source": "https://example.org/ministry" })
    ));
    // The checker is not a rubber stamp.
    let mut broken = doc.clone();
    broken["first"]["items"][0]["target"]["source"] = json!(format!("articles/{A2}"));
    broken["first"]["items"][0]["quote"] = json!("not a term");
    assert_eq!(
        check_collection(&broken).len(),
        2,
        "{:#?}",
        check_collection(&broken)
    );
}

/// A hand-made W3C file, as Hypothesis writes them, with stale positions:
/// anchored by quote and context, or reported; all or nothing unless told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_w3c_anchors_by_quote_and_reports_what_it_cannot() {
    let server = TestServer::start().await;
    let text = seed_text(A2);
    let cp = |b: usize| text[..b].chars().count();
    let ctx = |b: usize, e: usize| -> (String, String) {
        let before: Vec<char> = text[..b].chars().collect();
        let after: String = text[e..].chars().take(32).collect();
        (before[before.len().saturating_sub(32)..].iter().collect(), after)
    };
    let figure = text.find("13,000").unwrap();
    let (fp, fs) = ctx(figure, figure + 6);
    // Paragraphs repeat in 002: this one's second occurrence follows
    // another paragraph than its first.
    let repeated = "Some of these North Korean troops";
    let second = text.rfind(repeated).unwrap();
    let (rp, rs) = ctx(second, second + repeated.len());
    // This one repeats with the same paragraph around it both times.
    let twin = "For North Korea, strengthening its air defences";
    let (tp, ts) = ctx(text.rfind(twin).unwrap(), text.rfind(twin).unwrap() + twin.len());
    let source = format!("https://elsewhere.example/articles/{A2}");
    let doc = json!({
        "@context": "http://www.w3.org/ns/anno.jsonld",
        "type": "AnnotationPage",
        "items": [
            {
                "id": "https://hyp.example/a1", "type": "Annotation",
                "body": [
                    { "type": "TextualBody", "purpose": "assessing", "value": "verified" },
                    { "type": "TextualBody", "value": "NIS figure", "format": "text/markdown" },
                    { "type": "SpecificResource", "purpose": "linking", "source": "https://example.org/nis" }
                ],
                "target": { "source": source, "selector": [
                    { "type": "TextPositionSelector", "start": cp(figure) + 7, "end": cp(figure) + 13 },
                    { "type": "TextQuoteSelector", "exact": "13,000", "prefix": fp, "suffix": fs }
                ]}
            },
            {
                "id": "https://hyp.example/a2", "type": "Annotation",
                "body": { "type": "TextualBody", "purpose": "assessing", "value": "disputed" },
                "target": { "source": source, "selector":
                    { "type": "TextQuoteSelector", "exact": repeated, "prefix": rp, "suffix": rs } }
            },
            {
                "id": "https://hyp.example/a3", "type": "Annotation",
                "body": { "type": "TextualBody", "purpose": "assessing", "value": "disputed" },
                "target": { "source": source, "selector":
                    { "type": "TextQuoteSelector", "exact": "a sentence this article never had" } }
            },
            {
                "id": "https://hyp.example/a4", "type": "Annotation",
                "body": { "type": "TextualBody", "purpose": "assessing", "value": "disputed" },
                "target": { "source": source, "selector":
                    { "type": "TextQuoteSelector", "exact": twin, "prefix": tp, "suffix": ts } }
            }
        ]
    });
    let file = doc.to_string();

    let out = run(&server, &["apply", "--format", "w3c", "-"], Some(file.clone())).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("annotation 3") && err.contains("https://hyp.example/a3"),
        "{err}"
    );
    assert!(
        err.contains("annotation 4") && err.contains("occurs 2 times"),
        "{err}"
    );
    assert!(
        !err.contains("annotation 1:") && !err.contains("annotation 2:"),
        "{err}"
    );
    let mut alice = server.client().await;
    assert!(snapshot(&mut alice).await.0.is_empty(), "nothing applied");

    let out = run(
        &server,
        &["apply", "--format", "w3c", "--skip-unanchored", "-"],
        Some(file),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("annotation 3"));
    let (all, _) = snapshot(&mut alice).await;
    assert_eq!(all.len(), 2);
    let one = all.iter().find(|a| a.quote == "13,000").unwrap();
    assert_eq!(
        one.span,
        Some(find_span(&text, "13,000")),
        "the stale position was not trusted"
    );
    assert_eq!(
        (one.note.as_str(), one.sources.as_slice()),
        ("NIS figure", &["https://example.org/nis".to_owned()][..])
    );
    let two = all.iter().find(|a| a.quote == repeated).unwrap();
    assert_eq!(
        two.span.unwrap().start,
        cp(second) as u32,
        "the second occurrence, by its context"
    );

    // Round trip: this server's export applies into a fresh one as it was.
    let out = run(&server, &["export", "--format", "w3c"], None).await;
    let fresh = TestServer::start().await;
    let applied = run(
        &fresh,
        &["apply", "--format", "w3c", "-"],
        Some(String::from_utf8(out.stdout).unwrap()),
    )
    .await;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let spans = |list: Vec<pb::Annotation>| {
        let mut v: Vec<_> = list
            .into_iter()
            .map(|a| (a.span, a.quote, a.verdict, a.note, a.sources))
            .collect();
        v.sort_by_key(|x| x.0.map(|s| s.start));
        v
    };
    assert_eq!(spans(snapshot(&mut fresh.client().await).await.0), spans(all));
}

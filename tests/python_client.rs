//! The Python client (`clients/python`), installed in a venv, running its
//! example against a real server: every occurrence of each CSV phrase
//! annotated in one batch, code points counted as the server counts them
//! (astral characters included), and a re-run changing nothing.
//!
//! Needs `FACTCHECK_PYTHON`: a Python with the package installed. `.ci/run`
//! makes the venv and runs `cargo test --release --features
//! python-client-tests --test python_client`.

mod common;

use std::process::{Command, Output};

use common::*;

const ARTICLE: &str = "python-desk";
const TEXT: &str = "The king 👑 said “한글” was made in 1443. 한글 is easy; 조태열 agreed – twice.\n";

fn python() -> String {
    std::env::var("FACTCHECK_PYTHON").expect("FACTCHECK_PYTHON: a Python with clients/python installed")
}

async fn example(server: &TestServer, args: Vec<String>) -> Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/python/examples/batch_review.py"
    );
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(args)
        .env("FACTCHECK_SERVER", server.url())
        .env("FACTCHECK_TOKEN", ALICE);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_marks_every_occurrence_in_one_batch() {
    let server = TestServer::start().await;
    server
        .client_with(Some(REVIEWER))
        .await
        .create_article(pb::CreateArticleRequest {
            article_id: ARTICLE.into(),
            article: Some(pb::Article {
                text: TEXT.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("phrases.csv");
    std::fs::write(
        &csv,
        "phrase,verdict,note\n한글,verified,\"the script, named\"\n조태열,disputed,spelling\n1443,unattributed,no source\n",
    )
    .unwrap();
    let args = vec![ARTICLE.to_owned(), csv.to_str().unwrap().to_owned()];

    let o = example(&server, args.clone()).await;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("created 4 annotations"), "{out}");
    let mut alice = server.client().await;
    let (all, _) = snapshot(&mut alice).await;
    let mut got: Vec<(String, u32, u32, i32)> = all
        .iter()
        .map(|a| {
            (
                a.quote.clone(),
                a.span.unwrap().start,
                a.span.unwrap().end,
                a.verdict,
            )
        })
        .collect();
    got.sort_by_key(|g| g.1);
    let expect = |q: &str, n: usize, v: pb::Verdict| {
        let s = TEXT.match_indices(q).nth(n).unwrap().0;
        let start = TEXT[..s].chars().count() as u32;
        (q.to_owned(), start, start + q.chars().count() as u32, v as i32)
    };
    assert_eq!(
        got,
        [
            expect("한글", 0, pb::Verdict::Verified),
            expect("1443", 0, pb::Verdict::Unattributed),
            expect("한글", 1, pb::Verdict::Verified),
            expect("조태열", 0, pb::Verdict::Disputed),
        ]
    );
    assert_eq!(all.iter().find(|a| a.quote == "조태열").unwrap().note, "spelling");

    // The same CSV again: the same request_id, nothing new.
    let o = example(&server, args).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(snapshot(&mut alice).await.0.len(), 4);

    let o = example(&server, vec!["--help".into()]).await;
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("FACTCHECK_SERVER") && help.contains("FACTCHECK_TOKEN"),
        "{help}"
    );

    // The helpers: code points, paging.
    let script = format!(
        r#"
import factcheck
from factcheck import pb
assert factcheck.quote_span({TEXT:?}, "한글", 2) == {:?}, factcheck.quote_span({TEXT:?}, "한글", 2)
try:
    factcheck.quote_span({TEXT:?}, "한글")
    raise SystemExit("an ambiguous quote was accepted")
except ValueError as e:
    assert "2 times" in str(e)
fc = factcheck.Client()
names = [a.name for a in factcheck.paginate(fc.stub.ListAnnotations, pb.ListAnnotationsRequest(parent="articles/{ARTICLE}", page_size=1), "annotations")]
assert len(names) == 4, names
print("ok")
"#,
        (
            expect("한글", 1, pb::Verdict::Verified).1,
            expect("한글", 1, pb::Verdict::Verified).2
        )
    );
    let mut cmd = Command::new(python());
    cmd.args(["-c", &script])
        .env("FACTCHECK_SERVER", server.url().trim_start_matches("http://"))
        .env("FACTCHECK_TOKEN", ALICE);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

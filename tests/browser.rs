//! The web app in a real headless Chromium, over WebDriver (fantoccini and
//! `chromedriver`), against a real server: sign in, annotate by selecting
//! text (astral characters included) or by keyboard alone, follow a
//! colleague's changes live, conflicts, roles, a server restart under an
//! open page, CORS; the reviewer's desk (adjudicating, signing off with a
//! confirmation, the dashboard), filters, search and deep links, safe
//! defaults (no verdict chosen for the analyst, the note's limit, sources),
//! right-to-left text, the phone layout, and axe-core's audit.
//!
//! Needs `chromium` and `chromium-driver` (Debian): run with
//! `cargo test --release --features browser-tests --test browser`, as
//! `.ci/run` does after installing them.

mod common;
#[path = "common/driver.rs"]
mod driver;

use std::time::Duration;

use common::*;
use driver::{Driver, free_addr};
use fantoccini::{Client as Browser, Locator};
use pb::Verdict;
use serde_json::json;

const KOREAN: &str = "001_728dec46794c22c1";
const ASTRAL: &str = "005_astral";
const ASTRAL_TEXT: &str = "Sejong 세종 😀 said “x”.\nThe king 👑 wrote: “한글” – 1443.\n";

/// A hang is a failure here, not a wait.
const HANG: Duration = Duration::from_secs(20);

/// The five seeds and one article with astral characters.
fn seeds() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(seeds_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(format!("{ASTRAL}.txt")), ASTRAL_TEXT).unwrap();
    dir
}

/// A server on the test seeds (keep the dir while it runs).
async fn start() -> (TestServer, tempfile::TempDir) {
    let seeds = seeds();
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        ..Setup::default()
    };
    (
        TestServer::start_with(tempfile::tempdir().unwrap(), setup).await,
        seeds,
    )
}

/// Waits, in the page, until the JavaScript expression `condition` holds:
/// checked now and again on every change to the document (a
/// MutationObserver), so nothing polls. Fails after [`HANG`] (the session's
/// script timeout).
async fn wait_until(b: &Browser, what: &str, condition: &str) {
    let script = format!(
        r#"
        const done = arguments[arguments.length - 1];
        const holds = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
        if (holds()) return done(true);
        const seen = new MutationObserver(() => {{ if (holds()) {{ seen.disconnect(); done(true); }} }});
        seen.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
        "#
    );
    let held = b.execute_async(&script, vec![]).await;
    assert!(
        matches!(held, Ok(ref v) if *v == json!(true)),
        "never happened: {what} ({held:?})"
    );
}

async fn sign_in(b: &Browser, base: &str, token: &str, article: &str) {
    b.goto(&format!("{base}/#articles%2F{article}")).await.unwrap();
    let input = b
        .wait()
        .at_most(HANG)
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    input.send_keys(token).await.unwrap();
    b.find(Locator::Css("#signin-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .at_most(HANG)
        .for_element(Locator::Css("#who:not(:empty)"))
        .await
        .unwrap();
    if !article.is_empty() {
        let title = b
            .wait()
            .at_most(HANG)
            .for_element(Locator::Css("#article-title"))
            .await
            .unwrap();
        let _ = title;
        wait_until(
            b,
            "the article is shown",
            "document.querySelector('#text').textContent.length > 0",
        )
        .await;
    }
}

/// Selects the `n`th (from 0) occurrence of `needle` in the article text,
/// across highlights, as a person dragging the mouse would, and lets the
/// page see the mouseup.
async fn select(b: &Browser, needle: &str, n: usize) {
    let script = r#"
        const [needle, n] = arguments;
        const root = document.getElementById('text');
        const text = root.textContent;
        let at = -1;
        for (let i = 0; i <= n; i++) at = text.indexOf(needle, at + 1);
        if (at < 0) throw new Error('not found: ' + needle);
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        const pos = (offset) => {
            let node, seen = 0;
            while ((node = walker.nextNode())) {
                if (seen + node.length >= offset) return [node, offset - seen];
                seen += node.length;
            }
        };
        const [sn, so] = pos(at);
        walker.currentNode = root;
        const [en, eo] = pos(at + needle.length);
        const range = document.createRange();
        range.setStart(sn, so);
        range.setEnd(en, eo);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        root.dispatchEvent(new MouseEvent('mouseup', { bubbles: true }));
    "#;
    b.execute(script, vec![json!(needle), json!(n)]).await.unwrap();
    b.wait()
        .at_most(HANG)
        .for_element(Locator::Css("#popover:not([hidden])"))
        .await
        .unwrap();
}

async fn save_with(b: &Browser, verdict: Verdict, note: &str) {
    b.find(Locator::Css(&format!(
        "#popover input[name=verdict][value='{}']",
        verdict as i32
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    b.find(Locator::Id("popover-note"))
        .await
        .unwrap()
        .send_keys(note)
        .await
        .unwrap();
    b.find(Locator::Id("popover-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        b,
        "the popover closes",
        "document.getElementById('popover').hidden",
    )
    .await;
}

async fn only_annotation(client: &mut Client, article_id: &str) -> pb::Annotation {
    let list = client
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(article_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.annotations.len(), 1, "{:?}", list.annotations);
    list.annotations.into_iter().next().unwrap()
}

async fn marks(b: &Browser) -> usize {
    b.execute("return document.querySelectorAll('#text mark').length", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap() as usize
}

/// 1–2: an analyst annotates `조태열` by selecting it; the server holds
/// 2843..2846; a second analyst's open page shows it live, figures and all.
#[tokio::test]
async fn annotate_by_selection_and_see_it_live_elsewhere() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    sign_in(&alice, &server.url(), ALICE, KOREAN).await;
    sign_in(&bob, &server.url(), BOB, KOREAN).await;
    assert_eq!(marks(&bob).await, 0);
    wait_until(&bob, "bob's page is live", "document.querySelector('#live.live')").await;

    select(&alice, "조태열", 0).await;
    save_with(
        &alice,
        Verdict::Disputed,
        "romanisation differs – see the ministry",
    )
    .await;
    let mut grpc = server.client().await;
    let a = only_annotation(&mut grpc, KOREAN).await;
    assert_eq!(
        (a.span.unwrap().start, a.span.unwrap().end, a.quote.as_str()),
        (2843, 2846, "조태열")
    );
    assert_eq!(a.analyst, "alice");

    wait_until(
        &bob,
        "bob sees the highlight without a reload",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    let mark_text: String = bob
        .execute(
            "return document.querySelector('#text mark.v2').textContent",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .into();
    assert_eq!(mark_text, "조태열");
    wait_until(
        &bob,
        "bob's figures count it",
        "(t => /1/.test(t) && t.includes('covered'))(document.getElementById('figures').textContent)",
    )
    .await;
    if let Ok(path) = std::env::var("FACTCHECK_SCREENSHOT") {
        let mut grpc = server.client_with(Some(BOB)).await;
        let text = seed_text(KOREAN);
        create(
            &mut grpc,
            KOREAN,
            find_span(
                &text,
                "Cho Tae-yul (Korean: 조태열; born 10 November 1955) is a South Korean diplomat.",
            ),
            Verdict::Verified,
        )
        .await;
        create(
            &mut grpc,
            KOREAN,
            find_span(&text, "Minister of Foreign Affairs"),
            Verdict::Unattributed,
        )
        .await;
        wait_until(
            &alice,
            "three marks",
            "document.querySelectorAll('#text mark').length >= 3",
        )
        .await;
        wait_until(&alice, "a region", "document.querySelector('#text .region')").await;
        alice.execute("const m = document.querySelector('#text .region'); m.scrollIntoView({block:'center'}); m.focus()", vec![]).await.unwrap();
        std::fs::write(path, alice.screenshot().await.unwrap()).unwrap();
    }
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// 3: a selection after an emoji is sent as code points, not UTF-16 units.
#[tokio::test]
async fn a_selection_after_an_emoji_is_counted_in_code_points() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, ASTRAL).await;
    select(&b, "한글", 0).await;
    save_with(&b, Verdict::Verified, "").await;
    let mut grpc = server.client().await;
    let a = only_annotation(&mut grpc, ASTRAL).await;
    let start = ASTRAL_TEXT.chars().position(|c| c == '한').unwrap() as u32;
    assert_eq!((a.span.unwrap().start, a.span.unwrap().end), (start, start + 2));
    assert_eq!(a.quote, "한글");
    b.close().await.unwrap();
}

/// 4: a stale edit shows the conflict instead of overwriting; a reader gets
/// no edit controls, and a call forced from the page is refused.
#[tokio::test]
async fn stale_edits_conflict_and_readers_cannot_write() {
    let (server, _seeds) = start().await;
    let mut grpc = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut grpc, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    b.wait()
        .at_most(HANG)
        .for_element(Locator::Css("#annotation-list .edit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Meanwhile, a reviewer corrects the article, which moves the same
    // annotation (a change by rosa to alice's annotation); the page may or
    // may not have heard of it yet: it was opened with the old etag.
    let prefix = "Correction: a name was misspelt.\n";
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    rosa.update_article(pb::UpdateArticleRequest {
        article: Some(pb::Article {
            name: article(KOREAN),
            text: format!("{prefix}{text}"),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let moved = 2843 + prefix.chars().count();
    b.find(Locator::Id("popover-note"))
        .await
        .unwrap()
        .send_keys("mine")
        .await
        .unwrap();
    b.find(Locator::Id("popover-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let title = b
        .wait()
        .at_most(HANG)
        .for_element(Locator::Css("dialog[open] #dialog-title"))
        .await
        .unwrap();
    assert_eq!(title.text().await.unwrap(), "This annotation changed meanwhile");
    // It names who made the current version (rosa, by her correction), and
    // what changed.
    let said = js(
        &b,
        "document.querySelector('dialog[open] .changed-by').textContent",
    )
    .await;
    assert!(
        said.as_str()
            .unwrap()
            .starts_with("rosa changed alice's annotation"),
        "{said}"
    );
    assert_eq!(
        js(&b, "[...document.querySelectorAll('dialog[open] table.changes')[0].querySelectorAll('tr[data-field]')].map(r => r.dataset.field + ': ' + r.cells[1].textContent + ' → ' + r.cells[2].textContent).join()").await,
        json!(format!("span: 2843..2846 “조태열” → {moved}..{} “조태열”", moved + 3))
    );
    b.find(Locator::Css("dialog[open] button[value=keep]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let now = grpc
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (now.note.as_str(), now.span.unwrap().start as usize),
        ("checked against the wire report", moved),
        "nothing was overwritten"
    );
    // The history shows each revision's changes, field by field.
    click(&b, "#annotation-list .history").await;
    wait_until(
        &b,
        "the history",
        "document.querySelectorAll('dialog[open] .history-list > li').length === 2",
    )
    .await;
    assert_eq!(
        js(&b, "[...document.querySelectorAll('dialog[open] .history-list > li')].map(li => li.querySelector('strong').textContent + ' ' + [...li.querySelectorAll('tr[data-field]')].map(r => r.dataset.field).join('+')).join(', ')").await,
        json!("created span+verdict+note+sources, updated span")
    );
    click(&b, "dialog[open] button[value=ok]").await;

    let reader = driver.browser().await;
    sign_in(&reader, &server.url(), READER, KOREAN).await;
    wait_until(
        &reader,
        "the reader sees the annotation",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    assert!(reader.find(Locator::Css("#annotation-list .edit")).await.is_err());
    assert!(
        reader
            .find(Locator::Css("#annotation-list .delete"))
            .await
            .is_err()
    );
    // Forced: a grpc-web DeleteAnnotation from the page with the reader's token.
    let status = reader
        .execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            fetch('/factcheck.v1.FactCheckService/DeleteAnnotation', {
                method: 'POST',
                headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1',
                           'authorization': 'Bearer ' + sessionStorage.getItem('factcheck.token') },
                body: new Uint8Array([0, 0, 0, 0, 0]),
            }).then(async (r) => done((r.headers.get('grpc-status') || '') + '|' + new TextDecoder().decode(await r.arrayBuffer())));
            "#,
            vec![],
        )
        .await
        .unwrap();
    let status = status.as_str().unwrap().to_owned();
    assert!(
        status.starts_with("7|") || status.contains("grpc-status:7"),
        "{status}"
    );
    b.close().await.unwrap();
    reader.close().await.unwrap();
}

/// 5: the server restarts under an open page; a change made meanwhile by
/// another client appears once the page reconnects, once.
#[tokio::test]
async fn the_page_resumes_after_a_server_restart() {
    let seeds = seeds();
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        listen: Some(free_addr()),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup.clone()).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    wait_until(&b, "live", "document.querySelector('#live.live')").await;
    let dir = server.stop().await;
    wait_until(
        &b,
        "the page notices",
        "document.querySelector('#live.reconnecting')",
    )
    .await;
    let server = TestServer::start_with(dir, setup).await;
    let mut grpc = server.client_with(Some(BOB)).await;
    let text = seed_text(KOREAN);
    create(
        &mut grpc,
        KOREAN,
        find_span(&text, "조태열"),
        Verdict::Unattributed,
    )
    .await;
    wait_until(
        &b,
        "the change made while away appears",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    wait_until(&b, "live again", "document.querySelector('#live.live')").await;
    let items = b
        .execute(
            "return document.querySelectorAll('#annotation-list li').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(items, json!(1), "shown once");
    b.close().await.unwrap();
}

/// 6: a page of an allowed origin may call the API; another origin's call
/// is refused by the browser.
#[tokio::test]
async fn cors_is_enforced_by_the_browser() {
    let seeds = seeds();
    let addr = free_addr();
    let allowed_origin = format!("http://localhost:{}", addr.port());
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        listen: Some(addr),
        cors_origins: vec![allowed_origin.clone()],
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let closed = TestServer::start().await;
    let driver = Driver::start();
    let b = driver.browser().await;
    // The page's origin is http://localhost:PORT; the API is called at
    // http://127.0.0.1:PORT, another origin. (A page that is not the web
    // app, whose CSP allows it to call its own origin only.)
    b.goto(&format!("{allowed_origin}/a-cms-page")).await.unwrap();
    let call = r#"
        const [url, token] = arguments;
        const done = arguments[arguments.length - 1];
        fetch(url + '/factcheck.v1.FactCheckService/ListArticles', {
            method: 'POST',
            headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', 'authorization': 'Bearer ' + token },
            body: new Uint8Array([0, 0, 0, 0, 0]),
        }).then((r) => done('ok ' + r.status + ' ' + r.headers.get('grpc-status')), (e) => done('refused ' + e));
    "#;
    let ok = b
        .execute_async(call, vec![json!(server.url()), json!(ALICE)])
        .await
        .unwrap();
    assert!(ok.as_str().unwrap().starts_with("ok 200"), "{ok}");
    let refused = b
        .execute_async(call, vec![json!(closed.url()), json!(ALICE)])
        .await
        .unwrap();
    assert!(refused.as_str().unwrap().starts_with("refused"), "{refused}");
    b.close().await.unwrap();
}

/// An open page follows a correction made elsewhere: the new text, and the
/// highlight where the re-anchored annotation now is; an orphaned one is not
/// highlighted over text it never judged.
#[tokio::test]
async fn an_open_page_follows_a_correction() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let page = driver.browser().await;
    let mut alice = server.client().await;
    let text = seed_text(KOREAN);
    create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Disputed).await;
    sign_in(&page, &server.url(), BOB, KOREAN).await;
    wait_until(
        &page,
        "the highlight",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    wait_until(&page, "the page is live", "document.querySelector('#live.live')").await;

    let mut editor = server.client_with(Some(REVIEWER)).await;
    let corrected = format!("Correction: an earlier version misspelled a name. 🎉\n{text}");
    editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(KOREAN),
                text: corrected,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_until(
        &page,
        "the corrected text",
        "document.getElementById('text').textContent.startsWith('Correction: an earlier version')",
    )
    .await;
    wait_until(
        &page,
        "the highlight moved with its text",
        "document.querySelectorAll('#text mark').length === 1 && document.querySelector('#text mark').textContent === '조태열'",
    )
    .await;
}

/// A reviewer signs off from the page: the state reads "signed off by
/// rosa" on a colleague's open page too, live; an analyst's change
/// withdraws it there as well. Analysts get no sign-off button.
#[tokio::test]
async fn a_reviewer_signs_off_from_the_page_and_a_change_withdraws_it_live() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let text = seed_text(KOREAN);
    create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    create(&mut bob, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let reviewer = driver.browser().await;
    let colleague = driver.browser().await;
    sign_in(&reviewer, &server.url(), REVIEWER, KOREAN).await;
    sign_in(&colleague, &server.url(), BOB, KOREAN).await;
    let state = "document.querySelector('#figures .fig.state')";
    wait_until(&colleague, "ready", &format!("{state}.dataset.state === 'ready'")).await;
    wait_until(
        &colleague,
        "the page is live",
        "document.querySelector('#live.live')",
    )
    .await;
    assert!(
        colleague.find(Locator::Id("sign-off")).await.is_err(),
        "an analyst has no sign-off button"
    );
    reviewer
        .wait()
        .at_most(HANG)
        .for_element(Locator::Id("sign-off"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(&reviewer, "dialog[open] button[value=sign]").await;
    for page in [&reviewer, &colleague] {
        wait_until(
            page,
            "signed off by rosa",
            &format!("{state}.dataset.state === 'signed-off' && {state}.textContent.includes('rosa')"),
        )
        .await;
    }
    create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Disputed).await;
    for page in [&reviewer, &colleague] {
        wait_until(
            page,
            "the sign-off withdrawn",
            &format!("{state}.dataset.state === 'needs-adjudication'"),
        )
        .await;
    }
    let r = alice
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(KOREAN)),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.sign_off.is_none());
}

// ---- the reviewer's desk (issue 24) ----

async fn js(b: &Browser, expr: &str) -> serde_json::Value {
    b.execute(&format!("return ({expr});"), vec![]).await.unwrap()
}

/// Clicks the element `css` selects, once there, centred on the screen
/// (not under the sticky bar) as a person would scroll to it.
/// A live page may draw the element again between finding and clicking it:
/// then it is found again.
async fn click(b: &Browser, css: &str) {
    let mut last = None;
    for _ in 0..5 {
        let e = b
            .wait()
            .at_most(HANG)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        let centred = b
            .execute(
                "arguments[0].scrollIntoView({ block: 'center' })",
                vec![serde_json::to_value(&e).unwrap()],
            )
            .await;
        match centred.and(e.click().await) {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(w))
                if w.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                last = Some(w)
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    panic!("{css} kept being drawn again: {last:?}");
}

async fn review(client: &mut Client, article_id: &str) -> pb::ArticleReview {
    client
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(article_id)),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Alice says `조태열` is verified, Bob that it is disputed: one contested
/// region, two analysts.
async fn contest(server: &TestServer) -> (pb::Annotation, pb::Annotation) {
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let text = seed_text(KOREAN);
    let a = create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    let b = create(&mut bob, KOREAN, find_span(&text, "조태열"), Verdict::Disputed).await;
    (a, b)
}

/// A correction of more annotations than a chunk, halted after its first
/// chunk (a failpoint in the server binary): the open page follows the new
/// text and draws only the annotation moved onto it, not the others at
/// their old offsets, which would mark the wrong words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_page_draws_only_annotations_moved_onto_the_new_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"));
    cmd.env("FAILPOINTS", "reanchor::chunk=return");
    let mut server = ChildServer::spawn(cmd, dir.path(), &["--reanchor-chunk", "1"]);
    server.wait_until_serving();
    let admin = server.admin_token();
    let mut c = server.client(&admin).await;
    let text = seed_text(KOREAN);
    for w in ["조태열", "Minister of Foreign Affairs", "diplomat"] {
        create(&mut c, KOREAN, find_span(&text, w), Verdict::Verified).await;
    }
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &format!("http://{}", server.addr), &admin, KOREAN).await;
    wait_until(
        &b,
        "three marks",
        "document.querySelectorAll('#text mark').length === 3",
    )
    .await;
    let current = c
        .get_article(pb::GetArticleRequest {
            name: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let corrected = format!("Correction – 🙂 the minister’s title.\n{text}");
    let waiting = tokio::spawn({
        let mut c = c.clone();
        let request = pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(KOREAN),
                text: corrected.clone(),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["text".into()],
            }),
            etag: current.etag,
        };
        async move { c.update_article(request).await }
    });
    server.wait_for_log("re-anchored in chunks");
    assert!(!waiting.is_finished(), "answered before its annotations moved");
    wait_until(
        &b,
        "the new text, with only the moved annotation drawn",
        "document.getElementById('text').textContent.startsWith('Correction') && document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    let drawn = js(&b, "document.querySelector('#text mark').textContent").await;
    assert!(
        ["조태열", "Minister of Foreign Affairs", "diplomat"].contains(&drawn.as_str().unwrap()),
        "{drawn}"
    );
    b.close().await.unwrap();
}

/// An admin removes an analyst's annotation from the page (moderation):
/// others' annotations offer "Remove…" and no Edit or Delete; Remove without
/// a reason is asked again and deletes nothing; with one, the annotation is
/// gone, and the server's history records the reason and the admin.
#[tokio::test]
async fn an_admin_removes_an_annotation_with_a_reason_from_the_page() {
    let (server, _seeds) = start().await;
    let mut alice = server.client().await;
    let text = seed_text(KOREAN);
    let a = create(&mut alice, KOREAN, find_span(&text, "조태열"), Verdict::Disputed).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ADMIN, KOREAN).await;
    wait_until(
        &b,
        "alice's annotation offers Remove…",
        "document.querySelector('#annotation-list button.moderate')",
    )
    .await;
    assert_eq!(
        js(
            &b,
            "document.querySelectorAll('#annotation-list button.edit, #annotation-list button.delete').length"
        )
        .await,
        json!(0)
    );
    assert_eq!(
        js(
            &b,
            "document.querySelector('#annotation-list button.moderate').getAttribute('aria-label')"
        )
        .await,
        json!("Remove annotation ‘조태열’ by alice (moderation)")
    );
    click(&b, "#annotation-list button.moderate").await;
    click(&b, "dialog[open] button[value=remove]").await;
    wait_until(
        &b,
        "asked again for the reason",
        "document.querySelector('dialog[open] #moderation-hint.error')",
    )
    .await;
    let get = |mut c: Client, name: String| async move {
        c.get_annotation(pb::GetAnnotationRequest {
            name,
            ..Default::default()
        })
        .await
    };
    assert!(
        get(alice.clone(), a.name.clone()).await.is_ok(),
        "nothing deleted without a reason"
    );
    let reason = "Names a private person – removed at their request";
    b.find(Locator::Id("moderation-reason"))
        .await
        .unwrap()
        .send_keys(reason)
        .await
        .unwrap();
    click(&b, "dialog[open] button[value=remove]").await;
    wait_until(
        &b,
        "the annotation leaves the page",
        "!document.querySelector('#annotation-list button.moderate') && !document.querySelector('dialog[open]')",
    )
    .await;
    assert_eq!(
        get(alice.clone(), a.name.clone()).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let history = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    let last = history.last().unwrap();
    assert_eq!(last.r#type, pb::annotation_event::Type::Deleted as i32);
    assert_eq!(
        (last.actor.as_str(), last.moderation_reason.as_str()),
        ("ada", reason)
    );
    b.close().await.unwrap();
}

/// A reviewer runs an article from contested to SIGNED_OFF in the page:
/// the adjudication panel (a stale region is shown, not overwritten; the
/// rationale is required), the region then drawn settled and the figures'
/// unresolved count at 0, and Sign off only after a confirmation naming
/// what is signed.
#[tokio::test]
async fn a_reviewer_adjudicates_and_signs_off_in_the_page() {
    let (server, _seeds) = start().await;
    contest(&server).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), REVIEWER, KOREAN).await;
    wait_until(
        &b,
        "one unresolved region",
        "document.querySelectorAll('#text .region.unresolved').length === 1 && document.querySelector('#figures .fig.contested').dataset.unresolved === '1'",
    )
    .await;
    assert_eq!(
        js(&b, "document.querySelector('#text .region').textContent").await,
        json!("조태열"),
        "one region, its words intact"
    );
    assert_eq!(
        js(&b, "document.querySelectorAll('#text .region [tabindex]').length").await,
        json!(0),
        "one tab stop per region"
    );
    click(&b, "#text .region").await;
    wait_until(&b, "the panel", "document.getElementById('adjudication').open").await;
    let groups = js(&b, "document.getElementById('adj-groups').textContent").await;
    let groups = groups.as_str().unwrap();
    assert!(
        groups.contains("verified (1)") && groups.contains("disputed (1)"),
        "{groups}"
    );
    assert!(groups.contains("alice") && groups.contains("bob"), "{groups}");
    assert_eq!(
        js(&b, "document.getElementById('adj-submit').disabled").await,
        json!(true)
    );
    click(&b, "#adj-form input[name=final][value='2']").await;
    assert_eq!(
        js(&b, "document.getElementById('adj-submit').disabled").await,
        json!(true),
        "a rationale is required"
    );
    b.find(Locator::Id("adj-rationale"))
        .await
        .unwrap()
        .send_keys("The ministry's own page spells it so.")
        .await
        .unwrap();

    if let Ok(dir) = std::env::var("FACTCHECK_SCREENSHOTS") {
        std::fs::write(format!("{dir}/adjudication.png"), b.screenshot().await.unwrap()).unwrap();
    }
    // Meanwhile a third analyst joins the region: the panel's state is stale.
    let mut admin = server.client_with(Some(ADMIN)).await;
    let text = seed_text(KOREAN);
    create(
        &mut admin,
        KOREAN,
        find_span(&text, "조태열"),
        Verdict::Unattributed,
    )
    .await;
    let mut grpc = server.client().await;
    click(&b, "#adj-submit").await;
    wait_until(
        &b,
        "the stale region shown as it is now",
        "document.getElementById('adj-status').textContent.includes('changed since you opened it') && document.getElementById('adj-groups').textContent.includes('unattributed (1)')",
    )
    .await;
    let r = review(&mut grpc, KOREAN).await;
    assert!(
        r.contested_spans[0].adjudication.is_none(),
        "nothing settled behind the reviewer's back"
    );
    assert_eq!(
        js(&b, "document.getElementById('adj-rationale').value").await,
        json!("The ministry's own page spells it so."),
        "the rationale is kept"
    );
    // Settle it as it is now.
    click(&b, "#adj-submit").await;
    wait_until(
        &b,
        "the panel closes",
        "!document.getElementById('adjudication').open",
    )
    .await;
    let r = review(&mut grpc, KOREAN).await;
    let adj = r.contested_spans[0].adjudication.clone().expect("settled");
    assert_eq!(adj.verdict, Verdict::Disputed as i32);
    assert_eq!(adj.rationale, "The ministry's own page spells it so.");
    assert_eq!(adj.reviewer, "rosa");
    assert_eq!(r.unresolved_contested_span_count, 0);
    wait_until(
        &b,
        "the region drawn settled, the unresolved count at 0",
        "document.querySelector('#text .region.settled.f2') && document.querySelector('#figures .fig.contested').dataset.unresolved === '0'",
    )
    .await;
    b.execute("document.querySelector('#text .region').focus()", vec![])
        .await
        .unwrap();
    wait_until(
        &b,
        "the card carries the rationale",
        "!document.getElementById('card').hidden && document.getElementById('card').textContent.includes('spells it so')",
    )
    .await;

    // Sign off: a confirmation naming what is signed; Cancel signs nothing.
    wait_until(
        &b,
        "ready",
        "document.querySelector('#figures .fig.state').dataset.state === 'ready'",
    )
    .await;
    click(&b, "#sign-off").await;
    wait_until(
        &b,
        "the confirmation",
        "document.querySelector('dialog#dialog[open] [data-signing=etag]')",
    )
    .await;
    let r = review(&mut grpc, KOREAN).await;
    assert_eq!(
        js(&b, "document.querySelector('[data-signing=etag]').textContent").await,
        json!(r.etag),
        "the confirmation names the review version signed"
    );
    assert_eq!(
        js(&b, "document.querySelector('[data-signing=state]').textContent").await,
        json!("ready")
    );
    let counts = js(
        &b,
        "document.querySelector('[data-signing=annotations]').textContent",
    )
    .await;
    assert!(
        counts.as_str().unwrap().starts_with("3 by 3 analysts"),
        "{counts}"
    );
    click(&b, "dialog[open] button[value=cancel]").await;
    assert!(
        review(&mut grpc, KOREAN).await.sign_off.is_none(),
        "Cancel signs nothing"
    );
    click(&b, "#sign-off").await;
    click(&b, "dialog[open] button[value=sign]").await;
    wait_until(
        &b,
        "signed off",
        "document.querySelector('#figures .fig.state').dataset.state === 'signed-off'",
    )
    .await;
    let r = review(&mut grpc, KOREAN).await;
    assert_eq!(r.sign_off.unwrap().reviewer, "rosa");
    // The review's history: the adjudication and the sign-off, one click away.
    click(&b, "#review-history").await;
    wait_until(
        &b,
        "the review history",
        "(t => t.includes('adjudicated') && t.includes('signed off') && t.includes('spells it so'))(document.getElementById('dialog-body').textContent)",
    )
    .await;
    click(&b, "dialog[open] button[value=ok]").await;
    // A later change inside the region re-opens it: drawn as re-opened,
    // counted unresolved again, the sign-off withdrawn.
    create(&mut grpc, KOREAN, find_span(&text, "조태열"), Verdict::Verified).await;
    wait_until(
        &b,
        "the region re-opened",
        "document.querySelector('#text .region.unresolved.reopened') && document.querySelector('#figures .fig.contested').dataset.unresolved === '1' && document.querySelector('#figures .fig.state').dataset.state === 'needs-adjudication'",
    )
    .await;
}

/// The dashboard lists every article's review and follows a span resolved
/// by another client live; the state filter narrows it.
#[tokio::test]
async fn the_dashboard_follows_an_adjudication_live() {
    let (server, _seeds) = start().await;
    contest(&server).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), REVIEWER, "").await;
    click(&b, "#nav a[href='#dashboard']").await;
    let row = format!("#dash-rows tr[data-review='{}/review']", article(KOREAN));
    wait_until(
        &b,
        "the contested article needs adjudication",
        &format!("document.querySelector(\"{row}\")?.dataset.state === 'needs-adjudication' && document.querySelector(\"{row} .unresolved\").textContent.startsWith('1')"),
    )
    .await;
    let rows = js(&b, "document.querySelectorAll('#dash-rows tr').length").await;
    assert_eq!(rows, json!(6), "every article");
    b.execute(
        "const s = document.getElementById('dash-state'); s.value = '3'; s.dispatchEvent(new Event('change'))",
        vec![],
    )
    .await
    .unwrap();
    wait_until(
        &b,
        "the filter",
        "document.querySelectorAll('#dash-rows tr').length === 1",
    )
    .await;
    if let Ok(dir) = std::env::var("FACTCHECK_SCREENSHOTS") {
        b.execute("const s = document.getElementById('dash-state'); s.value = '0'; s.dispatchEvent(new Event('change'))", vec![]).await.unwrap();
        std::fs::write(format!("{dir}/dashboard.png"), b.screenshot().await.unwrap()).unwrap();
        b.execute("const s = document.getElementById('dash-state'); s.value = '3'; s.dispatchEvent(new Event('change'))", vec![]).await.unwrap();
    }
    let mut reviewer = server.client_with(Some(REVIEWER)).await;
    let r = review(&mut reviewer, KOREAN).await;
    reviewer
        .create_adjudication(pb::CreateAdjudicationRequest {
            parent: article(KOREAN),
            adjudication: Some(pb::Adjudication {
                span: r.contested_spans[0].span,
                verdict: Verdict::Verified as i32,
                rationale: "settled elsewhere".into(),
                ..Default::default()
            }),
            etag: r.etag,
            ..Default::default()
        })
        .await
        .unwrap();
    // Now READY: it leaves the NEEDS_ADJUDICATION filter, and shows READY
    // with no unresolved span in the full list.
    wait_until(
        &b,
        "it leaves the filter",
        "document.querySelectorAll('#dash-rows tr').length === 0",
    )
    .await;
    b.execute(
        "const s = document.getElementById('dash-state'); s.value = '0'; s.dispatchEvent(new Event('change'))",
        vec![],
    )
    .await
    .unwrap();
    wait_until(
        &b,
        "ready, nothing unresolved",
        &format!("document.querySelector(\"{row}\")?.dataset.state === 'ready' && document.querySelector(\"{row} .unresolved\").textContent.startsWith('0')"),
    )
    .await;
}

/// Filters and search narrow the side list and the highlights; a deep link
/// opens the article at an annotation, with its card.
#[tokio::test]
async fn filters_search_and_deep_links() {
    let (server, _seeds) = start().await;
    let text = seed_text(KOREAN);
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let with_note = |span: pb::Span, verdict: Verdict, note: &str| pb::CreateAnnotationRequest {
        parent: article(KOREAN),
        annotation: Some(pb::Annotation {
            note: note.into(),
            ..new_annotation(span, verdict)
        }),
        ..Default::default()
    };
    let first = alice
        .create_annotation(with_note(
            find_span(&text, "조태열"),
            Verdict::Verified,
            "the ministry's spelling",
        ))
        .await
        .unwrap()
        .into_inner();
    bob.create_annotation(with_note(
        find_span(&text, "Minister of Foreign Affairs"),
        Verdict::Unattributed,
        "no source given",
    ))
    .await
    .unwrap();
    let target = bob
        .create_annotation(with_note(
            find_span(&text, "South Korean diplomat"),
            Verdict::Disputed,
            "he is a former diplomat",
        ))
        .await
        .unwrap()
        .into_inner();
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    let counts = "[document.querySelectorAll('#annotation-list li').length, new Set([...document.querySelectorAll('#text mark')].flatMap(m => m.dataset.names.split(' '))).size]";
    wait_until(&b, "three annotations", &format!("{counts}.join() === '3,3'")).await;
    assert!(
        js(
            &b,
            "document.querySelector('#annotation-list li .snippet').textContent"
        )
        .await
        .as_str()
        .unwrap()
        .contains("ministry"),
        "the note's first lines are in the list"
    );
    let set = |id: &str, value: &str| {
        format!(
            "(e => {{ e.value = {value:?}; e.dispatchEvent(new Event('input', {{ bubbles: true }})); }})(document.getElementById('{id}'))"
        )
    };
    b.execute(&set("f-search", "MINISTRY"), vec![]).await.unwrap();
    wait_until(
        &b,
        "search narrows list and text",
        &format!("{counts}.join() === '1,1'"),
    )
    .await;
    b.execute(&set("f-search", ""), vec![]).await.unwrap();
    b.execute(&set("f-analyst", "bob"), vec![]).await.unwrap();
    wait_until(&b, "bob's two", &format!("{counts}.join() === '2,2'")).await;
    b.execute(&set("f-verdict", "2"), vec![]).await.unwrap();
    wait_until(&b, "bob's disputed one", &format!("{counts}.join() === '1,1'")).await;
    b.execute(&set("f-analyst", ""), vec![]).await.unwrap();
    b.execute(&set("f-verdict", "0"), vec![]).await.unwrap();
    click(&b, "#f-mine").await;
    wait_until(&b, "mine only", &format!("{counts}.join() === '1,1'")).await;
    assert_eq!(
        js(&b, "document.querySelector('#annotation-list li').dataset.name").await,
        json!(first.name)
    );
    // Every row's buttons name their annotation.
    let label = js(
        &b,
        "document.querySelector('#annotation-list li .edit').getAttribute('aria-label')",
    )
    .await;
    assert_eq!(label, json!("Edit annotation ‘조태열’ by alice"));

    // A deep link, in a fresh page.
    let link = js(
        &b,
        "document.querySelector('#annotation-list li .link').getAttribute('href')",
    )
    .await;
    assert_eq!(
        link.as_str().unwrap(),
        format!("#{}", first.name.replace('/', "%2F"))
    );
    let other = driver.browser().await;
    sign_in(&other, &server.url(), READER, "").await;
    other
        .goto(&format!("{}/#{}", server.url(), target.name.replace('/', "%2F")))
        .await
        .unwrap();
    wait_until(
        &other,
        "the annotation's card, its list item marked",
        &format!("!document.getElementById('card').hidden && document.getElementById('card').textContent.includes('former diplomat') && !document.getElementById('card').textContent.includes('no source given') && document.querySelector('#annotation-list li.target')?.dataset.name === {:?}", target.name),
    )
    .await;
}

/// Safe defaults in the popover: no verdict chosen (Save disabled until
/// one is, by click or the 1/2/3 keys); a note over the limit is refused
/// with a counter, never cut; a `javascript:` source is refused by the
/// server and said so; a duplicate of one's own annotation asks first.
#[tokio::test]
async fn no_default_verdict_a_note_counter_and_unsafe_sources_refused() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    select(&b, "조태열", 0).await;
    assert_eq!(
        js(
            &b,
            "document.querySelectorAll('#popover input[name=verdict]:checked').length"
        )
        .await,
        json!(0),
        "no verdict chosen"
    );
    let save_disabled = "document.getElementById('popover-save').disabled";
    assert_eq!(js(&b, save_disabled).await, json!(true));
    // A pasted note over the limit: kept whole, counted, refused.
    b.execute(
        "const n = document.getElementById('popover-note'); n.value = 'x'.repeat(10005); n.dispatchEvent(new Event('input', { bubbles: true }))",
        vec![],
    )
    .await
    .unwrap();
    b.find(Locator::Css("#popover input[name=verdict][value='1']"))
        .await
        .unwrap()
        .send_keys("2")
        .await
        .unwrap();
    assert_eq!(
        js(
            &b,
            "document.querySelector('#popover input[name=verdict]:checked').value"
        )
        .await,
        json!("2"),
        "the 2 key chose disputed"
    );
    assert_eq!(
        js(&b, "document.getElementById('popover-note').value.length").await,
        json!(10005)
    );
    assert!(
        js(&b, "document.getElementById('popover-counter').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("5 too many")
    );
    assert_eq!(js(&b, save_disabled).await, json!(true), "over the limit");
    b.execute(
        "const n = document.getElementById('popover-note'); n.value = 'short'; n.dispatchEvent(new Event('input', { bubbles: true }))",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(js(&b, save_disabled).await, json!(false));
    b.find(Locator::Id("popover-sources"))
        .await
        .unwrap()
        .send_keys("javascript:alert(1)")
        .await
        .unwrap();
    click(&b, "#popover-save").await;
    wait_until(
        &b,
        "the server's refusal shown",
        "document.getElementById('popover-error').textContent.includes('sources[0]')",
    )
    .await;
    let mut grpc = server.client().await;
    let list = grpc
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(KOREAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.annotations.is_empty());
    b.execute(
        "const s = document.getElementById('popover-sources'); s.value = 'Yonhap, 3 May 2024'; s.dispatchEvent(new Event('input', { bubbles: true }))",
        vec![],
    )
    .await
    .unwrap();
    click(&b, "#popover-save").await;
    wait_until(&b, "saved", "document.getElementById('popover').hidden").await;
    let a = only_annotation(&mut grpc, KOREAN).await;
    assert_eq!(a.sources, ["Yonhap, 3 May 2024"]);
    wait_until(
        &b,
        "the highlight",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    // A citation is text in the card, never a link.
    b.execute(
        "document.querySelector('#text mark').dispatchEvent(new MouseEvent('mouseover', { bubbles: true }))",
        vec![],
    )
    .await
    .unwrap();
    wait_until(
        &b,
        "the card",
        "document.getElementById('card').textContent.includes('Yonhap')",
    )
    .await;
    assert_eq!(
        js(&b, "document.querySelectorAll('#card a').length").await,
        json!(0)
    );

    // The same span and verdict again: asked first; Cancel saves nothing.
    select(&b, "조태열", 0).await;
    click(&b, "#popover input[name=verdict][value='2']").await;
    click(&b, "#popover-save").await;
    wait_until(
        &b,
        "asked about the duplicate",
        "document.querySelector('dialog#dialog[open]') && document.getElementById('dialog-title').textContent === 'You already have this annotation'",
    )
    .await;
    click(&b, "dialog[open] button[value=cancel]").await;
    only_annotation(&mut grpc, KOREAN).await;
}

/// Annotating without a mouse: Tab to the text, arrows to move, Shift+arrows
/// to select, Enter to annotate, the 2 key for the verdict, Tab to Save.
#[tokio::test]
async fn keyboard_only_annotation() {
    let (server, _seeds) = start().await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    // From the skip link's place onward: the text is a tab stop.
    let text = b.find(Locator::Id("text")).await.unwrap();
    let text_of = seed_text(KOREAN);
    let at = text_of[..text_of.find("조태열").unwrap()].chars().count();
    assert_eq!(at, 2843);
    let right = "\u{E014}"; // ArrowRight
    let shift = "\u{E008}";
    let enter = "\u{E007}";
    let tab = "\u{E004}";
    b.execute("document.getElementById('text').focus()", vec![])
        .await
        .unwrap();
    assert_eq!(js(&b, "document.activeElement.id").await, json!("text"));
    let mut keys = right.repeat(at);
    keys.push_str(&format!("{shift}{right}{right}{right}{shift}{enter}"));
    text.send_keys(&keys).await.unwrap();
    b.wait()
        .at_most(HANG)
        .for_element(Locator::Css("#popover:not([hidden])"))
        .await
        .unwrap();
    assert_eq!(
        js(&b, "document.getElementById('popover-quote').textContent").await,
        json!("조태열")
    );
    // Focus is on the verdicts: 2, then Tab past the note and sources to Save.
    let active = b.active_element().await.unwrap();
    active
        .send_keys(&format!("2{tab}{tab}{tab}{enter}"))
        .await
        .unwrap();
    wait_until(&b, "saved", "document.getElementById('popover').hidden").await;
    let mut grpc = server.client().await;
    let a = only_annotation(&mut grpc, KOREAN).await;
    assert_eq!(
        (
            a.span.unwrap().start,
            a.span.unwrap().end,
            a.quote.as_str(),
            a.verdict
        ),
        (2843, 2846, "조태열", Verdict::Disputed as i32)
    );
    assert_eq!(
        js(&b, "document.activeElement.id").await,
        json!("text"),
        "focus back on the text"
    );
    // The highlight keeps its words for screen readers; the verdict is a description.
    wait_until(
        &b,
        "the highlight",
        "document.querySelectorAll('#text mark').length === 1",
    )
    .await;
    assert_eq!(
        js(
            &b,
            "document.querySelector('#text mark').getAttribute('aria-label')"
        )
        .await,
        json!(null)
    );
    assert_eq!(
        js(&b, "document.getElementById(document.querySelector('#text mark').getAttribute('aria-describedby')).textContent").await,
        json!("disputed, 1 annotation")
    );
}

/// A right-to-left paragraph reads right to left: its first word is at the
/// right edge of the text.
#[tokio::test]
async fn right_to_left_paragraphs_read_right_to_left() {
    let seeds = seeds();
    std::fs::write(
        seeds.path().join("006_rtl.txt"),
        "A headline in English\nقال الوزير إن المحادثات ستستمر غدا في العاصمة\nAnd English again.\n",
    )
    .unwrap();
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), ALICE, "006_rtl").await;
    let edges = js(
        &b,
        r#"(() => {
            const root = document.getElementById('text');
            const box = root.getBoundingClientRect();
            const rect = (word) => {
                const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
                let node;
                while ((node = walker.nextNode()) && !node.data.includes(word));
                const at = node.data.indexOf(word);
                const r = document.createRange();
                r.setStart(node, at);
                r.setEnd(node, at + word.length);
                return r.getBoundingClientRect();
            };
            const arabic = rect('قال');
            const english = rect('A headline');
            return [Math.round(box.right - arabic.right), Math.round(english.left - box.left)];
        })()"#,
    )
    .await;
    let edges: Vec<i64> = serde_json::from_value(edges).unwrap();
    assert!(
        edges[0].abs() <= 2,
        "the Arabic line starts at the right: {edges:?}"
    );
    assert!(
        edges[1].abs() <= 2,
        "the English line starts at the left: {edges:?}"
    );
}

/// At 400 px: no horizontal scroll, the annotation list is one tap away
/// (not past the article), and the popover's Save is on screen.
#[tokio::test]
async fn the_phone_layout_fits() {
    let (server, _seeds) = start().await;
    contest(&server).await;
    let driver = Driver::start();
    let b = driver.browser_sized(400, 800).await;
    sign_in(&b, &server.url(), ALICE, KOREAN).await;
    assert_eq!(js(&b, "window.innerWidth").await, json!(400));
    assert_eq!(
        js(
            &b,
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        .await,
        json!(true),
        "no horizontal scroll"
    );
    let tab = "button[data-tab=list]";
    assert_eq!(
        js(
            &b,
            &format!("document.querySelector('{tab}').getBoundingClientRect().bottom <= window.innerHeight")
        )
        .await,
        json!(true),
        "the list's tab is on the first screen"
    );
    click(&b, tab).await;
    wait_until(&b, "the list shown", "document.querySelectorAll('#annotation-list li').length === 2 && document.querySelector('#annotation-list li').getBoundingClientRect().top < window.innerHeight").await;
    click(&b, "button[data-tab=text]").await;
    select(&b, "Minister of Foreign Affairs", 0).await;
    let fits = js(
        &b,
        "(() => { const s = document.getElementById('popover-save').getBoundingClientRect(); const p = document.getElementById('popover').getBoundingClientRect(); return s.top >= 0 && s.bottom <= window.innerHeight && p.left >= 0 && p.right <= window.innerWidth; })()",
    )
    .await;
    assert_eq!(fits, json!(true), "the popover and its Save are on screen");
    assert_eq!(
        js(
            &b,
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        .await,
        json!(true),
        "no horizontal scroll with the popover open"
    );
}

/// axe-core (the npm package, `web/node_modules/axe-core`) finds no serious
/// or critical violation on the article, the adjudication panel and the
/// dashboard.
#[tokio::test]
async fn axe_finds_no_serious_violations() {
    let axe_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules/axe-core/axe.min.js");
    let axe = std::fs::read_to_string(&axe_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `npm ci` in web/)", axe_path.display()));
    let (server, _seeds) = start().await;
    contest(&server).await;
    let driver = Driver::start();
    let b = driver.browser().await;
    sign_in(&b, &server.url(), REVIEWER, KOREAN).await;
    wait_until(&b, "the region", "document.querySelector('#text .region')").await;
    // The page's CSP allows only its own scripts: axe comes in through
    // WebDriver, as a test tool.
    b.execute(&format!("{axe}\n;window.__axe_loaded = typeof axe"), vec![])
        .await
        .unwrap();
    async fn audit(b: &Browser, what: &str) {
        let found = b
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations
                    .filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))), e => done(['axe failed: ' + e]));"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(found, json!([]), "{what}");
    }
    // The audit can fail: a nameless button is found.
    b.execute(
        "const p = document.createElement('div'); p.id = 'axe-probe'; p.append(document.createElement('button')); document.body.append(p)",
        vec![],
    )
    .await
    .unwrap();
    let probe = b
        .execute_async(
            "const done = arguments[arguments.length - 1]; axe.run('#axe-probe').then(r => done(r.violations.map(v => v.id)), e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(probe, json!(["button-name"]), "the probe");
    b.execute("document.getElementById('axe-probe').remove()", vec![])
        .await
        .unwrap();
    audit(&b, "the article").await;
    click(&b, "#text .region").await;
    wait_until(&b, "the panel", "document.getElementById('adjudication').open").await;
    audit(&b, "the adjudication panel").await;
    click(&b, "#adj-cancel").await;
    click(&b, "#nav a[href='#dashboard']").await;
    wait_until(
        &b,
        "the dashboard",
        "document.querySelectorAll('#dash-rows tr').length === 6",
    )
    .await;
    audit(&b, "the dashboard").await;
}

//! The web app in a real headless Chromium, over WebDriver (fantoccini and
//! `chromedriver`), against a real server: sign in, annotate by selecting
//! text (astral characters included), follow a colleague's changes live,
//! conflicts, roles, a server restart under an open page, and CORS.
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
        alice.execute("const m = document.querySelector('#text mark.contested'); m.scrollIntoView({block:'center'}); m.focus()", vec![]).await.unwrap();
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
    // Meanwhile, the same annotation changes elsewhere; the page may or may
    // not have heard of it yet: it was opened with the old etag.
    grpc.update_annotation(masked_update(
        pb::Annotation {
            name: a.name.clone(),
            note: "changed elsewhere".into(),
            ..Default::default()
        },
        &["note"],
    ))
    .await
    .unwrap();
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
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.note, "changed elsewhere", "nothing was overwritten");

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
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.sign_off.is_none());
}

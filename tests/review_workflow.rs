//! The review workflow (issue 13): adjudication of contested spans, the
//! two-person sign-off, its withdrawal by any later change, the review's
//! own history, and dashboards kept live by `WatchArticleReviews`.

use crate::common::*;
use pb::{ReviewState, Verdict};
use tonic::Code;

const HANG: std::time::Duration = std::time::Duration::from_secs(20);

const DESK: &str = "workflow-desk";
const TEXT: &str =
    "Minister 조태열 said exports rose 5% in May. Officials denied it 🎉. Markets fell – sharply.\n";

async fn new_article(server: &TestServer, id: &str) {
    server
        .client_with(Some(REVIEWER))
        .await
        .create_article(pb::CreateArticleRequest {
            article_id: id.into(),
            article: Some(pb::Article {
                text: TEXT.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

async fn review_of(client: &mut Client, id: &str) -> pb::ArticleReview {
    client
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(id)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn state(r: &pb::ArticleReview) -> ReviewState {
    ReviewState::try_from(r.state).unwrap()
}

async fn sign_off(client: &mut Client, id: &str, etag: &str) -> Result<pb::ArticleReview, tonic::Status> {
    client
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name: format!("{}/review", article(id)),
            etag: etag.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn adjudicate(
    client: &mut Client,
    id: &str,
    span: pb::Span,
    verdict: Verdict,
    rationale: &str,
    etag: &str,
) -> Result<pb::Adjudication, tonic::Status> {
    client
        .create_adjudication(pb::CreateAdjudicationRequest {
            parent: article(id),
            adjudication: Some(pb::Adjudication {
                span: Some(span),
                verdict: verdict as i32,
                rationale: rationale.into(),
                ..Default::default()
            }),
            etag: etag.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// NOT_STARTED → NEEDS_ADJUDICATION → (adjudicated) READY → SIGNED_OFF →
/// (an edit inside the settled span) NEEDS_ADJUDICATION again, with the
/// sign-off withdrawn and recorded; every step reaches a dashboard's
/// review stream and the annotation watch, and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_takes_an_article_from_not_started_to_signed_off() {
    let server = TestServer::start().await;
    new_article(&server, DESK).await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let mut dashboard = alice
        .watch_article_reviews(pb::WatchArticleReviewsRequest {
            parent: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = dashboard.message().await.unwrap().unwrap();
    assert!(first.initial && !first.more);
    assert_eq!(first.reviews.len(), 1);
    assert_eq!(state(&first.reviews[0]), ReviewState::NotStarted);
    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    let fell = find_span(TEXT, "Markets fell – sharply");
    let claim = find_span(TEXT, "exports rose 5% in May");
    let overruled = create(&mut alice, DESK, fell, Verdict::Verified).await;
    let accepted = create(&mut bob, DESK, fell, Verdict::Disputed).await;
    create(&mut alice, DESK, claim, Verdict::Verified).await;
    create(&mut bob, DESK, claim, Verdict::Verified).await;
    let r = review_of(&mut alice, DESK).await;
    assert_eq!(state(&r), ReviewState::NeedsAdjudication);
    assert_eq!(r.unresolved_contested_span_count, 1);
    assert!(r.contested_spans[0].adjudication.is_none());
    let s = sign_off(&mut rosa, DESK, &r.etag).await.unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::FailedPrecondition, "CONTESTED_SPANS_UNRESOLVED".into())
    );

    // Only reviewers adjudicate; the span must be a contested one; the
    // rationale is required; a stale etag is refused.
    let s = adjudicate(&mut alice, DESK, fell, Verdict::Disputed, "x", "")
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = adjudicate(&mut rosa, DESK, claim, Verdict::Disputed, "x", "")
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::FailedPrecondition, "NOT_CONTESTED".into())
    );
    assert!(s.message().contains("adjudication.span"), "{}", s.message());
    let s = adjudicate(&mut rosa, DESK, fell, Verdict::Disputed, "  ", "")
        .await
        .unwrap_err();
    assert_eq!(violated_field(&s), "adjudication.rationale");
    let s = adjudicate(&mut rosa, DESK, fell, Verdict::Disputed, "x", "\"1\"")
        .await
        .unwrap_err();
    assert_eq!((s.code(), reason(&s)), (Code::Aborted, "ETAG_MISMATCH".into()));
    let before = review_of(&mut alice, DESK).await;
    assert_eq!(before.etag, r.etag, "refusals change nothing");

    let adj = adjudicate(
        &mut rosa,
        DESK,
        fell,
        Verdict::Disputed,
        "The index closed up 0.4% that day (exchange data).",
        &r.etag,
    )
    .await
    .unwrap();
    assert!(adj.name.starts_with(&format!("{}/adjudications/", article(DESK))));
    assert_eq!(adj.quote, "Markets fell – sharply");
    assert_eq!(adj.reviewer, "rosa");
    assert_eq!(adj.accepted_annotations, std::slice::from_ref(&accepted.name));
    assert_eq!(adj.overruled_annotations, std::slice::from_ref(&overruled.name));
    assert_eq!((adj.accepted_count, adj.overruled_count), (1, 1));
    let r = review_of(&mut alice, DESK).await;
    assert_eq!(state(&r), ReviewState::Ready);
    assert_eq!(r.unresolved_contested_span_count, 0);
    assert_eq!(r.contested_span_count, 1, "still contested, but settled");
    assert_eq!(r.contested_spans[0].adjudication.as_ref().unwrap().name, adj.name);

    // Sign-off: the etag is required and must be current.
    let s = sign_off(&mut rosa, DESK, "").await.unwrap_err();
    assert_eq!(violated_field(&s), "etag");
    let s = sign_off(&mut rosa, DESK, &before.etag).await.unwrap_err();
    assert_eq!((s.code(), reason(&s)), (Code::Aborted, "ETAG_MISMATCH".into()));
    let s = sign_off(&mut alice, DESK, &r.etag).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "analysts do not sign off");
    // Without its quotes, as a shell passes it.
    let signed = sign_off(&mut rosa, DESK, r.etag.trim_matches('"')).await.unwrap();
    assert_eq!(state(&signed), ReviewState::SignedOff);
    let so = signed.sign_off.clone().unwrap();
    assert_eq!(so.reviewer, "rosa");
    assert_eq!(so.article_revision, format!("{}@1", article(DESK)));
    let s = sign_off(&mut rosa, DESK, &signed.etag).await.unwrap_err();
    assert_eq!(reason(&s), "ALREADY_SIGNED_OFF");

    use pb::review_event::Type;
    // The dashboard saw every state, in order.
    let mut seen = vec![ReviewState::NotStarted];
    let wanted = [
        ReviewState::NeedsAdjudication,
        ReviewState::Ready,
        ReviewState::SignedOff,
    ];
    tokio::time::timeout(HANG, async {
        while seen.last() != Some(&ReviewState::SignedOff) {
            let m = match dashboard.message().await {
                Ok(Some(m)) => m,
                _ => break,
            };
            for r in m.reviews {
                if seen.last() != Some(&state(&r)) {
                    seen.push(state(&r));
                }
            }
        }
    })
    .await
    .unwrap();
    let order: Vec<ReviewState> = seen.iter().copied().filter(|s| wanted.contains(s)).collect();
    assert_eq!(order, wanted, "{seen:?}");
    // And the annotation watch carried the adjudication and the sign-off.
    let mut review_kinds = Vec::new();
    tokio::time::timeout(HANG, async {
        while review_kinds.len() < 2 {
            let Ok(Some(m)) = watch.message().await else { break };
            review_kinds.extend(m.review_events.iter().map(|e| Type::try_from(e.r#type).unwrap()));
        }
    })
    .await
    .unwrap();
    assert_eq!(review_kinds, [Type::Adjudicated, Type::SignedOff]);
    // The changelog has them too: a watch replaying from revision 1.
    let mut replay = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    tokio::time::timeout(HANG, async {
        while replayed.len() < 2 {
            let Ok(Some(m)) = replay.message().await else {
                break;
            };
            replayed.extend(m.review_events);
        }
    })
    .await
    .unwrap();
    assert_eq!(replayed[0].adjudication.as_ref().unwrap().name, adj.name);
    assert_eq!(replayed[1].sign_off.as_ref().unwrap().reviewer, "rosa");

    // The sign-off survives a restart, with its etag.
    let server = server.restart().await;
    let mut alice = server.client().await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let r = review_of(&mut alice, DESK).await;
    assert_eq!(
        (state(&r), r.etag.clone()),
        (ReviewState::SignedOff, signed.etag.clone())
    );

    // Alice edits her overruled annotation's note: the settled span
    // re-opens and the sign-off is withdrawn, in the same revision.
    let mut edited = overruled.clone();
    edited.note = "Checked again: the index did fall intraday.".into();
    let updated = alice
        .update_annotation(masked_update(edited, &["note"]))
        .await
        .unwrap()
        .into_inner();
    let r = review_of(&mut alice, DESK).await;
    assert_eq!(state(&r), ReviewState::NeedsAdjudication);
    assert!(r.sign_off.is_none());
    assert_eq!(r.unresolved_contested_span_count, 1);
    assert!(r.contested_spans[0].adjudication.is_none());

    let events = rosa
        .list_review_events(pb::ListReviewEventsRequest {
            parent: format!("{}/review", article(DESK)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<Type> = events.iter().map(|e| Type::try_from(e.r#type).unwrap()).collect();
    assert_eq!(
        kinds,
        [Type::Adjudicated, Type::SignedOff, Type::SignOffWithdrawn]
    );
    assert_eq!(events[0].adjudication.as_ref().unwrap().name, adj.name);
    let withdrawal = &events[2];
    assert_eq!(withdrawal.actor, "alice");
    assert!(
        withdrawal.reason.contains("annotation updated"),
        "{}",
        withdrawal.reason
    );
    assert!(withdrawal.reason.contains(&updated.name), "{}", withdrawal.reason);
    assert_eq!(withdrawal.sign_off.as_ref().unwrap().reviewer, "rosa");
    assert_eq!(withdrawal.revision.to_string(), updated.etag.trim_matches('"'));

    // Pages of one cover the same three.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = rosa
            .list_review_events(pb::ListReviewEventsRequest {
                parent: format!("{}/review", article(DESK)),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, events);
}

/// A lone analyst-reviewer cannot sign off their own work, even when the
/// desk asks for one analyst; once someone else checked it, they can. Each
/// refusal has its own reason, and none changes anything.
/// The two-person rule: nobody signs off an article they annotated (the
/// reviewer who annotated is refused SIGNER_IS_PARTY even once another
/// analyst agreed; one who did not signs it off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_analyst_cannot_sign_off_their_own_work() {
    let server = TestServer::start().await;
    new_article(&server, DESK).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let r = review_of(&mut rosa, DESK).await;
    let s = sign_off(&mut rosa, DESK, &r.etag).await.unwrap_err();
    assert_eq!(reason(&s), "NOT_STARTED");

    create(&mut rosa, DESK, find_span(TEXT, "조태열"), Verdict::Verified).await;
    let r = review_of(&mut rosa, DESK).await;
    let s = sign_off(&mut rosa, DESK, &r.etag).await.unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::PermissionDenied, "SIGNER_IS_PARTY".into())
    );
    assert!(s.message().contains("rosa"), "{}", s.message());
    assert_eq!(review_of(&mut rosa, DESK).await.etag, r.etag);

    // Alice alone on another article: not the reviewer's own, but not
    // enough analysts either.
    new_article(&server, "other-desk").await;
    create(
        &mut alice,
        "other-desk",
        find_span(TEXT, "🎉"),
        Verdict::Unattributed,
    )
    .await;
    let r = review_of(&mut rosa, "other-desk").await;
    let s = sign_off(&mut rosa, "other-desk", &r.etag).await.unwrap_err();
    assert_eq!(reason(&s), "NOT_ENOUGH_ANALYSTS");

    // Alice checks rosa's article too: it is ready, but rosa annotated
    // it, so someone else signs it off.
    create(&mut alice, DESK, find_span(TEXT, "조태열"), Verdict::Verified).await;
    let r = review_of(&mut rosa, DESK).await;
    assert_eq!(state(&r), ReviewState::Ready);
    let s = sign_off(&mut rosa, DESK, &r.etag).await.unwrap_err();
    assert_eq!(reason(&s), "SIGNER_IS_PARTY");
    let mut admin = server.client_with(Some(ADMIN)).await;
    let signed = sign_off(&mut admin, DESK, &r.etag).await.unwrap();
    assert_eq!(state(&signed), ReviewState::SignedOff);

    // A correction of the article withdraws it, and leaves nothing to
    // re-review here (the quote did not change).
    let mut editor = server.client_with(Some(REVIEWER)).await;
    editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(DESK),
                text: TEXT.replace("Markets", "Stock markets"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = review_of(&mut rosa, DESK).await;
    assert_eq!(state(&r), ReviewState::Ready);
    assert!(r.sign_off.is_none());
    let events = rosa
        .list_review_events(pb::ListReviewEventsRequest {
            parent: format!("{}/review", article(DESK)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 2);
    assert!(
        events[1].reason.starts_with("article corrected"),
        "{}",
        events[1].reason
    );

    // A correction that edits a quote: NEEDS_RE_REVIEW.
    editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(DESK),
                text: TEXT.replace("조태열", "조태영"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = review_of(&mut rosa, DESK).await;
    let s = sign_off(&mut rosa, DESK, &r.etag).await.unwrap_err();
    assert_eq!(reason(&s), "NEEDS_RE_REVIEW");
}

/// Two reviewers sign off the same state at once while an analyst
/// annotates: at most one sign-off lands, and if the annotation came after
/// it, the withdrawal is recorded; the history chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sign_offs_and_writes_keep_the_review_consistent() {
    let server = TestServer::start().await;
    new_article(&server, DESK).await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    create(&mut alice, DESK, find_span(TEXT, "조태열"), Verdict::Verified).await;
    create(&mut bob, DESK, find_span(TEXT, "조태열"), Verdict::Verified).await;
    for round in 0..10 {
        let r = review_of(&mut alice, DESK).await;
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let mut c = server.client_with(Some(REVIEWER)).await;
            let etag = r.etag.clone();
            tasks.push(tokio::spawn(async move { sign_off(&mut c, DESK, &etag).await }));
        }
        let mut writer = server.client().await;
        let span = find_span(TEXT, "Officials denied it");
        let write = tokio::spawn(async move { create(&mut writer, DESK, span, Verdict::Unattributed).await });
        let mut landed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => landed += 1,
                Err(s) => assert!(
                    matches!(
                        reason(&s).as_str(),
                        "ETAG_MISMATCH" | "ALREADY_SIGNED_OFF" | "NOT_ENOUGH_ANALYSTS"
                    ),
                    "round {round}: {s:?}"
                ),
            }
        }
        assert!(landed <= 1, "round {round}: two sign-offs of one state");
        let created = write.await.unwrap();
        let r = review_of(&mut alice, DESK).await;
        assert!(
            r.sign_off.is_none(),
            "round {round}: the write came last, so no sign-off stands"
        );
        let events = alice
            .list_review_events(pb::ListReviewEventsRequest {
                parent: format!("{}/review", article(DESK)),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let signed = events
            .iter()
            .filter(|e| e.sign_off.is_some() && e.reason.is_empty())
            .count();
        let withdrawn = events.iter().filter(|e| !e.reason.is_empty()).count();
        assert_eq!(
            signed, withdrawn,
            "round {round}: every sign-off was withdrawn by a later write"
        );
        // Clean up for the next round: bob's second annotation goes.
        alice
            .delete_annotation(pb::DeleteAnnotationRequest {
                reason: String::new(),
                name: created.name,
                etag: String::new(),
            })
            .await
            .unwrap();
    }
    let dir = server.stop().await;
    let (code, out, err) = factcheck_cli(&["audit", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The CLI as a desk uses it: `resolve`, `signoff`, `review-log`, and
/// `export --format claimreview`, which carries what Google's Fact Check
/// markup requires and leaves unsigned articles out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_resolves_signs_off_and_publishes_claim_reviews() {
    let server = TestServer::start().await;
    new_article(&server, DESK).await;
    new_article(&server, "unsigned-desk").await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let fell = find_span(TEXT, "Markets fell – sharply");
    create(&mut alice, DESK, fell, Verdict::Verified).await;
    create(&mut bob, DESK, fell, Verdict::Disputed).await;
    for c in [&mut alice, &mut bob] {
        create(
            c,
            DESK,
            find_span(TEXT, "exports rose 5% in May"),
            Verdict::Verified,
        )
        .await;
        create(c, "unsigned-desk", find_span(TEXT, "조태열"), Verdict::Verified).await;
    }
    let url = server.url();
    let cli = move |token: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
            .args(args)
            .env("FACTCHECK_SERVER", &url)
            .env("FACTCHECK_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run = |token: &'static str, args: Vec<String>| {
        let cli = cli.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(token, &args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let span = format!("{}:{}", fell.start, fell.end);

    let (code, out, err) = run(REVIEWER, args(&["signoff", DESK])).await.unwrap();
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("CONTESTED_SPANS_UNRESOLVED") || err.contains("not adjudicated"),
        "{err}"
    );
    let (code, out, err) = run(
        ALICE,
        args(&[
            "resolve",
            DESK,
            &span,
            "--verdict",
            "disputed",
            "--rationale",
            "x",
        ]),
    )
    .await
    .unwrap();
    assert_ne!(code, 0, "an analyst may not adjudicate: {out}");
    assert!(err.contains("reviewer"), "{err}");
    let (code, out, err) = run(
        REVIEWER,
        args(&[
            "resolve",
            DESK,
            &span,
            "--verdict",
            "disputed",
            "--rationale",
            "Exchange data: the index rose.",
        ]),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepts 1 annotation(s), overrules 1"), "{out}");
    let (code, out, err) = run(REVIEWER, args(&["review", DESK])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("→ disputed by rosa"), "{out}");
    // In JSON, the whole message: the contested span's annotationCount (once
    // dropped by a hand-written mapping) and its adjudication.
    let (_, out, _) = run(REVIEWER, args(&["review", DESK, "--output", "json"]))
        .await
        .unwrap();
    let review: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let contested = &review["contestedSpans"][0];
    assert_eq!(contested["annotationCount"], 2, "{review}");
    assert_eq!(contested["adjudication"]["verdict"], "VERDICT_DISPUTED");
    assert_eq!(review["state"], "REVIEW_STATE_READY");
    let (code, out, err) = run(REVIEWER, args(&["signoff", DESK])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed off by rosa"), "{out}");
    assert!(err.contains("at etag"), "it says what it signs off: {err}");
    let (code, out, err) = run(ALICE, args(&["reviews", "--state", "signed-off"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(DESK) && !out.contains("unsigned-desk"), "{out}");
    let (code, out, err) = run(ALICE, args(&["review-log", DESK, "--output", "json"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["ADJUDICATED", "SIGNED_OFF"]);

    let (code, out, err) = run(
        ALICE,
        args(&[
            "export",
            "--format",
            "claimreview",
            "--publisher",
            "Desk Checks",
            "--publisher-url",
            "https://checks.example",
            "--public-url",
            "https://checks.example/factcheck",
        ]),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let items: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // The adjudicated span and the uncontested claim (two analysts, one
    // span): two claims; nothing of the unsigned article.
    assert_eq!(items.len(), 2, "{out}");
    for item in &items {
        assert_eq!(item["@type"], "ClaimReview");
        for required in ["claimReviewed", "url", "datePublished"] {
            assert!(
                item[required].as_str().is_some_and(|s| !s.is_empty()),
                "{required}: {item}"
            );
        }
        assert!(item["reviewRating"]["alternateName"].as_str().is_some(), "{item}");
        assert_eq!(item["author"]["name"], "Desk Checks");
        assert_eq!(item["itemReviewed"]["@type"], "Claim");
        assert!(
            item["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checks.example/factcheck/articles/workflow-desk#claim-")
        );
        assert!(!item.to_string().contains("unsigned-desk"));
    }
    let fell_item = items
        .iter()
        .find(|i| i["claimReviewed"] == "Markets fell – sharply")
        .unwrap();
    assert_eq!(fell_item["reviewRating"]["alternateName"], "Disputed");
    assert_eq!(fell_item["reviewRating"]["ratingValue"], 1);
    assert_eq!(
        fell_item["reviewBody"], "Exchange data: the index rose.",
        "the rationale"
    );
    let rose_item = items
        .iter()
        .find(|i| i["claimReviewed"] == "exports rose 5% in May")
        .unwrap();
    assert_eq!(
        rose_item["reviewBody"], "checked against the wire report",
        "the notes, each once"
    );
    assert_eq!(rose_item["reviewRating"]["alternateName"], "Verified");
    // The README's example is this item, as the binary writes it (but the
    // date it was signed off).
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = readme
        .split("<!-- the ClaimReview example: tests/review_workflow.rs checks it -->")
        .nth(1)
        .and_then(|rest| rest.split("```json").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README's ClaimReview example");
    let mut example: serde_json::Value = serde_json::from_str(example).expect("the README's example is JSON");
    example["datePublished"] = fell_item["datePublished"].clone();
    assert_eq!(
        &example,
        fell_item,
        "the README's example differs from the binary's output:\n{}",
        serde_json::to_string_pretty(fell_item).unwrap()
    );
    let (code, _, err) = run(
        ALICE,
        args(&[
            "export",
            "unsigned-desk",
            "--format",
            "claimreview",
            "--publisher",
            "D",
            "--publisher-url",
            "https://d.example",
        ]),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("not signed off"), "{err}");
    let (code, _, err) = run(ALICE, args(&["export", "--format", "claimreview"]))
        .await
        .unwrap();
    assert_eq!(code, 2, "the publisher is required: {err}");
}

/// An annotation's content is its analyst's: a reviewer (or an admin) who
/// updates an analyst's verdict is refused NOT_OWNER and the review and its
/// agreement stay what the analysts said; a reviewer who annotated a
/// contested span cannot adjudicate it (ADJUDICATOR_IS_PARTY), one who did
/// not can; a reviewer cannot delete another's annotation, and an admin
/// can only with a reason, which its history records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_rewrites_an_analysts_annotation_or_settles_their_own_dispute() {
    let server = TestServer::start().await;
    new_article(&server, DESK).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let mut admin = server.client_with(Some(ADMIN)).await;
    let span = find_span(TEXT, "exports rose 5% in May");
    create(&mut rosa, DESK, span, Verdict::Verified).await;
    let alices = create(&mut alice, DESK, span, Verdict::Disputed).await;
    let before = review_of(&mut rosa, DESK).await;
    assert_eq!(state(&before), ReviewState::NeedsAdjudication);

    // Rewriting alice's verdict: refused for the reviewer and the admin.
    for client in [&mut rosa, &mut admin] {
        let e = client
            .update_annotation(masked_update(
                pb::Annotation {
                    name: alices.name.clone(),
                    verdict: Verdict::Verified as i32,
                    ..Default::default()
                },
                &["verdict"],
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), reason(&e)),
            (Code::PermissionDenied, "NOT_OWNER".into()),
            "{e:?}"
        );
    }
    let after = review_of(&mut rosa, DESK).await;
    assert_eq!(after.etag, before.etag, "the review changed");
    assert_eq!(state(&after), ReviewState::NeedsAdjudication);

    // Rosa is a party to the dispute: she cannot settle it; the admin can.
    let e = adjudicate(
        &mut rosa,
        DESK,
        span,
        Verdict::Verified,
        "mine is right",
        &after.etag,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::PermissionDenied, "ADJUDICATOR_IS_PARTY".into()),
        "{e:?}"
    );
    assert_eq!(review_of(&mut rosa, DESK).await.etag, after.etag);
    adjudicate(
        &mut admin,
        DESK,
        span,
        Verdict::Disputed,
        "the May figure was 3%",
        &after.etag,
    )
    .await
    .unwrap();

    // Deleting alice's annotation: not for a reviewer; an admin must say why.
    let delete = |reason: &str| pb::DeleteAnnotationRequest {
        name: alices.name.clone(),
        reason: reason.into(),
        ..Default::default()
    };
    let e = rosa.delete_annotation(delete("spam")).await.unwrap_err();
    assert_eq!(reason(&e), "NOT_OWNER");
    let e = admin.delete_annotation(delete("  ")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::InvalidArgument, "REASON_REQUIRED".into())
    );
    assert_eq!(violated_field(&e), "reason");
    admin
        .delete_annotation(delete("abusive note – “removed”"))
        .await
        .unwrap();
    let history = admin
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: alices.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    let last = history.last().unwrap();
    assert_eq!(last.r#type, pb::annotation_event::Type::Deleted as i32);
    assert_eq!(last.moderation_reason, "abusive note – “removed”");
    assert_eq!(last.actor, "ada");
}

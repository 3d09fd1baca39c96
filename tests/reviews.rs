//! Review status that means something: the state computed from the
//! annotations, agreement between analysts, and every article's review in
//! one call (API and CLI).

use crate::common::*;
use pb::{ReviewState, Verdict};
use tonic::Code;

const DESK: &str = "review-desk";
const TEXT: &str = "Minister 조태열 said exports rose 5% in May. Officials denied it 🎉. Markets fell.\n";

async fn review(client: &mut Client) -> pb::ArticleReview {
    client
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(DESK)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn state(r: &pb::ArticleReview) -> ReviewState {
    ReviewState::try_from(r.state).unwrap()
}

/// NOT_STARTED → IN_PROGRESS (one analyst) → READY (a second who agrees)
/// → NEEDS_ADJUDICATION (a disagreement) → IN_PROGRESS (a correction leaves
/// one to re-review); alpha follows.
#[tokio::test]
async fn the_state_follows_the_annotations() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    editor
        .create_article(pb::CreateArticleRequest {
            article_id: DESK.into(),
            article: Some(pb::Article {
                text: TEXT.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let r = review(&mut alice).await;
    assert_eq!(
        (state(&r), r.min_analysts, r.krippendorff_alpha),
        (ReviewState::NotStarted, 2, None)
    );

    create(
        &mut alice,
        DESK,
        find_span(TEXT, "exports rose 5% in May"),
        Verdict::Verified,
    )
    .await;
    create(
        &mut alice,
        DESK,
        find_span(TEXT, "Officials denied it"),
        Verdict::Unattributed,
    )
    .await;
    let r = review(&mut alice).await;
    assert_eq!(state(&r), ReviewState::InProgress, "one analyst is not enough");
    assert_eq!(r.krippendorff_alpha, None, "alpha needs two analysts");

    create(
        &mut bob,
        DESK,
        find_span(TEXT, "exports rose 5% in May"),
        Verdict::Verified,
    )
    .await;
    create(
        &mut bob,
        DESK,
        find_span(TEXT, "Officials denied it"),
        Verdict::Unattributed,
    )
    .await;
    let r = review(&mut alice).await;
    assert_eq!(state(&r), ReviewState::Ready);
    assert_eq!(
        r.krippendorff_alpha,
        Some(1.0),
        "the same spans, the same verdicts"
    );
    assert_eq!(r.pairwise_agreements.len(), 1);
    assert_eq!(r.pairwise_agreements[0].krippendorff_alpha, Some(1.0));

    let disputed = create(&mut bob, DESK, find_span(TEXT, "Markets fell"), Verdict::Disputed).await;
    create(
        &mut alice,
        DESK,
        find_span(TEXT, "Markets fell"),
        Verdict::Verified,
    )
    .await;
    let r = review(&mut alice).await;
    assert_eq!(state(&r), ReviewState::NeedsAdjudication);
    let alpha = r.krippendorff_alpha.unwrap();
    assert!(alpha < 1.0 && alpha > 0.0, "{alpha}");

    // Bob withdraws his disputed verdict: ready again.
    bob.delete_annotation(pb::DeleteAnnotationRequest {
        reason: String::new(),
        name: disputed.name,
        etag: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(state(&review(&mut alice).await), ReviewState::Ready);

    // A correction edits an annotated figure: one to re-review.
    editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(DESK),
                text: TEXT.replace("5%", "6%"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = review(&mut alice).await;
    assert_eq!((state(&r), r.needs_review_count), (ReviewState::InProgress, 2));
}

/// The dashboard: every article's review in one call, filtered by state,
/// paged; the CLI prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_review_in_one_call_filtered_by_state() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let a1 = "001_728dec46794c22c1";
    let text = seed_text(a1);
    create(&mut alice, a1, find_span(&text, "조태열"), Verdict::Verified).await;
    create(&mut bob, a1, find_span(&text, "조태열"), Verdict::Verified).await;
    let list = |state: ReviewState, size: i32, token: String| {
        let mut c = alice.clone();
        async move {
            c.list_article_reviews(pb::ListArticleReviewsRequest {
                page_size: size,
                page_token: token,
                state: state as i32,
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let all = list(ReviewState::Unspecified, 0, String::new()).await.unwrap();
    assert_eq!(all.reviews.len(), 5);
    let ready = list(ReviewState::Ready, 0, String::new()).await.unwrap();
    let names: Vec<&str> = ready.reviews.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [format!("{}/review", article(a1))]);
    let untouched = list(ReviewState::NotStarted, 0, String::new()).await.unwrap();
    assert_eq!(untouched.reviews.len(), 4);

    // Pages of two, by article id, cover the four without repeats.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ReviewState::NotStarted, 2, token).await.unwrap();
        seen.extend(page.reviews.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = untouched.reviews.iter().map(|r| r.name.clone()).collect();
    assert_eq!(seen, expected);
    // A token of one filter does not serve another.
    let first = list(ReviewState::NotStarted, 2, String::new()).await.unwrap();
    let s = list(ReviewState::Ready, 2, first.next_page_token)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let bad = alice
        .list_article_reviews(pb::ListArticleReviewsRequest {
            state: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_field(&bad), "state");

    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_factcheck"))
            .args(["reviews", "--state", "ready"])
            .env("FACTCHECK_SERVER", url)
            .env("FACTCHECK_TOKEN", ALICE)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    // One span, one verdict, both analysts: no variation, so alpha is
    // undefined and shown as a dash.
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with(a1) && row.contains("ready") && row.ends_with('–'),
        "{text}"
    );
}

//! Reads as of a past revision (`read_revision`) and at least as new as a
//! revision (`min_revision`): GetArticleReview, ListAnnotations,
//! GetAnnotation and GetArticle answer exactly what they answered then.

use crate::common::*;
use pb::Verdict;
use tonic::Code;
use tonic_types::StatusExt;

const DESK: &str = "as-of-desk";
const A1: &str = "001_728dec46794c22c1";
const A2: &str = "002_946fad7c8fee627f";
const TEXT: &str = "Minister 조태열 said exports rose 5% in May – “a record”. Officials denied it 🎉. \
                    قال الوزير إن الصادرات ارتفعت. Markets fell.\n";

/// What the live API answered at one revision.
#[derive(Debug)]
struct Seen {
    revision: u64,
    review: pb::ArticleReview,
    article: pb::Article,
    /// `ListAnnotations` of the article, and of `articles/-`, paged small.
    annotations: Vec<pb::Annotation>,
    everywhere: Vec<pb::Annotation>,
}

fn review_name() -> String {
    format!("{}/review", article(DESK))
}

async fn get_review(client: &mut Client, read_revision: u64) -> Result<pb::ArticleReview, tonic::Status> {
    client
        .get_article_review(pb::GetArticleReviewRequest {
            name: review_name(),
            read_revision,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get_article(client: &mut Client, read_revision: u64) -> Result<pb::Article, tonic::Status> {
    client
        .get_article(pb::GetArticleRequest {
            name: article(DESK),
            read_revision,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every page of `ListAnnotations` under `parent`, and the revision each
/// page was read at.
async fn list_all(
    client: &mut Client,
    parent: &str,
    read_revision: u64,
    page_size: i32,
) -> Result<(Vec<pb::Annotation>, Vec<u64>), tonic::Status> {
    let (mut out, mut revisions, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = client
            .list_annotations(pb::ListAnnotationsRequest {
                parent: parent.into(),
                page_size,
                page_token: token,
                read_revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(page.annotations);
        revisions.push(page.revision);
        if page.next_page_token.is_empty() {
            return Ok((out, revisions));
        }
        token = page.next_page_token;
    }
}

async fn look(client: &mut Client) -> Seen {
    let review = get_review(client, 0).await.unwrap();
    let (annotations, r1) = list_all(client, &article(DESK), 0, 2).await.unwrap();
    let (everywhere, r2) = list_all(client, "articles/-", 0, 3).await.unwrap();
    let article = get_article(client, 0).await.unwrap();
    // Nothing else writes: every read saw the same revision.
    assert!(r1.iter().chain(&r2).all(|r| *r == review.revision));
    Seen {
        revision: review.revision,
        review,
        article,
        annotations,
        everywhere,
    }
}

async fn annotate(client: &mut Client, needle: &str, verdict: Verdict, note: &str) -> pb::Annotation {
    let mut a = new_annotation(find_span(TEXT, needle), verdict);
    a.note = note.into();
    client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(DESK),
            annotation: Some(a),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// An article through its whole review — annotated, contested,
/// adjudicated, signed off, edited, an annotation deleted, the text
/// corrected (every span moved), annotated again — then read as of each
/// step: every answer is the one the live API gave at that step. Today's
/// review is given whole; a past one has no etag (it cannot be signed off)
/// and no last update time (a deletion's time is not kept).
#[tokio::test]
async fn every_read_as_of_a_past_revision_is_what_was_answered_then() {
    let server = TestServer::start().await;
    let mut alice = server.client_with(Some(ALICE)).await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut rosa = server.client_with(Some(REVIEWER)).await;
    // A first write elsewhere: revision 1 is before the article.
    create(&mut alice, A1, pb::Span { start: 0, end: 3 }, Verdict::Verified).await;
    let before_article = snapshot(&mut rosa).await.1;
    rosa.create_article(pb::CreateArticleRequest {
        article_id: DESK.into(),
        article: Some(pb::Article {
            text: TEXT.into(),
            source_url: "https://example.org/desk".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let mut seen = vec![look(&mut rosa).await];

    let mine = annotate(
        &mut alice,
        "exports rose 5%",
        Verdict::Verified,
        "ministry figures",
    )
    .await;
    seen.push(look(&mut rosa).await);
    let theirs = annotate(&mut bob, "rose 5% in May", Verdict::Disputed, "customs say 3%").await;
    annotate(&mut bob, "조태열", Verdict::Verified, "named in the release").await;
    seen.push(look(&mut rosa).await);

    let contested = seen.last().unwrap().review.contested_spans[0].span;
    rosa.create_adjudication(pb::CreateAdjudicationRequest {
        parent: article(DESK),
        adjudication: Some(pb::Adjudication {
            span: contested,
            verdict: Verdict::Disputed as i32,
            rationale: "customs data is final".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    seen.push(look(&mut rosa).await);
    let etag = seen.last().unwrap().review.etag.clone();
    let signed = rosa
        .sign_off_article_review(pb::SignOffArticleReviewRequest {
            name: review_name(),
            etag,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(look(&mut rosa).await);

    let mut edited = mine.clone();
    edited.note = "ministry figures, revised".into();
    alice
        .update_annotation(masked_update(edited, &["note"]))
        .await
        .unwrap();
    seen.push(look(&mut rosa).await);
    bob.delete_annotation(pb::DeleteAnnotationRequest {
        name: theirs.name.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    seen.push(look(&mut rosa).await);
    rosa.update_article(pb::UpdateArticleRequest {
        article: Some(pb::Article {
            name: article(DESK),
            text: format!("Correction appended. {TEXT}"),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    seen.push(look(&mut rosa).await);
    annotate(&mut alice, "Markets fell", Verdict::Unattributed, "no source").await;
    seen.push(look(&mut rosa).await);

    // The reviewer's question: the review as it stood when signed off.
    let at_sign_off = get_review(&mut rosa, signed.revision).await.unwrap();
    assert_eq!(at_sign_off.state, pb::ReviewState::SignedOff as i32);
    assert_eq!(at_sign_off.sign_off, signed.sign_off);
    assert_eq!(at_sign_off.contested_spans, signed.contested_spans);

    let last = seen.len() - 1;
    for (i, then) in seen.iter().enumerate() {
        let at = then.revision;
        let mut expected = then.review.clone();
        if i != last {
            expected.etag.clear();
            expected.last_update_time = None;
        }
        assert_eq!(
            get_review(&mut rosa, at).await.unwrap(),
            expected,
            "review as of {at}"
        );
        assert_eq!(
            get_article(&mut rosa, at).await.unwrap(),
            then.article,
            "article as of {at}"
        );
        let (annotations, revisions) = list_all(&mut rosa, &article(DESK), at, 2).await.unwrap();
        assert_eq!(annotations, then.annotations, "annotations as of {at}");
        assert!(revisions.iter().all(|r| *r == at));
        let (everywhere, _) = list_all(&mut rosa, "articles/-", at, 3).await.unwrap();
        assert_eq!(
            everywhere, then.everywhere,
            "every article's annotations as of {at}"
        );
        for a in &then.annotations {
            let got = rosa
                .get_annotation(pb::GetAnnotationRequest {
                    name: a.name.clone(),
                    read_revision: at,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(&got, a, "{} as of {at}", a.name);
        }
    }

    // Before the article existed, it is not there; nor is an annotation
    // before it was made, and a deleted one is there before its deletion.
    for status in [
        get_article(&mut rosa, before_article).await.unwrap_err(),
        get_review(&mut rosa, before_article).await.unwrap_err(),
        list_all(&mut rosa, &article(DESK), before_article, 10)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let get = |name: &str, read_revision| pb::GetAnnotationRequest {
        name: name.into(),
        read_revision,
        ..Default::default()
    };
    let status = rosa
        .get_annotation(get(&mine.name, seen[0].revision))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        rosa.get_annotation(get(&theirs.name, seen[5].revision))
            .await
            .is_ok()
    );
    assert_eq!(
        rosa.get_annotation(get(&theirs.name, seen[6].revision))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Pages of one revision are not pages of another.
    let first = rosa
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(DESK),
            page_size: 1,
            read_revision: seen[2].revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for read_revision in [0, seen[3].revision] {
        let status = rosa
            .list_annotations(pb::ListAnnotationsRequest {
                parent: article(DESK),
                page_size: 1,
                page_token: first.next_page_token.clone(),
                read_revision,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_field(&status), "page_token");
    }
}

/// The bounds: a revision not yet written, one older than the changelog
/// holds, and requests that contradict themselves.
#[tokio::test]
async fn a_read_revision_out_of_reach_is_out_of_range_with_the_oldest_readable() {
    let mut setup = Setup::default();
    setup.retention.revisions = 5;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut client = server.client().await;
    let first = create(&mut client, A1, pb::Span { start: 0, end: 4 }, Verdict::Verified).await;
    for i in 1..20 {
        create(
            &mut client,
            A1,
            pb::Span { start: i, end: i + 4 },
            Verdict::Disputed,
        )
        .await;
    }
    let (now, head) = snapshot(&mut client).await;
    assert_eq!(head, 20);
    // The state at 15 is today's with 16..=20 taken back: the changelog
    // holds those, so 15 is the oldest readable.
    let oldest = head - 5;
    let review = |read_revision, min_revision| pb::GetArticleReviewRequest {
        name: format!("{}/review", article(A1)),
        read_revision,
        min_revision,
        ..Default::default()
    };
    for at in [1, oldest - 1] {
        let status = client.get_article_review(review(at, 0)).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert_eq!(reason(&status), "READ_REVISION_COMPACTED");
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata.get("oldest_revision"), Some(&oldest.to_string()));
        let status = client
            .get_annotation(pb::GetAnnotationRequest {
                name: first.name.clone(),
                read_revision: at,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "READ_REVISION_COMPACTED");
    }
    let at_oldest = client
        .get_article_review(review(oldest, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_oldest.total_count, oldest as u32);
    assert_eq!(at_oldest.revision, oldest);
    let (at_head, _) = list_all(&mut client, &article(A1), head, 7).await.unwrap();
    assert_eq!(at_head, now);

    for (read, min) in [(head + 1, 0), (0, head + 1), (0, u64::MAX)] {
        let status = client.get_article_review(review(read, min)).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{read} {min}: {status:?}");
        assert_eq!(reason(&status), "REVISION_NOT_YET_WRITTEN");
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(
            info.metadata.get("oldest_revision"),
            None,
            "no past revision to point to"
        );
    }
    // What the server already holds is answered at once.
    let fresh = client
        .get_article_review(review(0, head))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.revision, head);

    let status = client.get_article_review(review(oldest, head)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_field(&status), "min_revision");
    let status = client
        .get_article(pb::GetArticleRequest {
            name: format!("{}@1", article(A1)),
            read_revision: head,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "READ_REVISION_WITH_ARTICLE_REVISION");
}

/// Reads as of one revision while two writers create, move and delete
/// annotations of the same article: the answer never changes. A read that
/// took today's records and the changelog in the other order would miss an
/// annotation a commit deleted between the two.
#[tokio::test]
async fn a_read_as_of_a_revision_stays_the_same_under_concurrent_writes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for i in 0..30 {
        create(
            &mut client,
            A2,
            pb::Span {
                start: i * 3,
                end: i * 3 + 2,
            },
            Verdict::Verified,
        )
        .await;
    }
    let (then, at) = snapshot(&mut client).await;
    let review_then = client
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(A2)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut writers = Vec::new();
    for token in [ALICE, BOB] {
        let mut c = server.client_with(Some(token)).await;
        writers.push(tokio::spawn(async move {
            for i in 0..15u32 {
                let a = create(&mut c, A2, pb::Span { start: i, end: i + 5 }, Verdict::Disputed).await;
                let mut moved = a.clone();
                moved.span = Some(pb::Span {
                    start: 200 + i,
                    end: 210 + i,
                });
                c.update_annotation(masked_update(moved, &["span"]))
                    .await
                    .unwrap();
            }
        }));
    }
    let mut admin = server.client_with(Some(ADMIN)).await;
    let deleter = {
        let then = then.clone();
        tokio::spawn(async move {
            for a in &then {
                admin
                    .delete_annotation(pb::DeleteAnnotationRequest {
                        name: a.name.clone(),
                        reason: "test moderation".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !(deleter.is_finished() && writers.iter().all(|w| w.is_finished())) || reads < 5 {
        let (got, _) = list_all(&mut client, &article(A2), at, 7).await.unwrap();
        assert_eq!(got, then, "read {reads} as of {at}");
        let review = client
            .get_article_review(pb::GetArticleReviewRequest {
                name: format!("{}/review", article(A2)),
                read_revision: at,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(review.total_count, review_then.total_count);
        assert_eq!(review.covered_code_points, review_then.covered_code_points);
        reads += 1;
    }
    deleter.await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(snapshot(&mut client).await.1 > at + 60);
}

/// Reads at the retention bound while writers move it on every commit:
/// each is answered, or refused `READ_REVISION_COMPACTED` with the oldest
/// readable, never an internal error. (A commit trims the changelog before
/// it publishes the new bound: a read that passed the old bound then finds
/// a gap, and must say the revision is out of reach, from the store's own
/// compaction mark.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_the_moving_retention_bound_are_answered_or_out_of_range() {
    let mut setup = Setup::default();
    setup.retention.revisions = 3;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut writers = Vec::new();
    for token in [ALICE, BOB] {
        let mut c = server.client_with(Some(token)).await;
        writers.push(tokio::spawn(async move {
            for i in 0..150u32 {
                create(&mut c, A1, pb::Span { start: i, end: i + 2 }, Verdict::Verified).await;
            }
        }));
    }
    let mut client = server.client().await;
    let (mut answered, mut refused) = (0u64, 0u64);
    while !writers.iter().all(|w| w.is_finished()) {
        let head = client
            .list_annotations(pb::ListAnnotationsRequest {
                parent: article(A2),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .revision;
        if head < 4 {
            continue;
        }
        // At the bound, and one and two revisions inside it.
        let at = head - 3 + (answered + refused) % 3;
        match client
            .list_annotations(pb::ListAnnotationsRequest {
                parent: article(A1),
                page_size: 1000,
                read_revision: at,
                ..Default::default()
            })
            .await
        {
            Ok(page) => {
                assert_eq!(page.get_ref().annotations.len() as u64, at);
                answered += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::OutOfRange, "as of {at}: {status:?}");
                assert_eq!(reason(&status), "READ_REVISION_COMPACTED");
                let info = status.get_error_details().error_info().cloned().unwrap();
                let oldest: u64 = info.metadata["oldest_revision"].parse().unwrap();
                assert!(oldest > at, "{oldest} {at}");
                refused += 1;
            }
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    // Still: inside the bound, once the writers stopped, is answered.
    let at = snapshot(&mut client).await.1 - 2;
    let page = client
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A1),
            page_size: 1000,
            read_revision: at,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{answered} answered, {refused} refused; then {e:?}"))
        .into_inner();
    assert_eq!(page.annotations.len() as u64, at);
}

//! The annotation service end to end: a real server on a real socket.

use crate::common::*;
use pb::Verdict;
use tonic::Code;

const A0: &str = "000_9260bb247249f31b";
const A1: &str = "001_728dec46794c22c1";
const A2: &str = "002_946fad7c8fee627f";

#[tokio::test]
async fn lists_all_seed_articles_with_code_point_lengths() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_articles(pb::ListArticlesRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.articles.len() <= 2);
        for a in &page.articles {
            let text = seed_text(a.name.trim_start_matches("articles/"));
            assert_eq!(a.length as usize, text.chars().count(), "{}", a.name);
            assert!(a.text.is_empty(), "BASIC view carries no text");
            assert_eq!(a.title, text.lines().next().unwrap().trim());
            names.push(a.name.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| article(e.unwrap().path().file_stem().unwrap().to_str().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(names.len(), 5);

    // The non-ASCII seeds are longer in bytes than in code points.
    let a1 = client
        .get_article(pb::GetArticleRequest {
            offset_encoding: 0,
            name: article(A1),
            view: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text = seed_text(A1);
    assert_eq!(a1.text, text);
    assert_eq!(a1.length, 3985);
    assert!(text.len() > a1.length as usize);
    assert_eq!(a1.sha256.len(), 64);
}

#[tokio::test]
async fn spans_over_non_ascii_text_quote_the_right_code_points() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    for (id, needle) in [
        (A1, "조태열"),
        (A1, "Cho Tae-yul (Korean: 조태열; born 10 November 1955)"),
        (A2, "“payment”"),
        (A2, "the Kremlin’s offensive in Ukraine."),
        ("003_28f3322794e5657e", "Russia–Ukraine conflict"),
    ] {
        let text = seed_text(id);
        let span = find_span(&text, needle);
        let created = client
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(id),
                annotation: Some(new_annotation(span, Verdict::Verified)),
                expected_quote: needle.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.quote, needle);
        assert_eq!(created.span, Some(span));
        assert_eq!(created.analyst, "alice");
        let fetched = client
            .get_annotation(pb::GetAnnotationRequest {
                offset_encoding: 0,
                name: created.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, created);
    }

    // 조태열 is 3 code points, 9 bytes, 3 UTF-16 units: the span is 3 long.
    let text = seed_text(A1);
    let span = find_span(&text, "조태열");
    assert_eq!(span.end - span.start, 3);
    // One code point past the name: a byte- or UTF-16-based server would differ.
    let after = client
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(A1),
            annotation: Some(new_annotation(
                pb::Span {
                    start: span.start + 2,
                    end: span.end + 2,
                },
                Verdict::Disputed,
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.quote, "열; ");

    // The last code point of the article is reachable; one past it is not.
    let len = text.chars().count() as u32;
    let last = create(
        &mut client,
        A1,
        pb::Span {
            start: len - 1,
            end: len,
        },
        Verdict::Verified,
    )
    .await;
    assert_eq!(last.quote, text.chars().last().unwrap().to_string());
}

/// Runs `call`, expects `code` naming `field`, and checks nothing changed.
macro_rules! refused {
    ($client:expr, $code:expr, $field:expr, $call:expr) => {{
        let before = snapshot(&mut $client).await;
        let status = $call.await.expect_err("the call should fail");
        assert_eq!(status.code(), $code, "{status:?}");
        if let Some(field) = $field {
            assert_eq!(violated_field(&status), field, "{status:?}");
            assert!(
                status.message().contains(field),
                "message names the field: {status:?}"
            );
        }
        assert_eq!(snapshot(&mut $client).await, before, "the store changed");
        status
    }};
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = seed_text(A1);
    let len = text.chars().count() as u32;
    let good = find_span(&text, "조태열");
    let existing = create(&mut c, A1, good, Verdict::Verified).await;

    let create_req = |parent: &str, a: Option<pb::Annotation>| pb::CreateAnnotationRequest {
        parent: parent.into(),
        annotation: a,
        ..Default::default()
    };
    let ann = |start, end, verdict: i32| {
        Some(pb::Annotation {
            span: Some(pb::Span { start, end }),
            verdict,
            ..Default::default()
        })
    };
    let v = Verdict::Verified as i32;

    refused!(
        c,
        Code::InvalidArgument,
        Some("parent"),
        c.create_annotation(create_req("books/x", ann(0, 1, v)))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("parent"),
        c.create_annotation(create_req("articles/", ann(0, 1, v)))
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.create_annotation(create_req("articles/nope", ann(0, 1, v)))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation"),
        c.create_annotation(create_req(&article(A1), None))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.span"),
        c.create_annotation(create_req(
            &article(A1),
            Some(pb::Annotation {
                verdict: v,
                ..Default::default()
            })
        ))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.span.end"),
        c.create_annotation(create_req(&article(A1), ann(5, 5, v)))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.span.end"),
        c.create_annotation(create_req(&article(A1), ann(7, 3, v)))
    );
    let s = refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.span.end"),
        c.create_annotation(create_req(&article(A1), ann(len - 1, len + 1, v)))
    );
    assert!(s.message().contains("3985"), "{s:?}");
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.verdict"),
        c.create_annotation(create_req(&article(A1), ann(0, 1, 0)))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.verdict"),
        c.create_annotation(create_req(&article(A1), ann(0, 1, 42)))
    );
    let mut long_note = ann(0, 1, v);
    long_note.as_mut().unwrap().note = "ж".repeat(10_001);
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.note"),
        c.create_annotation(create_req(&article(A1), long_note))
    );
    let mut nul_note = ann(0, 1, v);
    nul_note.as_mut().unwrap().note = "a\0b".into();
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.note"),
        c.create_annotation(create_req(&article(A1), nul_note))
    );
    let mut empty_source = ann(0, 1, v);
    empty_source.as_mut().unwrap().sources = vec!["https://a.example".into(), " ".into()];
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.sources[1]"),
        c.create_annotation(create_req(&article(A1), empty_source))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("request_id"),
        c.create_annotation(pb::CreateAnnotationRequest {
            request_id: "not-a-uuid".into(),
            ..create_req(&article(A1), ann(0, 1, v))
        })
    );

    // expected_quote shows the text actually there.
    let s = refused!(
        c,
        Code::InvalidArgument,
        Some("expected_quote"),
        c.create_annotation(pb::CreateAnnotationRequest {
            expected_quote: "Cho".into(),
            ..create_req(&article(A1), Some(new_annotation(good, Verdict::Disputed)))
        })
    );
    assert!(s.message().contains("조태열"), "{s:?}");

    // Names.
    refused!(
        c,
        Code::InvalidArgument,
        Some("name"),
        c.get_annotation(pb::GetAnnotationRequest {
            offset_encoding: 0,
            name: "articles/x/annotations/123".into(),
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("name"),
        c.get_annotation(pb::GetAnnotationRequest {
            offset_encoding: 0,
            name: existing.name.replace("/annotations/", "/notes/"),
            ..Default::default()
        })
    );
    let missing = format!("{}/annotations/{}", article(A1), uuid::Uuid::now_v7());
    let s = refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.get_annotation(pb::GetAnnotationRequest {
            offset_encoding: 0,
            name: missing.clone(),
            ..Default::default()
        })
    );
    assert!(s.message().contains(&missing));
    // The right id under another article is not found.
    let moved = existing.name.replace(A1, A0);
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.get_annotation(pb::GetAnnotationRequest {
            name: moved.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: moved,
            etag: String::new()
        })
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: missing.clone(),
            etag: String::new()
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("name"),
        c.get_article(pb::GetArticleRequest {
            offset_encoding: 0,
            name: "articles/a/b".into(),
            view: 0,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.get_article(pb::GetArticleRequest {
            offset_encoding: 0,
            name: "articles/nope".into(),
            view: 0,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("view"),
        c.get_article(pb::GetArticleRequest {
            offset_encoding: 0,
            name: article(A1),
            view: 9,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("name"),
        c.get_article_review(pb::GetArticleReviewRequest {
            name: article(A1),
            offset_encoding: 0,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.get_article_review(pb::GetArticleReviewRequest {
            offset_encoding: 0,
            name: "articles/nope/review".into(),
            ..Default::default()
        })
    );

    // Updates.
    let update = |a: pb::Annotation, paths: &[&str]| pb::UpdateAnnotationRequest {
        offset_encoding: 0,
        annotation: Some(a),
        update_mask: Some(pbjson_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        etag: String::new(),
    };
    refused!(
        c,
        Code::InvalidArgument,
        Some("update_mask"),
        c.update_annotation(update(existing.clone(), &["analyst"]))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("update_mask"),
        c.update_annotation(update(existing.clone(), &["*", "note"]))
    );
    let mut no_verdict = existing.clone();
    no_verdict.verdict = 0;
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.verdict"),
        c.update_annotation(update(no_verdict, &["verdict"]))
    );
    let mut far = existing.clone();
    far.span = Some(pb::Span {
        start: 1,
        end: len + 1,
    });
    refused!(
        c,
        Code::InvalidArgument,
        Some("annotation.span.end"),
        c.update_annotation(update(far, &["span"]))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("update_mask"),
        c.update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(pb::Annotation {
                name: existing.name.clone(),
                ..Default::default()
            }),
            update_mask: None,
            etag: String::new(),
        })
    );
    let mut gone = existing.clone();
    gone.name = missing.clone();
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.update_annotation(update(gone, &["note"]))
    );

    // Lists.
    let list = |parent: &str, page_size: i32, page_token: &str| pb::ListAnnotationsRequest {
        parent: parent.into(),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    refused!(
        c,
        Code::InvalidArgument,
        Some("page_size"),
        c.list_annotations(list(&article(A1), -1, ""))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("page_token"),
        c.list_annotations(list(&article(A1), 1, "garbage"))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("parent"),
        c.list_annotations(list("articles", 1, ""))
    );
    refused!(
        c,
        Code::NotFound,
        None::<&str>,
        c.list_annotations(list("articles/nope", 1, ""))
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("verdict"),
        c.list_annotations(pb::ListAnnotationsRequest {
            verdict: 7,
            ..list(&article(A1), 1, "")
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("overlaps.end"),
        c.list_annotations(pb::ListAnnotationsRequest {
            overlaps: Some(pb::Span { start: 4, end: 4 }),
            ..list(&article(A1), 1, "")
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("page_size"),
        c.list_articles(pb::ListArticlesRequest {
            page_size: -5,
            ..Default::default()
        })
    );
    refused!(
        c,
        Code::InvalidArgument,
        Some("page_token"),
        c.list_articles(pb::ListArticlesRequest {
            page_token: "AAAA".into(),
            ..Default::default()
        })
    );
}

#[tokio::test]
async fn stale_etags_abort_and_change_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = seed_text(A2);
    let a = create(&mut c, A2, find_span(&text, "“payment”"), Verdict::Unattributed).await;

    let mut edit = a.clone();
    edit.verdict = Verdict::Disputed as i32;
    edit.note = "the agency retracted this".into();
    let updated = c
        .update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(edit.clone()),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["verdict".into(), "note".into()],
            }),
            etag: a.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(updated.etag, a.etag);
    assert_eq!(updated.verdict, Verdict::Disputed as i32);
    assert_eq!(updated.note, "the agency retracted this");
    assert_eq!(updated.sources, a.sources, "sources were not in the mask");
    assert_eq!(updated.create_time, a.create_time);
    assert_eq!(updated.quote, "“payment”");

    // The first etag is stale now: the update and the delete are aborted.
    let stale = refused!(
        c,
        Code::Aborted,
        None::<&str>,
        c.update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(pb::Annotation {
                verdict: Verdict::Verified as i32,
                ..edit.clone()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["verdict".into()],
            }),
            etag: a.etag.clone(),
        })
    );
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    // The etag carried on the annotation counts too.
    refused!(
        c,
        Code::Aborted,
        None::<&str>,
        c.update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(pb::Annotation {
                note: "x".into(),
                etag: a.etag.clone(),
                ..edit.clone()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["note".into()],
            }),
            etag: String::new(),
        })
    );
    let stale = refused!(
        c,
        Code::Aborted,
        None::<&str>,
        c.delete_annotation(pb::DeleteAnnotationRequest {
            reason: String::new(),
            name: a.name.clone(),
            etag: a.etag.clone(),
        })
    );
    assert_eq!(reason(&stale), "ETAG_MISMATCH");

    // Moving the span re-quotes it; the current etag deletes.
    let moved = c
        .update_annotation(pb::UpdateAnnotationRequest {
            offset_encoding: 0,
            annotation: Some(pb::Annotation {
                name: a.name.clone(),
                span: Some(find_span(&text, "Kremlin’s")),
                ..Default::default()
            }),
            update_mask: None,
            etag: updated.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.quote, "Kremlin’s");
    assert_eq!(moved.verdict, Verdict::Disputed as i32);
    c.delete_annotation(pb::DeleteAnnotationRequest {
        reason: String::new(),
        name: a.name.clone(),
        etag: moved.etag.clone(),
    })
    .await
    .unwrap();
    let gone = c
        .get_annotation(pb::GetAnnotationRequest {
            name: a.name.clone(),
            offset_encoding: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(snapshot(&mut c).await.0.is_empty());
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_result() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = seed_text(A1);
    let req = pb::CreateAnnotationRequest {
        offset_encoding: 0,
        parent: article(A1),
        annotation: Some(new_annotation(find_span(&text, "조태열"), Verdict::Verified)),
        request_id: uuid::Uuid::new_v4().to_string(),
        expected_quote: String::new(),
    };
    let first = c.create_annotation(req.clone()).await.unwrap().into_inner();
    let (_, revision) = snapshot(&mut c).await;
    let again = c.create_annotation(req.clone()).await.unwrap().into_inner();
    assert_eq!(again, first);
    let (all, revision_after) = snapshot(&mut c).await;
    assert_eq!(all.len(), 1);
    assert_eq!(revision_after, revision, "a retry writes nothing");

    // The same id with another request is refused.
    let mut other = req.clone();
    other.annotation.as_mut().unwrap().verdict = Verdict::Disputed as i32;
    let s = refused!(c, Code::AlreadyExists, None::<&str>, c.create_annotation(other));
    assert_eq!(reason(&s), "REQUEST_ID_REUSED");
    // ... and so is the same request from another analyst.
    let mut bob = server.client_with(Some(BOB)).await;
    let s = bob.create_annotation(req).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn lists_page_through_filters_in_start_then_id_order() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let text = seed_text(A2);
    let len = text.chars().count() as u32;

    let verdicts = [Verdict::Verified, Verdict::Disputed, Verdict::Unattributed];
    let mut made = Vec::new();
    for i in 0..30u32 {
        let client = if i % 2 == 0 { &mut alice } else { &mut bob };
        // Several annotations share a start, so the id breaks ties.
        let start = (i * 37) % 200;
        let span = pb::Span {
            start,
            end: (start + 5 + i).min(len),
        };
        made.push(create(client, A2, span, verdicts[(i % 3) as usize]).await);
    }
    // Another article's annotations never show up in A2's list.
    create(&mut alice, A0, pb::Span { start: 0, end: 4 }, Verdict::Disputed).await;

    let key = |a: &pb::Annotation| (a.span.unwrap().start, a.name.clone());
    let collect = |client: &mut Client, req: pb::ListAnnotationsRequest| {
        let mut client = client.clone();
        async move {
            let mut out = Vec::new();
            let mut token = String::new();
            let mut pages = 0;
            loop {
                let page = client
                    .list_annotations(pb::ListAnnotationsRequest {
                        page_token: token,
                        ..req.clone()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                pages += 1;
                assert!(page.annotations.len() <= req.page_size as usize);
                out.extend(page.annotations);
                if page.next_page_token.is_empty() {
                    return (out, pages);
                }
                token = page.next_page_token;
            }
        }
    };

    let filters = [
        (Verdict::Disputed as i32, String::new(), None),
        (0, "bob".to_string(), None),
        (Verdict::Verified as i32, "alice".to_string(), None),
        (0, String::new(), Some(pb::Span { start: 40, end: 80 })),
        (
            Verdict::Unattributed as i32,
            String::new(),
            Some(pb::Span { start: 100, end: 101 }),
        ),
    ];
    for (verdict, analyst, overlaps) in filters {
        let req = pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 4,
            verdict,
            analyst: analyst.clone(),
            overlaps,
            ..Default::default()
        };
        let (got, pages) = collect(&mut alice, req).await;
        let mut expected: Vec<pb::Annotation> = made
            .iter()
            .filter(|a| verdict == 0 || a.verdict == verdict)
            .filter(|a| analyst.is_empty() || a.analyst == analyst)
            .filter(|a| {
                overlaps.is_none_or(|o| {
                    let s = a.span.unwrap();
                    s.start < o.end && o.start < s.end
                })
            })
            .cloned()
            .collect();
        expected.sort_by_key(key);
        assert!(!expected.is_empty());
        assert_eq!(
            got, expected,
            "verdict {verdict} analyst {analyst:?} overlaps {overlaps:?}"
        );
        assert_eq!(pages, expected.len().div_ceil(4).max(1));
    }

    // A token only works with the filters it was issued for.
    let first = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let s = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            verdict: Verdict::Verified as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(violated_field(&s), "page_token");
    // An edited token is refused.
    let mut edited = first.next_page_token.clone().into_bytes();
    edited[5] = if edited[5] == b'A' { b'B' } else { b'A' };
    let s = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 2,
            page_token: String::from_utf8(edited).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    // All articles: 31 annotations, by article then start; default page size.
    let (all, revision) = snapshot(&mut alice).await;
    assert_eq!(all.len(), 31);
    assert_eq!(all[0].name.split('/').nth(1).unwrap(), A0);
    assert_eq!(revision, 31);
    let page = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: "articles/-".into(),
            page_size: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.annotations.len(), 31, "page_size 0 means 100");
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn review_counts_coverage_and_contested_spans() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let text = seed_text(A1);
    let len = text.chars().count() as u32;

    let empty = alice
        .get_article_review(pb::GetArticleReviewRequest {
            offset_encoding: 0,
            name: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.total_count, 0);
    assert_eq!(empty.covered_code_points, 0);
    assert!(empty.contested_spans.is_empty());
    assert!(empty.last_update_time.is_none());

    let sentence = find_span(&text, "Cho Tae-yul (Korean: 조태열; born 10 November 1955)");
    let name = find_span(&text, "조태열");
    // alice verifies the sentence; bob disputes the Korean name inside it.
    let a = create(&mut alice, A1, sentence, Verdict::Verified).await;
    let b = create(&mut bob, A1, name, Verdict::Disputed).await;
    // Same verdict overlapping is not contested.
    create(
        &mut alice,
        A1,
        pb::Span { start: 0, end: 10 },
        Verdict::Unattributed,
    )
    .await;
    create(
        &mut bob,
        A1,
        pb::Span { start: 5, end: 12 },
        Verdict::Unattributed,
    )
    .await;
    // An annotation at the very end.
    create(
        &mut bob,
        A1,
        pb::Span {
            start: len - 4,
            end: len,
        },
        Verdict::Verified,
    )
    .await;

    let r = alice
        .get_article_review(pb::GetArticleReviewRequest {
            offset_encoding: 0,
            name: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.name, format!("{}/review", article(A1)));
    assert_eq!(r.total_count, 5);
    assert_eq!(r.verified_count, 2);
    assert_eq!(r.disputed_count, 1);
    assert_eq!(r.unattributed_count, 2);
    assert_eq!(r.analyst_count, 2);
    let covered = (sentence.end - sentence.start) + 12 + 4;
    assert_eq!(r.covered_code_points, covered);
    assert!((r.covered_fraction - f64::from(covered) / f64::from(len)).abs() < 1e-12);
    assert_eq!(r.contested_spans.len(), 1);
    let contested = &r.contested_spans[0];
    assert_eq!(contested.span, Some(name));
    assert_eq!(contested.quote, "조태열");
    assert_eq!(
        contested.verdicts,
        vec![Verdict::Verified as i32, Verdict::Disputed as i32]
    );
    assert_eq!(contested.annotations, vec![a.name.clone(), b.name.clone()]);
    assert_eq!(r.revision, 5);
    assert!(r.last_update_time.is_some());

    // Resolving the disagreement clears the contested span.
    bob.update_annotation(pb::UpdateAnnotationRequest {
        offset_encoding: 0,
        annotation: Some(pb::Annotation {
            name: b.name.clone(),
            verdict: Verdict::Verified as i32,
            ..Default::default()
        }),
        update_mask: None,
        etag: b.etag.clone(),
    })
    .await
    .unwrap();
    let r = alice
        .get_article_review(pb::GetArticleReviewRequest {
            offset_encoding: 0,
            name: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.contested_spans.is_empty());
    assert_eq!(r.verified_count, 3);
    assert_eq!(r.revision, 6);
}

#[tokio::test]
async fn a_crowded_contested_region_names_the_first_hundred_and_counts_all() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = seed_text(A1);
    // 150 annotations all covering “조태열”, alternating verdicts.
    let name = find_span(&text, "조태열");
    let requests = (0..150u32)
        .map(|i| pb::CreateAnnotationRequest {
            parent: article(A1),
            annotation: Some(new_annotation(
                pb::Span {
                    start: name.start - 1 - i,
                    end: name.end + i % 7,
                },
                if i % 2 == 0 {
                    Verdict::Verified
                } else {
                    Verdict::Disputed
                },
            )),
            ..Default::default()
        })
        .collect();
    c.batch_create_annotations(pb::BatchCreateAnnotationsRequest {
        parent: article(A1),
        requests,
        ..Default::default()
    })
    .await
    .unwrap();
    let review = |mut c: Client| async move {
        c.get_article_review(pb::GetArticleReviewRequest {
            offset_encoding: 0,
            name: format!("{}/review", article(A1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    };
    let r = review(c.clone()).await;
    assert_eq!(r.total_count, 150);
    assert_eq!(r.contested_spans.len(), 1);
    let contested = &r.contested_spans[0];
    assert_eq!(contested.annotation_count, 150);
    assert_eq!(contested.annotations.len(), 100);
    // The names are the first hundred that ListAnnotations gives for the span.
    let listed = c
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A1),
            page_size: 100,
            overlaps: contested.span,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<String> = listed.annotations.into_iter().map(|a| a.name).collect();
    assert_eq!(contested.annotations, listed);

    // The summary is rebuilt the same after a restart.
    drop(c);
    let server = server.restart().await;
    let mut c = server.client().await;
    assert_eq!(review(c.clone()).await, r);

    // And follows deletes at once.
    let (all, _) = snapshot(&mut c).await;
    c.batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
        parent: article(A1),
        requests: all
            .iter()
            .map(|a| pb::DeleteAnnotationRequest {
                name: a.name.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let gone = review(c.clone()).await;
    assert_eq!(gone.total_count, 0);
    assert_eq!(gone.analyst_count, 0);
    assert!(gone.contested_spans.is_empty());
    assert_eq!(gone.revision, r.revision + 1);
    let micros = |t: Option<pbjson_types::Timestamp>| {
        let t = t.expect("a last update time");
        t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
    };
    assert!(micros(gone.last_update_time) > micros(r.last_update_time));
}

#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_everything() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = seed_text(A1);
    let request_id = uuid::Uuid::new_v4().to_string();
    let req = pb::CreateAnnotationRequest {
        offset_encoding: 0,
        parent: article(A1),
        annotation: Some(new_annotation(find_span(&text, "조태열"), Verdict::Verified)),
        request_id: request_id.clone(),
        expected_quote: "조태열".into(),
    };
    let first = c.create_annotation(req.clone()).await.unwrap().into_inner();
    for i in 0..20 {
        create(&mut c, A2, pb::Span { start: i, end: i + 3 }, Verdict::Disputed).await;
    }
    let before = snapshot(&mut c).await;
    let token_page = c
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    drop(c);

    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    let mut c = server.client().await;
    assert_eq!(snapshot(&mut c).await, before);
    // The request id is remembered across the restart.
    assert_eq!(c.create_annotation(req).await.unwrap().into_inner(), first);
    // A page token from before the restart still works.
    let next = c
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(A2),
            page_size: 5,
            page_token: token_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.annotations.len(), 5);
    assert_eq!(next.annotations[0].span.unwrap().start, 5);
    // Revisions continue where they were.
    let after = create(&mut c, A0, pb::Span { start: 0, end: 1 }, Verdict::Verified).await;
    assert_eq!(after.etag, format!("\"{}\"", before.1 + 1));
}

#[tokio::test]
async fn concurrent_writers_all_land_with_gap_free_revisions() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut etags = Vec::new();
            for i in 0..10u32 {
                let a = create(
                    &mut c,
                    A2,
                    pb::Span {
                        start: w,
                        end: w + 1 + i,
                    },
                    Verdict::Verified,
                )
                .await;
                etags.push(a.etag);
            }
            etags
        }));
    }
    let mut etags = Vec::new();
    for t in tasks {
        etags.extend(t.await.unwrap());
    }
    let mut revisions: Vec<u64> = etags
        .iter()
        .map(|e| e.trim_matches('"').parse().unwrap())
        .collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=640).collect::<Vec<u64>>());
    let mut c = client.clone();
    let (all, revision) = snapshot(&mut c).await;
    assert_eq!(all.len(), 640);
    assert_eq!(revision, 640);
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let server = TestServer::start().await;
    for token in [None, Some("wrong-token")] {
        let mut c = server.client_with(token).await;
        let s = c
            .list_articles(pb::ListArticlesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{token:?}");
        let s = c
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(A1),
                annotation: Some(new_annotation(pb::Span { start: 0, end: 1 }, Verdict::Verified)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let mut c = server.client().await;
    assert!(snapshot(&mut c).await.0.is_empty());

    // Health and reflection need no token.
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "factcheck.v1.FactCheckService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"factcheck.v1.FactCheckService".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");

    // The error details every refusal carries are described too, so grpcurl
    // decodes them instead of printing base64.
    for symbol in ["google.rpc.ErrorInfo", "google.rpc.BadRequest"] {
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{symbol}: unexpected reflection response {response:?}");
        };
        let file =
            <prost_types::FileDescriptorProto as prost::Message>::decode(&files.file_descriptor_proto[0][..])
                .unwrap();
        assert_eq!(file.package(), "google.rpc", "{symbol}");
    }
}

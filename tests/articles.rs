//! Articles that change: creating and correcting articles over the API,
//! their revisions, re-anchoring every annotation (in the same revision, or in
//! chunks right after it), offset encodings, grapheme boundaries and normalization.

use crate::common::*;
use pb::{AnchorState, Verdict};
use tokio_stream::StreamExt;
use tonic::Code;

const DESK: &str = "correction-desk";

/// The story as first published.
const FIRST: &str = "Seoul — Foreign minister 조태열 said on Monday that exports rose 5% in May.\n\
“We will never accept this,” he told reporters.\n\
Analysts expect growth to slow – but not by much 🎉.\n";

/// The correction: a note on top, the figure fixed, the quote withdrawn.
const CORRECTED: &str = "Correction: an earlier version misstated the May figure.\n\
Seoul — Foreign minister 조태열 said on Monday that exports rose 6% in May.\n\
Analysts expect growth to slow – but not by much 🎉.\n";

async fn create_article(client: &mut Client, id: &str, text: &str) -> pb::Article {
    client
        .create_article(pb::CreateArticleRequest {
            article_id: id.into(),
            article: Some(pb::Article {
                text: text.into(),
                source_url: format!("https://news.example/{id}"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

fn correction(id: &str, text: &str, etag: &str) -> pb::UpdateArticleRequest {
    pb::UpdateArticleRequest {
        article: Some(pb::Article {
            name: article(id),
            text: text.into(),
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["text".into()],
        }),
        etag: etag.into(),
    }
}

async fn get(client: &mut Client, name: &str) -> pb::Annotation {
    client
        .get_annotation(pb::GetAnnotationRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn review(client: &mut Client, id: &str) -> pb::ArticleReview {
    client
        .get_article_review(pb::GetArticleReviewRequest {
            name: format!("{}/review", article(id)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn anchor(a: &pb::Annotation) -> AnchorState {
    AnchorState::try_from(a.anchor_state).unwrap()
}

/// The whole promise: an editor corrects an article while analysts annotate
/// and watch it, and every annotation either still quotes exactly its text
/// or says why not, in one revision that watchers see whole.
#[tokio::test]
async fn an_editor_corrects_an_article_under_annotation() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let created = create_article(&mut editor, DESK, FIRST).await;
    assert_eq!(created.revision_id, "1");
    assert_eq!(created.revision_author, "rosa");
    // The created resource, whole (AIP-133): its text too.
    assert_eq!(created.text, FIRST);
    assert_eq!(
        created.title,
        "Seoul — Foreign minister 조태열 said on Monday that exports rose 5% in May."
    );

    let figure = create(
        &mut alice,
        DESK,
        find_span(FIRST, "exports rose 5% in May"),
        Verdict::Verified,
    )
    .await;
    let quote = create(
        &mut alice,
        DESK,
        find_span(FIRST, "“We will never accept this,”"),
        Verdict::Disputed,
    )
    .await;
    let growth = create(
        &mut alice,
        DESK,
        find_span(FIRST, "growth to slow"),
        Verdict::Unattributed,
    )
    .await;
    let minister = create(&mut alice, DESK, find_span(FIRST, "조태열"), Verdict::Verified).await;
    for a in [&figure, &quote, &growth, &minister] {
        assert_eq!(a.article_revision, "1");
        assert_eq!(anchor(a), AnchorState::Anchored);
    }
    let before = review(&mut alice, DESK).await;

    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            start_revision: before.revision + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().kind,
        pb::watch_annotations_response::Kind::Created as i32
    );

    let updated = editor
        .update_article(correction(DESK, CORRECTED, &created.etag))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision_id, "2");
    assert_eq!(updated.etag, "\"2\"");

    // One message: the article's change and every re-anchoring, together.
    let msg = loop {
        let m = watch.next().await.unwrap().unwrap();
        if m.kind == pb::watch_annotations_response::Kind::Events as i32 {
            break m;
        }
    };
    assert_eq!(msg.revision, before.revision + 1);
    assert_eq!(msg.article_events.len(), 1);
    let event = &msg.article_events[0];
    assert_eq!(event.r#type, pb::article_event::Type::Updated as i32);
    assert_eq!(event.article.as_ref().unwrap().revision_id, "2");
    assert_eq!(
        msg.events.len(),
        4,
        "every annotation of the article is re-anchored"
    );
    for e in &msg.events {
        assert_eq!(e.r#type, pb::annotation_event::Type::Updated as i32);
        let (now, then) = (e.annotation.as_ref().unwrap(), e.previous.as_ref().unwrap());
        assert_eq!(
            then.article_revision, "1",
            "the previous state quotes the text it judged"
        );
        if now.name == figure.name {
            assert_eq!(then.quote, "exports rose 5% in May");
        }
    }

    let figure_now = get(&mut alice, &figure.name).await;
    assert_eq!(anchor(&figure_now), AnchorState::Changed);
    assert_eq!(figure_now.quote, "exports rose 6% in May");
    assert_eq!(figure_now.article_revision, "2");
    assert_eq!(
        figure_now.span,
        Some(find_span(CORRECTED, "exports rose 6% in May"))
    );

    let quote_now = get(&mut alice, &quote.name).await;
    assert_eq!(anchor(&quote_now), AnchorState::Orphaned);
    assert_eq!(
        quote_now.quote, "“We will never accept this,”",
        "an orphan keeps its quote"
    );
    assert_eq!(quote_now.article_revision, "1");
    assert_eq!(quote_now.span, quote.span);

    for (old, text) in [(&growth, "growth to slow"), (&minister, "조태열")] {
        let now = get(&mut alice, &old.name).await;
        assert_eq!(anchor(&now), AnchorState::Moved, "{text}");
        assert_eq!(now.quote, text);
        assert_eq!(now.span, Some(find_span(CORRECTED, text)));
    }

    // The review counts what needs a look, and the orphan covers nothing.
    let r = review(&mut alice, DESK).await;
    assert_eq!(r.article_revision, "2");
    assert_eq!(r.total_count, 4);
    assert_eq!(r.needs_review_count, 2);
    assert_eq!(r.orphaned_count, 1);
    let covered: u32 = ["exports rose 6% in May", "growth to slow", "조태열"]
        .iter()
        .map(|t| t.chars().count() as u32)
        .sum();
    assert_eq!(r.covered_code_points, covered);

    // An `overlaps` query over the orphan's old span does not find it.
    let found = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(DESK),
            overlaps: quote.span,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.annotations.iter().all(|a| a.name != quote.name));

    // The history: the re-anchoring is a change by the editor, and the
    // first record still quotes the first text.
    let history = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: figure.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].annotation.as_ref().unwrap().quote,
        "exports rose 5% in May"
    );
    assert_eq!(history[1].actor, "rosa");
    let changed = &history[1].changed_fields.as_ref().unwrap().paths;
    for f in ["span", "article_revision", "anchor_state"] {
        assert!(changed.iter().any(|p| p == f), "{f} in {changed:?}");
    }

    // Revisions: both listed, the old text still readable.
    let revisions = alice
        .list_article_revisions(pb::ListArticleRevisionsRequest {
            name: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .articles;
    let names: Vec<&str> = revisions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [format!("{}@1", article(DESK)), format!("{}@2", article(DESK))]
    );
    assert!(
        revisions
            .iter()
            .all(|a| a.revision_author == "rosa" && a.text.is_empty())
    );
    assert_ne!(revisions[0].sha256, revisions[1].sha256);
    let first = alice
        .get_article(pb::GetArticleRequest {
            name: format!("{}@1", article(DESK)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.text, FIRST);

    // An analyst confirms the changed figure; a new span re-anchors the orphan.
    let mut confirm = figure_now.clone();
    confirm.note = "6% per the ministry's corrected release".into();
    let confirmed = alice
        .update_annotation(masked_update(confirm, &["note"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anchor(&confirmed), AnchorState::Anchored);
    let mut moved = quote_now.clone();
    moved.span = Some(find_span(CORRECTED, "Correction"));
    let reanchored = alice
        .update_annotation(masked_update(moved, &["span"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anchor(&reanchored), AnchorState::Anchored);
    assert_eq!(reanchored.article_revision, "2");
    assert_eq!(reanchored.quote, "Correction");
    let r = review(&mut alice, DESK).await;
    assert_eq!((r.needs_review_count, r.orphaned_count), (0, 0));

    // All of it survives a restart, and the audit chain verifies.
    let dir = server.stop().await;
    let store = factcheck::store::Store::open(&factcheck::store::StoreConfig::new(dir.path())).unwrap();
    assert!(store.verify_audit().unwrap().problems.is_empty());
    drop(store);
    let server = TestServer::start_in(dir).await;
    let mut alice = server.client().await;
    assert_eq!(get(&mut alice, &figure.name).await, confirmed);
    assert_eq!(get(&mut alice, &quote.name).await, reanchored);
}

/// Only reviewers write articles; bad input gets a clear status naming the
/// field, and nothing changes.
#[tokio::test]
async fn article_writes_are_checked_and_refusals_change_nothing() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let created = create_article(&mut editor, DESK, FIRST).await;
    let list = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.list_articles(pb::ListArticlesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .articles
        }
    };
    let articles_before = list(&mut alice).await;

    let s = alice
        .create_article(pb::CreateArticleRequest {
            article_id: "mine".into(),
            article: Some(pb::Article {
                text: "text".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::PermissionDenied, "ROLE_REQUIRED".into())
    );
    let s = alice
        .update_article(correction(DESK, CORRECTED, ""))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);

    let bad = |id: &str, text: &str, title: &str, url: &str| pb::CreateArticleRequest {
        article_id: id.into(),
        article: Some(pb::Article {
            text: text.into(),
            title: title.into(),
            source_url: url.into(),
            ..Default::default()
        }),
    };
    let huge = "a".repeat(1024 * 1024 + 1);
    for (req, field) in [
        (bad("", "t", "", ""), "article_id"),
        (bad(".hidden", "t", "", ""), "article_id"),
        (bad("a/b", "t", "", ""), "article_id"),
        (bad("-", "t", "", ""), "article_id"),
        (bad("ok", "  \n", "", ""), "article.text"),
        (bad("ok", &huge, "", ""), "article.text"),
        (bad("ok", "t\0", "", ""), "article.text"),
        (bad("ok", "t", "two\nlines", ""), "article.title"),
        (bad("ok", "t", "", "ftp://example.org/x"), "article.source_url"),
        (bad("ok", "t", "", "news.example/relative"), "article.source_url"),
    ] {
        let s = editor.create_article(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert_eq!(violated_field(&s), field);
    }
    let s = editor
        .create_article(bad(DESK, "again", "", ""))
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::AlreadyExists, "ARTICLE_EXISTS".into())
    );

    // Stale etags, unknown articles, masks naming no article field.
    editor
        .update_article(correction(DESK, CORRECTED, &created.etag))
        .await
        .unwrap();
    let s = editor
        .update_article(correction(DESK, FIRST, &created.etag))
        .await
        .unwrap_err();
    assert_eq!((s.code(), reason(&s)), (Code::Aborted, "ETAG_MISMATCH".into()));
    let s = editor
        .update_article(correction("nowhere", FIRST, ""))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let mut masked = correction(DESK, FIRST, "");
    masked.update_mask = Some(pbjson_types::FieldMask {
        paths: vec!["sha256".into()],
    });
    let s = editor.update_article(masked).await.unwrap_err();
    assert_eq!(violated_field(&s), "update_mask");
    for (name, code) in [
        (format!("{}@0", article(DESK)), Code::InvalidArgument),
        (format!("{}@two", article(DESK)), Code::InvalidArgument),
        (format!("{}@3", article(DESK)), Code::NotFound),
    ] {
        let s = alice
            .get_article(pb::GetArticleRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), code, "{name}");
    }

    // Only the one good correction landed.
    let after = list(&mut alice).await;
    assert_eq!(after.len(), articles_before.len());
    let desk = after.iter().find(|a| a.name == article(DESK)).unwrap();
    assert_eq!(desk.revision_id, "2");
    assert!(!after.iter().any(|a| a.name == article("ok")));

    // A title-only update is a revision too, and moves no annotation.
    let titled = editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(DESK),
                title: "Exports: a correction".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (titled.revision_id.as_str(), titled.title.as_str()),
        ("3", "Exports: a correction")
    );
}

/// Creates racing corrections: each either lands on the text it checked
/// (and is re-anchored with it) or is refused; none points into a text it
/// was not checked against.
#[tokio::test]
async fn annotations_racing_corrections_keep_their_text_or_are_refused() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let created = create_article(&mut editor, DESK, FIRST).await;
    let phrase = "exports rose 5% in May";

    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let (mut landed, mut refused) = (0, 0);
            for _ in 0..15 {
                let text = c
                    .get_article(pb::GetArticleRequest {
                        name: article(DESK),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .text;
                let result = c
                    .create_annotation(pb::CreateAnnotationRequest {
                        parent: article(DESK),
                        annotation: Some(new_annotation(find_span(&text, phrase), Verdict::Verified)),
                        expected_quote: phrase.into(),
                        ..Default::default()
                    })
                    .await;
                match result {
                    Ok(_) => landed += 1,
                    Err(s) if matches!(s.code(), Code::Aborted | Code::InvalidArgument) => refused += 1,
                    Err(s) => panic!("unexpected {s:?}"),
                }
            }
            (landed, refused)
        }));
    }
    let mut etag = created.etag;
    let mut text = FIRST.to_owned();
    for i in 0..10 {
        text = format!("Update {i}: more context above the story.\n{text}");
        etag = editor
            .update_article(correction(DESK, &text, &etag))
            .await
            .unwrap()
            .into_inner()
            .etag;
    }
    let mut landed = 0;
    for t in tasks {
        landed += t.await.unwrap().0;
    }
    let current = editor
        .get_article(pb::GetArticleRequest {
            name: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let all = server
        .client()
        .await
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(DESK),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .annotations;
    assert_eq!(all.len(), landed);
    for a in &all {
        assert_eq!(a.quote, phrase, "{a:?}");
        assert_eq!(
            a.article_revision, current.revision_id,
            "{a:?} points into an old text"
        );
        assert!(matches!(anchor(a), AnchorState::Anchored | AnchorState::Moved));
        assert_eq!(a.span, Some(find_span(&current.text, phrase)));
    }
}

/// The UTF-16 offset of the first `needle` in `text`, as JavaScript counts.
fn utf16_span(text: &str, needle: &str) -> pb::Span {
    let b = text.find(needle).unwrap();
    let start = text[..b].encode_utf16().count() as u32;
    pb::Span {
        start,
        end: start + needle.encode_utf16().count() as u32,
    }
}

fn utf8_span(text: &str, needle: &str) -> pb::Span {
    let b = text.find(needle).unwrap() as u32;
    pb::Span {
        start: b,
        end: b + needle.len() as u32,
    }
}

/// Spans in code points, UTF-16 code units or UTF-8 bytes mean the same
/// text, in and out, on text with emoji and Hangul.
#[tokio::test]
async fn the_three_offset_encodings_round_trip() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let text = "🎉🎉 Minister 조태열’s “claim” – 😀 checked.\n";
    create_article(&mut editor, DESK, text).await;
    let needle = "조태열’s “claim” – 😀";
    let spans = [
        (pb::OffsetEncoding::CodePoints, find_span(text, needle)),
        (pb::OffsetEncoding::Utf16, utf16_span(text, needle)),
        (pb::OffsetEncoding::Utf8, utf8_span(text, needle)),
    ];
    assert_ne!(spans[0].1, spans[1].1, "the text must tell the encodings apart");
    assert_ne!(spans[1].1, spans[2].1);
    for (enc, span) in &spans {
        let a = alice
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(DESK),
                annotation: Some(new_annotation(*span, Verdict::Verified)),
                expected_quote: needle.into(),
                offset_encoding: *enc as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.quote, needle, "{enc:?}");
        assert_eq!(a.span.as_ref(), Some(span), "{enc:?} answers in its encoding");
        // Read back in every encoding.
        for (other, expected) in &spans {
            let got = alice
                .get_annotation(pb::GetAnnotationRequest {
                    name: a.name.clone(),
                    offset_encoding: *other as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.span.as_ref(), Some(expected), "{enc:?} read as {other:?}");
        }
    }
    // Lengths, lists with `overlaps`, and watch replay in UTF-16.
    let length = |enc: pb::OffsetEncoding| {
        let mut c = alice.clone();
        async move {
            c.get_article(pb::GetArticleRequest {
                name: article(DESK),
                offset_encoding: enc as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .length
        }
    };
    assert_eq!(
        length(pb::OffsetEncoding::CodePoints).await,
        text.chars().count() as u32
    );
    assert_eq!(
        length(pb::OffsetEncoding::Utf16).await,
        text.encode_utf16().count() as u32
    );
    assert_eq!(length(pb::OffsetEncoding::Utf8).await, text.len() as u32);
    let listed = alice
        .list_annotations(pb::ListAnnotationsRequest {
            parent: article(DESK),
            overlaps: Some(utf16_span(text, "😀")),
            offset_encoding: pb::OffsetEncoding::Utf16 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .annotations;
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|a| a.span == Some(spans[1].1)));
    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            start_revision: 1,
            offset_encoding: pb::OffsetEncoding::Utf8 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while seen < 3 {
        let m = watch.next().await.unwrap().unwrap();
        for e in m.events {
            assert_eq!(e.annotation.unwrap().span, Some(spans[2].1));
            seen += 1;
        }
    }

    // Offsets inside a character are refused, naming the field.
    let inside = [
        (
            pb::OffsetEncoding::Utf16,
            pb::Span { start: 1, end: 4 },
            "annotation.span.start",
        ),
        (
            pb::OffsetEncoding::Utf8,
            pb::Span { start: 0, end: 2 },
            "annotation.span.end",
        ),
        (
            pb::OffsetEncoding::Utf16,
            pb::Span {
                start: 0,
                end: 10_000,
            },
            "annotation.span.end",
        ),
    ];
    for (enc, span, field) in inside {
        let s = alice
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(DESK),
                annotation: Some(new_annotation(span, Verdict::Verified)),
                offset_encoding: enc as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{span:?}");
        assert_eq!(violated_field(&s), field);
    }
    let s = alice
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(DESK),
            annotation: Some(new_annotation(spans[0].1, Verdict::Verified)),
            offset_encoding: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_field(&s), "offset_encoding");
}

/// A span may not split a grapheme cluster: the error names the field and
/// the nearest boundaries.
#[tokio::test]
async fn spans_never_split_a_grapheme_cluster() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    // An e with a combining acute, a flag, a family emoji sequence, and a
    // Hangul syllable as decomposed jamo.
    let text = "Cafe\u{301} 🇰🇷 👩\u{200d}👩\u{200d}👧 \u{1112}\u{1161}\u{11ab}.";
    create_article(&mut editor, DESK, text).await;
    let cp = |needle: &str| text[..text.find(needle).unwrap()].chars().count() as u32;
    let e = cp("e\u{301}");
    let flag = cp("🇰🇷");
    let family = cp("👩");
    let jamo = cp("\u{1112}");
    for (span, field, boundaries) in [
        (
            pb::Span { start: 0, end: e + 1 },
            "annotation.span.end",
            (e, e + 2),
        ),
        (
            pb::Span {
                start: flag + 1,
                end: flag + 2,
            },
            "annotation.span.start",
            (flag, flag + 2),
        ),
        (
            pb::Span {
                start: family,
                end: family + 2,
            },
            "annotation.span.end",
            (family, family + 5),
        ),
        (
            pb::Span {
                start: jamo + 1,
                end: jamo + 3,
            },
            "annotation.span.start",
            (jamo, jamo + 3),
        ),
    ] {
        let s = alice
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(DESK),
                annotation: Some(new_annotation(span, Verdict::Verified)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{span:?}");
        assert_eq!(violated_field(&s), field, "{span:?}");
        let expected = format!("nearest boundaries are {} and {}", boundaries.0, boundaries.1);
        assert!(s.message().contains(&expected), "{span:?}: {}", s.message());
    }
    // Whole clusters are fine.
    for needle in [
        "Cafe\u{301}",
        "🇰🇷",
        "👩\u{200d}👩\u{200d}👧",
        "\u{1112}\u{1161}\u{11ab}",
    ] {
        let a = create(&mut alice, DESK, find_span(text, needle), Verdict::Verified).await;
        assert_eq!(a.quote, needle);
    }
}

/// An expected quote that differs only in normalization says so.
#[tokio::test]
async fn an_expected_quote_differing_only_in_normalization_says_so() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let text = "Le Café de Flore a fermé.";
    create_article(&mut editor, DESK, text).await;
    let s = alice
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(DESK),
            annotation: Some(new_annotation(find_span(text, "Café"), Verdict::Verified)),
            expected_quote: "Cafe\u{301}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_field(&s), "expected_quote");
    assert!(s.message().contains("NFC"), "{}", s.message());
    let s = alice
        .create_annotation(pb::CreateAnnotationRequest {
            parent: article(DESK),
            annotation: Some(new_annotation(find_span(text, "Café"), Verdict::Verified)),
            expected_quote: "Flore".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(!s.message().contains("NFC"), "{}", s.message());
}

/// Corrected seed files become revisions at start, re-anchoring what was
/// annotated, and a new seed file creates its article: realistic edits of
/// 002, whose paragraphs repeat.
#[tokio::test]
async fn corrected_seed_files_become_revisions_at_start() {
    const A2: &str = "002_946fad7c8fee627f";
    let seeds = tempfile::tempdir().unwrap();
    let original = seed_text(A2);
    std::fs::write(seeds.path().join(format!("{A2}.txt")), &original).unwrap();
    let setup = Setup {
        seeds: Some(seeds.path().to_owned()),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup.clone()).await;
    let mut alice = server.client().await;
    let paragraphs: Vec<&str> = original.split_inclusive('\n').collect();
    // A paragraph that occurs twice: annotate its second occurrence.
    let repeated = paragraphs
        .iter()
        .enumerate()
        .find(|(i, p)| p.len() > 80 && paragraphs[..*i].contains(p))
        .map(|(_, p)| p.trim_end().to_owned())
        .expect("002 repeats a paragraph");
    let second = original.rfind(&repeated).unwrap();
    let start = original[..second].chars().count() as u32;
    let in_repeat = create(
        &mut alice,
        A2,
        pb::Span {
            start,
            end: start + repeated.chars().count() as u32,
        },
        Verdict::Disputed,
    )
    .await;
    let figure = create(&mut alice, A2, find_span(&original, "13,000"), Verdict::Verified).await;
    let withdrawn = "military assistance “without delay” in the case of an attack";
    let quoted = create(&mut alice, A2, find_span(&original, withdrawn), Verdict::Disputed).await;
    let title = create(
        &mut alice,
        A2,
        find_span(&original, "In a startling claim"),
        Verdict::Verified,
    )
    .await;
    let revision = review(&mut alice, A2).await.revision;
    let dir = server.stop().await;

    // The correction: two of the repeated paragraphs reordered (the one
    // annotated among them), the paragraph with the quoted treaty sentence
    // deleted, a paragraph inserted at the top, and the figure fixed.
    let mut p: Vec<String> = paragraphs.iter().map(|s| s.to_string()).collect();
    let at = p.iter().rposition(|x| x.trim_end() == repeated).unwrap();
    p.swap(at, at + 3);
    let treaty = p.iter().position(|x| x.contains(withdrawn)).unwrap();
    p.remove(treaty);
    p.insert(0, "Editor’s note: this article has been updated.\n".into());
    let corrected = p.concat().replace("13,000", "13,500");
    std::fs::write(seeds.path().join(format!("{A2}.txt")), &corrected).unwrap();
    std::fs::write(seeds.path().join("fresh-story.txt"), "A new story 🎉.\n").unwrap();

    let server = TestServer::start_with(dir, setup).await;
    let mut alice = server.client().await;
    let now = alice
        .get_article(pb::GetArticleRequest {
            name: article(A2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (now.revision_id.as_str(), now.revision_author.as_str()),
        ("2", "seeds")
    );
    assert_eq!(now.text, corrected);
    let a = get(&mut alice, &in_repeat.name).await;
    assert_eq!(a.quote, repeated, "the repeated paragraph still quotes itself");
    assert_eq!(anchor(&a), AnchorState::Moved);
    let a = get(&mut alice, &title.name).await;
    assert_eq!(
        (a.quote.as_str(), anchor(&a)),
        ("In a startling claim", AnchorState::Moved)
    );
    let a = get(&mut alice, &figure.name).await;
    assert_eq!((a.quote.as_str(), anchor(&a)), ("13,500", AnchorState::Changed));
    let a = get(&mut alice, &quoted.name).await;
    assert_eq!((a.quote.as_str(), anchor(&a)), (withdrawn, AnchorState::Orphaned));
    assert_eq!(a.article_revision, "1");
    let fresh = alice
        .get_article(pb::GetArticleRequest {
            name: article("fresh-story"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.revision_id, "1");

    // Both are changes in the changelog, by `seeds`.
    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            start_revision: revision + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut articles = Vec::new();
    while articles.len() < 2 {
        let m = watch.next().await.unwrap().unwrap();
        for e in m.article_events {
            articles.push((e.r#type, e.article.unwrap().name));
        }
    }
    articles.sort();
    assert_eq!(
        articles,
        [
            (pb::article_event::Type::Created as i32, article("fresh-story")),
            (pb::article_event::Type::Updated as i32, article(A2)),
        ]
    );
}

/// Batches creating 80 annotations of ~40 KB each (3.2 MB a revision), then
/// a correction moving all 400 (~16 MB before and ~16 MB after), reach a
/// watcher whole: a batch's events in consecutive messages of its revision,
/// the correction in chunks of revisions, every message under a client's
/// default 4 MiB limit; the answer to the editor stays small.
#[tokio::test]
async fn a_correction_moving_many_large_annotations_reaches_watchers_in_parts() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let n = if crate::common::etcd::on_etcd() { 80 } else { 400 };
    let text: String = (0..n).map(|i| format!("Claim number {i} is here.\n")).collect();
    let created = create_article(&mut editor, DESK, &text).await;
    let mut batches = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(80) {
        let requests = chunk
            .iter()
            .map(|i| pb::CreateAnnotationRequest {
                annotation: Some(pb::Annotation {
                    note: "🙂".repeat(10_000),
                    ..new_annotation(find_span(&text, &format!("Claim number {i} ")), Verdict::Verified)
                }),
                ..Default::default()
            })
            .collect();
        let batch = alice
            .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                parent: article(DESK),
                requests,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(batch.annotations.into_iter().map(|a| a.name));
    }
    // The first batch: one revision, in parts.
    let (mut parts, mut created_seen, mut revision) = (0, 0, None);
    while created_seen < 80 {
        let m = batches
            .next()
            .await
            .unwrap()
            .expect("each part fits a client's limit");
        if m.kind != pb::watch_annotations_response::Kind::Events as i32 {
            continue;
        }
        assert_eq!(*revision.get_or_insert(m.revision), m.revision, "one revision");
        assert_eq!(m.more, created_seen + m.events.len() < 80);
        created_seen += m.events.len();
        parts += 1;
    }
    assert!(parts > 1, "{parts} part(s)");
    drop(batches);
    let head = review(&mut alice, DESK).await.revision;
    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            start_revision: head + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let updated = editor
        .update_article(correction(
            DESK,
            &format!("Editor’s note on top.\n{text}"),
            &created.etag,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision_id, "2");
    let mut seen = std::collections::HashSet::new();
    let (mut parts, mut revisions, mut last) = (0, 0, head);
    while seen.len() < names.len() {
        let m = watch
            .next()
            .await
            .unwrap()
            .expect("each part fits a client's limit");
        if m.kind != pb::watch_annotations_response::Kind::Events as i32 {
            continue;
        }
        if m.revision != last {
            assert_eq!(m.revision, last + 1, "the chunks are consecutive revisions");
            revisions += 1;
            last = m.revision;
        }
        assert_eq!(
            m.article_events.len(),
            usize::from(parts == 0),
            "the article event comes first, once"
        );
        parts += 1;
        for e in m.events {
            let a = e.annotation.unwrap();
            assert_eq!(AnchorState::try_from(a.anchor_state).unwrap(), AnchorState::Moved);
            assert!(seen.insert(a.name));
        }
    }
    assert!(revisions > 1, "{revisions} revision(s)");
    assert_eq!(seen.len(), names.len());
}

/// A correction of more annotations than a chunk (issue 21, item 4): its
/// revision holds the new text and the first chunk, each later revision one
/// chunk, so no other writer waits for the whole correction; the editor is
/// answered once every annotation is moved.
#[tokio::test]
async fn a_correction_of_more_annotations_than_a_chunk_moves_them_in_the_next_revisions() {
    let setup = Setup {
        reanchor_chunk: Some(3),
        ..Default::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let created = create_article(&mut editor, DESK, FIRST).await;
    let words = [
        "Seoul",
        "Foreign",
        "minister",
        "조태열",
        "Monday",
        "exports",
        "“We",
        "reporters",
        "growth",
        "🎉",
    ];
    let mut quotes = std::collections::HashMap::new();
    for w in words {
        let a = create(&mut alice, DESK, find_span(FIRST, w), Verdict::Verified).await;
        quotes.insert(a.name, a.quote);
    }
    let head = review(&mut alice, DESK).await.revision;
    let mut watch = alice
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(DESK),
            start_revision: head + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let corrected = format!("Editor’s note – 조태열’s title fixed 🙂.\n{FIRST}");
    let updated = editor
        .update_article(correction(DESK, &corrected, &created.etag))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision_id, "2");
    // Answered once all are moved.
    for (name, quote) in &quotes {
        let now = get(&mut alice, name).await;
        assert_eq!(now.article_revision, "2", "{name}");
        assert_eq!(anchor(&now), AnchorState::Moved);
        assert_eq!(&now.quote, quote);
    }
    let mut per_revision = std::collections::BTreeMap::new();
    let mut seen = 0;
    while seen < words.len() {
        let m = watch.next().await.unwrap().unwrap();
        if m.kind != pb::watch_annotations_response::Kind::Events as i32 {
            continue;
        }
        assert_eq!(
            m.article_events.len(),
            usize::from(m.revision == head + 1),
            "the text changes in the first revision only"
        );
        seen += m.events.len();
        *per_revision.entry(m.revision).or_insert(0) += m.events.len();
    }
    assert_eq!(
        per_revision.into_iter().collect::<Vec<_>>(),
        vec![(head + 1, 3), (head + 2, 3), (head + 3, 3), (head + 4, 1)]
    );
    assert_eq!(review(&mut alice, DESK).await.revision, head + 4);
    // Finished: the next correction is taken.
    let again = editor
        .update_article(correction(DESK, FIRST, &updated.etag))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision_id, "3");
}

/// The chunks' boundaries: a correction of exactly one chunk is one
/// revision (no mark); of exactly two chunks, two; with chunks of one, one
/// revision per annotation. Each annotation is moved exactly once (its
/// history: created, then re-anchored), and the editor is answered after
/// the last.
#[tokio::test]
async fn corrections_at_the_chunk_boundaries_move_each_annotation_once() {
    let words = ["Seoul", "Foreign", "minister", "조태열", "Monday", "exports"];
    for (chunk, n, revisions) in [(3, 3, 1), (3, 6, 2), (1, 2, 2)] {
        let setup = Setup {
            reanchor_chunk: Some(chunk),
            ..Default::default()
        };
        let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
        let mut editor = server.client_with(Some(REVIEWER)).await;
        let mut alice = server.client().await;
        let created = create_article(&mut editor, DESK, FIRST).await;
        let mut names = Vec::new();
        for w in &words[..n] {
            names.push(
                create(&mut alice, DESK, find_span(FIRST, w), Verdict::Verified)
                    .await
                    .name,
            );
        }
        let head = review(&mut alice, DESK).await.revision;
        editor
            .update_article(correction(DESK, &format!("Note – 🙂\n{FIRST}"), &created.etag))
            .await
            .unwrap();
        assert_eq!(
            review(&mut alice, DESK).await.revision - head,
            revisions,
            "{n} annotations in chunks of {chunk}"
        );
        for name in &names {
            let history = alice
                .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .revisions;
            assert_eq!(history.len(), 2, "{name}: {n} in chunks of {chunk}");
            assert_eq!(
                anchor(history[1].annotation.as_ref().unwrap()),
                AnchorState::Moved
            );
            assert_eq!(history[1].annotation.as_ref().unwrap().article_revision, "2");
        }
    }
}

/// Two editors correcting from the same revision: one wins, the other is
/// told to re-read; an update that changes nothing (a retry of one that
/// landed) makes no revision.
#[tokio::test]
async fn concurrent_corrections_from_one_revision_let_one_win() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let created = create_article(&mut editor, DESK, FIRST).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = server.client_with(Some(REVIEWER)).await;
        let etag = created.etag.clone();
        tasks.push(tokio::spawn(async move {
            c.update_article(correction(DESK, &format!("Version {i}.\n{FIRST}"), &etag))
                .await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => won.push(a.into_inner()),
            Err(s) => assert_eq!((s.code(), reason(&s)), (Code::Aborted, "ETAG_MISMATCH".into())),
        }
    }
    assert_eq!(won.len(), 1, "exactly one correction from revision 1 lands");
    assert_eq!(won[0].revision_id, "2");
    let text = editor
        .get_article(pb::GetArticleRequest {
            name: article(DESK),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .text;
    // The winner's text, resent without an etag: no new revision.
    let again = editor
        .update_article(correction(DESK, &text, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision_id, "2");
}

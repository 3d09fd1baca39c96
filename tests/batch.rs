//! Batch RPCs: atomic, one revision each, all or nothing, in request order.

use crate::common::*;
use pb::Verdict;
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

const A1: &str = "001_728dec46794c22c1";
const A2: &str = "002_946fad7c8fee627f";
const A4: &str = "004_8a3ee0e763f8382c";

fn child(article_id: &str, span: pb::Span, verdict: Verdict) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: article(article_id),
        annotation: Some(new_annotation(span, verdict)),
        ..Default::default()
    }
}

/// The whole store as bytes, as a client sees it.
async fn store_bytes(client: &mut Client) -> Vec<u8> {
    let (all, revision) = snapshot(client).await;
    pb::ListAnnotationsResponse {
        annotations: all,
        next_page_token: String::new(),
        revision,
    }
    .encode_to_vec()
}

fn field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations[0]
        .field
        .clone()
}

#[tokio::test]
async fn batch_create_is_one_revision_in_request_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut watch = c
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap(); // CREATED

    let t1 = seed_text(A1);
    let t4 = seed_text(A4);
    let requests = vec![
        child(A1, find_span(&t1, "조태열"), Verdict::Verified),
        child(A4, find_span(&t4, "“alliance.”"), Verdict::Disputed),
        pb::CreateAnnotationRequest {
            expected_quote: "Korea’s".into(),
            ..child(A4, find_span(&t4, "Korea’s"), Verdict::Unattributed)
        },
    ];
    let resp = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: "articles/-".into(),
            requests,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.revision, 1);
    let quotes: Vec<&str> = resp.annotations.iter().map(|a| a.quote.as_str()).collect();
    assert_eq!(quotes, ["조태열", "“alliance.”", "Korea’s"]);
    assert!(resp.annotations.iter().all(|a| a.etag == "\"1\""));

    // Watchers get the batch as one message.
    let msg = watch.message().await.unwrap().unwrap();
    assert_eq!(msg.revision, 1);
    assert_eq!(msg.events.len(), 3);
    let names: Vec<_> = msg
        .events
        .iter()
        .map(|e| e.annotation.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(
        names,
        resp.annotations
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    );

    // Batch get, in request order, at one revision.
    let mut names: Vec<String> = resp.annotations.iter().map(|a| a.name.clone()).collect();
    names.reverse();
    let got = c
        .batch_get_annotations(pb::BatchGetAnnotationsRequest {
            offset_encoding: 0,
            parent: "articles/-".into(),
            names: names.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, 1);
    assert_eq!(
        got.annotations.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
        names
    );
}

#[tokio::test]
async fn a_bad_child_rejects_the_whole_batch_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let existing = create(&mut c, A2, pb::Span { start: 0, end: 10 }, Verdict::Verified).await;
    let before = store_bytes(&mut c).await;
    let len = seed_text(A2).chars().count() as u32;

    let mut requests: Vec<_> = (0..5)
        .map(|i| child(A2, pb::Span { start: i, end: i + 2 }, Verdict::Disputed))
        .collect();
    requests[3].annotation.as_mut().unwrap().span = Some(pb::Span {
        start: 1,
        end: len + 1,
    });
    let s = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A2),
            requests: requests.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(field(&s), "requests[3].annotation.span.end");
    assert!(s.message().contains("requests[3]"), "{s:?}");
    assert_eq!(store_bytes(&mut c).await, before);

    // A child under another parent than the batch's.
    requests[3] = child(A1, pb::Span { start: 0, end: 1 }, Verdict::Verified);
    let s = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A2),
            requests: requests.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(&s), "requests[3].parent");

    // Updates: one stale etag aborts all; a missing one is not found.
    let ok_update = |name: &str, note: &str, etag: &str| pb::UpdateAnnotationRequest {
        offset_encoding: 0,
        annotation: Some(pb::Annotation {
            name: name.into(),
            note: note.into(),
            ..Default::default()
        }),
        update_mask: None,
        etag: etag.into(),
    };
    let other = create(&mut c, A2, pb::Span { start: 5, end: 15 }, Verdict::Verified).await;
    let before = store_bytes(&mut c).await;
    let s = c
        .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
            parent: article(A2),
            requests: vec![
                ok_update(&other.name, "fine", &other.etag),
                ok_update(&existing.name, "stale", "\"999\""),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Aborted);
    let info = s.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "ETAG_MISMATCH");
    assert_eq!(
        info.metadata.get("child").map(String::as_str),
        Some("requests[1]")
    );
    assert_eq!(store_bytes(&mut c).await, before);

    let missing = format!("{}/annotations/{}", article(A2), uuid::Uuid::now_v7());
    let s = c
        .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
            parent: article(A2),
            requests: vec![
                pb::DeleteAnnotationRequest {
                    reason: String::new(),
                    name: existing.name.clone(),
                    etag: String::new(),
                },
                pb::DeleteAnnotationRequest {
                    reason: String::new(),
                    name: missing.clone(),
                    etag: String::new(),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert!(s.message().contains("requests[1]"), "{s:?}");
    assert_eq!(store_bytes(&mut c).await, before);

    let s = c
        .batch_get_annotations(pb::BatchGetAnnotationsRequest {
            offset_encoding: 0,
            parent: article(A2),
            names: vec![existing.name.clone(), missing],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert!(s.message().contains("names[1]"), "{s:?}");

    // Deleting the same annotation twice in one batch fails as a whole.
    let s = c
        .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
            parent: "articles/-".into(),
            requests: vec![
                pb::DeleteAnnotationRequest {
                    reason: String::new(),
                    name: existing.name.clone(),
                    etag: String::new(),
                };
                2
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(store_bytes(&mut c).await, before);
}

#[tokio::test]
async fn batch_update_and_delete_apply_in_order_as_one_revision() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let a = create(&mut c, A2, pb::Span { start: 0, end: 10 }, Verdict::Verified).await;
    let b = create(&mut c, A2, pb::Span { start: 20, end: 30 }, Verdict::Unattributed).await;

    // The second child sees the first's change to the same annotation.
    let resp = c
        .batch_update_annotations(pb::BatchUpdateAnnotationsRequest {
            parent: article(A2),
            requests: vec![
                pb::UpdateAnnotationRequest {
                    offset_encoding: 0,
                    annotation: Some(pb::Annotation {
                        name: a.name.clone(),
                        note: "first".into(),
                        ..Default::default()
                    }),
                    update_mask: None,
                    etag: a.etag.clone(),
                },
                pb::UpdateAnnotationRequest {
                    offset_encoding: 0,
                    annotation: Some(pb::Annotation {
                        name: a.name.clone(),
                        verdict: Verdict::Disputed as i32,
                        ..Default::default()
                    }),
                    update_mask: None,
                    etag: String::new(),
                },
                pb::UpdateAnnotationRequest {
                    offset_encoding: 0,
                    annotation: Some(pb::Annotation {
                        name: b.name.clone(),
                        verdict: Verdict::Disputed as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["verdict".into()],
                    }),
                    etag: b.etag.clone(),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.revision, 3);
    assert_eq!(resp.annotations.len(), 3);
    assert_eq!(resp.annotations[1].note, "first");
    assert_eq!(resp.annotations[1].verdict, Verdict::Disputed as i32);

    let resp = c
        .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
            parent: article(A2),
            requests: vec![
                pb::DeleteAnnotationRequest {
                    reason: String::new(),
                    name: a.name.clone(),
                    etag: "\"3\"".into(),
                },
                pb::DeleteAnnotationRequest {
                    reason: String::new(),
                    name: b.name.clone(),
                    etag: String::new(),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.revision, 4);
    assert_eq!(snapshot(&mut c).await, (vec![], 4));
}

#[tokio::test]
async fn batch_size_limit_retry_and_validate_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let many = |n: u32| -> Vec<pb::CreateAnnotationRequest> {
        (0..n)
            .map(|i| {
                child(
                    A2,
                    pb::Span {
                        start: i % 6000,
                        end: i % 6000 + 1,
                    },
                    Verdict::Verified,
                )
            })
            .collect()
    };

    for n in [0, 1001] {
        let s = c
            .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                parent: article(A2),
                requests: many(n),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(field(&s), "requests");
    }
    assert_eq!(snapshot(&mut c).await, (vec![], 0));

    // validate_only checks everything and writes nothing.
    let checked = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A2),
            requests: many(1000),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checked.revision, 0);
    assert_eq!(checked.annotations.len(), 1000);
    assert_eq!(snapshot(&mut c).await, (vec![], 0));
    let mut bad = many(3);
    bad[2].annotation.as_mut().unwrap().verdict = 0;
    let s = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A2),
            requests: bad,
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(&s), "requests[2].annotation.verdict");

    // A full batch of 1000 lands as one revision; a retry returns it again.
    let req = pb::BatchCreateAnnotationsRequest {
        offset_encoding: 0,
        parent: article(A2),
        requests: many(1000),
        request_id: uuid::Uuid::new_v4().to_string(),
        validate_only: false,
    };
    let first = c
        .batch_create_annotations(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.revision, 1);
    assert_eq!(first.annotations.len(), 1000);
    let again = c
        .batch_create_annotations(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    let (all, revision) = snapshot(&mut c).await;
    assert_eq!((all.len(), revision), (1000, 1));

    // A child may not carry its own request id.
    let mut own = many(1);
    own[0].request_id = uuid::Uuid::new_v4().to_string();
    let s = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A2),
            requests: own,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(&s), "requests[0].request_id");
}

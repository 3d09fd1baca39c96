//! Roles, the audit history and TLS, against a real server.

use crate::common::*;
use pb::Verdict;
use tonic::Code;
use tonic_types::StatusExt;

const A1: &str = "001_728dec46794c22c1";

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn update(name: &str, verdict: Verdict, note: &str) -> pb::UpdateAnnotationRequest {
    let annotation = pb::Annotation {
        name: name.to_owned(),
        verdict: verdict as i32,
        note: note.to_owned(),
        ..Default::default()
    };
    masked_update(annotation, &["verdict", "note"])
}

fn delete(name: &str) -> pb::DeleteAnnotationRequest {
    pb::DeleteAnnotationRequest {
        reason: String::new(),
        name: name.to_owned(),
        etag: String::new(),
    }
}

#[tokio::test]
async fn roles_decide_who_may_write_what_and_refusals_change_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client_with(Some(BOB)).await;
    let mut reader = server.client_with(Some(READER)).await;
    let mut reviewer = server.client_with(Some(REVIEWER)).await;
    let text = seed_text(A1);
    let theirs = create(&mut alice, A1, find_span(&text, "조태열"), Verdict::Verified).await;
    let before = snapshot(&mut alice).await;

    // A reader reads, lists and watches...
    reader
        .get_annotation(pb::GetAnnotationRequest {
            offset_encoding: 0,
            name: theirs.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(snapshot(&mut reader).await, before);
    let mut stream = reader
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: "articles/-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    // ...and may write nothing: refused before the request is even looked
    // at, so a missing annotation or a bad span is PERMISSION_DENIED too.
    let missing = format!("{}/annotations/{}", article(A1), uuid::Uuid::now_v7());
    let refusals = [
        reader
            .create_annotation(pb::CreateAnnotationRequest {
                parent: article(A1),
                annotation: Some(new_annotation(pb::Span { start: 9, end: 1 }, Verdict::Disputed)),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        reader
            .update_annotation(update(&theirs.name, Verdict::Disputed, "no"))
            .await
            .unwrap_err(),
        reader.delete_annotation(delete(&missing)).await.unwrap_err(),
        reader
            .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
                parent: article(A1),
                requests: vec![delete(&theirs.name)],
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ];
    for status in &refusals {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(reason(status), "ROLE_REQUIRED");
        assert!(
            status.message().contains("rita has role reader"),
            "{}",
            status.message()
        );
    }

    // An analyst may not change another analyst's annotation, alone or in a
    // batch; a missing one is still NOT_FOUND for them.
    let s = bob
        .update_annotation(update(&theirs.name, Verdict::Disputed, "bob disagrees"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(reason(&s), "NOT_OWNER");
    assert!(s.message().contains("alice's"), "{}", s.message());
    let s = bob.delete_annotation(delete(&theirs.name)).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let mine = create(&mut bob, A1, pb::Span { start: 0, end: 4 }, Verdict::Disputed).await;
    let s = bob
        .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
            parent: article(A1),
            requests: vec![delete(&mine.name), delete(&theirs.name)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let info = s.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("child").map(String::as_str),
        Some("requests[1]")
    );
    assert_eq!(
        bob.delete_annotation(delete(&missing)).await.unwrap_err().code(),
        Code::NotFound
    );
    let (all, _) = snapshot(&mut alice).await;
    assert_eq!(
        all.len(),
        2,
        "bob's own annotation stays: the batch was all or nothing"
    );

    // Their own is fine; nobody else rewrites an analyst's annotation, not
    // even a reviewer (who settles disagreement by adjudication), and a
    // reviewer deletes only their own.
    bob.update_annotation(update(&mine.name, Verdict::Verified, "on reflection"))
        .await
        .unwrap();
    let e = reviewer
        .update_annotation(update(
            &theirs.name,
            Verdict::Disputed,
            "the ministry says otherwise",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::PermissionDenied, "NOT_OWNER".into())
    );
    let e = reviewer.delete_annotation(delete(&mine.name)).await.unwrap_err();
    assert_eq!(reason(&e), "NOT_OWNER");
    let history = reviewer
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: theirs.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(
        history.iter().map(|r| r.actor.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
}

#[tokio::test]
async fn the_history_keeps_every_state_chained_also_after_delete_and_restart() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let text = seed_text(A1);
    let span = find_span(&text, "조태열");
    let created = create(&mut alice, A1, span, Verdict::Verified).await;
    alice
        .update_annotation(update(
            &created.name,
            Verdict::Disputed,
            "the “source” was a blog – not the ministry",
        ))
        .await
        .unwrap();
    // An update that changes only the sources.
    alice
        .update_annotation(masked_update(
            pb::Annotation {
                name: created.name.clone(),
                sources: vec!["https://example.org/ministry’s-statement".into()],
                ..Default::default()
            },
            &["sources"],
        ))
        .await
        .unwrap();
    alice.delete_annotation(delete(&created.name)).await.unwrap();
    // Gone from the annotations...
    assert_eq!(
        alice
            .get_annotation(pb::GetAnnotationRequest {
                offset_encoding: 0,
                name: created.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // ...not from the history, which survives a restart.
    drop(alice);
    let server = server.restart().await;
    let mut alice = server.client().await;
    let all = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: created.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.next_page_token.is_empty());
    let h = all.revisions;
    assert_eq!(h.len(), 4);
    use pb::annotation_event::Type;
    assert_eq!(
        h.iter().map(|r| r.r#type).collect::<Vec<_>>(),
        [Type::Created, Type::Updated, Type::Updated, Type::Deleted].map(|t| t as i32)
    );
    assert_eq!(h[0].annotation.as_ref().unwrap(), &created);
    assert_eq!(h[1].changed_fields.as_ref().unwrap().paths, ["verdict", "note"]);
    assert_eq!(h[2].changed_fields.as_ref().unwrap().paths, ["sources"]);
    assert!(h[3].changed_fields.is_none());
    let last = h[3].annotation.as_ref().unwrap();
    assert_eq!(last.quote, "조태열");
    assert_eq!(last.note, "the “source” was a blog – not the ministry");
    assert_eq!(last.verdict, Verdict::Disputed as i32);
    assert_eq!(h[0].previous_hash, "0".repeat(64));
    for pair in h.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash);
        assert!(pair[1].revision > pair[0].revision);
    }
    assert!(h.iter().all(|r| r.actor == "alice" && r.hash.len() == 64));

    // Paging one at a time gives the same, and a token only serves its name.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = alice
            .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                offset_encoding: 0,
                name: created.name.clone(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.revisions);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, h);
    let other = create(&mut alice, A1, pb::Span { start: 1, end: 2 }, Verdict::Verified).await;
    let first = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: created.name.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            offset_encoding: 0,
            name: other.name.clone(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    // Never existed: NOT_FOUND; a malformed name: INVALID_ARGUMENT.
    let missing = format!("{}/annotations/{}", article(A1), uuid::Uuid::now_v7());
    let s = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: missing,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    // The right id under another article is not found either.
    let moved = created.name.replace(A1, "000_9260bb247249f31b");
    let s = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: moved,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = alice
        .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
            name: "articles/x/annotations/not-a-uuid".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_nobody_in_clear_text() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let setup = Setup {
        tls: Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let port = server.addr.port();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header = format!("Bearer {ALICE}").parse().unwrap();
    let mut c = pb::fact_check_service_client::FactCheckServiceClient::with_interceptor(
        channel,
        Auth::new(Some(header)),
    );
    let created = create(&mut c, A1, find_span(&seed_text(A1), "조태열"), Verdict::Verified).await;
    assert_eq!(created.quote, "조태열");

    // A clear-text client gets no service.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let header = format!("Bearer {ALICE}").parse().unwrap();
        let mut c = pb::fact_check_service_client::FactCheckServiceClient::with_interceptor(
            channel,
            Auth::new(Some(header)),
        );
        assert!(c.list_articles(pb::ListArticlesRequest::default()).await.is_err());
    }
    // A client that does not trust the CA is refused.
    let untrusting = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().domain_name("localhost"))
        .unwrap()
        .connect()
        .await;
    assert!(untrusting.is_err());
}

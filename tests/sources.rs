//! Sources of annotations: a source with a URL scheme is an http(s) link;
//! `javascript:`, `data:` and other schemes are refused with
//! INVALID_ARGUMENT, reason SOURCE_SCHEME_NOT_ALLOWED, naming the source
//! (`annotation.sources[1]`), at create, update and in batches; plain
//! citations without a scheme are kept as they were written.

use crate::common::*;
use pb::Verdict;
use tonic::Code;

const A1: &str = "001_728dec46794c22c1";

fn with_sources(sources: &[&str]) -> pb::Annotation {
    pb::Annotation {
        span: Some(pb::Span { start: 0, end: 5 }),
        verdict: Verdict::Disputed as i32,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn create_req(sources: &[&str]) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: article(A1),
        annotation: Some(with_sources(sources)),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_source_with_a_scheme_other_than_http_is_refused_and_citations_stay_text() {
    let server = TestServer::start().await;
    let mut c = server.client().await;

    // Links and citations without a scheme are stored as written.
    let kept = [
        "https://example.org/report",
        "HTTP://example.org/wire",
        "Reuters: interview with the minister, 3 May 2024",
        "Ministry of Foreign Affairs press release no. 12",
    ];
    let a = c.create_annotation(create_req(&kept)).await.unwrap().into_inner();
    assert_eq!(a.sources, kept);
    let before = snapshot(&mut c).await;

    for bad in [
        "javascript:alert(1)",
        "  JavaScript:alert(document.cookie)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
    ] {
        let s = c
            .create_annotation(create_req(&["https://example.org/ok", bad]))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{bad:?}: {s:?}");
        assert_eq!(reason(&s), "SOURCE_SCHEME_NOT_ALLOWED", "{bad:?}: {s:?}");
        assert_eq!(violated_field(&s), "annotation.sources[1]", "{bad:?}: {s:?}");
    }

    // An update to such a source is refused the same way.
    let s = c
        .update_annotation(masked_update(
            pb::Annotation {
                name: a.name.clone(),
                sources: vec!["javascript:alert(1)".into()],
                ..Default::default()
            },
            &["sources"],
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(reason(&s), "SOURCE_SCHEME_NOT_ALLOWED");
    assert_eq!(violated_field(&s), "annotation.sources[0]");

    // And in a batch, naming the child.
    let s = c
        .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
            parent: article(A1),
            requests: vec![create_req(&["Reuters"]), create_req(&["data:,x"])],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(reason(&s), "SOURCE_SCHEME_NOT_ALLOWED");
    assert!(violated_field(&s).ends_with("[1].annotation.sources[0]"), "{s:?}");

    assert_eq!(snapshot(&mut c).await, before, "nothing refused was stored");
}

//! Limits and bad input: each limit at its boundary, bytes that are not
//! UTF-8, oversized requests, the unary deadline, and random input at every
//! RPC (proptest). Refusals leave the store as it was.

use crate::common::*;
use pb::Verdict;
use proptest::prelude::*;
use tonic::Code;
use tonic_types::StatusExt;

const A1: &str = "001_728dec46794c22c1";

fn create_req(note: String, sources: Vec<String>) -> pb::CreateAnnotationRequest {
    pb::CreateAnnotationRequest {
        parent: article(A1),
        annotation: Some(pb::Annotation {
            span: Some(pb::Span { start: 0, end: 5 }),
            verdict: Verdict::Verified as i32,
            note,
            sources,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field(status: &tonic::Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn each_limit_holds_at_its_boundary() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let src = |n: usize| format!("https://example.org/{}", "ü".repeat(n - 20));

    // At the limits: accepted (10,000 code points of a two-byte letter).
    c.create_annotation(create_req(
        "ж".repeat(10_000),
        (0..50).map(|_| src(2048)).collect(),
    ))
    .await
    .unwrap();
    let before = snapshot(&mut c).await;

    // One past each: refused, naming the field.
    let cases = [
        (create_req("ж".repeat(10_001), vec![]), "annotation.note"),
        (
            create_req(String::new(), (0..51).map(|_| src(30)).collect()),
            "annotation.sources",
        ),
        (
            create_req(String::new(), vec![src(30), src(2049)]),
            "annotation.sources[1]",
        ),
    ];
    for (req, expected) in cases {
        let s = c.create_annotation(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert_eq!(field(&s), expected, "{s:?}");
    }
    assert_eq!(snapshot(&mut c).await, before);
}

/// `CreateAnnotationRequest` with its strings as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCreate {
    #[prost(bytes = "vec", tag = "1")]
    parent: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    annotation: Option<RawAnnotation>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawAnnotation {
    #[prost(message, optional, tag = "2")]
    span: Option<pb::Span>,
    #[prost(int32, tag = "4")]
    verdict: i32,
    #[prost(bytes = "vec", tag = "5")]
    note: Vec<u8>,
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_invalid_argument_and_never_stored() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let before = snapshot(&mut c).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    // “조태열” cut in the middle of its first character.
    let mut note = "“".as_bytes().to_vec();
    note.extend_from_slice(&"조태열".as_bytes()[..2]);
    let raw = RawCreate {
        parent: article(A1).into_bytes(),
        annotation: Some(RawAnnotation {
            span: Some(pb::Span { start: 0, end: 3 }),
            verdict: Verdict::Verified as i32,
            note,
        }),
    };
    let mut req = tonic::Request::new(raw);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/factcheck.v1.FactCheckService/CreateAnnotation");
    let s = grpc
        .unary::<_, pb::Annotation, _>(req, path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("Annotation.note"), "{}", s.message());
    assert!(s.message().contains("UTF-8"), "{}", s.message());
    assert_eq!(snapshot(&mut c).await, before);
}

/// The status refusing a batch of 1000 creates in A1, the `i`th being
/// `annotation(i)`.
async fn refused_batch_of_1000(c: &mut Client, annotation: impl Fn(u32) -> pb::Annotation) -> tonic::Status {
    let requests = (0..1000)
        .map(|i| pb::CreateAnnotationRequest {
            annotation: Some(annotation(i)),
            ..Default::default()
        })
        .collect();
    c.batch_create_annotations(pb::BatchCreateAnnotationsRequest {
        parent: article(A1),
        requests,
        ..Default::default()
    })
    .await
    .unwrap_err()
}

#[tokio::test]
async fn a_request_over_4_mib_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let before = snapshot(&mut c).await;
    // 1000 children of ~4.2 KiB each.
    let s = refused_batch_of_1000(&mut c, |_| pb::Annotation {
        span: Some(pb::Span { start: 0, end: 3 }),
        verdict: Verdict::Verified as i32,
        note: "x".repeat(4_200),
        ..Default::default()
    })
    .await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("4194304"), "{}", s.message());
    assert_eq!(snapshot(&mut c).await, before);
}

#[tokio::test]
async fn the_unary_deadline_cuts_calls_but_not_watch_streams() {
    let setup = Setup {
        call_timeout: std::time::Duration::from_millis(1),
        ..Setup::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), setup).await;
    let mut c = server.client().await;
    let mut stream = c
        .watch_annotations(pb::WatchAnnotationsRequest {
            parent: article(A1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A batch of 1000 takes far longer than 1 ms to check and commit.
    let s = refused_batch_of_1000(&mut c, |i| {
        new_annotation(pb::Span { start: i, end: i + 2 }, Verdict::Verified)
    })
    .await;
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    // The stream outlives many deadlines: the first message, then progress
    // (every 200 ms here) or the batch's event, in any case well past 1 ms.
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.kind, pb::watch_annotations_response::Kind::Created as i32);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(300) {
        assert!(stream.message().await.unwrap().is_some());
    }
}

/// Offsets that matter: the ends of the text and either side of “조태열”.
fn offsets(text: &str) -> Vec<u32> {
    let len = text.chars().count() as u32;
    let korean = find_span(text, "조태열");
    vec![
        0,
        1,
        korean.start - 1,
        korean.start,
        korean.start + 1,
        korean.end,
        korean.end + 1,
        len - 1,
        len,
        len + 1,
        u32::MAX,
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\0".to_owned()),
        Just("조태열 – “quoted” ’".to_owned()),
        Just("x".repeat(20_000)),
        "\\PC{0,40}",
        ".{0,10}",
    ]
}

fn any_name(existing: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(existing.clone()),
        Just(existing.replace(A1, "000_9260bb247249f31b")),
        Just(format!("{}/annotations/{}", article(A1), uuid::Uuid::nil())),
        Just("articles/-".to_owned()),
        Just("articles//annotations/".to_owned()),
        any_string(),
        any_string().prop_map(|s| format!("articles/{A1}/annotations/{s}")),
        any_string().prop_map(|s| format!("articles/{s}")),
    ]
}

#[derive(Debug, Clone)]
enum Call {
    Create {
        parent: String,
        start: u32,
        end: u32,
        verdict: i32,
        note: String,
        sources: Vec<String>,
        request_id: String,
    },
    Update {
        name: String,
        start: u32,
        end: u32,
        verdict: i32,
        note: String,
        paths: Vec<String>,
        etag: String,
    },
    Delete {
        name: String,
        etag: String,
    },
    Get {
        name: String,
    },
    List {
        parent: String,
        page_size: i32,
        page_token: String,
        verdict: i32,
        start: u32,
        end: u32,
    },
    Review {
        name: String,
    },
    Revisions {
        name: String,
        page_token: String,
    },
    Watch {
        parent: String,
        start_revision: u64,
        verdict: i32,
    },
    BatchDelete {
        parent: String,
        names: Vec<String>,
        request_id: String,
    },
}

fn any_call(existing: String, offsets: Vec<u32>) -> impl Strategy<Value = Call> {
    let off = proptest::sample::select(offsets);
    let verdict = prop_oneof![Just(1), Just(2), Just(3), -3..6i32, Just(i32::MAX)];
    let parent = prop_oneof![Just(article(A1)), Just("articles/-".to_owned()), any_string()];
    let token = prop_oneof![Just(String::new()), any_string(), "[A-Za-z0-9_-]{20,80}"];
    let paths = proptest::collection::vec(
        prop_oneof![
            Just("verdict"),
            Just("note"),
            Just("span"),
            Just("sources"),
            Just("name"),
            Just("etag"),
            Just("*"),
            Just("nope")
        ]
        .prop_map(str::to_owned),
        0..4,
    );
    prop_oneof![
        (
            parent.clone(),
            off.clone(),
            off.clone(),
            verdict.clone(),
            any_string(),
            proptest::collection::vec(any_string(), 0..3),
            any_string()
        )
            .prop_map(
                |(parent, start, end, verdict, note, sources, request_id)| Call::Create {
                    parent,
                    start,
                    end,
                    verdict,
                    note,
                    sources,
                    request_id
                }
            ),
        (
            any_name(existing.clone()),
            off.clone(),
            off.clone(),
            verdict.clone(),
            any_string(),
            paths,
            any_string()
        )
            .prop_map(|(name, start, end, verdict, note, paths, etag)| Call::Update {
                name,
                start,
                end,
                verdict,
                note,
                paths,
                etag
            }),
        (any_name(existing.clone()), any_string()).prop_map(|(name, etag)| Call::Delete { name, etag }),
        any_name(existing.clone()).prop_map(|name| Call::Get { name }),
        (
            parent.clone(),
            prop_oneof![Just(0), -5..5i32, Just(1001), Just(i32::MAX)],
            token.clone(),
            verdict.clone(),
            off.clone(),
            off.clone()
        )
            .prop_map(
                |(parent, page_size, page_token, verdict, start, end)| Call::List {
                    parent,
                    page_size,
                    page_token,
                    verdict,
                    start,
                    end
                }
            ),
        prop_oneof![Just(format!("{}/review", article(A1))), any_string()]
            .prop_map(|name| Call::Review { name }),
        (any_name(existing.clone()), token)
            .prop_map(|(name, page_token)| Call::Revisions { name, page_token }),
        (
            parent.clone(),
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
            verdict
        )
            .prop_map(|(parent, start_revision, verdict)| Call::Watch {
                parent,
                start_revision,
                verdict
            }),
        (
            parent,
            proptest::collection::vec(any_name(existing), 0..3),
            any_string()
        )
            .prop_map(|(parent, names, request_id)| Call::BatchDelete {
                parent,
                names,
                request_id
            }),
    ]
}

fn span(start: u32, end: u32) -> Option<pb::Span> {
    Some(pb::Span { start, end })
}

/// Makes the call; `Err` carries the status of a refusal, and whether the
/// call could have written.
async fn make(c: &mut Client, call: Call) -> Result<(), (tonic::Status, bool)> {
    let write = |s: tonic::Status| (s, true);
    let read = |s: tonic::Status| (s, false);
    match call {
        Call::Create {
            parent,
            start,
            end,
            verdict,
            note,
            sources,
            request_id,
        } => c
            .create_annotation(pb::CreateAnnotationRequest {
                offset_encoding: 0,
                parent,
                annotation: Some(pb::Annotation {
                    span: span(start, end),
                    verdict,
                    note,
                    sources,
                    ..Default::default()
                }),
                request_id,
                expected_quote: String::new(),
            })
            .await
            .map(drop)
            .map_err(write),
        Call::Update {
            name,
            start,
            end,
            verdict,
            note,
            paths,
            etag,
        } => c
            .update_annotation(pb::UpdateAnnotationRequest {
                offset_encoding: 0,
                annotation: Some(pb::Annotation {
                    name,
                    span: span(start, end),
                    verdict,
                    note,
                    ..Default::default()
                }),
                update_mask: Some(pbjson_types::FieldMask { paths }),
                etag,
            })
            .await
            .map(drop)
            .map_err(write),
        Call::Delete { name, etag } => c
            .delete_annotation(pb::DeleteAnnotationRequest {
                name,
                etag,
                reason: String::new(),
            })
            .await
            .map(drop)
            .map_err(write),
        Call::Get { name } => c
            .get_annotation(pb::GetAnnotationRequest {
                name,
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(read),
        Call::List {
            parent,
            page_size,
            page_token,
            verdict,
            start,
            end,
        } => c
            .list_annotations(pb::ListAnnotationsRequest {
                offset_encoding: 0,
                parent,
                page_size,
                page_token,
                verdict,
                analyst: String::new(),
                overlaps: span(start, end),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(read),
        Call::Review { name } => c
            .get_article_review(pb::GetArticleReviewRequest {
                name,
                offset_encoding: 0,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(read),
        Call::Revisions { name, page_token } => c
            .list_annotation_revisions(pb::ListAnnotationRevisionsRequest {
                offset_encoding: 0,
                name,
                page_size: 0,
                page_token,
            })
            .await
            .map(drop)
            .map_err(read),
        Call::Watch {
            parent,
            start_revision,
            verdict,
        } => {
            let mut stream = c
                .watch_annotations(pb::WatchAnnotationsRequest {
                    offset_encoding: 0,
                    parent,
                    start_revision,
                    verdict,
                    analyst: String::new(),
                })
                .await
                .map_err(read)?
                .into_inner();
            stream.message().await.map(drop).map_err(read)
        }
        Call::BatchDelete {
            parent,
            names,
            request_id,
        } => c
            .batch_delete_annotations(pb::BatchDeleteAnnotationsRequest {
                parent,
                requests: names
                    .into_iter()
                    .map(|name| pb::DeleteAnnotationRequest {
                        reason: String::new(),
                        name,
                        etag: String::new(),
                    })
                    .collect(),
                request_id,
                validate_only: false,
            })
            .await
            .map(drop)
            .map_err(write),
    }
}

/// Random input at every RPC: every refusal is a clean status (never
/// INTERNAL or UNKNOWN), a refused write changes nothing, and every stored
/// annotation still quotes its article correctly.
#[test]
fn random_input_at_every_rpc_gets_a_clean_status_and_keeps_the_store_consistent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, mut c, existing) = rt.block_on(async {
        let server = TestServer::start().await;
        let mut c = server.client().await;
        let a = create(&mut c, A1, find_span(&seed_text(A1), "조태열"), Verdict::Verified).await;
        (server, c, a.name)
    });
    let text = seed_text(A1);
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(call in any_call(existing.clone(), offsets(&text)))| {
        let mut c = c.clone();
        rt.block_on(async {
            let before = snapshot(&mut c).await;
            if let Err((status, could_write)) = make(&mut c, call.clone()).await {
                prop_assert!(
                    !matches!(status.code(), Code::Internal | Code::Unknown | Code::Unimplemented),
                    "{call:?} → {status:?}"
                );
                prop_assert!(!status.message().is_empty());
                if could_write {
                    prop_assert_eq!(snapshot(&mut c).await, before, "a refused write changed the store: {:?}", call);
                }
            }
            Ok(())
        })?;
    });
    rt.block_on(async {
        let chars: Vec<char> = text.chars().collect();
        let (all, _) = snapshot(&mut c).await;
        for a in all.iter().filter(|a| a.name.starts_with(&article(A1))) {
            let s = a.span.unwrap();
            let quote: String = chars[s.start as usize..s.end as usize].iter().collect();
            assert_eq!(a.quote, quote);
        }
        drop(c);
        server.stop().await;
    });
}

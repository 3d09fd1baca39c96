//! Re-anchoring at scale, over the API (issue 21, item 3): a 1 MiB article
//! with 5,000 one-word annotations, 5% of its words corrected in place. The
//! annotations whose word was not edited stay ANCHORED on their word; none
//! grows past its word (the edits keep every word's length).

use crate::common::*;
use pb::{AnchorState, Verdict};

const ARTICLE: &str = "long-read";

/// The vocabulary the article is written in, split at spaces.
const WORDS: &str = "the of and a to in said minister talks Seoul exports rose fell percent May \
    officials budget grew trade deal without agreement Monday markets sharply report sources \
    declined authorized publicly million troops attack assistance treaty 조태열 외교부 café Zürich";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The article (just under 1 MiB), its correction with every twentieth
/// word on average replaced in place by as many other letters, and each
/// word's code-point span and whether it was edited.
fn texts() -> (String, String, Vec<(pb::Span, bool)>) {
    let vocabulary: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut old, mut new, mut words) = (String::new(), String::new(), Vec::new());
    let mut cp = 0u32;
    while old.len() < (1 << 20) - 64 {
        let w = vocabulary[rng.below(vocabulary.len())];
        let n = w.chars().count() as u32;
        let edited = rng.below(20) == 0;
        old.push_str(w);
        if edited {
            new.extend(w.chars().map(|c| if c == 'Q' { 'X' } else { 'Q' }));
        } else {
            new.push_str(w);
        }
        words.push((
            pb::Span {
                start: cp,
                end: cp + n,
            },
            edited,
        ));
        let sep = [" ", " ", ", ", ". ", ".\n"][rng.below(5)];
        old.push_str(sep);
        new.push_str(sep);
        cp += n + sep.chars().count() as u32;
    }
    (old, new, words)
}

#[tokio::test]
async fn scattered_edits_of_a_long_article_leave_untouched_words_anchored() {
    let server = TestServer::start().await;
    let mut editor = server.client_with(Some(REVIEWER)).await;
    let mut alice = server.client().await;
    let (old, new, words) = texts();
    let created = editor
        .create_article(pb::CreateArticleRequest {
            article_id: ARTICLE.into(),
            article: Some(pb::Article {
                text: old.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    // 5,000 words, spread over the whole article.
    let step = words.len() / 5000;
    let chosen: Vec<usize> = (0..5000).map(|i| i * step).collect();
    let mut expected = std::collections::HashMap::new();
    for chunk in chosen.chunks(1000) {
        let requests = chunk
            .iter()
            .map(|&w| pb::CreateAnnotationRequest {
                annotation: Some(new_annotation(words[w].0, Verdict::Verified)),
                ..Default::default()
            })
            .collect();
        let batch = alice
            .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                parent: article(ARTICLE),
                requests,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (a, &w) in batch.annotations.into_iter().zip(chunk) {
            expected.insert(a.name, (w, a.quote));
        }
    }
    let edited = chosen.iter().filter(|&&w| words[w].1).count();
    assert!(
        (150..400).contains(&edited),
        "{edited} of the annotated words edited"
    );

    let started = std::time::Instant::now();
    let updated = editor
        .update_article(pb::UpdateArticleRequest {
            article: Some(pb::Article {
                name: article(ARTICLE),
                text: new.clone(),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["text".into()],
            }),
            etag: created.etag,
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert_eq!(updated.revision_id, "2");

    let mut token = String::new();
    let (mut seen, mut anchored) = (0, 0);
    loop {
        let page = alice
            .list_annotations(pb::ListAnnotationsRequest {
                parent: article(ARTICLE),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for a in page.annotations {
            let (w, quote) = &expected[&a.name];
            let (span, was_edited) = words[*w];
            let state = AnchorState::try_from(a.anchor_state).unwrap();
            let now = a.span.unwrap();
            seen += 1;
            if !was_edited {
                assert!(
                    (state, now) == (AnchorState::Anchored, span) && a.quote == *quote,
                    "{} on the untouched word {quote:?} at {span:?} is {state:?} at {now:?} ({} code points)",
                    a.name,
                    now.end - now.start
                );
                anchored += 1;
                continue;
            }
            match state {
                AnchorState::Anchored | AnchorState::Moved => assert_eq!(&a.quote, quote),
                // Its word, corrected: no more.
                AnchorState::Changed => assert_eq!(now, span, "{} grew", a.name),
                AnchorState::Orphaned => assert_eq!(now, span),
                AnchorState::Unspecified => panic!("{} has no anchor state", a.name),
            }
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, 5000);
    assert_eq!(anchored, 5000 - edited);
    eprintln!("the correction took {took:?}");
}

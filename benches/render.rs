//! How long the web app takes to show the largest seed article with 1,000
//! annotations in headless Chromium: the page's own `performance.measure`
//! figures (`factcheck:render`, building the highlighted text;
//! `factcheck:open`, fetching and listing too, until the next frame); then
//! how long a live event (a colleague's new annotation) takes with the
//! article open (`factcheck:event-script`, the page's script;
//! `factcheck:event`, until the frame showing it was rendered).
//! A figure for docs/BENCHMARKS.md, not a test:
//!
//! ```sh
//! cargo bench --features browser-tests --bench render
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/driver.rs"]
mod driver;

use common::*;
use fantoccini::Locator;
use serde_json::json;

const LARGEST: &str = "002_946fad7c8fee627f";

#[tokio::main]
async fn main() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let length = seed_text(LARGEST).chars().count() as u32;
    // 1,000 annotations of 5 to 80 code points, spread and overlapping.
    let mut seed = 7u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        seed >> 8
    };
    for _ in 0..2 {
        let requests = (0..500)
            .map(|_| {
                let len = 5 + next() % 76;
                let start = next() % (length - len);
                let verdict = [
                    pb::Verdict::Verified,
                    pb::Verdict::Disputed,
                    pb::Verdict::Unattributed,
                ][(next() % 3) as usize];
                pb::CreateAnnotationRequest {
                    annotation: Some(new_annotation(
                        pb::Span {
                            start,
                            end: start + len,
                        },
                        verdict,
                    )),
                    ..Default::default()
                }
            })
            .collect();
        client
            .batch_create_annotations(pb::BatchCreateAnnotationsRequest {
                parent: article(LARGEST),
                requests,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let driver = driver::Driver::start();
    let b = driver.browser().await;
    let mut renders = Vec::new();
    let mut opens = Vec::new();
    for _ in 0..5 {
        b.goto(&format!("{}/#articles%2F{LARGEST}", server.url()))
            .await
            .unwrap();
        b.execute(
            "sessionStorage.setItem('factcheck.token', arguments[0])",
            vec![json!(ALICE)],
        )
        .await
        .unwrap();
        b.refresh().await.unwrap();
        b.wait().for_element(Locator::Css("#text mark")).await.unwrap();
        let figures = loop {
            let v = b
                .execute(
                    "const f = (n) => performance.getEntriesByName(n).map((e) => e.duration); return [f('factcheck:render'), f('factcheck:open')]",
                    vec![],
                )
                .await
                .unwrap();
            if v[1].as_array().is_some_and(|a| !a.is_empty()) {
                break v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        renders.push(figures[0][0].as_f64().unwrap());
        opens.push(figures[1][0].as_f64().unwrap());
    }
    // What a frame costs with nothing changed: the floor of the figures below.
    let mut idle = Vec::new();
    for _ in 0..10 {
        let ms = b
            .execute_async(
                "const done = arguments[arguments.length - 1]; const t = performance.now(); requestAnimationFrame(() => setTimeout(() => done(performance.now() - t), 0));",
                vec![],
            )
            .await
            .unwrap();
        idle.push(ms.as_f64().unwrap());
    }
    idle.sort_by(f64::total_cmp);
    // Frames over 50 ms (long animation frames): where their time went.
    b.execute(
        "window.__loaf = []; new PerformanceObserver((l) => window.__loaf.push(...l.getEntries().map((e) => [e.duration, e.startTime + e.duration - e.styleAndLayoutStart, e.renderStart ? e.styleAndLayoutStart - e.renderStart : 0]))).observe({ type: 'long-animation-frame' })",
        vec![],
    )
    .await
    .unwrap();
    // Live events: a colleague's annotation at a time, each its own revision.
    let mut bob = server.client_with(Some(BOB)).await;
    let mut scripts = Vec::new();
    let mut events = Vec::new();
    for i in 0..21u32 {
        let start = (i * 997) % (length - 40);
        create(
            &mut bob,
            LARGEST,
            pb::Span {
                start,
                end: start + 12 + i,
            },
            pb::Verdict::Disputed,
        )
        .await;
        let n = i as usize + 1;
        let figures = loop {
            let v = b
                .execute(
                    "const f = (n) => performance.getEntriesByName(n).map((e) => e.duration); return [f('factcheck:event-script'), f('factcheck:event')]",
                    vec![],
                )
                .await
                .unwrap();
            if v[1].as_array().is_some_and(|a| a.len() >= n) {
                break v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        // The first is the page's warm-up.
        if i > 0 {
            scripts.push(figures[0][i as usize].as_f64().unwrap());
            events.push(figures[1][i as usize].as_f64().unwrap());
        }
    }
    scripts.sort_by(f64::total_cmp);
    events.sort_by(f64::total_cmp);
    let loaf: Vec<[f64; 3]> =
        serde_json::from_value(b.execute("return window.__loaf", vec![]).await.unwrap()).unwrap();
    let mut layout: Vec<f64> = loaf.iter().map(|f| f[1]).collect();
    layout.sort_by(f64::total_cmp);
    let marks = b
        .execute("return document.querySelectorAll('#text mark').length", vec![])
        .await
        .unwrap();
    // Tab stops in the text before the skip link's target: one per region
    // and per run of touching highlights.
    let stops = b
        .execute(
            "return document.querySelectorAll('#text [tabindex=\"0\"]').length",
            vec![],
        )
        .await
        .unwrap();
    renders.sort_by(f64::total_cmp);
    opens.sort_by(f64::total_cmp);
    println!(
        "{LARGEST} ({length} code points), 1000 annotations, {marks} highlighted pieces: \
         render median {:.1} ms (min {:.1}), open median {:.1} ms (min {:.1}), 5 loads; {stops} tab stops in the text",
        renders[2], renders[0], opens[2], opens[0]
    );
    if !layout.is_empty() {
        println!(
            "{} of the events' frames took over 50 ms; their style and layout median {:.1} ms",
            layout.len(),
            layout[layout.len() / 2]
        );
    }
    println!(
        "a live event (a new annotation) with 1,000 open: script median {:.1} ms (max {:.1}), \
         to the rendered frame median {:.1} ms (max {:.1}), {} events; an idle frame median {:.1} ms",
        scripts[scripts.len() / 2],
        scripts[scripts.len() - 1],
        events[events.len() / 2],
        events[events.len() - 1],
        events.len(),
        idle[idle.len() / 2]
    );
    b.close().await.unwrap();
}

//! Stable JSON shapes for `--output json` and exports: snake_case names,
//! verdicts as lowercase words, times in RFC 3339.

use serde_json::{Value, json};

use crate::pb;

pub fn verdict_str(v: i32) -> &'static str {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Verified) => "verified",
        Ok(pb::Verdict::Disputed) => "disputed",
        Ok(pb::Verdict::Unattributed) => "unattributed",
        _ => "unspecified",
    }
}

pub fn verdict_from_str(s: &str) -> Option<pb::Verdict> {
    match s {
        "verified" => Some(pb::Verdict::Verified),
        "disputed" => Some(pb::Verdict::Disputed),
        "unattributed" => Some(pb::Verdict::Unattributed),
        _ => None,
    }
}

pub fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

pub fn span(s: Option<pb::Span>) -> Value {
    let s = s.unwrap_or_default();
    json!({ "start": s.start, "end": s.end })
}

/// `articles/{article}/annotations/{id}` → (`article`, `id`).
fn split_name(name: &str) -> (&str, &str) {
    let rest = name.strip_prefix("articles/").unwrap_or(name);
    rest.split_once("/annotations/").unwrap_or((rest, ""))
}

/// One record of an annotation's history.
pub fn revision_json(r: &pb::AnnotationRevision) -> Value {
    json!({
        "annotation": r.annotation.as_ref().map(annotation_json),
        "revision": r.revision,
        "actor": r.actor,
        "change_time": time(r.change_time.as_ref()),
        "type": pb::annotation_event::Type::try_from(r.r#type).map(|t| t.as_str_name().to_lowercase()).unwrap_or_default(),
        "changed_fields": r.changed_fields.as_ref().map(|m| m.paths.clone()).unwrap_or_default(),
        "hash": r.hash,
        "previous_hash": r.previous_hash,
    })
}

pub fn annotation_json(a: &pb::Annotation) -> Value {
    let (article, id) = split_name(&a.name);
    json!({
        "name": a.name,
        "article": article,
        "id": id,
        "span": span(a.span),
        "quote": a.quote,
        "verdict": verdict_str(a.verdict),
        "note": a.note,
        "sources": a.sources,
        "analyst": a.analyst,
        "create_time": time(a.create_time.as_ref()),
        "update_time": time(a.update_time.as_ref()),
        "etag": a.etag,
    })
}

pub fn article_json(a: &pb::Article) -> Value {
    let name = a.name.split('@').next().unwrap_or_default();
    json!({
        "name": a.name,
        "id": name.trim_start_matches("articles/"),
        "title": a.title,
        "length": a.length,
        "sha256": a.sha256,
        "revision_id": a.revision_id,
        "revision_author": a.revision_author,
        "revision_create_time": time(a.revision_create_time.as_ref()),
        "source_url": a.source_url,
        "etag": a.etag,
    })
}

pub fn review_json(r: &pb::ArticleReview) -> Value {
    json!({
        "name": r.name,
        "total_count": r.total_count,
        "verified_count": r.verified_count,
        "disputed_count": r.disputed_count,
        "unattributed_count": r.unattributed_count,
        "covered_code_points": r.covered_code_points,
        "covered_fraction": r.covered_fraction,
        "contested_spans": r.contested_spans.iter().map(|c| json!({
            "span": span(c.span),
            "quote": c.quote,
            "verdicts": c.verdicts.iter().map(|&v| verdict_str(v)).collect::<Vec<_>>(),
            "annotations": c.annotations,
            "annotation_count": c.annotation_count,
            "adjudication": c.adjudication.as_ref().map(|a| json!({
                "name": a.name,
                "verdict": verdict_str(a.verdict),
                "rationale": a.rationale,
                "reviewer": a.reviewer,
            })),
        })).collect::<Vec<_>>(),
        "analyst_count": r.analyst_count,
        "last_update_time": time(r.last_update_time.as_ref()),
        "revision": r.revision,
        "state": review_state_str(r.state),
        "min_analysts": r.min_analysts,
        "needs_review_count": r.needs_review_count,
        "orphaned_count": r.orphaned_count,
        "article_revision": r.article_revision,
        "krippendorff_alpha": r.krippendorff_alpha,
        "etag": r.etag,
        "unresolved_contested_span_count": r.unresolved_contested_span_count,
        "sign_off": r.sign_off.as_ref().map(|s| json!({
            "reviewer": s.reviewer,
            "sign_off_time": time(s.sign_off_time.as_ref()),
            "revision": s.revision,
            "article_revision": s.article_revision,
        })),
        "pairwise_agreements": r.pairwise_agreements.iter().map(|p| json!({
            "analyst": p.analyst,
            "other_analyst": p.other_analyst,
            "krippendorff_alpha": p.krippendorff_alpha,
        })).collect::<Vec<_>>(),
    })
}

/// `not_started`, `in_progress`, `needs_adjudication`, `ready`.
pub fn review_state_str(s: i32) -> String {
    pb::ReviewState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("REVIEW_STATE_").to_lowercase())
        .unwrap_or_default()
}

//! JSON for `--output json`: API messages in the canonical proto3 JSON
//! mapping ([`message`]); the CLI's own summaries in the same style
//! (camelCase). Verdicts read as lowercase words or as enum value names.

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

/// `verified`, or `VERDICT_VERIFIED` as the JSON mapping writes it.
pub fn verdict_from_str(s: &str) -> Option<pb::Verdict> {
    match s {
        "verified" | "VERDICT_VERIFIED" => Some(pb::Verdict::Verified),
        "disputed" | "VERDICT_DISPUTED" => Some(pb::Verdict::Disputed),
        "unattributed" | "VERDICT_UNATTRIBUTED" => Some(pb::Verdict::Unattributed),
        _ => None,
    }
}

pub fn time(t: Option<&pbjson_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(rfc3339(t)))
}

/// A timestamp in RFC 3339, UTC, with a `Z` (what xsd:dateTime and the
/// W3C model want).
pub fn rfc3339(t: &pbjson_types::Timestamp) -> String {
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
    .to_string()
}

/// An API message in the canonical proto3 JSON mapping (camelCase names,
/// enum value names, 64-bit integers as strings, RFC 3339 times, default
/// values left out): what grpcurl and every proto3 tool print. Generated
/// (`pbjson-build`), never written by hand.
pub fn message<M: serde::Serialize>(m: &M) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// `not_started`, `in_progress`, `needs_adjudication`, `ready`.
pub fn review_state_str(s: i32) -> String {
    pb::ReviewState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("REVIEW_STATE_").to_lowercase())
        .unwrap_or_default()
}

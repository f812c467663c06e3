//! The answers Kollus reads (SPEC.md 5): `{"data": ...}` signed with the security key, sent as
//! `text/plain` with `X-Kollus-UserKey`; integer fields are JSON integers.

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::policy::{Decision, Reason};
use super::wire::DrmItem;
use crate::configuration::PlaySettings;
use crate::problem::ApiError;
use crate::signer::Signer;

fn bool_int(b: bool) -> i64 {
    i64::from(b)
}

/// The grant's expiry in Unix seconds, 0 for none; capped where Kollus caps it.
fn expiration_date(d: &Decision) -> i64 {
    const KOLLUS_MAX: i64 = 1_893_455_999;
    d.grant
        .as_ref()
        .filter(|_| d.allowed)
        .and_then(|g| g.expires_at)
        .map_or(0, |at| at.unix_timestamp().clamp(1, KOLLUS_MAX))
}

/// The play callback's `data` (SPEC.md 5.1): kind 1 sets the expiry, kind 3 approves.
pub fn play_data(settings: &PlaySettings, kind: i32, decision: &Decision) -> Value {
    let message = decision.reason.message(settings.lang);
    if kind == 1 {
        json!({
            "result": bool_int(decision.allowed),
            "message": message,
            "expiration_date": expiration_date(decision),
            "expiration_playtime": decision.playtime_left.unwrap_or(0),
            "vmcheck": bool_int(settings.vmcheck),
            "disable_tvout": bool_int(settings.disable_tvout),
        })
    } else {
        json!({
            "result": bool_int(decision.allowed),
            "message": message,
            "content_expired": bool_int(matches!(decision.reason, Reason::Expired | Reason::Revoked)),
        })
    }
}

/// One DRM answer item (SPEC.md 5.2), for its request item.
pub fn drm_item(settings: &PlaySettings, item: &DrmItem, d: &Decision) -> Value {
    let gone = matches!(
        d.reason,
        Reason::Expired | Reason::Revoked | Reason::NoEntitlement
    );
    json!({
        "kind": item.kind,
        "media_content_key": item.media.as_str(),
        "session_key": item.session_key.as_deref().unwrap_or(""),
        "start_at": item.start_at,
        "result": bool_int(d.allowed),
        "message": d.reason.message(settings.lang),
        "expiration_date": expiration_date(d),
        // No per-file play count is sold: 0 (no limit).
        "expiration_count": 0,
        "expiration_playtime": d.playtime_left.unwrap_or(0),
        "vmcheck": bool_int(settings.vmcheck),
        "content_expired": bool_int(item.kind == 3 && gone),
        "content_delete": bool_int(item.kind == 3 && matches!(d.reason, Reason::Revoked | Reason::NoEntitlement)),
    })
}

/// The answer Kollus reads: the JWT as `text/plain`, with our custom key.
pub fn signed(signer: &Signer, custom_key: &str, data: Value) -> Result<HttpResponse, ApiError> {
    let token = signer
        .sign(&json!({ "data": data }))
        .map_err(|e| ApiError::Internal(format!("signing the answer: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Kollus-UserKey", custom_key))
        .body(token))
}

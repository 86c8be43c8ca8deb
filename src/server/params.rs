//! Query and body parameters several resources share: a listing's page, an override's lifetime.

use chrono::{DateTime, Duration as Span, Utc};

use super::ApiError;

/// The largest page a listing returns.
pub const MAX_PAGE: i64 = 10_000;

/// A listing's page from its `limit` (default 1000, at most [`MAX_PAGE`]) and `offset`.
pub(super) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<crate::store::Page, ApiError> {
    let limit = limit.unwrap_or(1000);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    if offset < 0 {
        return Err(ApiError::Unprocessable(format!(
            "offset must not be negative, not {offset}"
        )));
    }
    Ok(crate::store::Page { limit, offset })
}

/// How many of the most recent entries a listing of recent things (runs, events) returns: its
/// `limit`, `default` when absent, 1 to 1000.
pub(super) fn recent(limit: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and 1000, not {limit}"
        )));
    }
    Ok(limit)
}

/// Longest override an HTTP change may ask for: one year.
const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;

/// When an override of `ttl_seconds` made at `now` ends.
pub(super) fn expiry(
    ttl_seconds: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match ttl_seconds {
        None => Ok(None),
        Some(ttl @ 1..=MAX_TTL_SECONDS) => Ok(Some(now + Span::seconds(ttl))),
        Some(ttl) => Err(ApiError::Unprocessable(format!(
            "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}, not {ttl}"
        ))),
    }
}

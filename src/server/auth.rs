//! API keys: the `Caller` extractor and role checks, over the replica's cached clients.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::domain::Role;
use crate::enforce::{identify, presented_key};
use crate::replica::Caller;

impl Caller {
    /// Refuses a caller whose role is below `needed` (reader < operator < admin).
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "client {} has role {}; this needs {needed}",
                self.name, self.role
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // The enforcement layers have usually identified the caller already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let bad = |e: crate::enforce::IdentityError| ApiError::BadRequest(e.to_string());
        if presented_key(&parts.headers).map_err(bad)?.is_none() {
            return Err(ApiError::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
            ));
        }
        let view = state.replica.view().await?;
        identify(&parts.headers, &view)
            .map_err(bad)?
            .ok_or_else(|| ApiError::Unauthorized("unknown or inactive API key".into()))
    }
}

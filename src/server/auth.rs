//! Callers as extractors: `Caller` for any active key, and `Reader`, `Operator`, `Admin`, so a
//! handler's signature says who may call it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::{Caller, identify, presented_key};
use crate::domain::Role;

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // The enforcement layers have usually identified the caller already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        if presented_key(&parts.headers)?.is_none() {
            return Err(ApiError::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
            ));
        }
        let view = state.replica.view().await?;
        identify(&parts.headers, &view.clients)?
            .ok_or_else(|| ApiError::Unauthorized("unknown or inactive API key".into()))
    }
}

/// Declares an extractor for callers with at least one role: 401 without a valid key, 403 with
/// a role too low, before any other input is looked at.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name(pub Caller);

        impl FromRequestParts<Arc<AppState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require($role)?;
                Ok($name(caller))
            }
        }
    };
}

role_extractor!(
    /// Any active client: readers read.
    Reader,
    Role::Reader
);
role_extractor!(
    /// An operator or an admin: writes under `/system/`.
    Operator,
    Role::Operator
);
role_extractor!(
    /// An admin: the admin console.
    Admin,
    Role::Admin
);

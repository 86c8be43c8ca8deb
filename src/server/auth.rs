//! API keys: the `Caller` extractor, role checks, and the cache of active clients.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::domain::{ClientName, KeySha256, Role};
use crate::store::{Db, Store as _, StoreError};

/// The authenticated client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: i64,
    pub name: ClientName,
    pub role: Role,
}

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

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(parts: &Parts) -> Option<&str> {
    key_in(&parts.headers)
}

fn key_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim)
        });
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

/// The caller a request's key names, if any (for layers that only need to know who asks).
pub async fn caller_of(headers: &axum::http::HeaderMap, state: &AppState) -> Option<Caller> {
    let key = key_in(headers)?;
    state
        .clients
        .lookup(&KeySha256::of_key(key), &state.db)
        .await
        .ok()
        .flatten()
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Some(key) = presented_key(parts).filter(|k| !k.is_empty()) else {
            return Err(ApiError::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
            ));
        };
        // Only the hash is ever compared or kept; the key is dropped with the request.
        let hash = KeySha256::of_key(key);
        match state.clients.lookup(&hash, &state.db).await? {
            Some(caller) => Ok(caller),
            None => Err(ApiError::Unauthorized("unknown or inactive API key".into())),
        }
    }
}

/// Active clients by key hash.
type ClientMap = Arc<HashMap<KeySha256, Caller>>;

/// Active clients by key hash, reloaded after `ttl` or when invalidated (a client changed).
pub struct ClientCache {
    /// The loaded map and when it was loaded; `None` until the first request or after an
    /// invalidation. A std lock: it is never held across an await.
    loaded: RwLock<Option<(Instant, ClientMap)>>,
    ttl: Duration,
}

impl ClientCache {
    /// A cache that reloads at least every `ttl` (changes made by a reconcile elsewhere).
    pub fn new(ttl: Duration) -> ClientCache {
        ClientCache {
            loaded: RwLock::new(None),
            ttl,
        }
    }

    /// Drops the cache so the next request reloads it: a deactivated key stops working at once.
    pub fn invalidate(&self) {
        if let Ok(mut loaded) = self.loaded.write() {
            *loaded = None;
        }
    }

    async fn lookup(&self, hash: &KeySha256, db: &Db) -> Result<Option<Caller>, StoreError> {
        let fresh = self.loaded.read().ok().and_then(|l| {
            l.as_ref()
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, map)| Arc::clone(map))
        });
        let map = match fresh {
            Some(map) => map,
            None => {
                let clients = db.active_clients().await?;
                let map: HashMap<KeySha256, Caller> = clients
                    .into_iter()
                    .map(|c| {
                        let caller = Caller {
                            id: c.id,
                            name: c.value.name,
                            role: c.value.role,
                        };
                        (c.value.key_sha256, caller)
                    })
                    .collect();
                let map = Arc::new(map);
                if let Ok(mut loaded) = self.loaded.write() {
                    *loaded = Some((Instant::now(), Arc::clone(&map)));
                }
                map
            }
        };
        Ok(map.get(hash).cloned())
    }
}

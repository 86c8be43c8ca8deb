//! Who calls: the key a request presents, the client it identifies, and role checks. Below both
//! the server and the enforcement layers, which identify callers alike.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::api_error::ApiError;
use crate::domain::{ClientName, ClientType, KeySha256, Role};

/// The header that carries a key without the `Bearer` scheme.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The header naming the end user a request is made for, for `user` rules.
pub const USER_HEADER: &str = "x-user-id";

/// The authenticated client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's id in the store.
    pub id: i64,
    pub name: ClientName,
    pub client_type: ClientType,
    pub role: Role,
}

impl Caller {
    /// Whether this caller's questions about a request spend the subject's budget: a gateway
    /// client's (whatever its role) and an operator's or admin's are; a reader may only ask.
    pub fn may_count(&self) -> bool {
        self.client_type == ClientType::Gateway || self.role >= Role::Operator
    }

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

/// Active clients by the hash of their key.
pub type Clients = imbl::HashMap<KeySha256, Caller>;

/// Identity headers a request sends ambiguously: whichever copy a layer read, another layer (or
/// a proxy in front) could read the other, so the request is refused (400) instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the {0} header is sent more than once; send it once")]
    Repeated(&'static str),
    #[error("Authorization and X-API-Key present different keys; send one key")]
    Conflicting,
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// The one value of header `name`, if it is sent; sent twice is an error.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, IdentityError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(IdentityError::Repeated(name));
    }
    Ok(first.and_then(|v| v.to_str().ok()).map(str::trim))
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>` (both, if
/// they agree).
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, IdentityError> {
    let bearer = single(headers, AUTHORIZATION.as_str())?
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let header = single(headers, API_KEY_HEADER)?.filter(|k| !k.is_empty());
    match (bearer, header) {
        (Some(a), Some(b)) if a != b => Err(IdentityError::Conflicting),
        (a, b) => Ok(a.or(b)),
    }
}

/// The end user a request names in `X-User-Id`, for `user` rules.
pub fn user_id(headers: &HeaderMap) -> Result<Option<&str>, IdentityError> {
    single(headers, USER_HEADER)
}

/// The active client whose key the request presents. Only the key's hash is compared, and a key
/// too short to carry 128 bits is not looked up at all.
pub fn identify(headers: &HeaderMap, clients: &Clients) -> Result<Option<Caller>, IdentityError> {
    Ok(identify_in(headers, clients)?.cloned())
}

/// [`identify`], borrowing the caller from `clients`.
pub fn identify_in<'c>(
    headers: &HeaderMap,
    clients: &'c Clients,
) -> Result<Option<&'c Caller>, IdentityError> {
    Ok(presented_key(headers)?.and_then(|key| known(key, clients)))
}

/// The active client whose key is `key`, if it is long enough to be one.
pub fn known<'c>(key: &str, clients: &'c Clients) -> Option<&'c Caller> {
    KeySha256::long_enough(key)
        .then(|| clients.get(&KeySha256::of_key(key)))
        .flatten()
}

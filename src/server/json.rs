//! Request bodies as JSON objects: serde reads a struct from an array of its fields too, so
//! `["x", 60]` was accepted where the documented body is an object. This extractor refuses any
//! body that is not an object (or `null`, where a body is optional) before deserializing it.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// A JSON object body deserialized into `T`; `Object<Option<T>>` also takes `null` as no body.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Object<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is buffered already (the body deadline reads it): looking at it is cheap.
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, super::BODY_LIMIT)
            .await
            .map_err(|_| ApiError::BadRequest("the request body could not be read".into()).into_response())?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        // An object, or `null` (no body, where one is optional), goes straight to serde; other
        // well-formed JSON is refused; malformed JSON gets axum's 400 below.
        if !matches!(first, Some(b'{' | b'n')) && serde_json::from_slice::<Value>(&bytes).is_ok() {
            let message = "the body must be a JSON object";
            return Err(ApiError::Unprocessable(message.into()).into_response());
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        // Content type, syntax and fields are axum's to refuse, with their usual answers.
        let axum::Json(value) = axum::Json::<T>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Object(value))
    }
}

/// No `Content-Type` is no body, as with axum's `Option<Json<T>>`.
impl<T: DeserializeOwned, S: Send + Sync> axum::extract::OptionalFromRequest<S> for Object<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if request.headers().get(axum::http::header::CONTENT_TYPE).is_none() {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(request, state)
            .await
            .map(Some)
    }
}

/// JSON Schema counts `60.0` as an integer; serde does not. These read a whole number written
/// either way into an integer field, and refuse a fraction or a value out of range.
pub mod whole {
    use serde::de::{Deserialize, Deserializer, Error};

    fn read<'de, D: Deserializer<'de>, T: TryFrom<i64>>(number: serde_json::Number) -> Result<T, D::Error> {
        let whole = match number.as_i64() {
            Some(n) => Some(n),
            None => number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64),
        };
        whole
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, not {number}")))
    }

    /// A required whole number.
    pub fn number<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        read::<D, T>(serde_json::Number::deserialize(d)?)
    }

    /// An optional whole number (`null` or absent is `None`; absent needs `#[serde(default)]`).
    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(read::<D, T>)
            .transpose()
    }
}

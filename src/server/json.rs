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
        if parts.headers.get(axum::http::header::CONTENT_TYPE)
            == Some(&axum::http::HeaderValue::from_static("application/json"))
        {
            // The usual request, read once more rather than twice: serde alone when the body
            // is good; axum's own reading (and answer, naming the bad field) when it is not.
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Ok(Object(value)),
                Err(_) => axum::Json::<T>::from_bytes(&bytes)
                    .map(|axum::Json(value)| Object(value))
                    .map_err(IntoResponse::into_response),
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "read by serde only")]
    struct Body {
        name: String,
        seconds: Option<u32>,
    }

    /// What `Object<Body>` answers to `body` sent as `content_type`: the status and body text.
    async fn answer(content_type: &str, body: &str) -> (u16, String) {
        let request = Request::builder()
            .method("POST")
            .header("content-type", content_type)
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        match Object::<Body>::from_request(request, &()).await {
            Ok(Object(value)) => (200, format!("{value:?}")),
            Err(response) => {
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// Plain `application/json` is read by a shorter way; every body gets the answer that the
    /// general way (any other JSON type) gives it.
    #[tokio::test]
    async fn plain_json_is_answered_as_any_json_type() {
        let bodies = [
            r#"{"name": "a", "seconds": 60}"#,
            r#"{"name": "a"}"#,
            r#"{"name": 1}"#,
            r#"{"name": "a", "seconds": -1}"#,
            r#"{"name": "a", "extra": true}"#,
            r#"{"seconds": 60}"#,
            r#"{"name": "a""#,
            r#"{"name": "a"} trailing"#,
            "",
            "null",
            "[1]",
        ];
        for body in bodies {
            let plain = answer("application/json", body).await;
            let general = answer("application/json; charset=utf-8", body).await;
            assert_eq!(plain, general, "{body}");
        }
        assert_eq!(answer("application/json", r#"{"name": 1}"#).await.0, 422);
        assert_eq!(answer("application/json", r#"{"name": "a"}"#).await.0, 200);
    }
}

//! The OpenAPI document: its frame, the API-key scheme, the answers every operation shares (from
//! layers and extractors rather than handlers), and `GET /openapi.json`.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Reader;
use super::{ApiError, AppState};

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// The OpenAPI document's frame; the paths come from the route registrations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "valhalla-ops",
        description = "The operations control plane of the Valhalla API platform: reads and emergency overrides."
    ),
    modifiers(&ApiKeyScheme)
)]
pub(super) struct ApiDoc;

/// Declares the API-key scheme every protected operation refers to.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key (`vk_…`); `X-API-Key: <key>` is accepted too."))
            .build();
        components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
    }
}

/// `GET /openapi.json` (reader): the OpenAPI 3 document of every route this server serves.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi_document",
    tag = "health",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The OpenAPI document", body = Object)
    )
)]
async fn openapi_json(Reader(_): Reader) -> Result<axum::Json<&'static utoipa::openapi::OpenApi>, ApiError> {
    Ok(axum::Json(document()))
}

/// The document, built once from the same registrations as the router.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = super::routes().1;
        utoipa::Modify::modify(&EnforcementResponses, &mut document);
        document
    })
}

/// Adds the answers that come from layers and extractors rather than handlers: 400, 413, 415 and
/// 422 where there is input to refuse, 429 where the rate limiter counts, 503 where the
/// maintenance mode can refuse.
struct EnforcementResponses;

impl utoipa::Modify for EnforcementResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let response = |description: &str| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body)
                    .build(),
            )
        };
        let malformed =
            response("Malformed request: a body that is not JSON, or a parameter of the wrong type");
        let too_large = response("The body is over 64 KiB");
        let not_json = response("The body is not `application/json`");
        let invalid = response("Well-formed but invalid input");
        let limited = response("Over a rate limit (code `rate_limited`); `Retry-After` says when to retry");
        let unauthorized = response("No valid API key");
        let forbidden = response("Role too low");
        let frozen = response("Refused by the maintenance mode; `Retry-After` when its end is known");
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                // Every operation that needs a key says what happens without one, or with a role
                // too low; the role extractors answer these before the handler runs.
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    let responses = &mut operation.responses.responses;
                    responses
                        .entry("401".into())
                        .or_insert_with(|| unauthorized.clone());
                    responses.entry("403".into()).or_insert_with(|| forbidden.clone());
                }
                let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                // Axum's extractors refuse before the handler runs; the JSON error layer gives
                // each refusal the documented body.
                if has_body || has_parameters {
                    responses.entry("400".into()).or_insert_with(|| malformed.clone());
                    responses.entry("422".into()).or_insert_with(|| invalid.clone());
                }
                if has_body {
                    responses.entry("413".into()).or_insert_with(|| too_large.clone());
                    responses.entry("415".into()).or_insert_with(|| not_json.clone());
                }
                if !super::exempt::unlimited(path) {
                    responses.entry("429".into()).or_insert_with(|| limited.clone());
                }
                if !super::exempt::always_served(path) {
                    responses.entry("503".into()).or_insert_with(|| frozen.clone());
                }
            }
        }
    }
}

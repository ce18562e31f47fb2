//! Who is asking: the API's bearer tokens. (Session cookies belong to the contributor pages
//! only, which read them themselves: the API never accepts a cookie, so no other site can make
//! a browser write through it.)

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{store, Actor};
use crate::error::Error;
use crate::state::AppState;

/// The actor of an API request, from its `Authorization: Bearer …` header.
pub struct ApiActor(pub Actor);

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| Error::Unauthorized {
                code: "authentication_required",
                detail: "en-tête Authorization: Bearer <jeton> requis / bearer token required"
                    .into(),
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let invalid = || Error::Unauthorized {
            code: "invalid_token",
            detail: "jeton inconnu ou révoqué / unknown or revoked token".into(),
        };
        let token = token.ok_or_else(invalid)?;
        store::actor_for_token(&state.store, token)
            .await?
            .map(ApiActor)
            .ok_or_else(invalid)
    }
}

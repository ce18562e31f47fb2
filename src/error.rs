//! The one error type of the application, its stable codes, and its answer as RFC 9457 problem details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Where a piece of input is wrong: a 1-based line of an input file (when there is one), a field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            row: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn at_row(mut self, row: u64) -> Self {
        self.row = Some(row);
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(
                f,
                "ligne {row}, champ « {} » : {}",
                self.field, self.message
            ),
            None => write!(f, "champ « {} » : {}", self.field, self.message),
        }
    }
}

/// Every failure the application reports. Each variant maps to one HTTP status and one stable `code`
/// that clients may rely on; the table is in the README.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} introuvable : {id}")]
    NotFound { what: &'static str, id: String },
    #[error("données invalides")]
    Invalid(Vec<FieldError>),
    /// Query parameters that cannot be understood; each error's `field` names the parameter.
    #[error("paramètres invalides")]
    InvalidParameters(Vec<FieldError>),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// No credentials, or credentials that are not (or no longer) valid: 401.
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    /// Authenticated, but not allowed: 403. The detail never says whether the target exists.
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// A conditional write whose `If-Match` no longer matches: 412.
    #[error("{detail}")]
    PreconditionFailed { code: &'static str, detail: String },
    /// A write that must be conditional came without `If-Match`: 428.
    #[error("{detail}")]
    PreconditionRequired { code: &'static str, detail: String },
    /// A body larger than the endpoint takes (a bulk upload): 413.
    #[error("{detail}")]
    PayloadTooLarge { code: &'static str, detail: String },
    /// Too many attempts or requests from one client: 429, with `Retry-After`.
    #[error("{detail}")]
    TooManyRequests {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// The server runs all the work it can take at once: 503, with `Retry-After`.
    #[error("{detail}")]
    Busy {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// A service the server relies on (an external geocoder) failed: 502.
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    /// A feature this instance was not configured with: 404.
    #[error("{detail}")]
    NotConfigured { code: &'static str, detail: String },
    #[error("erreur de base de données")]
    Database(#[from] sqlx::Error),
    #[error("erreur de migration")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    /// The one refusal of the permission rules: the same words whatever was asked, so that a
    /// refusal tells nothing about another organisation's data.
    pub fn forbidden() -> Self {
        Self::Forbidden {
            code: "forbidden",
            detail: "action non autorisée pour ce compte / not allowed for this account".into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Invalid(_) => "invalid_input",
            Error::InvalidParameters(_) => "invalid_parameter",
            Error::BadRequest { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Forbidden { code, .. }
            | Error::PreconditionFailed { code, .. }
            | Error::PreconditionRequired { code, .. }
            | Error::TooManyRequests { code, .. }
            | Error::Busy { code, .. }
            | Error::PayloadTooLarge { code, .. }
            | Error::Unavailable { code, .. }
            | Error::NotConfigured { code, .. } => code,
            Error::Database(e) if waited_too_long(e) => "server_busy",
            Error::Database(_) | Error::Migration(_) | Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } | Error::InvalidParameters(_) => StatusCode::BAD_REQUEST,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::PreconditionRequired { .. } => StatusCode::PRECONDITION_REQUIRED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            // Every database connection stayed busy for the pool's whole wait: an overload,
            // not a fault.
            Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(e) if waited_too_long(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unavailable { .. } => StatusCode::BAD_GATEWAY,
            // Not on this instance: the resource does not exist here (a 5xx would say the
            // server failed).
            Error::NotConfigured { .. } => StatusCode::NOT_FOUND,
            Error::Database(_) | Error::Migration(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// RFC 9457 problem details, extended with the stable `code` and, for invalid input, the list of errors.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:proximites:problem:{code}`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        let status = error.status();
        let internal = status == StatusCode::INTERNAL_SERVER_ERROR;
        let detail = match error {
            // An internal failure is logged in full but says nothing of the inside to the client.
            _ if internal => "Erreur interne du serveur / Internal server error".to_owned(),
            Error::Invalid(errors) | Error::InvalidParameters(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ; "),
            Error::Database(e) if waited_too_long(e) => "le serveur est surchargé : réessayez \
                 dans quelques secondes / the server is overloaded, retry shortly"
                .to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:proximites:problem:{}", error.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: error.code().to_owned(),
            errors: match error {
                Error::Invalid(errors) | Error::InvalidParameters(errors) => errors.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = ?self, "internal error");
        }
        let mut response = problem_response(self.status(), &Problem::from(&self));
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"proximites\""),
            );
        }
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl Error {
    /// How long a refused client should wait before trying again, for overloads.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests { retry_after, .. } | Error::Busy { retry_after, .. } => {
                Some(*retry_after)
            }
            Error::Database(e) if waited_too_long(e) => Some(crate::admission::RETRY_AFTER_SECONDS),
            _ => None,
        }
    }
}

/// Whether the database gave up waiting rather than failed: every connection of the pool stayed
/// busy, SQLite's write lock stayed taken past its busy timeout (`database is locked`), or a
/// PostgreSQL lock past its `lock_timeout` (SQLSTATE 55P03, a national load holding the entries'
/// table). An overload to retry (503), not a fault.
fn waited_too_long(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => {
            let code = e.code();
            // SQLITE_BUSY (5) and its extended codes; PostgreSQL's lock_not_available.
            matches!(code.as_deref(), Some("5" | "55P03"))
                || code
                    .as_deref()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 5)
        }
        _ => false,
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = Error::Internal(anyhow::anyhow!("secret path /var/lib/x"));
        let problem = Problem::from(&error);
        assert_eq!(problem.status, 500);
        assert_eq!(problem.code, "internal");
        assert!(!problem.detail.contains("secret"));
    }

    #[test]
    fn invalid_input_lists_row_and_field() {
        let error = Error::Invalid(vec![FieldError::new("lat", "hors de France").at_row(12)]);
        let problem = Problem::from(&error);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].row, Some(12));
        assert!(problem.detail.contains("ligne 12"));
        assert!(problem.detail.contains("lat"));
    }
}

//! Errors: [`ApiError`] for what stops the server from starting or running, and [`HttpError`]
//! for what one request answers with. An `HttpError` renders as `{"error", "code"}` JSON and never
//! carries SQL, connection strings or internal detail: those go to the log only.

use hyper::StatusCode;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no replica configured: pass --replica URL (or API_REPLICAS) or --replica-file")]
    NoReplicas,
    #[error("replica URL #{index} is not a valid PostgreSQL URL: {reason}")]
    BadReplicaUrl { index: usize, reason: String },
    #[error("cannot read the replica file {path}: {source}")]
    ReplicaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        addr: String,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a request can fail with, each variant one status and one stable `code` slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    InvalidId,
    InvalidLimit,
    InvalidQuery,
    ProductNotFound,
    RouteNotFound,
    MethodNotAllowed { allow: &'static str },
    UriTooLong,
    NoReplica,
    PoolTimeout,
    Overloaded,
    ShuttingDown,
    DeadlineExceeded,
    Internal,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::InvalidId | HttpError::InvalidLimit | HttpError::InvalidQuery => {
                StatusCode::BAD_REQUEST
            }
            HttpError::ProductNotFound | HttpError::RouteNotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::UriTooLong => StatusCode::URI_TOO_LONG,
            HttpError::NoReplica
            | HttpError::PoolTimeout
            | HttpError::Overloaded
            | HttpError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            HttpError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            HttpError::InvalidId => "invalid_id",
            HttpError::InvalidLimit => "invalid_limit",
            HttpError::InvalidQuery => "invalid_query",
            HttpError::ProductNotFound => "product_not_found",
            HttpError::RouteNotFound => "not_found",
            HttpError::MethodNotAllowed { .. } => "method_not_allowed",
            HttpError::UriTooLong => "uri_too_long",
            HttpError::NoReplica => "no_replica",
            HttpError::PoolTimeout => "pool_timeout",
            HttpError::Overloaded => "overloaded",
            HttpError::ShuttingDown => "shutting_down",
            HttpError::DeadlineExceeded => "deadline_exceeded",
            HttpError::Internal => "internal",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::InvalidId => "The product id must be a positive 32-bit integer.",
            HttpError::InvalidLimit => "The limit must be an integer from 1 to 100.",
            HttpError::InvalidQuery => "The query string is malformed.",
            HttpError::ProductNotFound => "No product has this id.",
            HttpError::RouteNotFound => "No such route.",
            HttpError::MethodNotAllowed { .. } => "This method is not allowed on this route.",
            HttpError::UriTooLong => "The request URI is too long.",
            HttpError::NoReplica => "No database replica is available; retry shortly.",
            HttpError::PoolTimeout => "The database is saturated; retry shortly.",
            HttpError::Overloaded => "The server is at its request limit; retry shortly.",
            HttpError::ShuttingDown => "The server is shutting down.",
            HttpError::DeadlineExceeded => "The request did not complete within its deadline.",
            HttpError::Internal => "An internal error occurred.",
        }
    }

    /// Seconds a client should wait before retrying, for the 503s.
    pub fn retry_after(&self) -> Option<&'static str> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some("1")
    }

    /// The JSON body: `{"error": "<sentence>", "code": "<slug>"}`.
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct ErrorBody {
            error: &'static str,
            code: &'static str,
        }
        serde_json::to_string(&ErrorBody {
            error: self.message(),
            code: self.code(),
        })
        .expect("two strings serialise")
    }
}

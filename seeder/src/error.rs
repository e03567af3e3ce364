//! The seeder's error type: every failure a user can cause or meet (bad URL, unreachable server,
//! missing table, a half-loaded database with other options, a malformed CSV row, a database the
//! write workload cannot rewrite) as one sentence.

use std::path::PathBuf;

/// Everything the library can fail with. The `Display` text is meant to be shown to a user as is.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the database URL is not valid ({0}); expected something like postgres://user:password@host:5432/dbname")]
    InvalidUrl(String),
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error(
        "table `{0}` does not exist in this database; run `seeder` (or `seeder import`) first"
    )]
    MissingTable(String),
    #[error("the database already holds a load of {existing} ({state}), but this run asks for {requested}; rerun with the same options to resume, or add --reset to drop it and start over")]
    OtherLoad {
        existing: String,
        requested: String,
        state: String,
    },
    #[error("tables products/related_items already hold rows that this seeder did not load; add --reset to drop them and start over")]
    ForeignRows,
    #[error("another seeder is loading this database right now ({holder}); waited {waited_secs:.1} s for it: wait for it to finish, or raise --lock-wait-secs")]
    Busy { holder: String, waited_secs: f64 },
    #[error("invalid options: {0}")]
    Options(String),
    #[error("the database is not ready for the write workload: {0}")]
    NotReady(String),
    #[error("{}: line {line}, column `{column}`: {reason} (value {value:?})", file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        column: String,
        value: String,
        reason: String,
    },
    #[error("{}: {reason}", file.display())]
    CsvFile { file: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context} failed: {reason}")]
    Database { context: String, reason: String },
}

/// A one-sentence reason from a tokio-postgres error: its `Display` alone says only "db error".
pub(crate) fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Wrap a database error with what we were doing when it happened.
pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SeedError {
    let context = context.into();
    move |e| {
        if e.as_db_error()
            .is_some_and(|d| *d.code() == tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        {
            let message = e.as_db_error().map(|d| d.message().to_string());
            let table = message
                .as_deref()
                .and_then(|m| m.split('"').nth(1))
                .unwrap_or("?")
                .to_string();
            return SeedError::MissingTable(table);
        }
        SeedError::Database {
            context,
            reason: pg_reason(&e),
        }
    }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SeedError {
    let context = context.into();
    move |source| SeedError::Io { context, source }
}

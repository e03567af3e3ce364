//! Secrets stay out of what other people can read: [`redact_url`] takes the passwords out of any
//! text before it is printed, logged or put in an error, and [`write_private`] writes a file only
//! its owner can read (the way URLs with passwords reach the processes that need them, with the
//! environment; a command line is readable by every local user through `ps`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a password is replaced with.
pub const REDACTED: &str = "***";

/// `text` with every password taken out: the password of each URL's user information
/// (`postgres://user:secret@host` becomes `postgres://user:***@host`, also in a comma-separated
/// list or a multi-host URL) and every `password=` value (libpq key/value strings and URL query
/// parameters). Anything else is left as it is, so the result still names the host, the port,
/// the database and the user.
pub fn redact_url(text: &str) -> String {
    redact_parameters(&redact_user_info(text))
}

/// The `user:password@` part of every `scheme://` in `text`, password replaced.
fn redact_user_info(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let (head, tail) = rest.split_at(found + 3);
        out.push_str(head);
        // The user information ends at the last `@` before the path, the query, the fragment,
        // a space, or the next URL of a list: an unencoded `@` or `,` in a password stays inside.
        let next_url = tail.find("://").unwrap_or(tail.len());
        let authority_end = tail[..next_url]
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(next_url);
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                let user_info = &tail[..at];
                match user_info.find(':') {
                    Some(colon) => {
                        out.push_str(&user_info[..colon + 1]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(user_info),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Every `password=value` in `text` (any case), value replaced; a quoted value (`'...'`) up to
/// its closing quote, a plain one up to a space, `&`, `,` or `;`.
fn redact_parameters(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let value_start = from + found + KEY.len();
        out.push_str(&text[from..value_start]);
        let value = &text[value_start..];
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote (libpq escapes a quote inside as \').
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + end.min(quoted.len())
        } else {
            value
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ',' | ';'))
                .unwrap_or(value.len())
        };
        if len > 0 {
            out.push_str(REDACTED);
        }
        from = value_start + len;
    }
    out.push_str(&text[from..]);
    out
}

/// Writes `contents` to `path`, readable and writable by its owner only (0600) from the moment
/// it exists; an existing file is truncated and closed to others first.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // `mode` applies to a new file only: an older one is closed before anything is written.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.set_len(0)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_everything_but_its_password() {
        for (text, redacted) in [
            (
                "postgres://related_api:s3cret@127.0.0.1:5433/related",
                "postgres://related_api:***@127.0.0.1:5433/related",
            ),
            (
                "postgresql://postgres:pw@localhost",
                "postgresql://postgres:***@localhost",
            ),
            // No password: nothing to take out.
            (
                "postgres://related_api@127.0.0.1:5433/related",
                "postgres://related_api@127.0.0.1:5433/related",
            ),
            (
                "http://127.0.0.1:8080/metrics",
                "http://127.0.0.1:8080/metrics",
            ),
            ("postgres://h/db", "postgres://h/db"),
            // An unencoded `@` or `,` inside the password.
            ("postgres://u:p@ss@h:1/db", "postgres://u:***@h:1/db"),
            ("postgres://u:a,b@h/db", "postgres://u:***@h/db"),
            // An empty password is still a password field.
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
            // Multi-host URL.
            (
                "postgres://u:pw@h1:5432,h2:5433/db",
                "postgres://u:***@h1:5432,h2:5433/db",
            ),
        ] {
            assert_eq!(redact_url(text), redacted, "{text}");
        }
    }

    #[test]
    fn every_url_of_a_list_or_a_sentence_is_redacted() {
        assert_eq!(
            redact_url("postgres://a:one@h1:1/db,postgres://b:two@h2:2/db"),
            "postgres://a:***@h1:1/db,postgres://b:***@h2:2/db"
        );
        assert_eq!(
            redact_url("postgres://a:one@h1,postgres://b:two@h2"),
            "postgres://a:***@h1,postgres://b:***@h2"
        );
        assert_eq!(
            redact_url("cannot reach postgres://u:pw@127.0.0.1:1/related: refused"),
            "cannot reach postgres://u:***@127.0.0.1:1/related: refused"
        );
        assert_eq!(
            redact_url("api --replica postgres://u:pw@h/db --listen 127.0.0.1:80"),
            "api --replica postgres://u:***@h/db --listen 127.0.0.1:80"
        );
    }

    #[test]
    fn password_parameters_are_redacted() {
        assert_eq!(
            redact_url("host=127.0.0.1 port=5432 user=postgres password=s3cret application_name=x"),
            "host=127.0.0.1 port=5432 user=postgres password=*** application_name=x"
        );
        assert_eq!(
            redact_url("host=h PASSWORD='with space \\' quote' user=u"),
            "host=h PASSWORD=*** user=u"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=pw&x=1"),
            "postgres://u@h/db?sslmode=disable&password=***&x=1"
        );
        assert_eq!(redact_url("password="), "password=");
        assert_eq!(redact_url("no secrets here"), "no secrets here");
    }

    #[test]
    fn redacted_text_holds_no_password() {
        let secret = "Zq8RkT2mW9xLp4Vn7Hs1Jd6Y";
        for text in [
            format!("postgres://postgres:{secret}@127.0.0.1:5432/related"),
            format!("host=127.0.0.1 password={secret}"),
            format!("PGPASSWORD={secret} pg_basebackup -d 'password={secret}'"),
        ] {
            assert!(!redact_url(&text).contains(secret), "{text}");
        }
    }

    #[test]
    fn private_files_are_for_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "an older, longer, world-readable file").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "s3cret\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let fresh = dir.path().join("fresh");
        write_private(&fresh, "x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

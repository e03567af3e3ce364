//! The request's parameters: the product id in the path and `limit` in the query string, each
//! checked strictly (plain digits, a bounded range, a well-formed query string), so that every
//! malformed id or `limit` gets its 400 from here.

use crate::error::HttpError;

const DEFAULT_LIMIT: u16 = 16;
const MAX_LIMIT: u16 = 100;

/// A positive 32-bit integer written as plain decimal digits: no sign, no spaces, no
/// decimals, no encodings.
pub fn parse_id(text: &str) -> Result<i32, HttpError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::InvalidId);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 && n <= i32::MAX as u64 => Ok(n as i32),
        _ => Err(HttpError::InvalidId),
    }
}

/// The longest query string accepted: `limit=100` and a few tracking parameters fit many times
/// over; anything longer is not a storefront widget's request.
pub const MAX_QUERY_BYTES: usize = 1024;

/// `limit` from the query string: 1 to 100, default 16; given twice is an error (which one
/// would the client mean?). Other parameters are ignored, but the whole query string must be
/// well formed: every `%` followed by two hex digits, at most [`MAX_QUERY_BYTES`] long. Names
/// and values are percent-decoded first, so `%6Cimit=5` is `limit=5`.
pub fn parse_limit(query: Option<&str>) -> Result<u16, HttpError> {
    let Some(query) = query else {
        return Ok(DEFAULT_LIMIT);
    };
    if query.len() > MAX_QUERY_BYTES {
        return Err(HttpError::InvalidQuery);
    }
    let mut limit = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name).ok_or(HttpError::InvalidQuery)?;
        let value = percent_decode(value).ok_or(HttpError::InvalidQuery)?;
        if name != b"limit" {
            continue;
        }
        if limit.is_some() {
            return Err(HttpError::InvalidLimit);
        }
        if value.is_empty() || value.len() > 3 || !value.iter().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::InvalidLimit);
        }
        let n = value.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(1..=MAX_LIMIT).contains(&n) {
            return Err(HttpError::InvalidLimit);
        }
        limit = Some(n);
    }
    Ok(limit.unwrap_or(DEFAULT_LIMIT))
}

/// Percent-decoding of one query component (`+` is a space); `None` when a `%` is not
/// followed by two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let digit = |b: u8| (b as char).to_digit(16);
                out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("2147483647"), Ok(i32::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            "2147483648",
            "99999999999",
            "1e3",
            "abc",
            " 1",
            "%31",
        ] {
            assert_eq!(parse_id(bad), Err(HttpError::InvalidId), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None), Ok(16));
        assert_eq!(parse_limit(Some("limit=5")), Ok(5));
        assert_eq!(parse_limit(Some("x=1&limit=100")), Ok(100));
        for bad in [
            "limit=0",
            "limit=101",
            "limit=",
            "limit",
            "limit=-1",
            "limit=1&limit=2",
            "limit=1e2",
            "limit=99999999999",
            "limit=%35%00",
            "%6Cimit=0",
        ] {
            assert_eq!(
                parse_limit(Some(bad)),
                Err(HttpError::InvalidLimit),
                "{bad:?}"
            );
        }
        assert_eq!(parse_limit(Some("%6Cimit=%35")), Ok(5), "decoded first");
        assert_eq!(parse_limit(Some("utm=a+b%20c&limit=7")), Ok(7));
    }

    #[test]
    fn malformed_or_oversized_query_strings_are_refused() {
        let long = format!("limit=5&x={}", "a".repeat(MAX_QUERY_BYTES));
        for bad in ["%zz=1", "x=%", "x=%4", "limit=5&q=%G1", long.as_str()] {
            assert_eq!(
                parse_limit(Some(bad)),
                Err(HttpError::InvalidQuery),
                "{bad:?}"
            );
        }
    }
}

//! Rendering query results to response bodies with their strong ETags.

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::Serialize;

use crate::query::RelatedItem;

/// A finished 200 body and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl Rendered {
    pub(crate) fn new(body: Vec<u8>) -> Self {
        // A strong validator: the same bytes give the same tag on every instance, so a client
        // revalidating against another instance behind the balancer still gets its 304.
        let hash = xxhash_rust::xxh3::xxh3_64(&body);
        let etag =
            HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is a valid header");
        Rendered {
            body: Bytes::from(body),
            etag,
        }
    }
}

#[derive(Serialize)]
struct RelatedBody<'a> {
    product_id: i32,
    items: &'a [RelatedItem],
}

/// `{"product_id": 42, "items": [...]}`.
pub fn related(product_id: i32, items: &[RelatedItem]) -> Rendered {
    Rendered::new(serde_json::to_vec(&RelatedBody { product_id, items }).expect("serialisable"))
}

/// The compatibility route's bare array.
pub fn compat(items: &[RelatedItem]) -> Rendered {
    Rendered::new(serde_json::to_vec(items).expect("serialisable"))
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks for
/// this header; `*` matches anything).
pub fn if_none_match(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(text) = header.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or("");
    text.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

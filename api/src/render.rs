//! Rendering query results to response bodies with their strong ETags.

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::Serialize;

use crate::query::RelatedItems;

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
    items: Cards<'a>,
}

/// A product's cards as a JSON array, rendered straight from its text buffer.
struct Cards<'a>(&'a RelatedItems);

impl Serialize for Cards<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.items())
    }
}

/// `{"product_id": 42, "items": [...]}`.
pub fn related(found: &RelatedItems) -> Rendered {
    Rendered::new(to_json(
        found.len(),
        &RelatedBody {
            product_id: found.product_id,
            items: Cards(found),
        },
    ))
}

/// The compatibility route's bare array.
pub fn compat(found: &RelatedItems) -> Rendered {
    Rendered::new(to_json(found.len(), &Cards(found)))
}

/// The compatibility route's answer for an unknown product: `[]`.
pub fn compat_empty() -> Rendered {
    Rendered::new(b"[]".to_vec())
}

/// The JSON of `value` in a buffer sized up front for `items` cards: grown from empty it was
/// copied about eight times per body (`memmove` and `malloc` in the uncached profile).
fn to_json(items: usize, value: &impl Serialize) -> Vec<u8> {
    // A card of the seeded catalog is about 210 bytes; real names may be longer (then the
    // buffer grows as before).
    let mut body = Vec::with_capacity(64 + 256 * items);
    serde_json::to_writer(&mut body, value).expect("serialisable");
    // Cached bodies keep their buffer: give back the spare room (glibc shrinks in place).
    body.shrink_to_fit();
    body
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::RelatedItem;

    fn two_cards() -> RelatedItems {
        let mut found = RelatedItems::new(42);
        for (id, name) in [(7, "Café \"Ünïcode\" mug"), (9, "Plain\\tea")] {
            found.push(RelatedItem {
                id,
                name,
                category: "Kitchen",
                price_cents: 1299,
                image_url: "https://img.example/7.jpg",
                rating: 4.5,
                review_count: 12,
            });
        }
        found
    }

    #[test]
    fn bodies_render_every_card_in_order_with_escapes() {
        let card = |id, name| {
            format!(
                r#"{{"id":{id},"name":{name},"category":"Kitchen","price_cents":1299,"image_url":"https://img.example/7.jpg","rating":4.5,"review_count":12}}"#
            )
        };
        let cards = format!(
            "[{},{}]",
            card(7, r#""Café \"Ünïcode\" mug""#),
            card(9, r#""Plain\\tea""#)
        );
        let found = two_cards();
        assert_eq!(compat(&found).body, cards);
        assert_eq!(
            related(&found).body,
            format!(r#"{{"product_id":42,"items":{cards}}}"#)
        );
        assert_eq!(compat_empty().body, "[]");
    }

    #[test]
    fn a_cut_list_renders_only_its_first_cards() {
        let mut found = two_cards();
        found.truncate(1);
        let body = compat(&found).body;
        assert!(body.starts_with(b"[{\"id\":7,") && !body.windows(7).any(|w| w == b"\"id\":9,"));
        let same = related(&two_cards());
        assert_eq!(
            same.etag,
            related(&two_cards()).etag,
            "same bytes, same tag"
        );
    }
}

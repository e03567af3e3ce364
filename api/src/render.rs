//! Rendering query results to response bodies with their strong ETags.

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::ser::{CompactFormatter, Formatter};

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
        // `"` and 16 hex digits, written in place (no formatting machinery per response).
        let mut tag = [b'"'; 18];
        for (i, digit) in tag[1..17].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(hash >> (60 - 4 * i)) as usize & 0xf];
        }
        let etag = HeaderValue::from_bytes(&tag).expect("hex is a valid header");
        Rendered {
            body: Bytes::from(body),
            etag,
        }
    }
}

/// `{"product_id": 42, "items": [...]}`.
pub fn related(found: &RelatedItems) -> Rendered {
    let mut body = body_for(found.len());
    body.extend_from_slice(b"{\"product_id\":");
    write_i32(&mut body, found.product_id);
    body.extend_from_slice(b",\"items\":");
    write_cards(&mut body, found);
    body.push(b'}');
    Rendered::new(finish(body))
}

/// The compatibility route's bare array.
pub fn compat(found: &RelatedItems) -> Rendered {
    let mut body = body_for(found.len());
    write_cards(&mut body, found);
    Rendered::new(finish(body))
}

/// The compatibility route's answer for an unknown product: `[]`.
pub fn compat_empty() -> Rendered {
    Rendered::new(b"[]".to_vec())
}

/// A buffer sized up front for `items` cards: grown from empty it was copied about eight
/// times per body (`memmove` and `malloc` in the uncached profile).
fn body_for(items: usize) -> Vec<u8> {
    // A card of the seeded catalog is about 210 bytes; real names may be longer (then the
    // buffer grows as before).
    Vec::with_capacity(64 + 256 * items)
}

/// Cached bodies keep their buffer: give back the spare room (glibc shrinks in place).
fn finish(mut body: Vec<u8>) -> Vec<u8> {
    body.shrink_to_fit();
    body
}

/// The cards as a JSON array, written field by field: the bytes serde_json writes for
/// [`RelatedItem`]'s `Serialize` (a unit test holds them equal), without escaping the
/// seven keys of every card again and checking each text byte against the escape table one at
/// a time (serde_json's string writer was the API's largest user-space cost when uncached).
fn write_cards(out: &mut Vec<u8>, found: &RelatedItems) {
    out.push(b'[');
    for (i, card) in found.items().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_i32(out, card.id);
        out.extend_from_slice(b",\"name\":");
        write_str(out, card.name);
        out.extend_from_slice(b",\"category\":");
        write_str(out, card.category);
        out.extend_from_slice(b",\"price_cents\":");
        write_i32(out, card.price_cents);
        out.extend_from_slice(b",\"image_url\":");
        write_str(out, card.image_url);
        out.extend_from_slice(b",\"rating\":");
        write_f64(out, card.rating);
        out.extend_from_slice(b",\"review_count\":");
        write_i32(out, card.review_count);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_i32(out: &mut Vec<u8>, value: i32) {
    CompactFormatter
        .write_i32(out, value)
        .expect("writing to a Vec cannot fail");
}

/// As serde_json writes an `f64`: shortest round-trip digits, `null` when not finite.
fn write_f64(out: &mut Vec<u8>, value: f64) {
    // A rating is a numeric(2,1): the f64 nearest to a number of tenths, whose shortest digits
    // are those tenths ("4.3", "5.0"), written without the shortest-digits search.
    let tenths = (value * 10.0).round();
    if value.is_sign_positive() && tenths < 100.0 && tenths / 10.0 == value {
        let tenths = tenths as u8;
        out.extend_from_slice(&[b'0' + tenths / 10, b'.', b'0' + tenths % 10]);
        return;
    }
    if value.is_finite() {
        CompactFormatter
            .write_f64(out, value)
            .expect("writing to a Vec cannot fail");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string. Text without a quote, a backslash or a control character (all the seeded
/// catalog, nearly all real text) is copied as it is; the check has no early exit so that it
/// runs over whole words at a time. Anything else goes through serde_json's own escaping.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let plain = !text.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
    }
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
        let cards =
            [(7, "Café \"Ünïcode\" mug"), (9, "Plain\\tea")].map(|(id, name)| RelatedItem {
                id,
                name,
                category: "Kitchen",
                price_cents: 1299,
                image_url: "https://img.example/7.jpg",
                rating: 4.5,
                review_count: 12,
            });
        RelatedItems::from_items(42, cards)
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
        let hash = xxhash_rust::xxh3::xxh3_64(cards.as_bytes());
        assert_eq!(compat(&found).etag, format!("\"{hash:016x}\"").as_str());
    }

    #[test]
    fn hand_written_cards_are_the_bytes_serde_json_writes() {
        // Every ASCII byte (controls, quote, backslash, DEL), multi-byte text, numbers at
        // their edges, ratings in tenths and not, and those serde_json writes in exponent form
        // or as null.
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let texts = [
            "",
            "plain",
            every_ascii.as_str(),
            "Café \"Ünïcode\" mug",
            "tab\there\nline\u{1f}\u{7f}\\end",
            "雪 ❄ 🎿",
        ];
        let numbers = [0, 1, -1, 42, i32::MAX, i32::MIN];
        let mut ratings = vec![
            -0.0,
            -2.5,
            1e-7,
            1e21,
            0.1 + 0.2,
            4.35,
            9.95,
            99.9,
            f64::NAN,
            f64::INFINITY,
        ];
        // Every number of tenths a rating can hold, and past it.
        ratings.extend((0..=120).map(|tenths| f64::from(tenths) / 10.0));
        let items = ratings
            .into_iter()
            .enumerate()
            .map(|(i, rating)| RelatedItem {
                id: numbers[i % numbers.len()],
                name: texts[i % texts.len()],
                category: texts[(i + 1) % texts.len()],
                price_cents: numbers[(i + 2) % numbers.len()],
                image_url: texts[(i + 2) % texts.len()],
                rating,
                review_count: numbers[(i + 3) % numbers.len()],
            });
        let found = RelatedItems::from_items(-7, items);
        let cards: Vec<RelatedItem<'_>> = found.items().collect();
        let expected = serde_json::to_string(&cards).unwrap();
        assert_eq!(compat(&found).body, expected);
        assert_eq!(
            related(&found).body,
            format!(r#"{{"product_id":-7,"items":{expected}}}"#)
        );
        let empty = RelatedItems::new(3);
        assert_eq!(compat(&empty).body, "[]");
        assert_eq!(related(&empty).body, r#"{"product_id":3,"items":[]}"#);
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

//! The one query the API runs: its SQL, and turning its rows into [`RelatedItems`]. The
//! connections it runs on, with the statements prepared once each, are `connection`'s.
//!
//! The SQL reads the product row and LEFT JOINs LATERAL its related rows, so one round trip
//! tells an unknown product (no row at all: 404) from a product without relations (one row with
//! NULL item columns: 200 with empty items). The id and limit are bind parameters of a prepared
//! statement: no SQL is ever built from request text.
//!
//! Two things the database would do for every lookup are done here instead: the rows are put
//! in position order by `products_of` rather than by an outer `ORDER BY`, and the `numeric`
//! rating is decoded from its binary form (`Rating`) rather than cast to `float8`, which
//! PostgreSQL does through the number's text. Together they were about a tenth of the
//! database's time per lookup (results/api.md, runs Y and Z).

use serde::Serialize;
use tokio_postgres::types::{FromSql, Type};

mod connection;
mod numeric;
pub use connection::{ConnectError, ConnectSignals, PgConnectionManager, ReplicaConnection};
use numeric::Rating;

/// The related-items query around a `WHERE` on the outer product rows: one text for
/// [`RELATED_SQL`] and [`RELATED_MANY_SQL`], so they cannot drift apart. The lateral's
/// `ORDER BY ... LIMIT` picks the first items by position; the order the rows come back in is
/// left to the plan, and [`products_of`] checks it (the position is the last column).
macro_rules! related_sql {
    ($products:literal) => {
        concat!(
            "SELECT p.id, r.id, r.name, r.category, r.price_cents, r.image_url, r.rating, r.review_count, r.position
FROM products p
LEFT JOIN LATERAL (
    SELECT q.id, q.name, q.category, q.price_cents, q.image_url, q.rating, q.review_count, ri.position
    FROM related_items ri
    JOIN products q ON q.id = ri.related_id
    WHERE ri.product_id = p.id
    ORDER BY ri.position
    LIMIT $2
) r ON true
WHERE ",
            $products
        )
    };
}

/// The API's SQL.
pub const RELATED_SQL: &str = related_sql!("p.id = $1");

/// [`RELATED_SQL`] for several products at once (the batching of [`crate::replicas::batch`]):
/// the same LEFT JOIN LATERAL per product, over an array of distinct ids, with the largest limit
/// of the batch (each request cuts its own). `p.id` leads every row so the rows can be split
/// back per product; an id without a row is an unknown product, exactly as for one id.
pub const RELATED_MANY_SQL: &str = related_sql!("p.id = ANY($1::int4[])");

/// The health check: whether the server is a standby, how far it has received WAL and how far
/// it has replayed it. The lag is worked out from successive readings (`ReplayLag`) rather than
/// from `pg_last_xact_replay_timestamp()`, which makes an idle replica whose last commit is old
/// look minutes late the moment it replays anything.
pub const REPLAY_SQL: &str =
    "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()";

/// One card of the carousel: its text borrowed from its [`RelatedItems`]. Its `Serialize` is
/// the response format; `render` writes the same bytes field by field (a unit test holds
/// them equal), so a field added here must be added there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RelatedItem<'a> {
    pub id: i32,
    pub name: &'a str,
    pub category: &'a str,
    pub price_cents: i32,
    pub image_url: &'a str,
    pub rating: f64,
    pub review_count: i32,
}

/// A known product's related items, in position order.
///
/// The cards' text (name, category, image URL) lives in one buffer per product rather than
/// three strings per card: on the uncached path those 48 allocations and frees per request
/// were most of the API's `malloc` time.
#[derive(Debug, Clone, PartialEq)]
pub struct RelatedItems {
    pub product_id: i32,
    cards: Vec<Card>,
    text: String,
}

/// A card with its text as byte ranges of [`RelatedItems::text`].
#[derive(Debug, Clone, PartialEq)]
struct Card {
    id: i32,
    /// Where name, category and image URL end in the text; each starts where the one before
    /// ended (the card's first where the previous card's last ended, or at 0).
    ends: [u32; 3],
    price_cents: i32,
    rating: f64,
    review_count: i32,
}

impl RelatedItems {
    pub fn new(product_id: i32) -> Self {
        Self {
            product_id,
            cards: Vec::new(),
            text: String::new(),
        }
    }

    /// A product's cards, in position order (the query path builds its products from rows
    /// instead: `products_of`).
    pub fn from_items<'a>(
        product_id: i32,
        items: impl IntoIterator<Item = RelatedItem<'a>>,
    ) -> Self {
        let mut unchecked = UncheckedItems::new(product_id);
        for item in items {
            unchecked.push(
                item.id,
                [
                    item.name.as_bytes(),
                    item.category.as_bytes(),
                    item.image_url.as_bytes(),
                ],
                item.price_cents,
                item.rating,
                item.review_count,
            );
        }
        unchecked.check().expect("every part is a str")
    }

    pub fn len(&self) -> usize {
        self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    /// Keeps the first `n` cards.
    pub fn truncate(&mut self, n: usize) {
        self.cards.truncate(n);
    }

    /// The cards, in position order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = RelatedItem<'_>> + Clone + '_ {
        self.cards.iter().enumerate().map(|(i, c)| {
            let part = |from: u32, to: u32| &self.text[from as usize..to as usize];
            let start = i.checked_sub(1).map_or(0, |prev| self.cards[prev].ends[2]);
            RelatedItem {
                id: c.id,
                name: part(start, c.ends[0]),
                category: part(c.ends[0], c.ends[1]),
                price_cents: c.price_cents,
                image_url: part(c.ends[1], c.ends[2]),
                rating: c.rating,
                review_count: c.review_count,
            }
        })
    }
}

/// Offsets fit in `u32`: a product's text is at most 16 * 3 short columns (and a product
/// that somehow held 4 GiB of text would already have failed to load).
fn text_offset(text: &[u8]) -> u32 {
    u32::try_from(text.len()).expect("a product's text is under 4 GiB")
}

/// A product's related items while their rows are read: the texts appended as bytes, checked
/// as UTF-8 once at the end ([`UncheckedItems::check`]).
struct UncheckedItems {
    product_id: i32,
    cards: Vec<Card>,
    text: Vec<u8>,
}

impl UncheckedItems {
    fn new(product_id: i32) -> Self {
        Self {
            product_id,
            cards: Vec::new(),
            text: Vec::new(),
        }
    }

    /// Appends a card: its name, category and image URL as bytes.
    fn push(
        &mut self,
        id: i32,
        texts: [&[u8]; 3],
        price_cents: i32,
        rating: f64,
        review_count: i32,
    ) {
        if self.cards.is_empty() {
            // A card of the seeded catalog holds about 130 bytes of text.
            self.cards.reserve(16);
            self.text.reserve(16 * 160);
        }
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip(texts) {
            self.text.extend_from_slice(part);
            *end = text_offset(&self.text);
        }
        self.cards.push(Card {
            id,
            ends,
            price_cents,
            rating,
            review_count,
        });
    }

    /// The product, if its texts are UTF-8: all of them, and each card's three on their own
    /// (their ends fall between characters; the column-by-column check saw to that before).
    fn check(self) -> Option<RelatedItems> {
        let text = String::from_utf8(self.text).ok()?;
        let ends = self.cards.iter().flat_map(|c| c.ends);
        if !ends
            .into_iter()
            .all(|end| text.is_char_boundary(end as usize))
        {
            return None;
        }
        Some(RelatedItems {
            product_id: self.product_id,
            cards: self.cards,
            text,
        })
    }
}

/// What the query found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(RelatedItems),
    UnknownProduct(i32),
}

/// Runs the prepared statement for one product.
pub async fn query_related(
    conn: &ReplicaConnection,
    product_id: i32,
    limit: i64,
) -> Result<Lookup, tokio_postgres::Error> {
    let rows = conn
        .client
        .query(&conn.related, &[&product_id, &limit])
        .await?;
    Ok(match products_of(&rows)?.pop() {
        Some(found) => Lookup::Found(found),
        None => Lookup::UnknownProduct(product_id),
    })
}

/// The products in `rows` with their related items, each in position order. Every row leads
/// with its product's id and ends with the item's position; a product without relations has
/// one row whose item columns are NULL.
///
/// With the primary keys' indexes the rows come in product, then position order (an index scan
/// of the ids, then each product's items from its index range); without them (the journey's
/// first stage) the products come in table order. Without an outer `ORDER BY` nothing promises
/// either, so rows not in product, then position order are sorted here first, which the
/// database would otherwise do for every lookup.
///
/// A product's texts are checked as UTF-8 once, all together, rather than column by column (the
/// per-column checks were 2.3% of the API's CPU when uncached; results/api.md, run M). Only if
/// that check fails are the rows decoded column by column, to name the column in the error.
fn products_of(rows: &[tokio_postgres::Row]) -> Result<Vec<RelatedItems>, tokio_postgres::Error> {
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        keys.push((row.try_get(0)?, row.try_get(8)?));
    }
    match reading_order(&keys) {
        None => products_in_order(rows.iter().zip(&keys), rows),
        Some(order) => products_in_order(order.iter().map(|&i| (&rows[i], &keys[i])), rows),
    }
}

/// A row's place: its product, then its item's position (`None`, first, for the one row of a
/// product without relations).
type RowKey = (i32, Option<i16>);

/// The order to read rows in by their keys: `None` when they already are in product, then
/// position order (as an index plan returns them), else their indexes sorted by key.
fn reading_order(keys: &[RowKey]) -> Option<Vec<usize>> {
    if keys.windows(2).all(|pair| pair[0] < pair[1]) {
        return None;
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    Some(order)
}

/// [`products_of`] over rows in product, then position order (`all` is every row, for the
/// error of a text that is not UTF-8).
fn products_in_order<'r>(
    rows: impl Iterator<Item = (&'r tokio_postgres::Row, &'r RowKey)>,
    all: &[tokio_postgres::Row],
) -> Result<Vec<RelatedItems>, tokio_postgres::Error> {
    let mut found: Vec<RelatedItems> = Vec::new();
    let mut current: Option<UncheckedItems> = None;
    for (row, &(product_id, _)) in rows {
        if current.as_ref().is_none_or(|c| c.product_id != product_id) {
            if let Some(done) = current.replace(UncheckedItems::new(product_id)) {
                found.push(done.check().ok_or_else(|| first_text_error(all))?);
            }
        }
        let Some(id) = row.try_get::<_, Option<i32>>(1)? else {
            continue;
        };
        let text = |i| row.try_get::<_, TextBytes<'_>>(i).map(|t| t.0);
        current.as_mut().expect("set above").push(
            id,
            [text(2)?, text(3)?, text(5)?],
            row.try_get(4)?,
            row.try_get::<_, Rating>(6)?.0,
            row.try_get(7)?,
        );
    }
    if let Some(done) = current {
        found.push(done.check().ok_or_else(|| first_text_error(all))?);
    }
    Ok(found)
}

/// The error of the first text column that is not UTF-8, as tokio-postgres reports it. Called
/// only when a product's texts failed [`UncheckedItems::check`], so one of them is not UTF-8:
/// texts that each are UTF-8 are UTF-8 together and end between characters.
fn first_text_error(rows: &[tokio_postgres::Row]) -> tokio_postgres::Error {
    rows.iter()
        .find_map(|row| item_of(row).err())
        .expect("a text that is not UTF-8 fails to decode as one")
}

/// A text column's bytes, not yet checked as UTF-8 (see [`products_of`]).
struct TextBytes<'a>(&'a [u8]);

impl<'a> FromSql<'a> for TextBytes<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(TextBytes(raw))
    }

    fn accepts(ty: &Type) -> bool {
        // The text types whose binary form is the text itself (not ltree's, with its version).
        matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
    }
}

/// The related item of one row, its text checked column by column (see [`first_text_error`]);
/// `None` for the one row of a product without relations, whose item columns are NULL.
fn item_of(row: &tokio_postgres::Row) -> Result<Option<RelatedItem<'_>>, tokio_postgres::Error> {
    let Some(id) = row.try_get::<_, Option<i32>>(1)? else {
        return Ok(None);
    };
    Ok(Some(RelatedItem {
        id,
        name: row.try_get(2)?,
        category: row.try_get(3)?,
        price_cents: row.try_get(4)?,
        image_url: row.try_get(5)?,
        rating: row.try_get::<_, Rating>(6)?.0,
        review_count: row.try_get(7)?,
    }))
}

/// Known products among `ids` (distinct) with their related items in position order, at most
/// `limit` each, from one run of [`RELATED_MANY_SQL`]. An id missing from the answer is an
/// unknown product; a known product without relations has an empty list.
pub async fn query_related_many(
    conn: &ReplicaConnection,
    ids: &[i32],
    limit: i64,
) -> Result<Vec<RelatedItems>, tokio_postgres::Error> {
    // One distinct id (a batch of one, or of duplicates): the single-product statement, a
    // plain index lookup without the array and the sort by product.
    if let [id] = ids {
        return Ok(match query_related(conn, *id, limit).await? {
            Lookup::Found(found) => vec![found],
            Lookup::UnknownProduct(_) => Vec::new(),
        });
    }
    let rows = conn
        .client
        .query(&conn.related_many, &[&ids, &limit])
        .await?;
    products_of(&rows)
}

/// Whether an error means the replica (or the connection to it) failed, rather than the query:
/// such errors ban the replica and the request is retried elsewhere.
pub fn is_replica_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // 08: connection exception, 57: operator intervention (shutdown, cancel, statement
        // timeout), 53: insufficient resources, 58: system error, 40001: recovery conflict.
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("57")
                || c.starts_with("53")
                || c.starts_with("58")
                || c == "40001"
                || answers_from_another_state(c)
        }
        // No SQLSTATE: an I/O or protocol error.
        None => true,
    }
}

/// The API's SQL is fixed and ran on the other replicas: a replica that says its table, column,
/// database or the role's privilege does not exist answers from another state of the database.
/// A standby restarted after a crash accepts reads as soon as it is consistent with its own WAL,
/// then replays the rest for a moment before it streams from the primary again: seen here as
/// `permission denied for table products` (its state before the GRANT). So: retry elsewhere and
/// ban it until it is back, rather than answer 500. (42501 insufficient privilege, 42P01
/// undefined table, 42703 undefined column, 42883 undefined function, 3D000 unknown database.)
fn answers_from_another_state(sqlstate: &str) -> bool {
    matches!(sqlstate, "42501" | "42P01" | "42703" | "42883" | "3D000")
}

/// A database error as the server said it (SQLSTATE and message), or the client's own text:
/// tokio-postgres shows every server error as just "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_replica_answering_from_another_state_is_a_replica_failure() {
        for code in ["42501", "42P01", "42703", "42883", "3D000"] {
            assert!(super::answers_from_another_state(code), "{code}");
        }
        // A query the server refuses for what it is (a syntax error, a bad value) is not.
        for code in ["42601", "22P02", "23505"] {
            assert!(!super::answers_from_another_state(code), "{code}");
        }
    }

    /// Texts read unchecked become the product that checked texts make; texts that are not
    /// UTF-8, together or each on its own, make none (the rows are then decoded column by
    /// column for the error).
    #[test]
    fn unchecked_texts_are_checked_once_per_product() {
        use super::{RelatedItem, RelatedItems, UncheckedItems};
        let cards = [("Café", "Kitchen", "https://img/1.jpg"), ("雪", "", "u")];
        let mut unchecked = UncheckedItems::new(5);
        let mut items = Vec::new();
        for (id, (name, category, image_url)) in (0..).zip(cards) {
            items.push(RelatedItem {
                id,
                name,
                category,
                price_cents: id,
                image_url,
                rating: 4.5,
                review_count: id,
            });
            let texts = [name.as_bytes(), category.as_bytes(), image_url.as_bytes()];
            unchecked.push(id, texts, id, 4.5, id);
        }
        let checked = RelatedItems::from_items(5, items.iter().copied());
        assert_eq!(checked.items().collect::<Vec<_>>(), items);
        assert_eq!(unchecked.check(), Some(checked));

        let not_utf8 = |texts: [&[u8]; 3]| {
            let mut u = UncheckedItems::new(5);
            u.push(1, texts, 1, 4.5, 1);
            u.check().is_none()
        };
        assert!(not_utf8([b"ok", b"\xff", b"ok"]));
        // "é" cut between two columns: the whole text is UTF-8, its columns are not.
        assert!(not_utf8([b"caf\xc3", b"\xa9", b"ok"]));
        assert!(!not_utf8([b"caf\xc3\xa9", b"", b"ok"]));
    }

    /// Rows already in product, then position order are read as they come; any other order
    /// (products interleaved, positions reversed, the row without items anywhere) is sorted.
    #[test]
    fn rows_are_read_in_product_then_position_order() {
        use super::reading_order;
        assert_eq!(reading_order(&[]), None);
        assert_eq!(
            reading_order(&[(3, Some(0)), (3, Some(4)), (7, None), (9, Some(1))]),
            None
        );
        assert_eq!(
            reading_order(&[(9, Some(0)), (9, Some(1)), (3, Some(0))]),
            Some(vec![2, 0, 1])
        );
        assert_eq!(
            reading_order(&[(2, Some(0)), (1, Some(0)), (2, Some(1)), (1, Some(1))]),
            Some(vec![1, 3, 0, 2])
        );
        assert_eq!(
            reading_order(&[(5, Some(2)), (5, Some(1)), (4, None)]),
            Some(vec![2, 1, 0])
        );
    }

    /// The benchmark's pgbench script must run exactly the API's SQL.
    #[test]
    fn bench_script_runs_the_api_sql() {
        let script = include_str!("../bench/related.sql");
        let sql: String = script
            .lines()
            .filter(|l| !l.starts_with('\\'))
            .collect::<Vec<_>>()
            .join("\n");
        let sql = sql
            .trim()
            .trim_end_matches(';')
            .replace(":lim", "$2")
            .replace(":id", "$1");
        assert_eq!(sql, super::RELATED_SQL);
    }

    /// The batched SQL is the single one with an array of ids: the same lateral join, so the
    /// same rows per product.
    #[test]
    fn the_batched_sql_is_the_single_one_over_an_array() {
        let single = super::RELATED_SQL.replace("WHERE p.id = $1", "WHERE p.id = ANY($1::int4[])");
        assert_eq!(single, super::RELATED_MANY_SQL);
    }
}

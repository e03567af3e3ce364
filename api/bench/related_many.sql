-- RELATED_MANY_SQL (api/src/query.rs) for 7 random products at once: the batch size the API formed
-- at saturation in results/api.md (about 7 lookups per query); compare its products/s (7 x tps) with
-- related.sql's tps.
\set i1 random(1, :products)
\set i2 random(1, :products)
\set i3 random(1, :products)
\set i4 random(1, :products)
\set i5 random(1, :products)
\set i6 random(1, :products)
\set i7 random(1, :products)
\set lim 16
SELECT p.id, r.id, r.name, r.category, r.price_cents, r.image_url, r.rating, r.review_count, r.position
FROM products p
LEFT JOIN LATERAL (
    SELECT q.id, q.name, q.category, q.price_cents, q.image_url, q.rating, q.review_count, ri.position
    FROM related_items ri
    JOIN products q ON q.id = ri.related_id
    WHERE ri.product_id = p.id
    ORDER BY ri.position
    LIMIT :lim
) r ON true
WHERE p.id = ANY(ARRAY[:i1,:i2,:i3,:i4,:i5,:i6,:i7]::int4[]);

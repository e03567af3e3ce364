\set id random(1, :products)
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
WHERE p.id = :id;

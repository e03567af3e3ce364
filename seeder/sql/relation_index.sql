-- One product's related items come back in position order from one index range scan.
ALTER TABLE related_items ADD CONSTRAINT related_items_pkey PRIMARY KEY (product_id, position);
-- No duplicate related ids within a product.
CREATE UNIQUE INDEX IF NOT EXISTS related_items_product_related ON related_items (product_id, related_id);

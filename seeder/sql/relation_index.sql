-- One product's related items come back in position order from one index range scan.
-- Not covering related_id (INCLUDE): the index-only scan it enables measured no faster for the
-- API's join (the 16 rows share one heap page) and made the build 30% slower. No second unique
-- index on (product_id, related_id) either: the generator never makes a duplicate and the CSV
-- import checks once before indexing, which halves the build. See results/seeder.md.
ALTER TABLE related_items ADD CONSTRAINT related_items_pkey PRIMARY KEY (product_id, position);

-- Tables are created bare: indexes and constraints are built after the bulk load (indexes.sql),
-- which is several times faster than maintaining them row by row.
CREATE TABLE IF NOT EXISTS products (
    id           integer      NOT NULL,
    name         text         NOT NULL,
    category     text         NOT NULL,
    price_cents  integer      NOT NULL CHECK (price_cents >= 0),
    image_url    text         NOT NULL,
    rating       numeric(2,1) NOT NULL CHECK (rating BETWEEN 0 AND 5),
    review_count integer      NOT NULL CHECK (review_count >= 0)
);

CREATE TABLE IF NOT EXISTS related_items (
    product_id integer  NOT NULL,
    position   smallint NOT NULL,
    related_id integer  NOT NULL,
    CHECK (related_id <> product_id),
    CHECK (position >= 0)
);

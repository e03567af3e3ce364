ALTER TABLE products ADD CONSTRAINT products_pkey PRIMARY KEY (id);

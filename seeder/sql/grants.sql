-- The API's read-only role (created by the stack crate) may read the two tables and nothing else.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'related_api') THEN
        GRANT SELECT ON products, related_items TO related_api;
    END IF;
END
$$;

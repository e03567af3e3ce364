//! A cluster per test, and the queries the tests compare tables with.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use seeder::SeedOptions;
use stack::{Cluster, ClusterSpec};
use tempfile::TempDir;
use tokio_postgres::Client;

/// A running cluster and the directory it lives in; the cluster is dropped (servers stopped)
/// before the directory is removed.
pub struct TestCluster {
    pub cluster: Cluster,
    pub dir: TempDir,
}

impl std::ops::Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

pub async fn cluster(replicas: usize) -> TestCluster {
    let dir = tempfile::tempdir().expect("tempdir");
    // The servers run as the postgres user when the tests run as root; it must reach the data.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cluster = Cluster::create(ClusterSpec::new(dir.path().join("stack"), replicas))
        .await
        .expect("start a cluster");
    TestCluster { cluster, dir }
}

/// A small, quick catalog with several chunks.
pub fn small(products: u64) -> SeedOptions {
    SeedOptions {
        products,
        chunk_products: 500,
        quiet: true,
        maintenance_work_mem_mb: 64,
        ..SeedOptions::default()
    }
}

/// Row counts and content digests of both tables, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub products: i64,
    pub related_items: i64,
    pub products_md5: String,
    pub related_md5: String,
}

pub async fn digest(client: &Client) -> Digest {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM products),
                    (SELECT count(*) FROM related_items),
                    (SELECT md5(string_agg(concat_ws('|', id, name, category, price_cents, image_url, rating, review_count), E'\\n' ORDER BY id)) FROM products),
                    (SELECT md5(string_agg(concat_ws('|', product_id, position, related_id), E'\\n' ORDER BY product_id, position)) FROM related_items)",
            &[],
        )
        .await
        .expect("digest query");
    Digest {
        products: row.get(0),
        related_items: row.get(1),
        products_md5: row.get(2),
        related_md5: row.get(3),
    }
}

/// The catalog's invariants: every product has positions 0..per_product-1 with distinct related
/// ids, none of them itself, all of them existing products.
pub async fn assert_invariants(client: &Client, products: i64, per_product: i64) {
    let row = client
        .query_one(
            "SELECT
                (SELECT count(*) FROM related_items WHERE related_id = product_id),
                (SELECT count(*) FROM (SELECT product_id, related_id FROM related_items
                                       GROUP BY 1, 2 HAVING count(*) > 1) d),
                (SELECT count(*) FROM (SELECT product_id FROM related_items GROUP BY 1
                                       HAVING count(DISTINCT position) = $1
                                          AND min(position) = 0 AND max(position) = $1 - 1) f),
                (SELECT count(*) FROM related_items r WHERE NOT EXISTS
                    (SELECT FROM products p WHERE p.id = r.related_id)),
                (SELECT count(DISTINCT id) FROM products)",
            &[&per_product],
        )
        .await
        .expect("invariant query");
    assert_eq!(row.get::<_, i64>(0), 0, "self-references");
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "duplicate (product_id, related_id)"
    );
    assert_eq!(
        row.get::<_, i64>(2),
        products,
        "products with a full position set"
    );
    assert_eq!(row.get::<_, i64>(3), 0, "related ids that are no product");
    assert_eq!(row.get::<_, i64>(4), products, "distinct product ids");
}

pub const REPLICA_WAIT: Duration = Duration::from_secs(120);

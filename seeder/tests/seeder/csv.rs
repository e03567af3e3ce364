//! CSV export and import: an exact round trip, and broken files that stop with a named error
//! while the chunks before the broken record stay committed.

use std::path::Path;

use seeder::{export_csv, import_csv, seed, ImportOptions, SeedError};

use crate::helpers::{cluster, digest, small};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_round_trips_exactly() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let client = c.connect(0).await.expect("connect");
    seed(&url, &small(1_500)).await.expect("seed");
    let before = digest(&client).await;

    let first = c.dir.path().join("first");
    let exported = export_csv(&url, &first).await.expect("export");
    assert_eq!((exported.products, exported.related_items), (1_500, 24_000));

    let mut opts = ImportOptions::from_dir(&first);
    opts.chunk_rows = 7_000;
    opts.seed = seeder::SeedOptions {
        reset: true,
        ..small(1)
    };
    let summary = import_csv(&url, &opts).await.expect("import");
    assert_eq!((summary.products, summary.related_items), (1_500, 24_000));
    assert_eq!(digest(&client).await, before);

    let second = c.dir.path().join("second");
    export_csv(&url, &second).await.expect("export again");
    for file in ["products.csv", "related_items.csv"] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file} differs after a round trip"
        );
    }
}

/// 25 good product records, then `bad` as record 26 (line 27), in chunks of 10.
fn write_broken(dir: &Path, bad: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut products = b"id,name,category,price_cents,image_url,rating,review_count\n".to_vec();
    for id in 1..=25 {
        products.extend_from_slice(
            format!("{id},\"Trail Mesh Shoe, size {id}\",Running,4999,https://img.example.com/{id}.jpg,4.5,{id}\n").as_bytes(),
        );
    }
    products.extend_from_slice(bad);
    products.push(b'\n');
    products.extend_from_slice(b"27,Last,Golf,100,https://img.example.com/27.jpg,3.0,1\n");
    std::fs::write(dir.join("products.csv"), products).unwrap();
    std::fs::write(
        dir.join("related_items.csv"),
        "product_id,position,related_id\n1,0,2\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_csv_names_the_record_and_keeps_earlier_chunks() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let client = c.connect(0).await.expect("connect");
    let cases: [(&str, &[u8], &str, &str); 3] = [
        (
            "missing column",
            b"26,Short,Golf,100,https://img.example.com/26.jpg,3.0",
            "review_count",
            "missing column",
        ),
        (
            "not a number",
            b"26,Bad price,Golf,12.5x,https://img.example.com/26.jpg,3.0,1",
            "price_cents",
            "not an integer",
        ),
        (
            "bad UTF-8",
            b"26,Caf\xe9 Mug,Golf,100,https://img.example.com/26.jpg,3.0,1",
            "name",
            "not valid UTF-8",
        ),
    ];
    for (i, (case, bad, column, reason)) in cases.into_iter().enumerate() {
        let dir = c.dir.path().join(format!("broken{i}"));
        write_broken(&dir, bad);
        let mut opts = ImportOptions::from_dir(&dir);
        opts.chunk_rows = 10;
        opts.seed = seeder::SeedOptions {
            reset: true,
            ..small(1)
        };
        let err = import_csv(&url, &opts).await.expect_err(case);
        match &err {
            SeedError::Csv {
                file,
                line,
                column: got_column,
                reason: got_reason,
                ..
            } => {
                assert_eq!(file, &dir.join("products.csv"), "{case}");
                assert_eq!(*line, 27, "{case}: {err}");
                assert_eq!(got_column, column, "{case}: {err}");
                assert!(got_reason.contains(reason), "{case}: {err}");
            }
            other => panic!("{case}: expected a CSV error, got {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("products.csv") && message.contains("line 27"),
            "{message}"
        );
        // Chunks 1-10 and 11-20 committed; the chunk holding record 26 did not.
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM products), (SELECT max(id) FROM products),
                        (SELECT count(*) FROM seeder_chunks)",
                &[],
            )
            .await
            .expect("count");
        assert_eq!(row.get::<_, i64>(0), 20, "{case}");
        assert_eq!(row.get::<_, Option<i32>>(1), Some(20), "{case}");
        assert_eq!(row.get::<_, i64>(2), 2, "{case}");
    }

    // A related id listed twice for one product is refused before the load counts as done.
    let dir = c.dir.path().join("duplicate");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("products.csv"),
        "id,name,category,price_cents,image_url,rating,review_count\n\
         1,A,Golf,100,a,1.0,1\n2,B,Golf,100,b,1.0,1\n3,C,Golf,100,c,1.0,1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("related_items.csv"),
        "product_id,position,related_id\n1,0,2\n1,1,3\n1,2,2\n",
    )
    .unwrap();
    let mut opts = ImportOptions::from_dir(&dir);
    opts.seed = seeder::SeedOptions {
        reset: true,
        ..small(1)
    };
    let err = import_csv(&url, &opts)
        .await
        .expect_err("duplicate refused");
    assert!(
        matches!(err, SeedError::CsvFile { .. })
            && err.to_string().contains("related id 2 more than once"),
        "{err}"
    );
}

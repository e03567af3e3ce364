//! The deterministic synthetic catalog: products and their related-item lists.
//!
//! Every product draws from its own random stream, seeded from `(seed, product id)`, so a row's
//! content never depends on which worker generated it or in which order: the same seed gives the
//! same catalog at any worker count and any chunk size. Related ids follow a Zipf popularity over
//! a fixed shuffle of the ids, so a few products appear in very many lists (the hot keys the cache
//! stages of the journey depend on), while the hot ids are spread over the id range instead of
//! all being small numbers.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rand_pcg::Pcg64Mcg;

use crate::numeric::Rating;

/// Zipf exponent of related-id popularity: with one million products the most popular one is in
/// about a fifth of all lists, and the top 1% of products take about 40% of all slots.
pub const POPULARITY_EXPONENT: f64 = 0.8;

/// One `products` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: i32,
    pub name: String,
    pub category: &'static str,
    pub price_cents: i32,
    pub image_url: String,
    pub rating: Rating,
    pub review_count: i32,
}

/// Generates products and related lists for one catalog shape; cheap to clone per worker.
#[derive(Debug, Clone)]
pub struct Catalog {
    seed: u64,
    products: u32,
    per_product: u32,
    popularity: Zipf<f64>,
    /// Multiplier of the rank-to-id shuffle, coprime with `products` so the map is a bijection.
    stride: u64,
    offset: u64,
}

impl Catalog {
    /// `products` ids are 1..=products; each gets `per_product` distinct related ids, none itself.
    pub fn new(seed: u64, products: u32, per_product: u32) -> Result<Catalog, String> {
        if products == 0 {
            return Err("--products must be at least 1".into());
        }
        if per_product as u64 >= products as u64 {
            return Err(format!(
                "--per-product {per_product} needs more than {per_product} products (got {products}): a product cannot relate to itself or to the same product twice"
            ));
        }
        if per_product > i16::MAX as u32 {
            return Err("--per-product must fit a smallint position".into());
        }
        let n = products as u64;
        let mut stride = (mix(seed ^ 0x5eed) % n) | 1;
        while gcd(stride, n) != 1 {
            stride += 1;
        }
        Ok(Catalog {
            seed,
            products,
            per_product,
            popularity: Zipf::new(n, POPULARITY_EXPONENT).map_err(|e| e.to_string())?,
            stride,
            offset: mix(seed ^ 0x0ff5e7) % n,
        })
    }

    pub fn products(&self) -> u32 {
        self.products
    }

    pub fn per_product(&self) -> u32 {
        self.per_product
    }

    /// The product with this id and, appended to `related` in position order, its related ids.
    pub fn product(&self, id: i32, related: &mut Vec<i32>) -> Product {
        let mut rng = Pcg64Mcg::seed_from_u64(mix(self.seed ^ mix(id as u64)));
        let (category, nouns) = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
        let noun = nouns[rng.gen_range(0..nouns.len())];
        let name = format!(
            "{} {} {}",
            ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
            MATERIALS[rng.gen_range(0..MATERIALS.len())],
            noun
        );
        let price_cents = draw_price_cents(&mut rng);
        let review_count = if rng.gen_bool(0.1) {
            0
        } else {
            // Heavy-tailed: most products have tens of reviews, a few have thousands.
            (1.0 / (1.0 - rng.gen::<f64>()).max(1e-4)).powf(1.3) as i32
        };
        let rating = if review_count == 0 {
            Rating(0)
        } else {
            // Shops' ratings bunch between 3.5 and 5.0.
            let tenths = 50.0 - (rng.gen::<f64>() * rng.gen::<f64>() * 35.0);
            Rating(tenths.round() as u8)
        };
        let image_url = format!(
            "https://img.example.com/{}/{}-{}.jpg",
            category.to_ascii_lowercase().replace(' ', "-"),
            noun.to_ascii_lowercase().replace(' ', "-"),
            id
        );
        self.draw_related(id, self.per_product as usize, &mut rng, related);
        Product {
            id,
            name,
            category,
            price_cents,
            image_url,
            rating,
            review_count,
        }
    }

    /// Append `count` distinct related ids for product `id`, none of them `id`, drawn from `rng`
    /// with the catalog's popularity: the seeded lists, and the lists a recomputation writes
    /// (`seeder write`). `count` is capped at the other products there are, so it always ends.
    pub fn draw_related<R: Rng + ?Sized>(
        &self,
        id: i32,
        count: usize,
        rng: &mut R,
        related: &mut Vec<i32>,
    ) {
        let count = count.min(self.products as usize - 1);
        let start = related.len();
        while related.len() - start < count {
            let candidate = self.id_of_rank(self.popularity.sample(rng) as u64);
            if candidate != id && !related[start..].contains(&candidate) {
                related.push(candidate);
            }
        }
    }

    /// Popularity rank (1 = most popular) to product id, through a fixed shuffle.
    fn id_of_rank(&self, rank: u64) -> i32 {
        let n = self.products as u64;
        (((rank - 1) * self.stride + self.offset) % n + 1) as i32
    }
}

/// A price in cents, log-uniform from $4.99 to about $1,000 and ending in .99 like a shop's.
pub fn draw_price_cents<R: Rng + ?Sized>(rng: &mut R) -> i32 {
    let dollars = (5.0f64 * 200f64.powf(rng.gen::<f64>())) as i32;
    dollars * 100 - 1
}

/// SplitMix64's finaliser: spreads nearby inputs (ids 1, 2, 3...) into unrelated seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

const ADJECTIVES: &[&str] = &[
    "Lightweight",
    "Breathable",
    "Waterproof",
    "Insulated",
    "Pro",
    "Classic",
    "Ultra",
    "Compact",
    "Adjustable",
    "Reflective",
    "Trail",
    "Performance",
    "Essential",
    "Elite",
    "All-Season",
    "Quick-Dry",
    "Padded",
    "Ergonomic",
    "Heritage",
    "Competition",
    "Everyday",
    "Rugged",
    "Packable",
    "Thermal",
];

const MATERIALS: &[&str] = &[
    "Carbon",
    "Mesh",
    "Merino",
    "Nylon",
    "Leather",
    "Aluminium",
    "Bamboo",
    "Fleece",
    "Gore-Tex",
    "Titanium",
    "Cotton",
    "Neoprene",
    "Ripstop",
    "Foam",
    "Steel",
    "Recycled",
];

type Category = (&'static str, &'static [&'static str]);

const CATEGORIES: &[Category] = &[
    (
        "Running",
        &[
            "Running Shoe",
            "Running Tights",
            "Hydration Vest",
            "Running Cap",
            "Race Belt",
        ],
    ),
    (
        "Cycling",
        &[
            "Cycling Jersey",
            "Bike Helmet",
            "Bib Shorts",
            "Saddle Bag",
            "Bike Light",
        ],
    ),
    (
        "Hiking",
        &[
            "Hiking Boot",
            "Daypack",
            "Trekking Pole",
            "Rain Jacket",
            "Gaiters",
        ],
    ),
    (
        "Camping",
        &[
            "Tent",
            "Sleeping Bag",
            "Camp Stove",
            "Headlamp",
            "Sleeping Pad",
        ],
    ),
    (
        "Climbing",
        &[
            "Harness",
            "Chalk Bag",
            "Climbing Shoe",
            "Belay Device",
            "Quickdraw",
        ],
    ),
    (
        "Swimming",
        &[
            "Swim Goggles",
            "Swim Cap",
            "Wetsuit",
            "Kickboard",
            "Swimsuit",
        ],
    ),
    (
        "Fitness",
        &[
            "Yoga Mat",
            "Kettlebell",
            "Resistance Band",
            "Jump Rope",
            "Foam Roller",
        ],
    ),
    (
        "Team Sports",
        &[
            "Soccer Ball",
            "Shin Guards",
            "Basketball",
            "Goalkeeper Gloves",
            "Cleats",
        ],
    ),
    (
        "Racket Sports",
        &[
            "Tennis Racket",
            "Badminton Set",
            "Squash Racket",
            "Grip Tape",
            "Tennis Balls",
        ],
    ),
    (
        "Winter Sports",
        &[
            "Ski Goggles",
            "Snowboard",
            "Ski Gloves",
            "Base Layer",
            "Ski Helmet",
        ],
    ),
    (
        "Water Sports",
        &[
            "Paddle Board",
            "Kayak Paddle",
            "Life Vest",
            "Dry Bag",
            "Rash Guard",
        ],
    ),
    (
        "Golf",
        &["Golf Glove", "Driver", "Golf Balls", "Golf Bag", "Putter"],
    ),
    (
        "Fishing",
        &[
            "Fishing Rod",
            "Reel",
            "Tackle Box",
            "Waders",
            "Fishing Line",
        ],
    ),
    (
        "Skating",
        &[
            "Skateboard",
            "Inline Skates",
            "Knee Pads",
            "Skate Helmet",
            "Wrist Guards",
        ],
    ),
    (
        "Outdoor Apparel",
        &[
            "Softshell Jacket",
            "Down Vest",
            "Hiking Pants",
            "Beanie",
            "Sun Hoodie",
        ],
    ),
    (
        "Accessories",
        &[
            "Water Bottle",
            "Sports Watch",
            "Sunglasses",
            "Gym Bag",
            "Sport Socks",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_product_and_no_self_or_duplicate() {
        let a = Catalog::new(7, 1000, 16).unwrap();
        let b = Catalog::new(7, 1000, 16).unwrap();
        for id in 1..=1000 {
            let (mut ra, mut rb) = (Vec::new(), Vec::new());
            assert_eq!(a.product(id, &mut ra), b.product(id, &mut rb));
            assert_eq!(ra, rb);
            assert_eq!(ra.len(), 16);
            assert!(!ra.contains(&id));
            let mut sorted = ra.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 16);
            assert!(ra.iter().all(|&r| (1..=1000).contains(&r)));
        }
    }

    #[test]
    fn popularity_is_skewed() {
        let c = Catalog::new(1, 10_000, 16).unwrap();
        let mut counts = vec![0u32; 10_001];
        let mut related = Vec::new();
        for id in 1..=10_000 {
            related.clear();
            c.product(id, &mut related);
            for &r in &related {
                counts[r as usize] += 1;
            }
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_1pct: u32 = counts[..100].iter().sum();
        assert!(top_1pct as f64 > 0.2 * 160_000.0, "top 1% got {top_1pct}");
    }

    #[test]
    fn redrawn_lists_keep_the_invariants_and_never_loop_forever() {
        let c = Catalog::new(3, 20, 0).unwrap();
        let mut rng = Pcg64Mcg::seed_from_u64(9);
        for id in 1..=20 {
            let mut related = vec![-1];
            c.draw_related(id, 16, &mut rng, &mut related);
            assert_eq!(related[0], -1, "appended, not overwritten");
            let drawn = &related[1..];
            let mut sorted = drawn.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!((drawn.len(), sorted.len()), (16, 16));
            assert!(!drawn.contains(&id));
            assert!(drawn.iter().all(|&r| (1..=20).contains(&r)));
        }
        // More than the other products there are: every other product, once.
        let mut all = Vec::new();
        c.draw_related(1, 100, &mut rng, &mut all);
        assert_eq!(all.len(), 19);
        let price = draw_price_cents(&mut rng);
        assert!(
            (499..=100_000).contains(&price) && price % 100 == 99,
            "{price}"
        );
    }

    #[test]
    fn tiny_catalog_refused() {
        assert!(Catalog::new(1, 16, 16).is_err());
        assert!(Catalog::new(1, 17, 16).is_ok());
    }
}

//! Which product ids a simulated widget asks for: uniform, or Zipf-skewed so that a few hot
//! products take most of the traffic (the case the response cache is for), plus a share of ids
//! that do not exist (their 404 is expected, not an error).

use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// How ids are drawn.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum IdDistribution {
    Uniform,
    /// Zipf with exponent `s` over the seeded ids (rank 1 is the hottest).
    Zipf(f64),
}

impl std::fmt::Display for IdDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uniform => write!(f, "uniform"),
            Self::Zipf(s) => write!(f, "zipf(s={s})"),
        }
    }
}

impl std::str::FromStr for IdDistribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Self::Uniform);
        }
        let exponent = s
            .strip_prefix("zipf:")
            .or_else(|| s.strip_prefix("zipf="))
            .map(str::parse::<f64>);
        match exponent {
            Some(Ok(e)) if e > 0.0 => Ok(Self::Zipf(e)),
            _ => Err(format!(
                "unknown id distribution {s:?}: use `uniform` or `zipf:S` with S > 0 (e.g. zipf:1.0)"
            )),
        }
    }
}

/// Draws product ids for one simulated user.
#[derive(Debug, Clone)]
pub struct IdSampler {
    products: u64,
    unknown_share: f64,
    zipf: Option<Zipf<f64>>,
}

/// What one draw asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    Known(u64),
    /// An id past the seeded range: the API must answer 404.
    Unknown(u64),
}

impl IdSampler {
    pub fn new(products: u64, distribution: IdDistribution, unknown_share: f64) -> Self {
        assert!(products > 0, "at least one product");
        let zipf = match distribution {
            IdDistribution::Uniform => None,
            IdDistribution::Zipf(s) => Some(Zipf::new(products, s).expect("valid zipf")),
        };
        Self {
            products,
            unknown_share: unknown_share.clamp(0.0, 1.0),
            zipf,
        }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> Draw {
        if self.unknown_share > 0.0 && rng.gen_bool(self.unknown_share) {
            return Draw::Unknown(self.products + 1 + rng.gen_range(0..1_000_000));
        }
        let id = match &self.zipf {
            None => rng.gen_range(1..=self.products),
            Some(zipf) => self.rank_to_id(zipf.sample(rng) as u64),
        };
        Draw::Known(id)
    }

    /// Spread hot ranks over the id space (rank 1 is not product 1), with a fixed bijection so
    /// that runs are comparable.
    fn rank_to_id(&self, rank: u64) -> u64 {
        let n = self.products;
        let r = (rank.clamp(1, n) - 1) as u128;
        // A multiplier coprime with n makes r -> r*m mod n a permutation.
        let mut m: u128 = 2_654_435_761 % n as u128;
        while m == 0 || gcd(m, n as u128) != 1 {
            m += 1;
        }
        ((r * m) % n as u128) as u64 + 1
    }
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn uniform_ids_stay_in_range_and_unknown_ones_are_past_it() {
        let sampler = IdSampler::new(1000, IdDistribution::Uniform, 0.1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<Draw> = (0..10_000).map(|_| sampler.draw(&mut rng)).collect();
        let unknown = draws
            .iter()
            .filter(|d| matches!(d, Draw::Unknown(_)))
            .count();
        assert!((800..1200).contains(&unknown), "{unknown}");
        for d in draws {
            match d {
                Draw::Known(id) => assert!((1..=1000).contains(&id)),
                Draw::Unknown(id) => assert!(id > 1000),
            }
        }
    }

    #[test]
    fn zipf_concentrates_traffic_on_a_few_ids() {
        let sampler = IdSampler::new(100_000, IdDistribution::Zipf(1.0), 0.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..50_000 {
            if let Draw::Known(id) = sampler.draw(&mut rng) {
                assert!((1..=100_000).contains(&id));
                *counts.entry(id).or_insert(0u32) += 1;
            }
        }
        let mut top: Vec<u32> = counts.values().copied().collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        let top100: u32 = top.iter().take(100).sum();
        assert!(
            top100 > 50_000 / 3,
            "the 100 hottest ids take over a third: {top100}"
        );
    }

    #[test]
    fn rank_mapping_is_a_permutation() {
        let sampler = IdSampler::new(97 * 3, IdDistribution::Zipf(1.0), 0.0);
        let mut ids: Vec<u64> = (1..=291).map(|r| sampler.rank_to_id(r)).collect();
        ids.sort();
        assert_eq!(ids, (1..=291).collect::<Vec<_>>());
    }

    #[test]
    fn distribution_parses_from_flags() {
        assert_eq!(
            "uniform".parse::<IdDistribution>().unwrap(),
            IdDistribution::Uniform
        );
        assert_eq!(
            "zipf:1.1".parse::<IdDistribution>().unwrap(),
            IdDistribution::Zipf(1.1)
        );
        assert!("zipf:-1".parse::<IdDistribution>().is_err());
        assert!("pareto".parse::<IdDistribution>().is_err());
    }
}

//! Small arithmetic on measured figures shared by the journey, the drill, the soak and the
//! baseline: the median of a sample, and rounding a figure to the digits a report shows.

/// The median of `values` (the mean of the two middle values for an even count); `None` for
/// no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// `x` rounded to `digits` decimal places, as the reports print and store it.
pub fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts_and_of_nothing() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn rounding_keeps_the_digits_asked_for() {
        assert_eq!(round_to(1.2345, 1), 1.2);
        assert_eq!(round_to(1.2355, 3), 1.236);
        assert_eq!(round_to(-0.05, 1), -0.1);
    }
}

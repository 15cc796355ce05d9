//! Statistics over the runs of a comparison or a simulation.

/// The median (the mean of the middle two for an even count). Sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The median of `values` and a distribution-free interval that holds it with at least 95%
/// confidence: the order statistics `k` and `n + 1 - k`, for the largest `k` with
/// `P(Binomial(n, 1/2) < k) <= 2.5%`. `None` below six values, where no such `k` exists.
pub fn median_interval(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    let mid = median(&mut sorted);
    let n = sorted.len();
    // P(B = i) for i = 0, 1, ..., accumulated while the tail stays within 2.5%.
    let mut probability = 0.5f64.powi(i32::try_from(n).ok()?);
    let (mut tail, mut k) = (0.0, 0);
    while k < n / 2 && tail + probability <= 0.025 {
        tail += probability;
        probability *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    (k > 0).then(|| (sorted[k - 1], mid, sorted[n - k]))
}

#[cfg(test)]
mod tests {
    use super::median_interval;

    #[test]
    fn median_intervals_use_the_binomial_order_statistics() {
        // Five values cannot give 95%: even the extremes hold the median with 1 - 2/32.
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        // Six: the extremes, 1 - 2/64 = 96.9%.
        let six = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0];
        assert_eq!(median_interval(&six), Some((1.0, 3.5, 6.0)));
        // Thirty: the 10th and 21st values (P(B <= 9) = 2.14%, P(B <= 10) = 4.94%).
        let thirty: Vec<f64> = (1..=30).rev().map(f64::from).collect();
        assert_eq!(median_interval(&thirty), Some((10.0, 15.5, 21.0)));
    }
}

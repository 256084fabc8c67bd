//! f64 oracle of the Hedgehog feature map: `phi(x) = [softmax(x W_h), softmax(-x W_h)]`
//! written as plainly as possible (the references of the linear ops use it too).

use super::FeatureMap;

/// `phi_head(x)` in f64, length 2F.
pub fn phi(map: &FeatureMap, head: usize, x: &[f64]) -> Vec<f64> {
    let f = map.features;
    let mut u = vec![0.0f64; f];
    for (j, uj) in u.iter_mut().enumerate() {
        for (d, &xd) in x.iter().enumerate().take(map.in_dim) {
            *uj += xd * map.weights[(head * map.in_dim + d) * f + j] as f64;
        }
    }
    let softmax = |vals: &[f64]| -> Vec<f64> {
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = vals.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    };
    let neg: Vec<f64> = u.iter().map(|v| -v).collect();
    let mut out = softmax(&u);
    out.extend(softmax(&neg));
    out
}

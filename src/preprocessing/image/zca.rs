//! The ZCA whitening matrix, as Keras 3's `ImageDataGenerator.fit` computes it: the SVD
//! `X^T = U S V^T` of the `n` centred samples, then `W = U_k diag(sqrt(n) / (s + eps)) U_k^T`
//! over the `k = min(d, n)` largest singular values (the others, a null space when `n < d`,
//! are dropped). Here from the eigendecomposition of `X^T X / n = U diag(s^2 / n) U^T`, the
//! same `U` and `s`.

use crate::error::{Error, Result};
use nalgebra::DMatrix;

/// The `d x d` whitening matrix (row-major) of `n` centred samples of `d` values each.
pub(crate) fn zca_matrix(x: &[f32], n: usize, d: usize, eps: f64) -> Result<Vec<f32>> {
    // Three d x d f64 matrices (covariance, eigenvectors, product) and the f32 result.
    let need = (d as f64).powi(2) * 28.0;
    if let Some(avail) = available_memory() {
        if need > avail as f64 {
            let gib = |b: f64| b / (1u64 << 30) as f64;
            return Err(Error::invalid(
                "zca_whitening",
                format!(
                    "images of {d} values need {d}x{d} matrices, {:.1} GiB, more than the {:.1} GiB of memory available",
                    gib(need),
                    gib(avail as f64)
                ),
            ));
        }
    }
    let mut sigma = DMatrix::<f64>::zeros(d, d);
    for s in x.chunks_exact(d) {
        let v = nalgebra::DVector::from_iterator(d, s.iter().map(|&p| p as f64));
        sigma.syger(1.0, &v, &v, 1.0);
    }
    sigma /= n as f64;
    // syger fills the lower triangle; mirror it.
    sigma.fill_upper_triangle_with_lower_triangle();
    let eig = nalgebra::linalg::SymmetricEigen::new(sigma);
    let u = &eig.eigenvectors;
    // Keras keeps the min(d, n) largest singular values s = sqrt(n * eigenvalue).
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut scale = vec![0.0; d];
    let nf = n as f64;
    for &j in order.iter().take(d.min(n)) {
        let s = (nf * eig.eigenvalues[j].max(0.0)).sqrt();
        scale[j] = nf.sqrt() / (s + eps);
    }
    let us = DMatrix::from_fn(d, d, |i, j| u[(i, j)] * scale[j]);
    let w = us * u.transpose();
    Ok((0..d * d).map(|k| w[(k / d, k % d)] as f32).collect())
}

/// The memory available to this process, when the system says (Linux: `MemAvailable`).
pub(crate) fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

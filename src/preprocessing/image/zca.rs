//! The ZCA whitening matrix, as Keras' `ImageDataGenerator.fit` computes it:
//! `sigma = X^T X / n`, `sigma = U S U^T`, `W = U diag(1 / sqrt(S + eps)) U^T`.

use crate::{Error, Result};
use nalgebra::DMatrix;

/// The `d x d` whitening matrix (row-major) of `n` centred samples of `d` values each.
pub(crate) fn zca_matrix(x: &[f32], n: usize, d: usize, eps: f64) -> Result<Vec<f32>> {
    if d > 8192 {
        return Err(Error::invalid(
            "zca_whitening",
            format!("images of {d} values need a {d}x{d} covariance matrix; at most 8192 values are supported"),
        ));
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
    let scale = eig.eigenvalues.map(|s| 1.0 / (s.max(0.0) + eps).sqrt());
    let us = DMatrix::from_fn(d, d, |i, j| u[(i, j)] * scale[j]);
    let w = us * u.transpose();
    Ok((0..d * d).map(|k| w[(k / d, k % d)] as f32).collect())
}

//! Gradient checks shared by the kernel and layer gradient tests: central differences in f64
//! against candle's autograd, element by element.

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rand_tensor(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks d f / d vars from autograd against central differences, for every element: `f`
/// reads the variables, which are perturbed in place.
pub fn check_vars(vars: &[Var], f: impl Fn() -> Tensor) {
    let out = f();
    assert_eq!(out.elem_count(), 1, "f must return a scalar");
    let grads = out.backward().unwrap();
    let h = 1e-5;
    for (i, v) in vars.iter().enumerate() {
        let analytic: Vec<f64> = match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; v.elem_count()],
        };
        let original = v.as_tensor().copy().unwrap();
        let base: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        for j in 0..base.len() {
            let eval = |delta: f64| {
                let mut p = base.clone();
                p[j] += delta;
                v.set(&Tensor::from_vec(p, original.shape(), &Device::Cpu).unwrap()).unwrap();
                f().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            v.set(&original).unwrap();
            let a = analytic[j];
            let tol = 1e-6 + 1e-5 * numeric.abs().max(a.abs());
            assert!(
                (numeric - a).abs() <= tol,
                "variable {i} element {j}: autograd {a} vs finite difference {numeric}"
            );
        }
    }
}

/// [`check_vars`] for a function of plain tensors.
pub fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    check_vars(&vars, || {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        f(&ts)
    });
}

/// A scalar that weighs every output element differently, so that no gradient cancels.
pub fn weigh(y: &Tensor, seed: u64) -> Tensor {
    let w = rand_tensor(y.dims(), &mut StdRng::seed_from_u64(seed));
    (y * w).unwrap().sum_all().unwrap()
}

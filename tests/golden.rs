//! Optimizer steps and loss values compared with Keras 3.15.1 / TensorFlow 2.21 (CPU).
//!
//! The values were printed by this script, run with the venv of
//! ../shared/bench/setup_keras.sh:
//!
//! ```python
//! import numpy as np, keras
//! w0 = np.array([[0.5, -1.0], [1.5, 2.0]], "float32")
//! grads = [np.array([[0.1, -0.2], [0.3, 0.4]], "float32"),
//!          np.array([[-0.5, 0.25], [0.0, 1.0]], "float32"),
//!          np.array([[0.2, 0.2], [-0.3, -0.1]], "float32")]
//! cfgs = {"rmsprop_default": keras.optimizers.RMSprop(),
//!         "rmsprop_momentum_centered": keras.optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True),
//!         "sgd_default": keras.optimizers.SGD(),
//!         "sgd_momentum": keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
//!         "sgd_nesterov": keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
//!         "adam_default": keras.optimizers.Adam(),
//!         "adam_amsgrad": keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.9, amsgrad=True)}
//! for name, opt in cfgs.items():
//!     v = keras.Variable(w0)
//!     for g in grads:
//!         opt.apply_gradients([(g, v)]); print(name, v.numpy().flatten())
//!
//! yt = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], "float32")
//! yp = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]], "float32")
//! keras.losses.CategoricalCrossentropy()(yt, yp)                          # 6.157324314117432
//! keras.losses.SparseCategoricalCrossentropy()(np.array([1, 2, 0]), yp)   # 6.157324314117432
//! bt = np.array([[1, 0], [0, 0], [1, 1]], "float32"); bp = np.array([[0.9, 0.2], [0.0, 0.4], [1.0, 0.6]], "float32")
//! keras.losses.BinaryCrossentropy()(bt, bp)                               # 0.22502590715885162
//! keras.losses.MeanSquaredError()(bt, bp)                                 # 0.061666667461395264
//! keras.losses.MeanAbsoluteError()(bt, bp)                                # 0.18333333730697632
//! z = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 30.0], [-3.0, 4.0, 1.0]], "float32")
//! keras.losses.CategoricalCrossentropy(from_logits=True)(yt, z)           # 3.430255651473999
//! keras.losses.BinaryCrossentropy(from_logits=True)(bt, z[:, :2])         # 0.8415770530700684
//! ```

// Keras printed these to 9 significant digits; keep them as printed.
#![allow(clippy::excessive_precision)]

use candle_core::{Device, Tensor, Var};
use kandle::activations::Activation;
use kandle::losses::{Loss, Output};
use kandle::optimizers::{Adam, Optimizer, RMSprop, SGD};

fn run(mut opt: impl Optimizer, expected: [[f32; 4]; 3]) {
    let w = Var::from_tensor(&Tensor::new(&[[0.5f32, -1.0], [1.5, 2.0]], &Device::Cpu).unwrap()).unwrap();
    let grads = [[[0.1f32, -0.2], [0.3, 0.4]], [[-0.5, 0.25], [0.0, 1.0]], [[0.2, 0.2], [-0.3, -0.1]]];
    for (step, (g, want)) in grads.iter().zip(expected).enumerate() {
        let g = Tensor::new(g, &Device::Cpu).unwrap();
        opt.apply_gradients(std::slice::from_ref(&w), &[Some(g)]).unwrap();
        let got: Vec<f32> = w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in got.iter().zip(want) {
            assert!(
                (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                "{} step {}: {got:?} vs Keras {want:?}",
                opt.name(),
                step + 1
            );
        }
    }
    assert_eq!(opt.iterations(), 3);
}

#[test]
fn rmsprop_matches_keras() {
    run(
        RMSprop::default(),
        [
            [0.496837884, -0.996837735, 1.49683774, 1.99683774],
            [0.499944717, -0.999356687, 1.49683774, 1.99388123],
            [0.498734474, -1.00111997, 1.49918818, 1.99419141],
        ],
    );
    run(
        RMSprop::new(0.01).rho(0.8).momentum(0.5).centered(true),
        [
            [0.475000769, -0.975000203, 1.47500014, 1.97500002],
            [0.48619169, -0.980842948, 1.46250021, 1.93717372],
            [0.482709378, -0.997850001, 1.47385061, 1.92087841],
        ],
    );
}

#[test]
fn sgd_matches_keras() {
    run(
        SGD::default(),
        [
            [0.499000013, -0.998000026, 1.49699998, 1.99600005],
            [0.504000008, -1.00050008, 1.49699998, 1.98600006],
            [0.502000034, -1.00250006, 1.5, 1.98700011],
        ],
    );
    run(
        SGD::new(0.1).momentum(0.9),
        [
            [0.49000001, -0.980000019, 1.47000003, 1.96000004],
            [0.531000018, -0.986999989, 1.44300008, 1.824],
            [0.547900021, -1.01329994, 1.44870007, 1.71159995],
        ],
    );
    run(
        SGD::new(0.1).momentum(0.9).nesterov(true),
        [
            [0.481000006, -0.962000012, 1.44299996, 1.92400002],
            [0.567900002, -0.993300021, 1.41869998, 1.70160007],
            [0.563109994, -1.03697002, 1.45383, 1.61044002],
        ],
    );
}

#[test]
fn adam_matches_keras() {
    run(
        Adam::default(),
        [
            [0.499000043, -0.999000013, 1.49900007, 1.99900007],
            [0.499598384, -0.999162734, 1.49833, 1.99806035],
            [0.499795586, -0.99960804, 1.49841583, 1.99739611],
        ],
    );
    run(
        Adam::new(0.01).beta_1(0.8).beta_2(0.9).amsgrad(true),
        [
            [0.490000039, -0.99000001, 1.49000001, 1.99000001],
            [0.49631983, -0.992195964, 1.48387372, 1.98054934],
            [0.498075634, -0.997312307, 1.48567903, 1.97451901],
        ],
    );
}

fn t(v: &[&[f32]]) -> Tensor {
    let rows: Vec<Vec<f32>> = v.iter().map(|r| r.to_vec()).collect();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

fn close(got: Tensor, want: f64) {
    let got = got.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{got} vs Keras {want}");
}

#[test]
fn losses_match_keras() {
    let yt = t(&[&[0., 1., 0.], &[0., 0., 1.], &[1., 0., 0.]]);
    let yp = t(&[&[0.05, 0.95, 0.0], &[0.1, 0.8, 0.1], &[0.0, 0.3, 0.7]]);
    close(Loss::CategoricalCrossentropy.compute(&yt, &yp).unwrap(), 6.157324314117432);
    let ys = Tensor::new(&[1u8, 2, 0], &Device::Cpu).unwrap();
    close(Loss::SparseCategoricalCrossentropy.compute(&ys, &yp).unwrap(), 6.157324314117432);
    let bt = t(&[&[1., 0.], &[0., 0.], &[1., 1.]]);
    let bp = t(&[&[0.9, 0.2], &[0.0, 0.4], &[1.0, 0.6]]);
    close(Loss::BinaryCrossentropy.compute(&bt, &bp).unwrap(), 0.22502590715885162);
    close(Loss::MeanSquaredError.compute(&bt, &bp).unwrap(), 0.061666667461395264);
    close(Loss::MeanAbsoluteError.compute(&bt, &bp).unwrap(), 0.18333333730697632);
    let z = t(&[&[2.0, -1.0, 0.5], &[0.1, 0.2, 30.0], &[-3.0, 4.0, 1.0]]);
    close(
        Loss::CategoricalCrossentropy.compute_output(&yt, &Output::Logits(z.clone(), Activation::Softmax)).unwrap(),
        3.430255651473999,
    );
    let z2 = z.narrow(1, 0, 2).unwrap();
    close(
        Loss::BinaryCrossentropy.compute_output(&bt, &Output::Logits(z2, Activation::Sigmoid)).unwrap(),
        0.8415770530700684,
    );
}

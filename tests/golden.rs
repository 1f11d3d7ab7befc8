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
//!         "adam_amsgrad": keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.9, amsgrad=True),
//!         "adamw_default": keras.optimizers.AdamW(),
//!         "adamw_custom": keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1),
//!         "adagrad_default": keras.optimizers.Adagrad(),
//!         "adagrad_custom": keras.optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.5),
//!         "adadelta_default": keras.optimizers.Adadelta(),
//!         "adadelta_custom": keras.optimizers.Adadelta(learning_rate=1.0, rho=0.8),
//!         "adamax_default": keras.optimizers.Adamax(),
//!         "nadam_default": keras.optimizers.Nadam(),
//!         "nadam_custom": keras.optimizers.Nadam(learning_rate=0.01, beta_1=0.8),
//!         "rmsprop_expdecay": keras.optimizers.RMSprop(
//!             learning_rate=keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)),
//!         "sgd_cosine": keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.CosineDecay(0.1, 4))}
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
use kandle::optimizers::{
    Adadelta, Adagrad, Adam, AdamW, Adamax, CosineDecay, ExponentialDecay, Nadam, Optimizer, RMSprop, SGD,
};

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

#[test]
fn adamw_adagrad_adadelta_adamax_nadam_match_keras() {
    run(
        AdamW::default(),
        [
            [0.498998046, -0.998996019, 1.49899411, 1.99899209],
            [0.49959439, -0.999154747, 1.49831808, 1.99804437],
            [0.499789596, -0.999596059, 1.49839795, 1.99737215],
        ],
    );
    run(
        AdamW::new(0.01).weight_decay(0.1),
        [
            [0.489500403, -0.989000261, 1.48850012, 1.98800015],
            [0.494994342, -0.989638507, 1.48031127, 1.97661519],
            [0.496471286, -0.993101716, 1.4796896, 1.96799672],
        ],
    );
    run(
        Adagrad::default(),
        [
            [0.49969849, -0.999465466, 1.4993118, 1.99921548],
            [0.500531852, -1.00002098, 1.4993118, 1.99832463],
            [0.50021565, -1.00042713, 1.49987876, 1.99841332],
        ],
    );
    run(
        Adagrad::new(0.1).initial_accumulator_value(0.5),
        [
            [0.4859972, -0.972783446, 1.46094334, 1.95076346],
            [0.543351114, -1.00499129, 1.46094334, 1.87314844],
            [0.520990431, -1.02994263, 1.49732363, 1.88088667],
        ],
    );
    run(
        Adadelta::default(),
        [
            [0.499998599, -0.999998569, 1.49999857, 1.99999857],
            [0.500000536, -1.00000012, 1.49999857, 1.99999666],
            [0.499999493, -1.00000155, 1.5, 1.9999969],
        ],
    );
    run(
        Adadelta::new(1.0).rho(0.8),
        [
            [0.49929291, -0.99929291, 1.49929285, 1.99929285],
            [0.500277281, -1.0001061, 1.49929285, 1.99835134],
            [0.499726474, -1.00084114, 1.50003362, 1.99849129],
        ],
    );
    run(
        Adamax::default(),
        [
            [0.499000013, -0.999000013, 1.49899995, 1.99899995],
            [0.49943158, -0.999147356, 1.49852574, 1.99828422],
            [0.499556422, -0.999535918, 1.49859583, 1.99786901],
        ],
    );
    run(
        Nadam::default(),
        [
            [0.498937219, -0.99893719, 1.49893725, 1.99893725],
            [0.499924928, -0.999690115, 1.49886513, 1.99796176],
            [0.499598771, -1.00027239, 1.49956656, 1.9979527],
        ],
    );
    run(
        Nadam::new(0.01).beta_1(0.8),
        [
            [0.488948613, -0.988948643, 1.48894858, 1.98894858],
            [0.499685943, -0.996986568, 1.48785102, 1.97817016],
            [0.496289164, -1.00370455, 1.4956466, 1.97767115],
        ],
    );
}

#[test]
fn learning_rate_schedules_match_keras() {
    run(
        RMSprop::default().with_schedule(ExponentialDecay::new(0.01, 2, 0.5)),
        [
            [0.468378812, -0.96837759, 1.46837735, 1.96837735],
            [0.490347505, -0.986189246, 1.46837735, 1.94747126],
            [0.484296352, -0.995005667, 1.48012984, 1.94902194],
        ],
    );
    run(
        SGD::default().with_schedule(CosineDecay::new(0.1, 4)),
        [
            [0.49000001, -0.980000019, 1.47000003, 1.96000004],
            [0.53267765, -1.00133884, 1.47000003, 1.87464476],
            [0.52267766, -1.01133883, 1.48500001, 1.87964475],
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

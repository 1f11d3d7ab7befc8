//! A user-defined layer, written with candle ops as the guide shows: a composite layer holding
//! two Dense layers, used in a Sequential and in a functional model, differentiated by candle's
//! autograd inside kandle's backward walk, saved, and loaded with Keras-style custom objects.

use candle_core::{DType, Device, Tensor};
use kandle::layers::{BuildContext, Config, CustomObjects, Weight};
use kandle::models::{load_model, load_model_with};
use kandle::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// `x + dense_b(relu(dense_a(x)))`: a residual block as one layer.
#[derive(Debug)]
struct Residual {
    name: Option<String>,
    units: usize,
    a: Dense,
    b: Dense,
    built: bool,
}

impl Residual {
    fn new(units: usize) -> Self {
        Residual {
            name: None,
            units,
            a: Dense::new(units).activation(Activation::Relu),
            b: Dense::new(units),
            built: false,
        }
    }
}

impl Layer for Residual {
    fn class_name(&self) -> &'static str {
        "Residual"
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn set_name(&mut self, name: String) {
        self.name = Some(name);
    }
    fn compute_output_shape(&self, input_shape: &[usize]) -> kandle::Result<Vec<usize>> {
        if input_shape != [self.units] {
            return Err(Error::Shape {
                context: "Residual".into(),
                expected: format!("(None, {})", self.units),
                received: format!("{input_shape:?}"),
            });
        }
        Ok(input_shape.to_vec())
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> kandle::Result<Vec<usize>> {
        self.compute_output_shape(input_shape)?;
        self.a.build(input_shape, ctx)?;
        self.b.build(input_shape, ctx)?;
        self.built = true;
        Ok(input_shape.to_vec())
    }
    fn built(&self) -> bool {
        self.built
    }
    fn forward(&self, x: &Tensor, train: bool) -> kandle::Result<Tensor> {
        Ok((x + self.b.forward(&self.a.forward(x, train)?, train)?)?)
    }
    // Both inner layers name their weights `kernel` and `bias`: the model makes the names
    // unique (`residual/kernel_1`).
    fn weights(&self) -> Vec<Weight> {
        self.a.weights().into_iter().chain(self.b.weights()).collect()
    }
    fn get_config(&self) -> Config {
        Config::new().set("units", self.units)
    }
}

fn model(dtype: DType) -> Sequential {
    Sequential::new()
        .seed(1)
        .dtype(dtype)
        .add(Dense::new(4).activation(Activation::Tanh).input_shape(3))
        .add(Residual::new(4))
        .add(Dense::new(2).activation(Activation::Softmax))
}

#[test]
fn custom_layer_trains_checks_saves_and_loads() {
    let m = model(DType::F64);
    m.compile(SGD::new(0.1), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let names: Vec<String> = m.named_weights().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[2..6], ["residual/kernel", "residual/bias", "residual/kernel_1", "residual/bias_1"]);
    // Its gradient (candle's autograd for this one node) against central differences.
    let mut rng = StdRng::seed_from_u64(2);
    let x = Tensor::from_vec((0..24).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>(), (8, 3), &Device::Cpu)
        .unwrap();
    let y =
        to_categorical(&Tensor::from_vec((0..8u32).map(|i| i % 2).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap(), 2)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
    let grads = m.compute_gradients(&x, &y).unwrap();
    for ((name, var), (_, g)) in m.named_weights().unwrap().into_iter().zip(&grads) {
        let flat = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for j in 0..flat.len() {
            let mut v = flat.clone();
            let eps = 1e-6;
            let mut at = |d: f64| {
                v[j] = flat[j] + d;
                var.set(&Tensor::from_vec(v.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                m.clone().evaluate(&x, &y, 8).unwrap().loss
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(flat.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            assert!((numeric - g[j]).abs() <= 1e-6 * (1.0 + numeric.abs()), "{name}[{j}]: {} vs {numeric}", g[j]);
        }
    }
    m.fit(&x, &y, FitOptions::default().batch_size(4).epochs(3).verbose(0)).unwrap();
    let path = std::env::temp_dir().join(format!("kandle-custom-{}.kandle", std::process::id()));
    m.save(&path).unwrap();
    let e = load_model(&path).unwrap_err().to_string();
    assert!(e.contains("unknown layer class \"Residual\"") && e.contains("load_model_with"), "{e}");
    let objects = CustomObjects::new()
        .register("Residual", |config: &Config| Ok(Box::new(Residual::new(config.get("units")?)) as Box<dyn Layer>));
    let loaded = load_model_with(&path, &objects).unwrap();
    std::fs::remove_file(&path).ok();
    let diff = (loaded.predict(&x, 8).unwrap() - m.predict(&x, 8).unwrap()).unwrap().abs().unwrap();
    assert_eq!(diff.max_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
    assert_eq!(loaded.learning_rate().unwrap(), 0.1);
}

#[test]
fn custom_layer_in_a_functional_model() {
    let inputs = Input::new(3);
    let x = Dense::new(4).call(&inputs).unwrap();
    let x = Residual::new(4).call(&x).unwrap();
    let out = Dense::new(1).call(&x).unwrap();
    let m = Model::new(&[inputs], &[out]).unwrap().seed(0);
    m.compile(Adam::new(0.05), Loss::MeanSquaredError, ()).unwrap();
    let x = Tensor::rand(-1f32, 1., (32, 3), &Device::Cpu).unwrap();
    let y = x.sum_keepdim(1).unwrap();
    let h = m.fit(&x, &y, FitOptions::default().batch_size(8).epochs(40).verbose(0)).unwrap();
    let loss = h.get("loss").unwrap();
    assert!(loss[39] < 0.1 * loss[0], "{} -> {}", loss[0], loss[39]);
}

/// `Model::profile` times a user-defined layer too (candle's autograd runs its backward pass)
/// and leaves the weights as they were.
#[test]
fn custom_layer_is_profiled() {
    let m = model(DType::F32);
    m.compile(SGD::new(0.1), Loss::CategoricalCrossentropy, ()).unwrap();
    let x = Tensor::rand(-1f32, 1.0, (8, 3), &Device::Cpu).unwrap();
    let y =
        to_categorical(&Tensor::from_vec((0..8u32).map(|i| i % 2).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap(), 2)
            .unwrap();
    let before: Vec<Vec<f32>> =
        m.get_weights().unwrap().iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    let p = m.profile(&x, &y, 2).unwrap();
    let residual = p.layers.iter().find(|l| l.name == "residual").expect("the custom layer is listed");
    assert!(residual.forward > std::time::Duration::ZERO && residual.backward > std::time::Duration::ZERO);
    let after: Vec<Vec<f32>> =
        m.get_weights().unwrap().iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert_eq!(before, after);
}

/// A layer written for kandle 0.1's `Layer` trait: its name kept by itself, its configuration
/// as strings, its constructor reading them (the deprecated `CustomObjects::layer`).
#[derive(Debug)]
struct Legacy {
    name: Option<String>,
    factor: f64,
    built: bool,
}

impl Layer for Legacy {
    fn class_name(&self) -> &'static str {
        "Legacy"
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn set_name(&mut self, name: String) {
        self.name = Some(name);
    }
    fn compute_output_shape(&self, input_shape: &[usize]) -> kandle::Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }
    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> kandle::Result<Vec<usize>> {
        self.built = true;
        Ok(input_shape.to_vec())
    }
    fn built(&self) -> bool {
        self.built
    }
    fn forward(&self, x: &Tensor, _train: bool) -> kandle::Result<Tensor> {
        Ok((x * self.factor)?)
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("factor", self.factor.to_string())]
    }
}

#[test]
#[allow(deprecated)]
fn a_layer_written_for_kandle_0_1_saves_and_loads() {
    let m = Sequential::new()
        .seed(4)
        .add(Dense::new(3).input_shape(2))
        .add(Legacy { name: None, factor: 2.5, built: false })
        .add(Dense::new(1));
    m.compile("sgd", Loss::MeanSquaredError, ()).unwrap();
    assert_eq!(m.layer_names(), ["dense", "legacy", "dense_1"]);
    assert_eq!(m.get_layer("legacy").unwrap().config(), [("factor", "2.5".to_string())]);
    let path = std::env::temp_dir().join(format!("kandle-legacy-{}.kandle", std::process::id()));
    m.save(&path).unwrap();
    let objects = CustomObjects::new().layer("Legacy", |cfg: &HashMap<String, String>| {
        let factor = cfg["factor"].parse().map_err(|_| Error::invalid("factor", "not a number"))?;
        Ok(Box::new(Legacy { name: None, factor, built: false }) as Box<dyn Layer>)
    });
    let loaded = load_model_with(&path, &objects).unwrap();
    std::fs::remove_file(&path).ok();
    let x = Tensor::new(&[[0.5f32, -1.0]], &Device::Cpu).unwrap();
    assert_eq!(
        loaded.predict(&x, 1).unwrap().to_vec2::<f32>().unwrap(),
        m.predict(&x, 1).unwrap().to_vec2::<f32>().unwrap()
    );
}

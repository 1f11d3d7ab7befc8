//! The reduction of data-parallel training between threads: every replica gets the sums, in a
//! fixed order (bit-identical whatever thread comes first), round after round; a replica that
//! gives up or sends mismatched tensors makes the others fail instead of hang.

use candle_core::{DType, Device, Tensor};
use kandle::distribute::{AllReduce, InProcessAllReduce};
use std::time::Duration;

#[test]
fn replicas_get_the_same_sums_round_after_round() {
    let n = 4;
    let ar = InProcessAllReduce::new(n);
    assert_eq!(ar.replicas(), n);
    let rounds = 50;
    let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let ar = &ar;
                s.spawn(move || {
                    (0..rounds)
                        .map(|k| {
                            if (r + k) % 3 == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            // Values whose f32 sum depends on the order: 1e8, 1, -1e8, 1...
                            let v = [1e8f32 * if r % 2 == 0 { 1.0 } else { -1.0 }, 1.0 + r as f32 + k as f32];
                            let t = Tensor::new(&v, &Device::Cpu).unwrap();
                            let m = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
                            let out = ar.all_reduce_sum(r, vec![t, m]).unwrap();
                            assert_eq!(out[1].to_vec2::<f64>().unwrap(), vec![vec![n as f64; 3]; 2]);
                            out[0].to_vec1::<f32>().unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, per_round) in results.iter().enumerate() {
        for (k, got) in per_round.iter().enumerate() {
            assert_eq!(got[1], (0..n).map(|r| 1.0 + r as f32 + k as f32).sum::<f32>(), "round {k} replica {r}");
            // Summed in replica order: the same bits for every replica.
            assert_eq!(got[0].to_bits(), results[0][k][0].to_bits());
        }
    }
}

#[test]
fn a_replica_that_gives_up_or_disagrees_is_an_error_not_a_hang() {
    let ar = InProcessAllReduce::new(2);
    let t = || Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| ar.all_reduce_sum(0, vec![t()]));
        std::thread::sleep(Duration::from_millis(50));
        ar.abort("replica 1's batch failed");
        let err = waiting.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("replica 1's batch failed"), "{err}");
    });
    let ar = InProcessAllReduce::new(2);
    let errs: Vec<String> = std::thread::scope(|s| {
        let a = s.spawn(|| ar.all_reduce_sum(0, vec![t()]));
        let b = s.spawn(|| ar.all_reduce_sum(1, vec![Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()]));
        [a.join().unwrap(), b.join().unwrap()].into_iter().map(|r| r.unwrap_err().to_string()).collect()
    });
    assert!(errs.iter().all(|e| e.contains("shape")), "{errs:?}");
    assert!(InProcessAllReduce::new(2).all_reduce_sum(2, vec![t()]).unwrap_err().to_string().contains("0..2"));
}

/// The tutorial's layers, small, in f64: convolutions, pooling, dropout (element-wise and
/// spatial), dense.
fn replica_model() -> kandle::prelude::Sequential {
    replica_model_seeded(11)
}

fn replica_model_seeded(seed: u64) -> kandle::prelude::Sequential {
    use kandle::prelude::*;
    let m = Sequential::new()
        .seed(seed)
        .dtype(DType::F64)
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((6, 6, 2)))
        .add(kandle::layers::SpatialDropout2D::new(0.3))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile("rmsprop", "categorical_crossentropy", ()).unwrap();
    m
}

#[test]
fn shards_with_their_row_offsets_give_the_whole_batch_gradient() {
    use kandle::distribute::with_row_offset;
    let dev = Device::Cpu;
    let x = Tensor::rand(0f64, 1., (8, 6, 6, 2), &dev).unwrap();
    let labels = Tensor::new(&[0u32, 1, 2, 2, 1, 0, 1, 2], &dev).unwrap();
    let y = kandle::utils::to_categorical(&labels, 3).unwrap().to_dtype(DType::F64).unwrap();
    let whole = replica_model().compute_gradients(&x, &y).unwrap();
    // Two replicas of 3 and 5 samples: each its own copy of the model, each its shard's loss
    // (a mean over its samples), weighted by its share of the batch.
    let shard = |start: usize, len: usize, offset: usize| {
        let m = replica_model();
        with_row_offset(offset, || m.compute_gradients(&x.narrow(0, start, len)?, &y.narrow(0, start, len)?)).unwrap()
    };
    let combine = |a: &[(String, Tensor)], b: &[(String, Tensor)]| -> Vec<Tensor> {
        a.iter()
            .zip(b)
            .map(|((_, a), (_, b))| ((a * (3.0 / 8.0)).unwrap() + (b * (5.0 / 8.0)).unwrap()).unwrap())
            .collect()
    };
    let max_diff = |got: &[Tensor]| {
        whole
            .iter()
            .zip(got)
            .map(|((_, w), g)| (w - g).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap())
            .fold(0.0f64, f64::max)
    };
    let (a, b) = (shard(0, 3, 0), shard(3, 5, 3));
    let d = max_diff(&combine(&a, &b));
    assert!(d < 1e-12, "shards with offsets: {d}");
    // Without its offset the second replica draws the first rows' masks: another gradient.
    let d = max_diff(&combine(&a, &shard(3, 5, 0)));
    assert!(d > 1e-4, "without the offset the gradients should differ, max difference {d}");
}

/// Training data for the replica tests: `n` images of the replica model's shape, one-hot targets.
fn replica_data(n: usize, dtype: DType) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::rand(0f64, 1., (n, 6, 6, 2), &dev).unwrap().to_dtype(dtype).unwrap();
    let labels = Tensor::from_vec((0..n as u32).map(|i| (i * 7 + 1) % 3).collect::<Vec<_>>(), n, &dev).unwrap();
    (x, kandle::utils::to_categorical(&labels, 3).unwrap().to_dtype(dtype).unwrap())
}

/// The largest difference between two models' weights, relative to the largest weight.
fn weight_gap(a: &[Tensor], b: &[Tensor]) -> f64 {
    let abs_max =
        |t: &Tensor| t.to_dtype(DType::F64).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    let scale = a.iter().map(abs_max).fold(0.0f64, f64::max);
    a.iter().zip(b).map(|(a, b)| abs_max(&(a - b).unwrap())).fold(0.0f64, f64::max) / scale
}

#[test]
fn mirrored_replicas_give_the_weights_of_one_replica_with_the_whole_batch() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    // 30 samples in batches of 12: the last batch (6) splits 2, 2, 1, 1 over four replicas.
    let (x, y) = replica_data(30, DType::F64);
    let train = |strategy: Option<MirroredStrategy>| {
        let m = replica_model();
        let mut opts = FitOptions::default().batch_size(12).epochs(3).verbose(0).seed(5);
        if let Some(s) = &strategy {
            opts = opts.distribute(s);
        }
        let h = m.fit(&x, &y, opts).unwrap();
        (m.get_weights().unwrap(), h.get("loss").unwrap().to_vec(), h.get("accuracy").map(|a| a.to_vec()))
    };
    let (one, loss, acc) = train(None);
    for n in [1, 2, 3, 4] {
        let (w, l, a) = train(Some(MirroredStrategy::cpu(n).unwrap()));
        let gap = weight_gap(&one, &w);
        eprintln!("{n} replicas (f64): weights {gap:e} apart (relative)");
        assert!(gap < 1e-12, "{n} replicas: weights {gap:e} apart (relative)");
        for (e, (p, q)) in loss.iter().zip(&l).enumerate() {
            assert!((p - q).abs() < 1e-12 * p.abs(), "{n} replicas, epoch {e}: loss {q} against {p}");
        }
        assert_eq!(a, acc, "{n} replicas: the epoch accuracies");
    }
    // The test can fail: a model trained with another seed is far from these weights.
    let other = replica_model();
    let _ = other.fit(&x, &y, FitOptions::default().batch_size(12).epochs(3).verbose(0).seed(6)).unwrap();
    assert!(weight_gap(&one, &other.get_weights().unwrap()) > 1e-3);
}

#[test]
fn mirrored_replicas_in_f32_stay_within_rounding_of_one_replica() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    let model = || {
        let m = Sequential::new()
            .seed(3)
            .add(Conv2D::new(8, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((6, 6, 2)))
            .add(Conv2D::new(8, (3, 3)).activation(Activation::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Dropout::new(0.25))
            .add(Flatten::new())
            .add(Dense::new(16).activation(Activation::Relu))
            .add(Dropout::new(0.5))
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        m
    };
    let (x, y) = replica_data(64, DType::F32);
    let run = |s: Option<&MirroredStrategy>| {
        let m = model();
        let mut opts = FitOptions::default().batch_size(16).epochs(2).verbose(0).seed(1);
        if let Some(s) = s {
            opts = opts.distribute(s);
        }
        m.fit(&x, &y, opts).unwrap();
        m.get_weights().unwrap()
    };
    let one = run(None);
    let gap = weight_gap(&one, &run(Some(&MirroredStrategy::cpu(2).unwrap())));
    eprintln!("2 replicas (f32): weights {gap:e} apart (relative)");
    // f32 sums in another order: RMSprop's first steps (g / sqrt(v)) keep the differences small.
    assert!(gap < 1e-6, "2 replicas: weights {gap:e} apart (relative)");
}

#[test]
fn batch_normalization_uses_each_replicas_statistics() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    let model = || {
        let m = Sequential::new()
            .seed(4)
            .dtype(DType::F64)
            .add(Conv2D::new(4, (3, 3)).input_shape((6, 6, 2)))
            .add(BatchNormalization::new())
            .add(Activation::Relu)
            .add(Flatten::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile("sgd", "categorical_crossentropy", ()).unwrap();
        m
    };
    // Each batch of 8 holds the same 4 samples twice: two replicas of 4 see the whole batch's
    // statistics, so the run equals one replica's; with 4 replicas (2 samples each) it does not.
    let (x4, y4) = replica_data(4, DType::F64);
    let x = Tensor::cat(&[&x4, &x4, &x4, &x4], 0).unwrap();
    let y = Tensor::cat(&[&y4, &y4, &y4, &y4], 0).unwrap();
    let run = |s: Option<MirroredStrategy>| {
        let m = model();
        let mut opts = FitOptions::default().batch_size(8).epochs(2).shuffle(false).verbose(0);
        if let Some(s) = &s {
            opts = opts.distribute(s);
        }
        m.fit(&x, &y, opts).unwrap();
        m.get_weights().unwrap()
    };
    let one = run(None);
    let two = run(Some(MirroredStrategy::cpu(2).unwrap()));
    assert!(weight_gap(&one, &two) < 1e-12, "identical halves: {:e}", weight_gap(&one, &two));
    let four = run(Some(MirroredStrategy::cpu(4).unwrap()));
    assert!(weight_gap(&one, &four) > 1e-6, "per-replica statistics of 2 samples should change the run");
    // The moving statistics are replica 0's (momentum 0.99, 4 steps).
    let names: Vec<String> = model().named_weights().unwrap().into_iter().map(|(n, _)| n).collect();
    let mean = names.iter().position(|n| n.ends_with("moving_mean")).unwrap();
    assert!(four[mean].to_vec1::<f64>().unwrap().iter().all(|v| v.is_finite() && *v != 0.0));
}

#[test]
fn a_distributed_fit_generator_equals_the_single_replica_one() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    use kandle::preprocessing::image::ImageDataGenerator;
    let (x, y) = replica_data(20, DType::F32);
    let gen = ImageDataGenerator::new().width_shift_range(0.2).horizontal_flip(true);
    let run = |s: Option<MirroredStrategy>| {
        let m = replica_model();
        let mut opts = GeneratorOptions::default().epochs(2).verbose(0).seed(2);
        if let Some(s) = &s {
            opts = opts.distribute(s);
        }
        m.fit_generator(gen.flow(&x, &y, 8).seed(9), opts).unwrap();
        m.get_weights().unwrap()
    };
    let gap = weight_gap(&run(None), &run(Some(MirroredStrategy::cpu(3).unwrap())));
    assert!(gap < 1e-12, "3 replicas: {gap:e}");
}

#[test]
fn a_non_finite_loss_on_one_replica_stops_every_replica_and_leaves_the_model_as_it_was() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    let (x, y) = replica_data(8, DType::F64);
    // A NaN target in the last sample: only the second replica's shard sees it.
    let mut v = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let last = v.len() - 1;
    v[last] = f64::NAN;
    let y = Tensor::from_vec(v, y.dims(), &Device::Cpu).unwrap();
    let m = replica_model();
    let before = m.get_weights().unwrap();
    let s = MirroredStrategy::cpu(2).unwrap();
    let err = m.fit(&x, &y, FitOptions::default().batch_size(8).shuffle(false).verbose(0).distribute(&s)).unwrap_err();
    assert!(err.to_string().contains("loss"), "{err}");
    assert_eq!(weight_gap(&before, &m.get_weights().unwrap()), 0.0);
}

#[test]
fn a_strategy_is_checked_when_made() {
    use kandle::distribute::{InProcessAllReduce, MirroredStrategy};
    use std::sync::Arc;
    let err = MirroredStrategy::new(Vec::new()).unwrap_err().to_string();
    assert!(err.contains("devices") && err.contains("at least one"), "{err}");
    let err = MirroredStrategy::cpu(2).unwrap().cross_device_ops(Arc::new(InProcessAllReduce::new(3))).unwrap_err();
    assert!(err.to_string().contains("between 2 replicas") && err.to_string().contains("for 3"), "{err}");
}

#[test]
fn workers_start_from_worker_0s_weights_and_train_as_one_replica() {
    use kandle::distribute::{AllReduce, InProcessAllReduce, MirroredStrategy};
    use kandle::prelude::*;
    use std::sync::Arc;
    let (x, y) = replica_data(30, DType::F64);
    let opts = || FitOptions::default().batch_size(12).epochs(2).verbose(0).seed(5);
    let one = replica_model();
    one.fit(&x, &y, opts()).unwrap();
    let one = one.get_weights().unwrap();
    // Three workers (threads standing for processes), each with a model of another seed.
    let reduce: Arc<dyn AllReduce> = Arc::new(InProcessAllReduce::new(3));
    let workers: Vec<Vec<Tensor>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|w| {
                let (reduce, x, y) = (reduce.clone(), &x, &y);
                s.spawn(move || {
                    let strategy = MirroredStrategy::multi_worker(Device::Cpu, w, 3, reduce).unwrap();
                    assert_eq!((strategy.num_replicas_in_sync(), strategy.is_chief()), (3, w == 0));
                    let m = replica_model_seeded(if w == 0 { 11 } else { 100 + w as u64 });
                    m.fit(x, y, opts().distribute(&strategy)).unwrap();
                    m.get_weights().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (w, weights) in workers.iter().enumerate() {
        let gap = weight_gap(&one, weights);
        assert!(gap < 1e-12, "worker {w}: {gap:e}");
    }
    // Without a seed the workers could draw different batches: refused before any reduction.
    let lone = MirroredStrategy::multi_worker(Device::Cpu, 1, 3, reduce.clone()).unwrap();
    let err = replica_model().fit(&x, &y, FitOptions::default().verbose(0).distribute(&lone)).unwrap_err().to_string();
    assert!(err.contains("seed") && err.contains("every worker"), "{err}");
    let err = MirroredStrategy::multi_worker(Device::Cpu, 3, 3, reduce.clone()).unwrap_err().to_string();
    assert!(err.contains("0..3"), "{err}");
    let err = MirroredStrategy::multi_worker(Device::Cpu, 0, 2, reduce).unwrap_err().to_string();
    assert!(err.contains("between 2 workers"), "{err}");
}

#[test]
fn the_tutorial_cnn_trains_on_two_and_three_replicas_as_on_one() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    // The CIFAR-10 tutorial's CNN at its full size, in f64 (in f32 the sums' other order,
    // amplified by RMSprop's g / sqrt(v) on near-zero gradients, moves some weights by up to
    // 3e-3 of the largest after three steps).
    let model = || {
        let m = Sequential::new().seed(0).dtype(DType::F64);
        for (i, f) in [32, 64].into_iter().enumerate() {
            let first = Conv2D::new(f, (3, 3)).padding(Padding::Same).activation(Activation::Relu);
            m.add(if i == 0 { first.input_shape((32, 32, 3)) } else { first });
            m.add(Conv2D::new(f, (3, 3)).activation(Activation::Relu));
            m.add(MaxPooling2D::new((2, 2)));
            m.add(Dropout::new(0.25));
        }
        m.add(Flatten::new());
        m.add(Dense::new(512).activation(Activation::Relu));
        m.add(Dropout::new(0.5));
        m.add(Dense::new(10).activation(Activation::Softmax));
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        m
    };
    let dev = Device::Cpu;
    let x = Tensor::rand(0f64, 1., (80, 32, 32, 3), &dev).unwrap();
    let labels = Tensor::from_vec((0..80u32).map(|i| (i * 3) % 10).collect::<Vec<_>>(), 80, &dev).unwrap();
    let y = kandle::utils::to_categorical(&labels, 10).unwrap().to_dtype(DType::F64).unwrap();
    let run = |s: Option<MirroredStrategy>| {
        let m = model();
        // Batches of 32, 32 and 16.
        let mut opts = FitOptions::default().batch_size(32).verbose(0).seed(1);
        if let Some(s) = &s {
            opts = opts.distribute(s);
        }
        m.fit(&x, &y, opts).unwrap();
        m.get_weights().unwrap()
    };
    let one = run(None);
    for n in [2, 3] {
        let gap = weight_gap(&one, &run(Some(MirroredStrategy::cpu(n).unwrap())));
        eprintln!("tutorial CNN, {n} replicas (f64): weights {gap:e} apart (relative)");
        assert!(gap < 1e-12, "{n} replicas: {gap:e}");
    }
}

#[test]
fn batch_normalization_keeps_replica_0s_moving_statistics_as_keras_does() {
    use kandle::distribute::MirroredStrategy;
    use kandle::prelude::*;
    // Keras 3.15 on TensorFlow 2.21, two logical CPU devices (tests/golden/make_mirrored_goldens.py).
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("golden/mirrored_goldens.json")).expect("mirrored goldens");
    let xs: Vec<f64> = golden["x"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let x = Tensor::from_vec(xs, (4, 1), &Device::Cpu).unwrap();
    let y = Tensor::new(&[[0f64], [1.], [0.], [1.]], &Device::Cpu).unwrap();
    let run = |s: Option<MirroredStrategy>| {
        let m = Sequential::new().dtype(DType::F64).add(BatchNormalization::new().momentum(0.0).input_shape(1));
        m.compile(SGD::new(0.0), Loss::MeanSquaredError, ()).unwrap();
        let mut opts = FitOptions::default().batch_size(4).shuffle(false).verbose(0);
        if let Some(s) = &s {
            opts = opts.distribute(s);
        }
        m.fit(&x, &y, opts).unwrap();
        let w = m.named_weights().unwrap();
        let get = |n: &str| {
            let v = &w.iter().find(|(k, _)| k.ends_with(n)).unwrap().1;
            v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
        };
        (get("moving_mean"), get("moving_variance"))
    };
    for (key, strategy) in [("one_device", None), ("mirrored_2", Some(MirroredStrategy::cpu(2).unwrap()))] {
        let (mean, var) = run(strategy);
        let (km, kv) = (golden[key]["moving_mean"].as_f64().unwrap(), golden[key]["moving_variance"].as_f64().unwrap());
        assert!(
            (mean - km).abs() < 1e-12 && (var - kv).abs() < 1e-12,
            "{key}: kandle ({mean}, {var}), Keras ({km}, {kv})"
        );
    }
}

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
    use kandle::prelude::*;
    let m = Sequential::new()
        .seed(11)
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

//! The kernels' gradients and values: f64 finite differences against candle's autograd, and the
//! forward passes against naive reference loops, on odd sizes, strides 2, 'same' and 'valid'
//! padding, dilation and batch 1; the f32 and bf16 kernels against the f64 ones, at every SIMD
//! level the CPU has.

use candle_core::{DType, Device, Tensor, Var};
use kandle::kernels::{conv2d, pool2d, ConvParams, PoolKind, PoolParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::gradcheck::{check, rand_tensor, weigh};

fn naive_conv(x: &Tensor, k: &Tensor, p: ConvParams) -> Vec<f64> {
    let (n, h, w, ci) = x.dims4().unwrap();
    let (kh, kw, _, co) = k.dims4().unwrap();
    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let kv: Vec<f64> = k.flatten_all().unwrap().to_vec1().unwrap();
    let (pt, pb, pl, pr) = p.padding;
    let oh = (h + pt + pb - (kh - 1) * p.dilation.0 - 1) / p.stride.0 + 1;
    let ow = (w + pl + pr - (kw - 1) * p.dilation.1 - 1) / p.stride.1 + 1;
    let mut out = vec![0.0; n * oh * ow * co];
    for b in 0..n {
        for r in 0..oh {
            for q in 0..ow {
                for o in 0..co {
                    let mut s = 0.0;
                    for i in 0..kh {
                        for j in 0..kw {
                            let y = (r * p.stride.0 + i * p.dilation.0) as isize - pt as isize;
                            let xx = (q * p.stride.1 + j * p.dilation.1) as isize - pl as isize;
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            for c in 0..ci {
                                s += xv[((b * h + y as usize) * w + xx as usize) * ci + c]
                                    * kv[((i * kw + j) * ci + c) * co + o];
                            }
                        }
                    }
                    out[((b * oh + r) * ow + q) * co + o] = s;
                }
            }
        }
    }
    out
}

fn conv_cases() -> Vec<(Vec<usize>, Vec<usize>, ConvParams)> {
    let p = |stride, dilation, padding| ConvParams { stride, dilation, padding };
    vec![
        // valid 3x3 on an odd map
        (vec![2, 7, 5, 3], vec![3, 3, 3, 4], p((1, 1), (1, 1), (0, 0, 0, 0))),
        // 'same' 3x3
        (vec![1, 6, 6, 2], vec![3, 3, 2, 3], p((1, 1), (1, 1), (1, 1, 1, 1))),
        // stride 2 'same' on an odd map: asymmetric padding (0 before, 1 after)
        (vec![2, 7, 7, 2], vec![3, 3, 2, 2], p((2, 2), (1, 1), (1, 1, 1, 1))),
        // even kernel 'same': extra row/column at the bottom/right
        (vec![1, 5, 4, 3], vec![2, 2, 3, 2], p((1, 1), (1, 1), (0, 1, 0, 1))),
        // unequal strides and a non-square kernel
        (vec![2, 8, 7, 2], vec![3, 2, 2, 3], p((2, 1), (1, 1), (0, 0, 0, 0))),
        // dilation 2
        (vec![1, 9, 8, 2], vec![3, 3, 2, 2], p((1, 1), (2, 2), (2, 2, 2, 2))),
        // 1x1 kernel, stride 3
        (vec![3, 5, 5, 4], vec![1, 1, 4, 5], p((3, 3), (1, 1), (0, 0, 0, 0))),
    ]
}

#[test]
fn conv2d_forward_matches_naive_loops() {
    let mut rng = StdRng::seed_from_u64(1);
    for (xs, ks, p) in conv_cases() {
        let x = rand_tensor(&xs, &mut rng);
        let k = rand_tensor(&ks, &mut rng);
        let got: Vec<f64> = conv2d(&x, &k, p).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want = naive_conv(&x, &k, p);
        assert_eq!(got.len(), want.len(), "{xs:?} {ks:?} {p:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{xs:?} {ks:?} {p:?}: {g} vs {w}");
        }
        // f32 agrees with f64 too.
        let got32: Vec<f32> = conv2d(&x.to_dtype(DType::F32).unwrap(), &k.to_dtype(DType::F32).unwrap(), p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, w) in got32.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-4, "f32 {xs:?} {ks:?} {p:?}: {g} vs {w}");
        }
    }
}

#[test]
fn conv2d_gradients() {
    let mut rng = StdRng::seed_from_u64(2);
    for (xs, ks, p) in conv_cases() {
        let x = rand_tensor(&xs, &mut rng);
        let k = rand_tensor(&ks, &mut rng);
        check(&[x, k], |t| weigh(&conv2d(&t[0], &t[1], p).unwrap(), 7));
    }
}

fn naive_pool(x: &Tensor, kind: PoolKind, p: PoolParams) -> Vec<f64> {
    let (n, h, w, c) = x.dims4().unwrap();
    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let (pt, pb, pl, pr) = p.padding;
    let oh = (h + pt + pb - p.pool.0) / p.stride.0 + 1;
    let ow = (w + pl + pr - p.pool.1) / p.stride.1 + 1;
    let mut out = Vec::new();
    for b in 0..n {
        for r in 0..oh {
            for q in 0..ow {
                for ch in 0..c {
                    let mut vals = Vec::new();
                    for i in 0..p.pool.0 {
                        for j in 0..p.pool.1 {
                            let y = (r * p.stride.0 + i) as isize - pt as isize;
                            let xx = (q * p.stride.1 + j) as isize - pl as isize;
                            if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                                vals.push(xv[((b * h + y as usize) * w + xx as usize) * c + ch]);
                            }
                        }
                    }
                    out.push(match kind {
                        PoolKind::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                    });
                }
            }
        }
    }
    out
}

fn pool_cases() -> Vec<(Vec<usize>, PoolParams)> {
    let p = |pool, stride, padding| PoolParams { pool, stride, padding };
    vec![
        // the tutorial's odd case: 13x13 -> 6x6
        (vec![2, 13, 13, 3], p((2, 2), (2, 2), (0, 0, 0, 0))),
        (vec![1, 4, 6, 2], p((2, 2), (2, 2), (0, 0, 0, 0))),
        // overlapping windows
        (vec![2, 7, 7, 2], p((3, 3), (2, 2), (0, 0, 0, 0))),
        // 'same' on an odd map: partial windows at the bottom/right
        (vec![1, 5, 5, 3], p((2, 2), (2, 2), (0, 1, 0, 1))),
        // non-square window, unequal strides
        (vec![1, 6, 7, 2], p((3, 2), (1, 2), (0, 0, 0, 0))),
    ]
}

#[test]
fn pooling_forward_matches_naive_loops() {
    let mut rng = StdRng::seed_from_u64(3);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (xs, p) in pool_cases() {
            let x = rand_tensor(&xs, &mut rng);
            let got: Vec<f64> = pool2d(&x, kind, p).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let want = naive_pool(&x, kind, p);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{kind:?} {xs:?} {p:?}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn pooling_gradients_including_odd_sizes() {
    let mut rng = StdRng::seed_from_u64(4);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (xs, p) in pool_cases() {
            let x = rand_tensor(&xs, &mut rng);
            check(&[x], |t| weigh(&pool2d(&t[0], kind, p).unwrap(), 9));
        }
    }
}

/// Ties, as after a ReLU: the gradient of each window goes to its first maximum in row-major
/// order (TensorFlow's choice), once, even where windows overlap.
#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum() {
    let mut rng = StdRng::seed_from_u64(14);
    for (xs, p) in pool_cases() {
        let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
        let xv: Vec<f64> = (0..n * h * w * c).map(|_| rng.random_range(0..3) as f64).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), xs.clone(), &Device::Cpu).unwrap()).unwrap();
        let y = pool2d(x.as_tensor(), PoolKind::Max, p).unwrap();
        let (_, oh, ow, _) = y.dims4().unwrap();
        let wv: Vec<f64> = (0..y.elem_count()).map(|i| 1.0 + i as f64).collect();
        let wt = Tensor::from_vec(wv.clone(), y.shape(), &Device::Cpu).unwrap();
        let grads = (y * wt).unwrap().sum_all().unwrap().backward().unwrap();
        let got: Vec<f64> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut want = vec![0.0; xv.len()];
        let (pt, _, pl, _) = p.padding;
        for b in 0..n {
            for r in 0..oh {
                for q in 0..ow {
                    for ch in 0..c {
                        let mut best: Option<(f64, usize)> = None;
                        for i in 0..p.pool.0 {
                            for j in 0..p.pool.1 {
                                let yy = (r * p.stride.0 + i) as isize - pt as isize;
                                let xx = (q * p.stride.1 + j) as isize - pl as isize;
                                if yy >= 0 && xx >= 0 && yy < h as isize && xx < w as isize {
                                    let k = ((b * h + yy as usize) * w + xx as usize) * c + ch;
                                    if best.is_none_or(|(v, _)| xv[k] > v) {
                                        best = Some((xv[k], k));
                                    }
                                }
                            }
                        }
                        want[best.unwrap().1] += wv[((b * oh + r) * ow + q) * c + ch];
                    }
                }
            }
        }
        assert_eq!(got, want, "{xs:?} {p:?}");
    }
}

/// The pooling that runs on GPUs (gathers and scatters of tensor operations) gives the CPU
/// kernels' results, forward and backward, on every geometry, ties included (first maximum).
#[test]
fn pooling_on_tensor_operations_matches_the_cpu_kernels() {
    use kandle::kernels::{pool2d_backward, pool2d_backward_gather, pool2d_gather};
    // A window larger than the image is an error, not a panic, on this path too.
    let small = Tensor::zeros((1, 2, 2, 1), candle_core::DType::F64, &Device::Cpu).unwrap();
    let big = PoolParams { pool: (3, 3), stride: (1, 1), padding: (0, 0, 0, 0) };
    let err = pool2d_gather(&small, PoolKind::Max, big).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    let mut rng = StdRng::seed_from_u64(15);
    for (xs, p) in pool_cases() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for ties in [false, true] {
                let n: usize = xs.iter().product();
                let xv: Vec<f64> = (0..n)
                    .map(|_| if ties { rng.random_range(0..3) as f64 } else { rng.random_range(-1.0..1.0) })
                    .collect();
                let x = Tensor::from_vec(xv, xs.clone(), &Device::Cpu).unwrap();
                let y = pool2d(&x, kind, p).unwrap();
                let yg = pool2d_gather(&x, kind, p).unwrap();
                let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                assert_eq!(y.dims(), yg.dims(), "{kind:?} {xs:?} {p:?}");
                for (a, b) in v(&y).iter().zip(v(&yg)) {
                    assert!((a - b).abs() < 1e-12, "{kind:?} {xs:?} {p:?}: forward {a} vs {b}");
                }
                let dy = rand_tensor(y.dims(), &mut rng);
                let dx = pool2d_backward(&x, &y, &dy, kind, p).unwrap();
                let dxg = pool2d_backward_gather(&x, &y, &dy, kind, p).unwrap();
                for (a, b) in v(&dx).iter().zip(v(&dxg)) {
                    assert!((a - b).abs() < 1e-12, "{kind:?} {xs:?} {p:?} ties {ties}: backward {a} vs {b}");
                }
            }
        }
    }
}

/// The fused conv + bias + ReLU op: forward equals the composition, gradients are exact.
#[test]
fn fused_conv_bias_relu() {
    use kandle::kernels::conv2d_fused;
    let mut rng = StdRng::seed_from_u64(12);
    for (xs, ks, p) in conv_cases() {
        let x = rand_tensor(&xs, &mut rng);
        let k = rand_tensor(&ks, &mut rng);
        let b = rand_tensor(&[ks[3]], &mut rng);
        let fused = conv2d_fused(&x, &k, Some(&b), true, p).unwrap();
        let plain = conv2d(&x, &k, p).unwrap().broadcast_add(&b).unwrap().relu().unwrap();
        let diff = (fused - &plain).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{xs:?} {ks:?} {p:?}: {diff}");
        // Finite differences need inputs away from ReLU's kink: skip cases with a pre-activation
        // within 1e-3 of 0.
        let pre = conv2d(&x, &k, p).unwrap().broadcast_add(&b).unwrap();
        let near = pre.abs().unwrap().min_all().unwrap().to_scalar::<f64>().unwrap();
        if near > 1e-3 {
            check(&[x.clone(), k.clone(), b.clone()], |t| {
                weigh(&conv2d_fused(&t[0], &t[1], Some(&t[2]), true, p).unwrap(), 13)
            });
        }
        check(&[x, k, b], |t| weigh(&conv2d_fused(&t[0], &t[1], Some(&t[2]), false, p).unwrap(), 14));
    }
}

/// The f32 convolution (AVX-512 direct kernels where the CPU has them, for channel counts that
/// are multiples of 16) against the f64 one (checked above against naive loops and finite
/// differences): forward with and without the fused bias and ReLU, and all three gradients.
#[test]
fn f32_conv_kernels_agree_with_f64() {
    use kandle::kernels::conv2d_fused;
    let mut rng = StdRng::seed_from_u64(21);
    let p = |stride, dilation, padding| ConvParams { stride, dilation, padding };
    let cases = vec![
        // the tutorial's layers: 'same' then 'valid', 3 -> 32 -> 32 channels, odd maps
        (vec![2, 9, 9, 3], vec![3, 3, 3, 32], p((1, 1), (1, 1), (1, 1, 1, 1))),
        (vec![3, 9, 7, 32], vec![3, 3, 32, 32], p((1, 1), (1, 1), (0, 0, 0, 0))),
        (vec![1, 13, 13, 32], vec![3, 3, 32, 64], p((1, 1), (1, 1), (1, 1, 1, 1))),
        (vec![2, 6, 6, 64], vec![3, 3, 64, 64], p((1, 1), (1, 1), (0, 0, 0, 0))),
        // 48 channels (a 32-wide block and a 16-wide one), a non-square kernel, dilation 2
        (vec![2, 8, 9, 16], vec![2, 3, 16, 48], p((1, 1), (1, 1), (0, 1, 1, 1))),
        (vec![1, 9, 8, 16], vec![3, 3, 16, 16], p((1, 1), (2, 2), (2, 2, 2, 2))),
        // Winograd's F(2x2, 3x3) (64 channels on one side): odd maps leave half tiles, batch 1
        (vec![1, 5, 7, 16], vec![3, 3, 16, 64], p((1, 1), (1, 1), (1, 1, 1, 1))),
        (vec![2, 7, 4, 64], vec![3, 3, 64, 16], p((1, 1), (1, 1), (0, 0, 0, 0))),
        (vec![1, 3, 3, 64], vec![3, 3, 64, 64], p((1, 1), (1, 1), (0, 1, 2, 0))),
        // maps of 13x13 and more take Winograd's F(4x4, 3x3) (4x4 tiles, partial at the edges)
        (vec![1, 15, 15, 32], vec![3, 3, 32, 64], p((1, 1), (1, 1), (0, 0, 0, 0))),
        (vec![2, 14, 17, 16], vec![3, 3, 16, 32], p((1, 1), (1, 1), (1, 1, 1, 1))),
        // and maps of 25 F(6x6, 3x3) tiles take that (6x6 tiles: partial at the right and
        // bottom of 26x29, the input gradient's 28x31 too; whole on 24x24)
        (vec![1, 28, 31, 32], vec![3, 3, 32, 32], p((1, 1), (1, 1), (0, 0, 0, 0))),
        (vec![1, 24, 24, 16], vec![3, 3, 16, 16], p((1, 1), (1, 1), (1, 1, 1, 1))),
        // a batch large enough for several weight-gradient groups (of 8), the last one short
        (vec![130, 3, 5, 16], vec![3, 3, 16, 16], p((1, 1), (1, 1), (1, 1, 1, 1))),
        // multiples of AVX2's 8 lanes but not of AVX-512's 16 (direct kernels at AVX2 only):
        // 24 channels are a 16-wide block and an 8-wide one there
        (vec![2, 7, 6, 8], vec![3, 3, 8, 24], p((1, 1), (1, 1), (1, 1, 1, 1))),
        (vec![1, 6, 5, 24], vec![3, 3, 24, 8], p((1, 1), (1, 1), (0, 0, 0, 0))),
    ];
    let to32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let a: Vec<f64> = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 2e-5 * scale, "{what}[{i}]: f32 {x} vs f64 {y} (scale {scale})");
        }
    };
    for (xs, ks, p) in cases {
        let what = format!("{xs:?} {ks:?} {p:?}");
        let x = rand_tensor(&xs, &mut rng);
        let k = rand_tensor(&ks, &mut rng);
        let b = rand_tensor(&[ks[3]], &mut rng);
        for relu in [false, true] {
            let y64 = conv2d_fused(&x, &k, Some(&b), relu, p).unwrap();
            let y32 = conv2d_fused(&to32(&x), &to32(&k), Some(&to32(&b)), relu, p).unwrap();
            close(&y32, &y64, &format!("forward relu={relu} {what}"));
            let w = rand_tensor(y64.dims(), &mut rng);
            let grads = |x: &Tensor, k: &Tensor, b: &Tensor, w: &Tensor| {
                let vars: Vec<Var> = [x, k, b].iter().map(|t| Var::from_tensor(t).unwrap()).collect();
                let y =
                    conv2d_fused(vars[0].as_tensor(), vars[1].as_tensor(), Some(vars[2].as_tensor()), relu, p).unwrap();
                let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
                vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect::<Vec<_>>()
            };
            let g64 = grads(&x, &k, &b, &w);
            let g32 = grads(&to32(&x), &to32(&k), &to32(&b), &to32(&w));
            for (name, (a, b)) in ["dx", "dk", "db"].iter().zip(g32.iter().zip(&g64)) {
                close(a, b, &format!("{name} relu={relu} {what}"));
            }
            // The layers' own backward pass (one fused pass over the batch) gives the same.
            for (x, k, b, w) in [(x.clone(), k.clone(), b.clone(), w.clone()), (to32(&x), to32(&k), to32(&b), to32(&w))]
            {
                let y = conv2d_fused(&x, &k, Some(&b), relu, p).unwrap();
                let (dx, dk, db) = kandle::kernels::conv2d_backward(&x, &k, &y, &w, relu, true, p, true).unwrap();
                for (name, (a, b)) in
                    ["own dx", "own dk", "own db"].iter().zip([dx.unwrap(), dk, db.unwrap()].iter().zip(&g64))
                {
                    close(a, b, &format!("{name} {:?} relu={relu} {what}", x.dtype()));
                }
            }
        }
    }
}

/// Dropout with a fixed seed is a fixed linear map: its gradient is the same mask.
#[test]
fn dropout_gradient_and_mask() {
    let mut rng = StdRng::seed_from_u64(15);
    let x = rand_tensor(&[3, 7, 5], &mut rng);
    check(std::slice::from_ref(&x), |t| weigh(&kandle::kernels::dropout(&t[0], 0.4, 99).unwrap(), 16));
    let a = kandle::kernels::dropout(&x, 0.4, 99).unwrap();
    let b = kandle::kernels::dropout(&x, 0.4, 99).unwrap();
    let c = kandle::kernels::dropout(&x, 0.4, 100).unwrap();
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(v(&a), v(&b), "same seed, same mask");
    assert_ne!(v(&a), v(&c));
    let xs = v(&x);
    for (y, x) in v(&a).iter().zip(&xs) {
        assert!(*y == 0.0 || (y - x / 0.6).abs() < 1e-12);
    }
    assert!(kandle::kernels::dropout(&x, 1.0, 0).is_err());
}

/// A batch split into pieces (replicas) gets, piece by piece, the mask rows of the whole batch,
/// whatever the cuts and the mask chunks' boundaries (16,384 elements), in f32 and f64.
#[test]
fn dropout_of_a_split_batch_is_the_whole_batch_mask() {
    let mut rng = StdRng::seed_from_u64(16);
    let x = rand_tensor(&[7, 5000], &mut rng);
    for dtype in [DType::F64, DType::F32] {
        let x = x.to_dtype(dtype).unwrap();
        let v = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let whole = v(&kandle::kernels::dropout(&x, 0.3, 5).unwrap());
        for cuts in [vec![0, 2, 5, 7], vec![0, 1, 2, 3, 4, 5, 6, 7], vec![0, 4, 7]] {
            let mut pieces = Vec::new();
            for w in cuts.windows(2) {
                let piece = x.narrow(0, w[0], w[1] - w[0]).unwrap();
                pieces.extend(v(&kandle::kernels::dropout_at(&piece, 0.3, 5, (w[0] * 5000) as u64).unwrap()));
            }
            assert_eq!(pieces, whole, "cuts {cuts:?} {dtype:?}");
        }
    }
}

/// The `mixed_bfloat16` convolution (AMX tiles where the CPU has them and the layer fits,
/// the f32 kernels on rounded values elsewhere) against the f64 one on the same bf16-rounded
/// input, kernel and output gradient: the forward output within its own rounding to bf16 (one
/// bf16 step, 2^-8 relative), the gradients (summed in f32) as close as f32's.
#[test]
fn bf16_conv_kernels_agree_with_f64() {
    use kandle::kernels::{conv2d_backward, conv2d_backward_with, conv2d_fused, conv2d_fused_with, Precision};
    println!("AMX bf16 products: {}", kandle::kernels::amx_available());
    let mut rng = StdRng::seed_from_u64(33);
    let p = |stride, padding| ConvParams { stride, dilation: (1, 1), padding };
    let cases = vec![
        // AMX: channels in 32s, stride 1 (the tutorial's layers, odd maps, several groups)
        (vec![2, 9, 9, 32], vec![3, 3, 32, 32], p((1, 1), (1, 1, 1, 1))),
        (vec![3, 9, 7, 32], vec![3, 3, 32, 64], p((1, 1), (0, 0, 0, 0))),
        (vec![1, 13, 13, 64], vec![3, 3, 64, 32], p((1, 1), (1, 1, 1, 1))),
        (vec![2, 6, 5, 32], vec![1, 1, 32, 32], p((1, 1), (0, 0, 0, 0))),
        (vec![1, 7, 8, 32], vec![5, 3, 32, 32], p((1, 1), (2, 1, 0, 2))),
        (vec![19, 3, 5, 32], vec![3, 3, 32, 32], p((1, 1), (1, 1, 1, 1))),
        // elsewhere: few input channels (1, 3, 10), 16 and 48, a stride of 2
        (vec![2, 9, 9, 3], vec![3, 3, 3, 32], p((1, 1), (1, 1, 1, 1))),
        (vec![2, 12, 11, 1], vec![3, 3, 1, 32], p((1, 1), (0, 0, 0, 0))),
        (vec![1, 7, 6, 10], vec![3, 3, 10, 64], p((1, 1), (1, 0, 1, 1))),
        (vec![2, 8, 8, 3], vec![5, 5, 3, 32], p((1, 1), (2, 2, 2, 2))),
        (vec![2, 8, 9, 16], vec![2, 3, 16, 48], p((1, 1), (0, 1, 1, 1))),
        (vec![1, 9, 9, 32], vec![3, 3, 32, 32], p((2, 2), (1, 1, 1, 1))),
    ];
    // f64 -> f32 -> bf16, as the f32 values are rounded (f64 -> bf16 directly rounds some
    // values the other way)
    let round =
        |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_dtype(DType::BF16).unwrap().to_dtype(DType::F64).unwrap();
    let to32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let vec64 = |t: &Tensor| -> Vec<f64> { t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
    for (xs, ks, p) in cases {
        let what = format!("{xs:?} {ks:?} {p:?}");
        let (x, k, b) = (rand_tensor(&xs, &mut rng), rand_tensor(&ks, &mut rng), rand_tensor(&[ks[3]], &mut rng));
        for relu in [false, true] {
            let y = conv2d_fused_with(&to32(&x), &to32(&k), Some(&to32(&b)), relu, p, Precision::Bf16).unwrap();
            let y64 = conv2d_fused(&round(&x), &round(&k), Some(&b), relu, p).unwrap();
            let (a, e) = (vec64(&y), vec64(&y64));
            assert_eq!(a.len(), e.len(), "{what}");
            let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (a, e)) in a.iter().zip(&e).enumerate() {
                assert_eq!(*a, round(&Tensor::new(&[*a], &Device::Cpu).unwrap()).to_vec1::<f64>().unwrap()[0]);
                assert!((a - e).abs() <= e.abs() / 256.0 + 2e-5 * scale, "forward relu={relu} {what}[{i}]: {a} vs {e}");
            }
            let dy = rand_tensor(y.dims(), &mut rng);
            let (dx, dk, db) =
                conv2d_backward_with(&to32(&x), &to32(&k), &y, &to32(&dy), relu, true, p, true, Precision::Bf16)
                    .unwrap();
            let (ex, ek, eb) = conv2d_backward(&round(&x), &round(&k), &y64, &round(&dy), relu, true, p, true).unwrap();
            // autograd through the op gives the same gradients as the layers' own pass
            let vars: Vec<Var> = [&x, &k, &b].iter().map(|t| Var::from_tensor(&to32(t)).unwrap()).collect();
            let out = conv2d_fused_with(
                vars[0].as_tensor(),
                vars[1].as_tensor(),
                Some(vars[2].as_tensor()),
                relu,
                p,
                Precision::Bf16,
            )
            .unwrap();
            let g = (out * to32(&dy)).unwrap().sum_all().unwrap().backward().unwrap();
            let auto: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
            // without the input gradient (the first layer's case), the same dk and db
            let (none, dk2, db2) =
                conv2d_backward_with(&to32(&x), &to32(&k), &y, &to32(&dy), relu, true, p, false, Precision::Bf16)
                    .unwrap();
            assert!(none.is_none());
            for (name, (a, e)) in [("dk", (&dk2, &ek)), ("db", (db2.as_ref().unwrap(), eb.as_ref().unwrap()))] {
                let (a, e) = (vec64(a), vec64(e));
                let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (a, e)) in a.iter().zip(&e).enumerate() {
                    assert!((a - e).abs() <= 2e-5 * scale, "{name} without dx, relu={relu} {what}[{i}]: {a} vs {e}");
                }
            }
            let own = [dx.unwrap(), dk, db.unwrap()];
            for (name, ((a, e), au)) in
                ["dx", "dk", "db"].iter().zip(own.iter().zip([ex.unwrap(), ek, eb.unwrap()]).zip(&auto))
            {
                let (a, e, au) = (vec64(a), vec64(&e), vec64(au));
                let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, ((a, e), au)) in a.iter().zip(&e).zip(&au).enumerate() {
                    assert!(
                        (a - e).abs() <= 2e-5 * scale,
                        "{name} relu={relu} {what}[{i}]: {a} vs {e} (scale {scale})"
                    );
                    assert_eq!(a, au, "{name} relu={relu} {what}[{i}]: own pass vs autograd");
                }
            }
        }
    }
}

/// The kernel tests of this file again at each lower SIMD level this CPU has
/// (`KANDLE_SIMD=avx2`, `scalar`), and with each Winograd tile forced (`KANDLE_WINOGRAD=f2`,
/// `f4`, `f6`, at the CPU's level and at AVX2), each in a child process (both are read once per
/// process): the paths that other CPUs and other map sizes take are checked here too.
#[test]
fn kernel_tests_pass_at_every_simd_level() {
    use kandle::kernels::SimdLevel;
    if std::env::var_os("KANDLE_SIMD").is_some() {
        return; // a child: the level under test is already set
    }
    let exe = std::env::current_exe().unwrap();
    let top = kandle::kernels::simd_level();
    println!("this CPU: {top:?}");
    let runs = [
        ("avx2", SimdLevel::Avx2, ""),
        ("scalar", SimdLevel::Scalar, ""),
        ("avx2", SimdLevel::Avx2, "f4"),
        ("avx2", SimdLevel::Avx2, "f6"),
        ("", top, "f2"),
        ("", top, "f4"),
        ("", top, "f6"),
    ];
    for (name, level, tile) in runs {
        if level > top || (level == top && tile.is_empty()) {
            continue; // the default run already covers the CPU's own level
        }
        let out = std::process::Command::new(&exe)
            .args(["--test-threads=2", "--skip", "kernel_tests_pass_at_every_simd_level"])
            .args(["conv2d", "pool", "f32_conv_kernels_agree_with_f64", "dropout", "fused_conv_bias_relu", "bf16_conv"])
            .env("KANDLE_SIMD", name)
            .env("KANDLE_WINOGRAD", tile)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let what = format!("KANDLE_SIMD={name} KANDLE_WINOGRAD={tile}");
        assert!(out.status.success(), "{what}: kernel tests failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let passed = text.lines().find(|l| l.starts_with("test result")).unwrap_or("").to_string();
        assert!(!passed.contains(" 0 passed"), "{what}: no test ran ({passed})");
        println!("{what}: {passed}");
    }
}

/// The convolution with the max pooling fused in (`conv2d_max_pool`, what `fit` runs for a
/// `Conv2D` followed by Keras' default `MaxPooling2D`) gives the values and gradients of the
/// convolution then the pooling, bit for bit: odd sizes (rows past the last window dropped),
/// non-square and 3x3 windows, ReLU or none, with and without bias and input gradient, on the
/// direct, Winograd and strided kernels, in f32 and f64. One exception: where the windows do
/// not cover the whole map, the fused pass's Winograd weight gradient runs over the covered
/// rows and columns only (the others' gradient is zero), with fewer or other tiles, so it
/// agrees to rounding (2e-5 of the largest value) rather than bit for bit.
#[test]
fn conv2d_max_pool_matches_conv_then_pool() {
    use kandle::kernels::{conv2d_backward, conv2d_fused, conv2d_max_pool, conv2d_max_pool_backward, pool2d_backward};
    let mut rng = StdRng::seed_from_u64(31);
    let p = |stride, padding| ConvParams { stride, dilation: (1, 1), padding };
    // (input, kernel, conv params, pool window, dtype)
    let cases = vec![
        (vec![3, 7, 7, 3], vec![3, 3, 3, 16], p((1, 1), (0, 0, 0, 0)), (2, 2), DType::F32),
        (vec![4, 15, 15, 32], vec![3, 3, 32, 64], p((1, 1), (1, 1, 1, 1)), (2, 2), DType::F32),
        (vec![2, 32, 32, 32], vec![3, 3, 32, 32], p((1, 1), (0, 0, 0, 0)), (2, 2), DType::F32),
        (vec![2, 13, 13, 16], vec![3, 3, 16, 16], p((1, 1), (0, 0, 0, 0)), (3, 3), DType::F32),
        (vec![3, 10, 10, 16], vec![3, 3, 16, 32], p((1, 1), (1, 1, 1, 1)), (2, 3), DType::F32),
        (vec![2, 9, 9, 4], vec![3, 3, 4, 8], p((2, 2), (1, 1, 1, 1)), (2, 2), DType::F32),
        (vec![2, 8, 8, 3], vec![2, 2, 3, 5], p((1, 1), (0, 1, 0, 1)), (2, 2), DType::F64),
    ];
    for (i, (xs, ks, cp, pool, dtype)) in cases.into_iter().enumerate() {
        let (relu, with_bias, need_dx) = (i % 2 == 0, i % 3 != 1, i % 4 != 3);
        let x = rand_tensor(&xs, &mut rng).to_dtype(dtype).unwrap();
        let k = rand_tensor(&ks, &mut rng).to_dtype(dtype).unwrap();
        let b = rand_tensor(&[ks[3]], &mut rng).to_dtype(dtype).unwrap();
        let bias = with_bias.then_some(&b);
        let what = format!("{xs:?} {ks:?} {cp:?} pool {pool:?} relu {relu} bias {with_bias} dx {need_dx}");
        let pp = PoolParams { pool, stride: pool, padding: (0, 0, 0, 0) };
        let y = conv2d_fused(&x, &k, bias, relu, cp).unwrap();
        let want = pool2d(&y, PoolKind::Max, pp).unwrap();
        let (pooled, argmax) = conv2d_max_pool(&x, &k, bias, relu, cp, pool).unwrap();
        let flat = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(pooled.dims(), want.dims(), "{what}");
        assert_eq!(flat(&pooled), flat(&want), "{what}: pooled values");
        assert!(argmax.flatten_all().unwrap().to_vec1::<u8>().unwrap().iter().all(|&a| (a as usize) < pool.0 * pool.1));
        // Backward: the pooling's gradient, then the convolution's, against the fused pass.
        let dpooled = rand_tensor(want.dims(), &mut rng).to_dtype(dtype).unwrap();
        let dy = pool2d_backward(&y, &want, &dpooled, PoolKind::Max, pp).unwrap();
        let (dx0, dk0, db0) = conv2d_backward(&x, &k, &y, &dy, relu, with_bias, cp, need_dx).unwrap();
        let (dx1, dk1, db1) =
            conv2d_max_pool_backward(&x, &k, &pooled, &argmax, &dpooled, relu, with_bias, cp, pool, need_dx).unwrap();
        assert_eq!(dx0.is_some(), need_dx, "{what}");
        if let (Some(a), Some(b)) = (&dx0, &dx1) {
            assert_eq!(flat(a), flat(b), "{what}: input gradient");
        }
        assert_eq!(dx1.is_some(), need_dx, "{what}");
        let (oh, ow) = (y.dims()[1], y.dims()[2]);
        if oh % pool.0 == 0 && ow % pool.1 == 0 {
            assert_eq!(flat(&dk0), flat(&dk1), "{what}: kernel gradient");
        } else {
            let (a, b) = (flat(&dk0), flat(&dk1));
            let scale = a.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let gap = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(gap <= 2e-5 * scale, "{what}: kernel gradient {gap} apart (largest value {scale})");
        }
        assert_eq!(db0.map(|t| flat(&t)), db1.map(|t| flat(&t)), "{what}: bias gradient");
    }
    // Bad input is refused with the argument named.
    let x = Tensor::zeros((1, 4, 4, 1), DType::F32, &Device::Cpu).unwrap();
    let k = Tensor::zeros((3, 3, 1, 2), DType::F32, &Device::Cpu).unwrap();
    let err = conv2d_max_pool(&x, &k, None, true, p((1, 1), (0, 0, 0, 0)), (3, 3)).unwrap_err().to_string();
    assert!(err.contains("pool window (3, 3)") && err.contains("2x2 output"), "{err}");
    let (pooled, argmax) = conv2d_max_pool(&x, &k, None, true, p((1, 1), (0, 0, 0, 0)), (2, 2)).unwrap();
    let wrong = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let err =
        conv2d_max_pool_backward(&x, &k, &pooled, &argmax, &wrong, true, true, p((1, 1), (0, 0, 0, 0)), (2, 2), true)
            .unwrap_err()
            .to_string();
    assert!(err.contains("gradient of shape [1, 1, 1, 2]"), "{err}");
    // Positions past the window (not from conv2d_max_pool) are refused, not followed.
    let bad = Tensor::new(&[4u8, 0], &Device::Cpu).unwrap().reshape((1, 1, 1, 2)).unwrap();
    let dpooled = pooled.ones_like().unwrap();
    let err =
        conv2d_max_pool_backward(&x, &k, &pooled, &bad, &dpooled, true, true, p((1, 1), (0, 0, 0, 0)), (2, 2), true)
            .unwrap_err()
            .to_string();
    assert!(err.contains("position 4") && err.contains("2x2 window"), "{err}");
}

/// The fused convolution and max pooling's gradients against central differences of
/// `sum(w * conv2d_max_pool(x, k, b))` (f64, ReLU on, padded, two window shapes).
#[test]
fn conv2d_max_pool_finite_differences() {
    use kandle::kernels::{conv2d_max_pool, conv2d_max_pool_backward};
    let mut rng = StdRng::seed_from_u64(41);
    let cp = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (1, 1, 1, 1) };
    for pool in [(2, 2), (3, 2)] {
        let (x, k, b) =
            (rand_tensor(&[2, 6, 6, 2], &mut rng), rand_tensor(&[3, 3, 2, 3], &mut rng), rand_tensor(&[3], &mut rng));
        let (pooled, argmax) = conv2d_max_pool(&x, &k, Some(&b), true, cp, pool).unwrap();
        let w = rand_tensor(pooled.dims(), &mut rng);
        let (dx, dk, db) = conv2d_max_pool_backward(&x, &k, &pooled, &argmax, &w, true, true, cp, pool, true).unwrap();
        let loss = |x: &Tensor, k: &Tensor, b: &Tensor| -> f64 {
            let (y, _) = conv2d_max_pool(x, k, Some(b), true, cp, pool).unwrap();
            (y * &w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let inputs = [x.clone(), k.clone(), b.clone()];
        for (which, grad) in [dx.unwrap(), dk, db.unwrap()].iter().enumerate() {
            let analytic = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = inputs[which].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (j, &a) in analytic.iter().enumerate() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[j] += delta;
                    let mut ts = inputs.clone();
                    ts[which] = Tensor::from_vec(v, inputs[which].shape(), &Device::Cpu).unwrap();
                    loss(&ts[0], &ts[1], &ts[2])
                };
                let h = 1e-6;
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                let tol = 1e-6 + 1e-5 * numeric.abs().max(a.abs());
                assert!((numeric - a).abs() <= tol, "pool {pool:?} input {which} element {j}: {a} vs {numeric}");
            }
        }
    }
}

/// `kernels::channel_affine` (BatchNormalization by fixed statistics, with the activation after
/// it) against finite differences in f64, for each activation, gradients to the input, the
/// scale and the shift; values spread over ReLU6's cap.
#[test]
fn channel_affine_against_finite_differences() {
    use kandle::kernels::{channel_affine, BnActivation};
    let mut rng = StdRng::seed_from_u64(17);
    let x = (rand_tensor(&[2, 3, 3, 4], &mut rng) * 4.0).unwrap();
    let scale = Tensor::new(&[1.5f64, -0.7, 2.0, 0.9], &Device::Cpu).unwrap();
    let shift = Tensor::new(&[0.3f64, 3.1, -0.2, 5.0], &Device::Cpu).unwrap();
    for act in [None, Some(BnActivation::Relu(f64::INFINITY)), Some(BnActivation::Relu(6.0)), Some(BnActivation::Silu)]
    {
        check(&[x.clone(), scale.clone(), shift.clone()], |t| {
            weigh(&channel_affine(&t[0], &t[1], &t[2], act).unwrap(), 5)
        });
    }
}

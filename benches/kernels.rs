//! Per-kernel benchmarks on the tutorial CNN's shapes at batch 256, so that a regression in
//! one kernel is visible: `cargo bench --bench kernels`. The convolutions run on whichever
//! kernels the CPU gets (Winograd for all but the 3-channel first layer where it has
//! AVX-512F); `KANDLE_NO_WINOGRAD=1 cargo bench --bench kernels` times the direct ones.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kandle::kernels::{conv2d_fused, pool2d, ConvParams, PoolKind, PoolParams};

const BATCH: usize = 256;

/// (name, input (h, w, c), filters, padding).
type ConvCase = (&'static str, (usize, usize, usize), usize, usize);

/// The tutorial's six 3x3 convolutions.
const CONVS: [ConvCase; 6] = [
    ("conv1_32x32x3_same", (32, 32, 3), 32, 1),
    ("conv2_32x32x32", (32, 32, 32), 32, 0),
    ("conv3_15x15x32_same", (15, 15, 32), 64, 1),
    ("conv4_15x15x64", (15, 15, 64), 64, 0),
    ("conv5_6x6x64_same", (6, 6, 64), 64, 1),
    ("conv6_6x6x64", (6, 6, 64), 64, 0),
];

fn convs(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    for (name, (h, w, ci), co, pad) in CONVS {
        let x = Var::from_tensor(&Tensor::rand(0f32, 1., (BATCH, h, w, ci), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::rand(-0.1f32, 0.1, (3, 3, ci, co), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(co, DType::F32, &dev).unwrap()).unwrap();
        let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (pad, pad, pad, pad) };
        let oh = h + 2 * pad - 2;
        let macs = (BATCH * oh * (w + 2 * pad - 2) * co * 9 * ci) as u64;
        group.throughput(Throughput::Elements(2 * macs));
        group.bench_function(format!("{name}/forward"), |bench| {
            bench.iter(|| conv2d_fused(x.as_tensor(), k.as_tensor(), Some(b.as_tensor()), true, p).unwrap())
        });
        group.throughput(Throughput::Elements(6 * macs));
        group.bench_function(format!("{name}/forward+backward"), |bench| {
            bench.iter(|| {
                let y = conv2d_fused(x.as_tensor(), k.as_tensor(), Some(b.as_tensor()), true, p).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

fn pools(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("max_pool2d");
    group.sample_size(10);
    for (name, (h, w, ch)) in [("30x30x32", (30, 30, 32)), ("13x13x64", (13, 13, 64))] {
        let x = Var::from_tensor(&Tensor::rand(0f32, 1., (BATCH, h, w, ch), &dev).unwrap()).unwrap();
        let p = PoolParams { pool: (2, 2), stride: (2, 2), padding: (0, 0, 0, 0) };
        group.throughput(Throughput::Elements((BATCH * h * w * ch) as u64));
        group.bench_function(format!("{name}/forward+backward"), |bench| {
            bench.iter(|| pool2d(x.as_tensor(), PoolKind::Max, p).unwrap().sum_all().unwrap().backward().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, convs, pools);
criterion_main!(benches);

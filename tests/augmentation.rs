//! ImageDataGenerator: laws of the transforms (property tests over random images and
//! parameters), outputs compared with Keras' own, flows, fit_generator determinism with 1 and 4
//! workers, and bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use kandle::models::GeneratorOptions;
use kandle::prelude::*;
use kandle::preprocessing::image::{
    apply_affine, BatchGenerator, ClassMode, DirectoryOptions, FillMode, ImageDataGenerator, Interpolation, Subset,
    TransformParams,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_image(rng: &mut StdRng, h: usize, w: usize, c: usize) -> Vec<f32> {
    (0..h * w * c).map(|_| rng.random_range(0.0..255.0)).collect()
}

fn apply(
    img: &[f32],
    dims: (usize, usize, usize),
    p: &TransformParams,
    mode: FillMode,
    interp: Interpolation,
) -> Vec<f32> {
    let mut out = vec![0.0; img.len()];
    apply_affine(img, dims, p, mode, -7.0, interp, &mut out);
    out
}

const MODES: [FillMode; 4] = [FillMode::Constant, FillMode::Nearest, FillMode::Reflect, FillMode::Wrap];
const INTERPS: [Interpolation; 2] = [Interpolation::Nearest, Interpolation::Bilinear];

#[test]
fn identity_and_unit_zoom_change_nothing() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..20 {
        let dims = (rng.random_range(1..12), rng.random_range(1..12), rng.random_range(1..4));
        let img = random_image(&mut rng, dims.0, dims.1, dims.2);
        for mode in MODES {
            for interp in INTERPS {
                let id = TransformParams::default();
                assert_eq!(apply(&img, dims, &id, mode, interp), img);
                let zoom1 = TransformParams { zx: 1.0, zy: 1.0, ..Default::default() };
                assert_eq!(apply(&img, dims, &zoom1, mode, interp), img);
            }
        }
    }
}

#[test]
fn flipping_twice_is_the_identity() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..20 {
        let dims = (rng.random_range(2..10), rng.random_range(2..10), 3);
        let img = random_image(&mut rng, dims.0, dims.1, dims.2);
        for (h, v) in [(true, false), (false, true), (true, true)] {
            let p = TransformParams { flip_horizontal: h, flip_vertical: v, ..Default::default() };
            let once = apply(&img, dims, &p, FillMode::Nearest, Interpolation::Bilinear);
            assert_ne!(once, img.clone(), "a flip changes a random image");
            assert_eq!(apply(&once, dims, &p, FillMode::Nearest, Interpolation::Bilinear), img);
        }
    }
}

#[test]
fn integer_shift_moves_content_by_exactly_k() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..30 {
        let (h, w, c) = (rng.random_range(2..10), rng.random_range(2..10), 2);
        let img = random_image(&mut rng, h, w, c);
        let (kx, ky) = (rng.random_range(-(w as i64) + 1..w as i64), rng.random_range(-(h as i64) + 1..h as i64));
        // The output samples the input at (x + tx, y + ty): content moves by (-tx, -ty).
        let p = TransformParams { tx: kx as f64, ty: ky as f64, ..Default::default() };
        for interp in INTERPS {
            let out = apply(&img, (h, w, c), &p, FillMode::Constant, interp);
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let (sx, sy) = (x + kx, y + ky);
                    for ch in 0..c {
                        let got = out[((y as usize * w) + x as usize) * c + ch];
                        let want = if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 {
                            img[((sy as usize * w) + sx as usize) * c + ch]
                        } else {
                            -7.0
                        };
                        assert_eq!(got, want, "shift ({kx}, {ky}) at ({x}, {y})");
                    }
                }
            }
        }
    }
}

#[test]
fn rotation_by_90_degrees_is_a_transpose_and_a_flip() {
    let mut rng = StdRng::seed_from_u64(4);
    for n in [1, 2, 5, 8] {
        let img = random_image(&mut rng, n, n, 3);
        let p = TransformParams { theta: 90.0, ..Default::default() };
        let out = apply(&img, (n, n, 3), &p, FillMode::Nearest, Interpolation::Bilinear);
        for y in 0..n {
            for x in 0..n {
                for c in 0..3 {
                    // out[y][x] = in[x][n-1-y]: the transpose, flipped top-bottom.
                    let want = img[(x * n + (n - 1 - y)) * 3 + c];
                    assert!((out[(y * n + x) * 3 + c] - want).abs() < 1e-3, "n={n} ({x}, {y})");
                }
            }
        }
    }
}

#[test]
fn every_fill_mode_on_a_known_pattern() {
    // One row [1, 2, 3, 4] (three identical rows), sampled 2 pixels to the left.
    let img: Vec<f32> = [1.0, 2.0, 3.0, 4.0].repeat(3);
    let p = TransformParams { tx: -2.0, ..Default::default() };
    let row = |mode| apply(&img, (3, 4, 1), &p, mode, Interpolation::Bilinear)[4..8].to_vec();
    assert_eq!(row(FillMode::Constant), vec![-7.0, -7.0, 1.0, 2.0]);
    assert_eq!(row(FillMode::Nearest), vec![1.0, 1.0, 1.0, 2.0]);
    assert_eq!(row(FillMode::Reflect), vec![2.0, 1.0, 1.0, 2.0]);
    // SciPy's wrap (Keras'): a period of size - 1, the first and last pixels overlapping.
    assert_eq!(row(FillMode::Wrap), vec![2.0, 3.0, 1.0, 2.0]);
}

/// Keras 3.15's `ImageDataGenerator(fill_mode=...).apply_transform(img, params)` on
/// `img = (np.arange(25).reshape(5, 5, 1) * 3 + 1) % 17`, printed to 6 digits:
///
/// ```python
/// from keras.src.legacy.preprocessing.image import ImageDataGenerator
/// ImageDataGenerator(fill_mode="nearest").apply_transform(img, dict(theta=30.0))
/// ImageDataGenerator(fill_mode="reflect").apply_transform(img, dict(shear=20.0, zx=0.8, zy=1.2))
/// ImageDataGenerator(fill_mode="constant", cval=-1.0).apply_transform(img, dict(tx=1.5, ty=-0.5))
/// ImageDataGenerator(fill_mode="nearest").apply_transform(img, dict(theta=-15.0, tx=0.7, ty=1.2,
///     shear=10.0, zx=1.1, zy=0.9, flip_horizontal=True))
/// ```
#[test]
fn transforms_match_keras() {
    let img: Vec<f32> = (0..25).map(|i| ((i * 3 + 1) % 17) as f32).collect();
    let cases: [(FillMode, f32, TransformParams, [f32; 25]); 4] = [
        (
            FillMode::Nearest,
            0.0,
            TransformParams { theta: 30.0, ..Default::default() },
            [
                4.80385, 7.40192, 9.4641, 11.0622, 10.4641, 3.56441, 4.63397, 6.23205, 7.83013, 8.73205, 12.2487,
                1.40192, 3.0, 4.59808, 6.19615, 14.2679, 8.33717, 7.12917, 5.31089, 2.9641, 12.5359, 11.9378, 13.5359,
                15.5981, 5.75129,
            ],
        ),
        (
            FillMode::Reflect,
            0.0,
            TransformParams { shear: 20.0, zx: 0.8, zy: 1.2, ..Default::default() },
            [
                4.66255, 7.06254, 9.46255, 11.8625, 13.0, 4.498, 4.08653, 6.48653, 8.88653, 11.2553, 8.4, 0.6, 3.0,
                5.4, 7.8, 11.7447, 14.1135, 7.7699, 3.23792, 4.31347, 10.0, 11.1375, 13.5375, 15.9375, 5.09188,
            ],
        ),
        (
            FillMode::Constant,
            -1.0,
            TransformParams { tx: 1.5, ty: -0.5, ..Default::default() },
            [
                -1.0, -1.0, -1.0, -1.0, -1.0, 4.5, 7.5, 10.5, -1.0, -1.0, 2.5, 5.5, 8.5, -1.0, -1.0, 4.75, 3.5, 6.5,
                -1.0, -1.0, 11.25, 5.75, 4.5, -1.0, -1.0,
            ],
        ),
        (
            FillMode::Nearest,
            0.0,
            TransformParams {
                theta: -15.0,
                tx: 0.7,
                ty: 1.2,
                shear: 10.0,
                zx: 1.1,
                zy: 0.9,
                flip_horizontal: true,
                ..Default::default()
            },
            [
                11.7692, 10.8769, 7.11998, 3.36302, 4.62423, 9.97608, 9.3191, 5.56215, 2.76496, 10.398, 8.18293,
                7.61353, 4.00432, 5.66222, 13.4904, 6.38978, 5.82038, 2.44649, 15.9629, 12.8204, 5.0, 5.0, 2.43083,
                14.8647, 13.0557,
            ],
        ),
    ];
    for (mode, cval, p, want) in cases {
        let mut out = vec![0.0; 25];
        apply_affine(&img, (5, 5, 1), &p, mode, cval, Interpolation::Bilinear, &mut out);
        for (i, (g, w)) in out.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-4, "{mode:?} {p:?} pixel {i}: {g} vs Keras {w}");
        }
    }
}

fn data(n: usize) -> (Tensor, Tensor) {
    let x = Tensor::rand(0f32, 1., (n, 8, 8, 3), &Device::Cpu).unwrap();
    let y = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
    (x, y)
}

#[test]
fn flow_batches_cover_every_sample_once_per_epoch_and_reshuffle() {
    let (x, y) = data(10);
    let flow = ImageDataGenerator::new().horizontal_flip(true).flow(&x, &y, 4).seed(3);
    assert_eq!(flow.len(), 3);
    let epoch = |e| -> Vec<u32> {
        let mut ids = Vec::new();
        for i in 0..3 {
            let (xb, yb) = flow.batch(e, i).unwrap();
            assert_eq!(xb.dims()[0], if i < 2 { 4 } else { 2 }, "the last batch is partial");
            ids.extend(yb.to_vec1::<u32>().unwrap());
        }
        ids
    };
    let (e0, e1) = (epoch(0), epoch(1));
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(e0, e1, "a new order each epoch");
    assert_eq!(e0, epoch(0), "batches are a function of (seed, epoch, index)");
    // As an endless iterator it wraps around into the next epoch.
    let it = ImageDataGenerator::new().flow(&x, &y, 4).seed(3);
    assert_eq!(it.take(7).filter_map(|b| b.ok()).count(), 7);
}

#[test]
fn flow_without_augmentation_only_standardizes() {
    let (x, y) = data(6);
    let flow = ImageDataGenerator::new().rescale(2.0).flow(&x, &y, 6).shuffle(false);
    let (xb, yb) = flow.batch(0, 0).unwrap();
    assert_eq!(yb.to_vec1::<u32>().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    let diff = (xb - (x * 2.0).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn featurewise_and_samplewise_standardization() {
    let x = (Tensor::rand(0f32, 1., (50, 4, 4, 3), &Device::Cpu).unwrap() * 10.0).unwrap();
    let mut gen = ImageDataGenerator::new().featurewise_center(true).featurewise_std_normalization(true);
    gen.fit(&x).unwrap();
    let s = gen.standardize(&x).unwrap();
    let mean = s.mean((0, 1, 2)).unwrap().to_vec1::<f32>().unwrap();
    let var = s.sqr().unwrap().mean((0, 1, 2)).unwrap().to_vec1::<f32>().unwrap();
    for (m, v) in mean.iter().zip(var) {
        assert!(m.abs() < 1e-4 && (v - 1.0).abs() < 1e-3, "{m} {v}");
    }
    let g = ImageDataGenerator::new().samplewise_center(true).samplewise_std_normalization(true);
    let s = g.standardize(&x.get(0).unwrap()).unwrap();
    let v = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let m = v.iter().sum::<f32>() / v.len() as f32;
    let sd = (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
    assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4, "{m} {sd}");
}

#[test]
fn zca_whitening_decorrelates() {
    // 400 samples of 2x2x1 images whose pixels mix 4 independent sources: strongly correlated,
    // full rank.
    let mut rng = StdRng::seed_from_u64(5);
    let v: Vec<f32> = (0..400)
        .flat_map(|_| {
            let s: [f32; 4] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
            [s[0], s[0] + 0.1 * s[1], 2.0 * s[0] - s[1] + 0.2 * s[2], s[1] + s[3]]
        })
        .collect();
    let x = Tensor::from_vec(v, (400, 2, 2, 1), &Device::Cpu).unwrap();
    let mut gen = ImageDataGenerator::new().zca_whitening(true).zca_epsilon(1e-9);
    gen.fit(&x).unwrap();
    let w = gen.standardize(&x).unwrap().reshape((400, 4)).unwrap();
    let cov = (w.t().unwrap().matmul(&w).unwrap() / 400.0).unwrap().to_vec2::<f32>().unwrap();
    for (i, row) in cov.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((c - want).abs() < 2e-2, "cov[{i}][{j}] = {c}");
        }
    }
}

#[test]
fn random_transforms_follow_the_ranges() {
    let gen = ImageDataGenerator::new()
        .width_shift_range(0.1)
        .height_shift_range(3usize)
        .rotation_range(10.0)
        .zoom_range(0.2)
        .brightness_range(&[0.5, 1.5]);
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..200 {
        let p = gen.get_random_transform((20, 30), &mut rng);
        assert!(p.tx.abs() <= 3.0 + 1e-9, "10% of the width (30)");
        assert!(p.ty.fract() == 0.0 && p.ty.abs() <= 2.0, "an int range draws whole pixels below 3");
        assert!(p.theta.abs() <= 10.0);
        assert!((0.8..=1.2).contains(&p.zx) && (0.8..=1.2).contains(&p.zy));
        assert!((0.5..=1.5).contains(&p.brightness.unwrap()));
        assert!(!p.flip_horizontal && !p.flip_vertical);
    }
}

fn tiny_model() -> Sequential {
    Sequential::new()
        .seed(4)
        .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((8, 8, 3)))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax))
}

#[test]
fn fit_generator_gives_the_same_run_with_1_and_4_workers() {
    let (x, _) = data(40);
    let y = Tensor::from_vec((0..40u32).map(|i| i % 3).collect::<Vec<_>>(), 40, &Device::Cpu).unwrap();
    let gen = ImageDataGenerator::new()
        .rotation_range(10.0)
        .width_shift_range(0.1)
        .height_shift_range(0.1)
        .horizontal_flip(true)
        .zoom_range(0.1);
    let run = |workers| {
        let m = tiny_model();
        m.compile(RMSprop::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let h = m
            .fit_generator(
                gen.flow(&x, &y, 8).seed(11),
                GeneratorOptions::default()
                    .epochs(3)
                    .verbose(0)
                    .workers(workers)
                    .max_queue_size(2)
                    .validation_data(&x, &y),
            )
            .unwrap();
        assert_eq!(h.epoch, vec![0, 1, 2]);
        m.get_weights().unwrap().iter().map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect::<Vec<_>>()
    };
    let one = run(1);
    assert_eq!(one, run(4), "bit-identical weights with 1 and 4 workers");
    assert_eq!(one, run(0), "and inline");
}

#[test]
fn bad_parameters_are_clear_errors() {
    let (x, y) = data(4);
    let check = |g: ImageDataGenerator, word: &str| {
        let e = g.validate().unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
        let e = g.flow(&x, &y, 2).batch(0, 0).unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
    };
    check(ImageDataGenerator::new().rotation_range(-1.0), "rotation_range");
    check(ImageDataGenerator::new().width_shift_range(f64::NAN), "width_shift_range");
    check(ImageDataGenerator::new().height_shift_range(-0.1), "height_shift_range");
    check(ImageDataGenerator::new().brightness_range(&[0.5]), "brightness_range");
    check(ImageDataGenerator::new().brightness_range(&[1.5, 0.5]), "brightness_range");
    check(ImageDataGenerator::new().zoom_range_between(1.2, 0.8), "zoom_range");
    check(ImageDataGenerator::new().validation_split(1.5), "validation_split");
    check(ImageDataGenerator::new().shear_range(f64::INFINITY), "shear_range");
    let e = ImageDataGenerator::new().flow(&x, &y, 0).validate().unwrap_err().to_string();
    assert!(e.contains("batch_size"), "{e}");
    let e = ImageDataGenerator::new().flow(&x, &y, 2).subset(Subset::Training).validate().unwrap_err().to_string();
    assert!(e.contains("validation_split"), "{e}");
    // Featurewise statistics without fit(): an error (Keras only warns); fitted on another shape.
    for g in [
        ImageDataGenerator::new().featurewise_center(true),
        ImageDataGenerator::new().featurewise_std_normalization(true),
        ImageDataGenerator::new().zca_whitening(true),
    ] {
        let e = g.flow(&x, &y, 2).batch(0, 0).unwrap_err().to_string();
        assert!(e.contains("call fit(x) on the generator first"), "{e}");
        assert!(g.standardize(&x).is_err());
    }
    let mut g = ImageDataGenerator::new().featurewise_center(true);
    g.fit(&Tensor::rand(0f32, 1., (3, 8, 8, 1), &Device::Cpu).unwrap()).unwrap();
    let e = g.flow(&x, &y, 2).validate().unwrap_err().to_string();
    assert!(e.contains("images of 1 channels") && e.contains("(8, 8, 3)"), "{e}");
    let mut g = ImageDataGenerator::new().zca_whitening(true);
    g.fit(&Tensor::rand(0f32, 1., (3, 4, 4, 3), &Device::Cpu).unwrap()).unwrap();
    let e = g.flow(&x, &y, 2).validate().unwrap_err().to_string();
    assert!(e.contains("fitted on images of (4, 4, 3)") && e.contains("(8, 8, 3)"), "{e}");
    // validation_split > 1 with a subset: an error, not an underflow.
    let g = ImageDataGenerator::new().validation_split(1.5);
    let e = g.flow(&x, &y, 2).subset(Subset::Training).validate().unwrap_err().to_string();
    assert!(e.contains("validation_split"), "{e}");
    // A NaN image with channel_shift_range: an error naming the image, not a panic in clamp.
    let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let per = v.len() / 4;
    v[2 * per..3 * per].iter_mut().for_each(|p| *p = f32::NAN);
    let bad = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
    let e = ImageDataGenerator::new().channel_shift_range(10.0).flow(&bad, &y, 2).batch(0, 0).unwrap_err().to_string();
    assert!(e.contains("image 2") && e.contains("channel_shift_range"), "{e}");
    let dir = common::TempDir::new("aug", "empty");
    let e = ImageDataGenerator::new().flow_from_directory(&dir, DirectoryOptions::default()).unwrap_err().to_string();
    assert!(e.contains("no class sub-folder"), "{e}");
}

#[test]
fn flow_subsets_split_like_keras() {
    let (x, y) = data(10);
    let gen = ImageDataGenerator::new().validation_split(0.3);
    let ids = |s| {
        // The labels here are sample ids, so the subsets see different "classes".
        let f = gen.flow(&x, &y, 10).shuffle(false).subset(s).ignore_class_split(true);
        f.batch(0, 0).unwrap().1.to_vec1::<u32>().unwrap()
    };
    assert_eq!(ids(Subset::Validation), vec![0, 1, 2]);
    assert_eq!(ids(Subset::Training), (3..10).collect::<Vec<_>>());
    // Without ignore_class_split, Keras' error.
    let e = gen.flow(&x, &y, 10).subset(Subset::Training).validate().unwrap_err().to_string();
    assert!(e.contains("different number of classes after the split"), "{e}");
    // Labels that both subsets see pass.
    let y2 = Tensor::from_vec((0..10u32).map(|i| i % 2).collect::<Vec<_>>(), 10, &Device::Cpu).unwrap();
    gen.flow(&x, &y2, 10).subset(Subset::Training).validate().unwrap();
}

#[test]
fn flow_from_directory_reads_class_folders() {
    let dir = common::TempDir::new("aug", "tree");
    for (c, name) in ["cat", "airplane"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(16, 12, |_, _| image::Rgb([c as u8 * 100, i as u8, 7]));
            img.save(dir.join(name).join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(dir.join(name).join("notes.txt"), "not an image").unwrap();
    }
    let it = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .flow_from_directory(
            &dir,
            DirectoryOptions::default().target_size((8, 8)).batch_size(4).class_mode(ClassMode::Sparse).shuffle(false),
        )
        .unwrap();
    assert_eq!(it.class_names(), &["airplane".to_string(), "cat".to_string()]);
    assert_eq!(it.samples(), 6);
    assert_eq!(it.len(), 2);
    let (xb, yb) = it.batch(0, 0).unwrap();
    assert_eq!(xb.dims(), &[4, 8, 8, 3]);
    assert_eq!(yb.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 0.0, 1.0]);
    // airplane images have red 100 (class index 1 in the writing loop), cat images red 0.
    let red: f32 = xb.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap()[0];
    assert!((red - 100.0 / 255.0).abs() < 1e-6, "{red}");
    // A corrupt image is an error naming the file.
    std::fs::write(dir.join("cat").join("1.png"), b"garbage").unwrap();
    let it = ImageDataGenerator::new()
        .flow_from_directory(&dir, DirectoryOptions::default().target_size((8, 8)).batch_size(6).shuffle(false))
        .unwrap();
    let e = it.batch(0, 0).unwrap_err().to_string();
    assert!(e.contains("cat/1.png"), "{e}");
    let _ = DType::F32;
}

/// Keras' file types (png, jpg, jpeg, bmp, ppm, tif, tiff) in sub-folders too, in os.walk's
/// sorted order; class_mode input and None; colour modes rgba and PIL's grayscale; class_indices.
#[test]
fn flow_from_directory_keras_file_types_and_modes() {
    use kandle::preprocessing::image::ColorMode;
    let dir = common::TempDir::new("aug", "types");
    let px = image::Rgb([200u8, 100, 50]);
    let save = |rel: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(4, 4, px).save(&p).unwrap();
    };
    for rel in ["a/x.png", "a/y.bmp", "a/sub/z.ppm", "a/sub/deeper/w.tiff", "b/q.tif", "b/r.jpeg", "b/s.jpg"] {
        save(rel);
    }
    let opts = || DirectoryOptions::default().target_size((4, 4)).shuffle(false).batch_size(7);
    let it = ImageDataGenerator::new().flow_from_directory(&dir, opts().class_mode(ClassMode::Sparse)).unwrap();
    assert_eq!(it.samples(), 7);
    let names: Vec<String> =
        it.filepaths().iter().map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["a/x.png", "a/y.bmp", "a/sub/z.ppm", "a/sub/deeper/w.tiff", "b/q.tif", "b/r.jpeg", "b/s.jpg"]);
    assert_eq!(it.class_indices().into_iter().collect::<Vec<_>>(), vec![("a".to_string(), 0), ("b".to_string(), 1)]);
    // Grayscale as PIL: (19595 R + 38470 G + 7471 B + 0x8000) >> 16 = 124 (Rec. 709 would give 118).
    let it = ImageDataGenerator::new()
        .flow_from_directory(&dir, opts().color_mode(ColorMode::Grayscale).class_mode(ClassMode::Input))
        .unwrap();
    let (x, y) = it.batch(0, 0).unwrap();
    assert_eq!(x.dims(), &[7, 4, 4, 1]);
    let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v[0], ((19595 * 200 + 38470 * 100 + 7471 * 50 + 0x8000) >> 16) as f32);
    assert_eq!(v[0], 124.0);
    assert_eq!(y.dims(), x.dims(), "class_mode input: the targets are the images");
    // RGBA: 4 channels, opaque.
    let it = ImageDataGenerator::new()
        .flow_from_directory(&dir, opts().color_mode(ColorMode::Rgba).class_mode(ClassMode::None))
        .unwrap();
    let (x, y) = it.batch(0, 0).unwrap();
    assert_eq!(x.dims(), &[7, 4, 4, 4]);
    assert_eq!(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[..4], &[200.0, 100.0, 50.0, 255.0]);
    assert_eq!(y.dims(), &[7, 0]);
}

/// Generators where Keras 3 takes them: `evaluate_generator` and `predict_generator` give what
/// `evaluate` and `predict` give on the same batches, and `fit` validates on a generator.
#[test]
fn generators_in_evaluate_predict_and_fit_validation() {
    let (x, _) = data(10);
    let y = Tensor::from_vec((0..10u32).map(|i| i % 3).collect::<Vec<_>>(), 10, &Device::Cpu).unwrap();
    let model = Sequential::new()
        .seed(1)
        .add(Flatten::new().input_shape((8, 8, 3)))
        .add(Dense::new(3).activation(Activation::Softmax));
    model.compile("sgd", Loss::SparseCategoricalCrossentropy, &["accuracy"]).unwrap();
    let flow = ImageDataGenerator::new().flow(&x, &y, 4).shuffle(false);
    let (a, b) = (model.evaluate_generator(&flow, None).unwrap(), model.evaluate(&x, &y, 4).unwrap());
    assert!((a.loss - b.loss).abs() < 1e-6 && a.get("accuracy") == b.get("accuracy"), "{a:?} vs {b:?}");
    let p = model.predict_generator(&flow, None).unwrap();
    let q = model.predict(&x, 4).unwrap();
    assert_eq!(p.to_vec2::<f32>().unwrap(), q.to_vec2::<f32>().unwrap());
    let h = model.fit(&x, &y, FitOptions::default().epochs(2).verbose(0).validation_generator(flow, None)).unwrap();
    let last = *h.get("val_loss").unwrap().last().unwrap();
    let flow = ImageDataGenerator::new().flow(&x, &y, 4).shuffle(false);
    assert!((last - model.evaluate_generator(&flow, None).unwrap().loss).abs() < 1e-6);
    assert!(model.evaluate_generator(&flow, Some(0)).is_err());
}

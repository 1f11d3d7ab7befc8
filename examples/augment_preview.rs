//! Writes a PNG grid showing what an `ImageDataGenerator` does: each row is one CIFAR-10
//! image, first as it is, then augmented several times.
//!
//! ```text
//! cargo run --release --example augment_preview -- --data-dir ../shared/data/cifar10 --out preview.png
//! ```
//! Flags: `--rotation DEG` (default 20), `--shift F` (width and height, 0.1), `--shear DEG`
//! (10), `--zoom F` (0.1), `--flip 0|1` (horizontal, 1), `--fill MODE` (nearest), `--rows N`
//! (8), `--cols N` (augmented versions per image, 7), `--scale N` (pixel size, 4), `--seed S`.

#[path = "common/mod.rs"]
mod common;

use kandle::datasets::cifar10;
use kandle::prelude::*;
use kandle::preprocessing::image::{FillMode, ImageDataGenerator};
use rand::SeedableRng;

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("data-dir", "CIFAR-10 folder or .tar.gz"),
        ("out", "PNG file to write (default augment_preview.png)"),
        ("rotation", "rotation_range in degrees (default 20)"),
        ("shift", "width_shift_range and height_shift_range (default 0.1)"),
        ("shear", "shear_range in degrees (default 10)"),
        ("zoom", "zoom_range (default 0.1)"),
        ("flip", "horizontal_flip, 0 or 1 (default 1)"),
        ("fill", "fill_mode: constant, nearest, reflect or wrap (default nearest)"),
        ("rows", "images (default 8)"),
        ("cols", "augmented versions per image (default 7)"),
        ("scale", "pixels per image pixel (default 4)"),
        ("seed", "seed (default 0)"),
    ]);
    let ((_, _), (x_test, _)) = match common::data_dir(&args, "cifar10") {
        Some(d) => cifar10::load_data_from(d)?,
        None => cifar10::load_data()?,
    };
    let shift = args.num("shift", 0.1f64)?;
    let gen = ImageDataGenerator::new()
        .rotation_range(args.num("rotation", 20.0)?)
        .width_shift_range(shift)
        .height_shift_range(shift)
        .shear_range(args.num("shear", 10.0)?)
        .zoom_range(args.num("zoom", 0.1)?)
        .horizontal_flip(args.num("flip", 1u8)? == 1)
        .fill_mode(args.get("fill").unwrap_or("nearest").parse::<FillMode>()?);
    gen.validate()?;
    let (rows, cols, scale) = (args.num("rows", 8usize)?, args.num("cols", 7usize)?, args.num("scale", 4u32)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.num("seed", 0u64)?);
    let (cell, gap) = (32 * scale, 4 * scale);
    let (w, h) = ((cols as u32 + 1) * (cell + gap) + gap, rows as u32 * (cell + gap) + gap);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for r in 0..rows {
        let img = x_test.get(r)?.to_dtype(DType::F32)?;
        for c in 0..=cols {
            let shown = if c == 0 { img.clone() } else { gen.random_transform(&img, &mut rng)? };
            let px = shown.flatten_all()?.to_vec1::<f32>()?;
            // The original sits apart from its augmented versions.
            let x0 = gap + c as u32 * (cell + gap) + if c > 0 { gap } else { 0 };
            let y0 = gap + r as u32 * (cell + gap);
            for y in 0..cell {
                for x in 0..cell {
                    let i = (((y / scale) * 32 + x / scale) * 3) as usize;
                    let v = |k: usize| px[i + k].clamp(0.0, 255.0) as u8;
                    if x0 + x < w {
                        canvas.put_pixel(x0 + x, y0 + y, image::Rgb([v(0), v(1), v(2)]));
                    }
                }
            }
        }
    }
    let out = args.get("out").unwrap_or("augment_preview.png").to_string();
    canvas.save(&out).map_err(|e| Error::invalid("out", format!("{out}: {e}")))?;
    println!("wrote {out} ({w}x{h}): {rows} images, each then {cols} augmented versions");
    Ok(())
}

//! Two small image-folder datasets that dnal has never seen, for the benchmark of the search's
//! defaults on new data (BENCHMARKS.md, "The defaults on new data"):
//!
//! - `digits`: 8x8 grayscale seven-segment digits (10 classes), each drawn with its own
//!   offset, size, slant, stroke width, contrast and noise;
//! - `shapes`: 32x32 RGB circles, squares, triangles and crosses (4 classes) of random colour,
//!   size and place on a random background.
//!
//! Both in the ImageNet layout `OUT/NAME/{train,test}/<class>/<n>.png`, reproducible from the
//! seed.
//!
//! ```sh
//! cargo run --release -p dnal-bench --bin new_datasets -- OUT [--train-per-class N] [--test-per-class N]
//! ```

use std::path::{Path, PathBuf};

use image::{GrayImage, Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sub-samples per pixel side: shapes are drawn on a finer grid and averaged (anti-aliasing).
const SUPER: usize = 4;

/// The seven segments (a..g) lit for each digit.
const SEGMENTS: [&str; 10] = [
    "abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg",
];

/// Segment end points in a unit box (x right, y down), the digit 0.6 wide and 1 tall.
fn segment(name: char) -> ((f64, f64), (f64, f64)) {
    match name {
        'a' => ((0.0, 0.0), (0.6, 0.0)),
        'b' => ((0.6, 0.0), (0.6, 0.5)),
        'c' => ((0.6, 0.5), (0.6, 1.0)),
        'd' => ((0.0, 1.0), (0.6, 1.0)),
        'e' => ((0.0, 0.5), (0.0, 1.0)),
        'f' => ((0.0, 0.0), (0.0, 0.5)),
        _ => ((0.0, 0.5), (0.6, 0.5)),
    }
}

fn distance_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
}

/// Coverage in [0, 1] of every pixel of a `size`x`size` image by the set `inside(x, y)`.
fn coverage(size: usize, inside: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let mut hits = 0;
            for sy in 0..SUPER {
                for sx in 0..SUPER {
                    let px = x as f64 + (sx as f64 + 0.5) / SUPER as f64;
                    let py = y as f64 + (sy as f64 + 0.5) / SUPER as f64;
                    hits += usize::from(inside(px, py));
                }
            }
            out[y * size + x] = hits as f64 / (SUPER * SUPER) as f64;
        }
    }
    out
}

fn digit(rng: &mut StdRng, class: usize) -> GrayImage {
    const SIZE: usize = 8;
    let height = rng.random_range(5.0..7.5);
    let slant = rng.random_range(-0.3..0.3);
    let stroke = rng.random_range(0.35..0.8);
    let left = rng.random_range(0.8..(SIZE as f64 - 0.6 * height - 0.8).max(0.9));
    let top = rng.random_range(0.3..(SIZE as f64 - height - 0.3).max(0.4));
    let lit: Vec<_> = SEGMENTS[class].chars().map(segment).collect();
    let cover = coverage(SIZE, |x, y| {
        // Back into the unit box, undoing the slant (x leans right going up).
        let v = (y - top) / height;
        let u = (x - left + slant * (1.0 - v) * height) / height;
        lit.iter()
            .any(|&(a, b)| distance_to_segment((u, v), a, b) * height <= stroke)
    });
    let ink = rng.random_range(110.0..255.0);
    let paper = rng.random_range(0.0..80.0);
    let mut image = GrayImage::new(SIZE as u32, SIZE as u32);
    for (i, pixel) in image.pixels_mut().enumerate() {
        let noise = rng.random_range(-45.0..45.0);
        let value = paper + (ink - paper) * cover[i] + noise;
        pixel.0 = [value.clamp(0.0, 255.0) as u8];
    }
    image
}

const SHAPES: [&str; 4] = ["circle", "cross", "square", "triangle"];

fn colour(rng: &mut StdRng) -> [f64; 3] {
    [0; 3].map(|_| rng.random_range(0.0..255.0))
}

fn shape(rng: &mut StdRng, class: usize) -> RgbImage {
    const SIZE: usize = 32;
    let r = rng.random_range(6.0..12.0);
    let cx = rng.random_range(r + 1.0..SIZE as f64 - r - 1.0);
    let cy = rng.random_range(r + 1.0..SIZE as f64 - r - 1.0);
    let angle: f64 = rng.random_range(-0.4..0.4);
    let (sin, cos) = angle.sin_cos();
    let arm = rng.random_range(0.25..0.45) * r;
    let cover = coverage(SIZE, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
        match SHAPES[class] {
            "circle" => u * u + v * v <= r * r,
            "cross" => (u.abs() <= arm && v.abs() <= r) || (v.abs() <= arm && u.abs() <= r),
            "square" => u.abs() <= 0.8 * r && v.abs() <= 0.8 * r,
            // Apex up, base at v = r/2, corners at +-r*cos(30deg).
            _ => v <= 0.5 * r && v >= -r && u.abs() <= (v + r) / 1.5 * 0.866,
        }
    });
    // Foreground and background far enough apart to be seen.
    let background = colour(rng);
    let mut foreground = colour(rng);
    while (0..3)
        .map(|c| (foreground[c] - background[c]).abs())
        .sum::<f64>()
        < 150.0
    {
        foreground = colour(rng);
    }
    let mut image = RgbImage::new(SIZE as u32, SIZE as u32);
    for (i, pixel) in image.pixels_mut().enumerate() {
        let mut rgb = [0u8; 3];
        for c in 0..3 {
            let noise = rng.random_range(-25.0..25.0);
            let value = background[c] + (foreground[c] - background[c]) * cover[i] + noise;
            rgb[c] = value.clamp(0.0, 255.0) as u8;
        }
        *pixel = Rgb(rgb);
    }
    image
}

fn write_split<I: FnMut(&mut StdRng, usize) -> Result<(), image::ImageError>>(
    rng: &mut StdRng,
    classes: usize,
    per_class: usize,
    mut draw: I,
) -> Result<(), image::ImageError> {
    for n in 0..per_class {
        for class in 0..classes {
            draw(rng, class * per_class + n)?;
        }
    }
    Ok(())
}

fn folder(root: &Path, name: &str, split: &str, class: &str) -> PathBuf {
    let dir = root.join(name).join(split).join(class);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let (mut train, mut test) = (150, 50);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--train-per-class" => train = args.next().ok_or("a count")?.parse()?,
            "--test-per-class" => test = args.next().ok_or("a count")?.parse()?,
            _ if out.is_none() => out = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}").into()),
        }
    }
    let out = out.ok_or(
        "usage: new_datasets OUT [--train-per-class N] [--test-per-class N] (writes OUT/digits \
         and OUT/shapes)",
    )?;
    for (split, per_class, seed) in [("train", train, 1u64), ("test", test, 2)] {
        let mut rng = StdRng::seed_from_u64(seed);
        write_split(&mut rng, 10, per_class, |rng, i| {
            let class = i / per_class;
            let path = folder(&out, "digits", split, &class.to_string());
            digit(rng, class).save(path.join(format!("{:05}.png", i % per_class)))
        })?;
        let mut rng = StdRng::seed_from_u64(seed + 10);
        write_split(&mut rng, SHAPES.len(), per_class, |rng, i| {
            let class = i / per_class;
            let path = folder(&out, "shapes", split, SHAPES[class]);
            shape(rng, class).save(path.join(format!("{:05}.png", i % per_class)))
        })?;
    }
    println!(
        "{}: digits (10 classes, 8x8 gray) and shapes (4 classes, 32x32 RGB), {train} train \
         and {test} test images per class",
        out.display()
    );
    Ok(())
}

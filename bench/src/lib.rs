//! What the harnesses in `src/bin` share.

use std::time::Instant;

use dnal_models::{GatePosition, NetPlan, Shape3, model_spec_at_width};

/// The fastest of `runs` calls of `f` in milliseconds, after one warm-up call: the best case
/// is what the kernels can do; medians of single calls swing with thread wake-ups on a shared
/// machine (PyTorch's OpenMP pool more than rayon).
pub fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// What the per-layer harnesses (`conv_split`, `norm_passes`) measure: the layers of `model`
/// at `width` on `input`, at batch `batch`, the best of `runs` calls each.
pub struct LayerBenchArgs {
    pub model: String,
    pub width: Option<f64>,
    pub input: Shape3,
    pub batch: usize,
    pub runs: usize,
}

impl LayerBenchArgs {
    /// The command line over these defaults: `--model`, `--width X`, `--no-width`, `--input C,H,W`,
    /// `--batch`, `--runs`; any other flag goes to `other` with a function that reads its value,
    /// which returns false for a flag it does not know either (then this panics naming it).
    pub fn parse(
        mut self,
        mut other: impl FnMut(&str, &mut dyn FnMut() -> String) -> bool,
    ) -> Self {
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--model" => self.model = value(),
                "--width" => self.width = Some(value().parse().expect("--width is a number")),
                "--no-width" => self.width = None,
                "--input" => {
                    let v: Vec<usize> = value()
                        .split(',')
                        .map(|x| x.parse().expect("--input is C,H,W"))
                        .collect();
                    assert_eq!(v.len(), 3, "--input is C,H,W");
                    self.input = Shape3::new(v[0], v[1], v[2]);
                }
                "--batch" => self.batch = value().parse().expect("--batch is a count"),
                "--runs" => self.runs = value().parse().expect("--runs is a count"),
                flag => assert!(other(flag, &mut value), "unknown flag {flag}"),
            }
        }
        self
    }

    /// The model's plan (10 classes, the gate after the batch norm, as the search trains it).
    pub fn plan(&self) -> NetPlan {
        let spec =
            model_spec_at_width(&self.model, self.input, 10, self.width).expect("a known model");
        NetPlan::new(spec, GatePosition::AfterBn).expect("a valid model")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_ms_calls_once_to_warm_up_then_runs_times_and_keeps_the_fastest() {
        let mut calls = 0;
        let ms = best_ms(3, || {
            calls += 1;
            // The warm-up and the first timed call sleep; the other two do not, and only a
            // machine that stalls both of them for the whole sleep could fail this.
            if calls <= 2 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        assert_eq!(calls, 4);
        assert!(ms < 100.0, "the fastest call took {ms} ms");
    }
}

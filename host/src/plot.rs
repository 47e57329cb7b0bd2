//! Plots beside the reports, as SVG and PNG: a search's training curves and gates, and a
//! sweep's accuracy/latency Pareto fronts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::budget::LandingTrace;
use crate::error::SearchError;
use crate::report::{Report, SupernetLayer};

/// Fonts tried, in order (Debian's fonts-dejavu-core first).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font as plotters' `sans-serif` once.
fn font() -> Result<(), SearchError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = FONTS.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
                format!(
                    "no font for the plots; install one with `apt-get install fonts-dejavu-core` (looked for {})",
                    FONTS.join(", ")
                )
            })?;
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            // The font lives as long as the process: plotters keeps a reference to it.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a font plotters can read"))
        })
        .clone()
        .map_err(|reason| SearchError::Plot {
            path: PathBuf::from(FONTS[0]),
            reason,
        })
}

fn plot_error(path: &Path) -> impl Fn(String) -> SearchError + '_ {
    move |reason| SearchError::Plot {
        path: path.to_path_buf(),
        reason,
    }
}

/// Something drawn the same way on any plotters backend.
pub trait Figure {
    /// Draws the figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draws `figure` into `STEM.svg` and `STEM.png` (written under temporary names, then renamed).
pub fn write_figure(
    stem: &Path,
    size: (u32, u32),
    figure: &impl Figure,
) -> Result<(), SearchError> {
    font()?;
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let tmp_svg = stem.with_extension("tmp.svg");
    let tmp_png = stem.with_extension("tmp.png");
    {
        let root = SVGBackend::new(&tmp_svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(text).map_err(plot_error(&svg))?;
        figure.draw(&root).map_err(plot_error(&svg))?;
        root.present().map_err(text).map_err(plot_error(&svg))?;
    }
    {
        let root = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        root.fill(&WHITE).map_err(text).map_err(plot_error(&png))?;
        figure.draw(&root).map_err(plot_error(&png))?;
        root.present().map_err(text).map_err(plot_error(&png))?;
    }
    let fix = "check that the folder is writable";
    std::fs::rename(&tmp_svg, &svg).map_err(SearchError::io(&svg, "renaming into place", fix))?;
    std::fs::rename(&tmp_png, &png).map_err(SearchError::io(&png, "renaming into place", fix))?;
    Ok(())
}

const STAGE_COLORS: [(&str, RGBColor); 3] = [
    ("weights", RGBColor(31, 119, 180)),
    ("gates", RGBColor(214, 39, 40)),
    ("finetune", RGBColor(44, 160, 44)),
];

fn palette(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One labelled line through `points`, with a dot of `dot_radius` on each when it is not 0.
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: &str,
    dot_radius: u32,
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(text)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    if dot_radius > 0 {
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, dot_radius, color.filled())),
            )
            .map_err(text)?;
    }
    Ok(())
}

/// The legend box, at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(text)
}

/// A search's curves: test top-1 over all epochs by stage, and the live channels of every
/// gated layer as delta grows.
pub struct SearchCurves<'a> {
    /// The search's report.
    pub report: &'a Report,
}

impl Figure for SearchCurves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        let history = &self.report.history;
        let n = history.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&left)
            .caption("test top-1 per epoch", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5f64..n + 0.5, 0f64..100f64)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("epoch (all stages)")
            .y_desc("top-1 %")
            .draw()
            .map_err(text)?;
        for (stage, color) in STAGE_COLORS {
            let points: Vec<(f64, f64)> = history
                .iter()
                .enumerate()
                .filter(|(_, e)| e.stage == stage)
                .map(|(i, e)| ((i + 1) as f64, 100.0 * e.test_top1))
                .collect();
            if points.is_empty() {
                continue;
            }
            draw_line(&mut chart, points, color, stage, 3)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;

        let gates = &self.report.gates;
        let max_channels = self
            .report
            .channels
            .iter()
            .map(|c| c.parent)
            .max()
            .unwrap_or(1) as f64;
        let deltas: Vec<f64> = gates.iter().map(|g| g.delta.max(1.0).log10()).collect();
        let hi = deltas.iter().copied().fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption("live channels as delta grows", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..hi, 0f64..max_channels * 1.05)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("log10 delta (end of gate epoch)")
            .y_desc("channels with s > 0")
            .draw()
            .map_err(text)?;
        for (i, name) in self.report.gate_names.iter().enumerate() {
            let color = palette(i);
            let parent = self.report.channels.get(i).map_or(0, |c| c.parent) as f64;
            let mut points = vec![(0.0, parent)];
            points.extend(
                gates
                    .iter()
                    .zip(&deltas)
                    .map(|(g, &d)| (d, g.alive.get(i).copied().unwrap_or(0) as f64)),
            );
            draw_line(&mut chart, points, color, name, 0)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}

/// A searched supernet: one row per layer, one cell per candidate, shaded by the share of
/// its hidden channels kept and labelled `kept/parent`; a vanished candidate is a blank cell.
pub struct SupernetFigure<'a> {
    /// The report's supernet layers.
    pub layers: &'a [SupernetLayer],
}

impl SupernetFigure<'_> {
    const LABEL: i32 = 90;
    const CELL: (i32, i32) = (96, 24);
    const TOP: i32 = 56;

    /// The picture's size for these layers.
    pub fn size(layers: &[SupernetLayer]) -> (u32, u32) {
        let columns = layers.iter().map(|l| l.candidates.len()).max().unwrap_or(1) as i32;
        (
            (Self::LABEL + columns * Self::CELL.0 + 16) as u32,
            (Self::TOP + layers.len() as i32 * Self::CELL.1 + 16) as u32,
        )
    }
}

impl Figure for SupernetFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (w, h) = Self::CELL;
        let font = ("sans-serif", 14).into_font();
        root.draw(&Text::new(
            "candidates kept per layer (hidden channels kept/parent)",
            (8, 8),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(text)?;
        if let Some(first) = self.layers.first() {
            for (c, candidate) in first.candidates.iter().enumerate() {
                let x = Self::LABEL + c as i32 * w + 8;
                root.draw(&Text::new(
                    candidate.name.clone(),
                    (x, Self::TOP - 20),
                    font.clone(),
                ))
                .map_err(text)?;
            }
        }
        for (r, layer) in self.layers.iter().enumerate() {
            let y = Self::TOP + r as i32 * h;
            root.draw(&Text::new(layer.layer.clone(), (8, y + 5), font.clone()))
                .map_err(text)?;
            for (c, candidate) in layer.candidates.iter().enumerate() {
                let x = Self::LABEL + c as i32 * w;
                let share = candidate.pruned as f64 / candidate.parent.max(1) as f64;
                // White (vanished) to dark blue (all kept).
                let shade = |full: u8| (255.0 - share * (255.0 - f64::from(full))) as u8;
                let fill = RGBColor(shade(31), shade(119), shade(180));
                root.draw(&Rectangle::new(
                    [(x, y), (x + w - 2, y + h - 2)],
                    fill.filled(),
                ))
                .map_err(text)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + w - 2, y + h - 2)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))
                .map_err(text)?;
                let label = if candidate.pruned == 0 {
                    "-".to_string()
                } else {
                    format!("{}/{}", candidate.pruned, candidate.parent)
                };
                let color = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    label,
                    (x + 8, y + 5),
                    font.clone().color(&color),
                ))
                .map_err(text)?;
            }
        }
        Ok(())
    }
}

/// A budget-mode gate stage's course ([`LandingTrace`]): above, the binarised network's cost
/// as a share of the budget with the band in which delta grows; below, log10 of lambda_a and
/// of delta; a grey line at every epoch's end.
pub struct LandingFigure<'a> {
    /// The trace.
    pub trace: &'a LandingTrace,
    /// The budget, for the title (`30 ms`, `5140000 MACs`).
    pub budget: String,
}

impl Figure for LandingFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let trace = self.trace;
        let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
        let steps = trace.steps.max(1) as f64;
        let ratios: Vec<(f64, f64)> = trace
            .samples
            .iter()
            .map(|s| (s.step as f64, s.cost_ratio))
            .collect();
        let hi = ratios
            .iter()
            .map(|p| p.1)
            .fold(1.0 + 2.0 * trace.band, f64::max);
        let lo = ratios
            .iter()
            .map(|p| p.1)
            .fold(1.0 - 2.0 * trace.band, f64::min);
        let epoch_ends: Vec<f64> = (1..)
            .map(|e| (e * trace.steps_per_epoch.max(1)) as f64)
            .take_while(|&s| s < steps)
            .collect();
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("the gate stage's landing on {}", self.budget),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..steps, lo.max(0.0) * 0.95..hi * 1.05)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("binarised cost / budget")
            .draw()
            .map_err(text)?;
        let grey = RGBColor(190, 190, 190);
        let epoch_color = RGBColor(110, 110, 110);
        for (i, &x) in epoch_ends.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new([(x, lo), (x, hi)], epoch_color))
                .map_err(text)?;
            if i == 0 {
                series
                    .label("end of an epoch")
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], epoch_color));
            }
        }
        for (y, label) in [
            (1.0 - trace.band, "band delta grows in"),
            (1.0 + trace.band, ""),
        ] {
            let series = chart
                .draw_series(LineSeries::new(
                    [(0.0, y), (steps, y)],
                    grey.stroke_width(2),
                ))
                .map_err(text)?;
            if !label.is_empty() {
                series
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey));
            }
        }
        draw_line(
            &mut chart,
            vec![(0.0, 1.0), (steps, 1.0)],
            BLACK,
            "budget",
            0,
        )?;
        draw_line(&mut chart, ratios, palette(3), "binarised cost", 0)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

        let log = |v: f64| v.max(1e-12).log10();
        let lambdas: Vec<(f64, f64)> = trace
            .samples
            .iter()
            .map(|s| (s.step as f64, log(s.lambda)))
            .collect();
        let deltas: Vec<(f64, f64)> = trace
            .samples
            .iter()
            .filter(|s| s.delta.is_finite())
            .map(|s| (s.step as f64, log(s.delta)))
            .collect();
        let values = lambdas.iter().chain(&deltas).map(|p| p.1);
        let (y_lo, y_hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        let (y_lo, y_hi) = if y_lo.is_finite() {
            (y_lo.floor(), y_hi.ceil().max(y_lo.floor() + 1.0))
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..steps, y_lo..y_hi)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("gate-stage step")
            .y_desc("log10")
            .draw()
            .map_err(text)?;
        for &x in &epoch_ends {
            chart
                .draw_series(LineSeries::new([(x, y_lo), (x, y_hi)], epoch_color))
                .map_err(text)?;
        }
        draw_line(&mut chart, lambdas, palette(0), "lambda_a", 0)?;
        draw_line(&mut chart, deltas, palette(1), "delta", 0)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

/// One front of a Pareto plot.
#[derive(Clone, Debug)]
pub struct Front {
    /// The legend entry.
    pub name: String,
    /// (latency in ms, top-1 in %) points.
    pub points: Vec<(f64, f64)>,
}

/// Accuracy against measured latency: one line per front, and the parent as a star.
pub struct Pareto {
    /// The fronts.
    pub fronts: Vec<Front>,
    /// The unpruned network, if measured.
    pub parent: Option<(f64, f64)>,
    /// The x axis' label (what the latency is and how it was measured).
    pub x_label: String,
    /// The title.
    pub title: String,
}

impl Figure for Pareto {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let all: Vec<(f64, f64)> = self
            .fronts
            .iter()
            .flat_map(|f| f.points.iter().copied())
            .chain(self.parent)
            .collect();
        let (x_max, y_min, y_max) = all.iter().fold((0.0f64, 100.0f64, 0.0f64), |acc, &(x, y)| {
            (acc.0.max(x), acc.1.min(y), acc.2.max(y))
        });
        let y_lo = (y_min - 1.0).max(0.0).floor();
        let y_hi = (y_max + 1.0).min(100.0).ceil();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max * 1.08 + 1e-9, y_lo..y_hi.max(y_lo + 1.0))
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc("test top-1 %")
            .draw()
            .map_err(text)?;
        for (i, front) in self.fronts.iter().enumerate() {
            let color = palette(i);
            let mut points = front.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            draw_line(&mut chart, points, color, &front.name, 4)?;
        }
        if let Some(p) = self.parent {
            chart
                .draw_series(std::iter::once(TriangleMarker::new(p, 8, BLACK.filled())))
                .map_err(text)?
                .label("parent (unpruned)")
                .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, BLACK.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landing_figure_is_drawn_from_a_trace() {
        let mut trace = LandingTrace::new(40, 30.0, 0.05);
        for step in 0..120 {
            // Over the budget, down through it, and back.
            let cost = 30.0 * (1.3 - 0.01 * step as f64).max(0.8);
            trace.record(cost, 1e-4 * (1.0 + step as f64), 1.05f64.powi(step));
        }
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("landing");
        let figure = LandingFigure {
            trace: &trace,
            budget: "30 ms".into(),
        };
        write_figure(&stem, (900, 600), &figure).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for label in ["30 ms", "binarised cost", "lambda_a", "delta"] {
            assert!(svg.contains(label), "no {label} in the figure");
        }
    }

    #[test]
    fn a_pareto_plot_is_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("pareto");
        let figure = Pareto {
            fronts: vec![
                Front {
                    name: "latency-aware".into(),
                    points: vec![(1.0, 88.0), (2.0, 90.5), (4.0, 91.5)],
                },
                Front {
                    name: "flops-aware".into(),
                    points: vec![(1.1, 87.0), (2.1, 90.0)],
                },
            ],
            parent: Some((9.0, 92.0)),
            x_label: "latency, ms".into(),
            title: "test".into(),
        };
        write_figure(&stem, (640, 480), &figure).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("latency-aware"));
        let png = std::fs::read(stem.with_extension("png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "temporary files left: {names:?}");
    }
}

//! Progress of a search: an observer trait, a silent one for tests and library use, and the
//! terminal one (indicatif bars) for the CLI.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::EpochRecord;
use crate::train::EpochStats;

/// Hears what a search does.
pub trait SearchObserver {
    /// A stage begins (or resumes at `first_epoch`, 0-based).
    fn stage(&mut self, name: &str, epochs: usize, first_epoch: usize, steps_per_epoch: usize);
    /// A step of the current epoch finished; `live` is a short note such as live channels.
    fn step(&mut self, epoch: usize, step: usize, stats: &EpochStats, live: &str);
    /// An epoch finished.
    fn epoch(&mut self, record: &EpochRecord, note: &str);
    /// A line worth telling the user.
    fn message(&mut self, line: &str);
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl SearchObserver for Silent {
    fn stage(&mut self, _: &str, _: usize, _: usize, _: usize) {}
    fn step(&mut self, _: usize, _: usize, _: &EpochStats, _: &str) {}
    fn epoch(&mut self, _: &EpochRecord, _: &str) {}
    fn message(&mut self, _: &str) {}
}

/// Two bars on stderr: the stage's epochs and the current epoch's steps, with loss, accuracy
/// and live channels; a line per finished epoch. Without a terminal the bars stay hidden and
/// only the lines are printed.
pub struct TerminalProgress {
    bars: MultiProgress,
    stage: Option<ProgressBar>,
    epoch: Option<ProgressBar>,
    stage_name: String,
}

impl TerminalProgress {
    /// Bars on stderr (hidden when stderr is not a terminal).
    pub fn new() -> Self {
        Self {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            stage: None,
            epoch: None,
            stage_name: String::new(),
        }
    }

    fn println(&self, line: &str) {
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl SearchObserver for TerminalProgress {
    fn stage(&mut self, name: &str, epochs: usize, first_epoch: usize, steps_per_epoch: usize) {
        if let Some(bar) = self.epoch.take() {
            bar.finish_and_clear();
        }
        if let Some(bar) = self.stage.take() {
            bar.finish_and_clear();
        }
        self.stage_name = name.to_string();
        let stage = self.bars.add(ProgressBar::new(epochs as u64));
        stage.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] epoch {pos}/{len} {elapsed_precise} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        stage.set_prefix(name.to_string());
        stage.set_position(first_epoch as u64);
        let epoch = self.bars.add(ProgressBar::new(steps_per_epoch as u64));
        epoch.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        epoch.set_prefix("steps");
        epoch.enable_steady_tick(Duration::from_millis(500));
        self.stage = Some(stage);
        self.epoch = Some(epoch);
    }

    fn step(&mut self, _epoch: usize, step: usize, stats: &EpochStats, live: &str) {
        if let Some(bar) = &self.epoch {
            bar.set_position(step as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}%{}{}",
                stats.loss,
                100.0 * stats.train_top1,
                if live.is_empty() { "" } else { " " },
                live
            ));
        }
    }

    fn epoch(&mut self, r: &EpochRecord, note: &str) {
        if let Some(bar) = &self.epoch {
            bar.set_position(0);
        }
        if let Some(bar) = &self.stage {
            bar.inc(1);
        }
        self.println(&format!(
            "{:>9} epoch {:>3}: loss {:.4} train {:.2}% test {:.2}% lr {:.4} {:.0} img/s {:.1}s{}{}",
            r.stage,
            r.epoch,
            r.loss,
            100.0 * r.train_top1,
            100.0 * r.test_top1,
            r.lr,
            r.images_per_second,
            r.seconds,
            if note.is_empty() { "" } else { " | " },
            note
        ));
    }

    fn message(&mut self, line: &str) {
        self.println(line);
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        for bar in [self.epoch.take(), self.stage.take()].into_iter().flatten() {
            bar.finish_and_clear();
        }
    }
}

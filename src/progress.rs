//! What trivy-ecr shows while it downloads a DB: a progress bar on a terminal, one line per
//! phase otherwise, nothing with trivy's `--quiet` (errors and retries are always shown).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Lines,
    Quiet,
}

impl ProgressMode {
    /// `--quiet` silences phases; `--no-progress` or a non-terminal stderr turns the bar into lines.
    pub fn choose(quiet: bool, no_progress: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Quiet
        } else if no_progress || !std::io::stderr().is_terminal() {
            ProgressMode::Lines
        } else {
            ProgressMode::Bar
        }
    }

    /// Announces a phase (a line, unless quiet).
    pub fn phase(self, message: std::fmt::Arguments<'_>) {
        if self != ProgressMode::Quiet {
            crate::say!("{message}");
        }
    }

    /// A byte counter for one download; a bar only in [`ProgressMode::Bar`].
    pub fn download(self, total: u64, label: &str) -> Download {
        let bar = (self == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "trivy-ecr: {msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Download { bar }
    }
}

/// Progress of one download; clears its bar when dropped.
pub struct Download {
    bar: Option<ProgressBar>,
}

impl Download {
    pub fn update(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

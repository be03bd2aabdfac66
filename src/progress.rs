//! Progress of long work (training epochs, scoring a dataset part, classifying a folder):
//! an indicatif bar when stderr is a terminal, and otherwise (a log file, CI, a pipe) plain
//! lines, so that a long run written to a log is never silent.
//!
//! Every long loop of the crate reports through [`Progress`]; it is the one place that decides
//! between a bar and lines and how the lines look.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Off a terminal, a line is printed after every this many items (images) of a long pass.
pub const LINE_EVERY: u64 = 250;

/// Where progress lines go off a terminal: one call per line, without the newline.
pub type LineSink = Box<dyn FnMut(&str) + Send>;

/// A progress report over `total` items.
///
/// On a terminal it draws a bar on stderr; elsewhere it writes a line every `line_every` items
/// (done, total, elapsed time, estimated time left and the latest message) and one line when
/// the work finishes. [`Progress::with_sink`] sends the lines anywhere (tests, a log).
///
/// ```
/// use fracture::progress::Progress;
/// use std::sync::{Arc, Mutex};
/// let lines = Arc::new(Mutex::new(Vec::<String>::new()));
/// let seen = Arc::clone(&lines);
/// let progress = Progress::with_sink("classify", 5, Some(2), Box::new(move |line: &str| {
///     seen.lock().unwrap().push(line.to_string())
/// }));
/// for _ in 0..5 {
///     progress.inc(1);
/// }
/// progress.finish("5 images");
/// let lines = lines.lock().unwrap();
/// assert_eq!(lines.len(), 3); // after 2 and 4 items, and the final line
/// assert!(lines[0].starts_with("classify: 2/5 (40%)"));
/// assert_eq!(lines[2], "classify: 5 images");
/// ```
pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    mode: Mode,
}

enum Mode {
    Hidden,
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    sink: LineSink,
    every: Option<u64>,
    done: u64,
    next_line_at: u64,
    message: String,
}

impl Progress {
    /// A bar on a terminal; off a terminal lines on stderr, every `line_every` items (`None`:
    /// only the line [`Progress::finish`] writes).
    pub fn new(label: impl Into<String>, total: u64, line_every: Option<u64>) -> Self {
        let label = label.into();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.clone());
            Self::with_mode(label, total, Mode::Bar(bar))
        } else {
            // `eprintln!`, so that the test harness captures the lines like any other output.
            Self::with_sink(
                label,
                total,
                line_every,
                Box::new(|line| eprintln!("{line}")),
            )
        }
    }

    /// [`Progress::new`] with a line every [`LINE_EVERY`] items off a terminal.
    pub fn items(label: impl Into<String>, total: u64) -> Self {
        Self::new(label, total, Some(LINE_EVERY))
    }

    /// No output at all.
    pub fn hidden() -> Self {
        Self::with_mode(String::new(), 0, Mode::Hidden)
    }

    /// Lines (never a bar) sent to `sink`, every `line_every` items and at the end.
    pub fn with_sink(
        label: impl Into<String>,
        total: u64,
        line_every: Option<u64>,
        sink: LineSink,
    ) -> Self {
        let every = line_every.filter(|&n| n > 0);
        let lines = Lines {
            sink,
            every,
            done: 0,
            next_line_at: every.unwrap_or(u64::MAX),
            message: String::new(),
        };
        Self::with_mode(label.into(), total, Mode::Lines(Mutex::new(lines)))
    }

    fn with_mode(label: String, total: u64, mode: Mode) -> Self {
        Self {
            label,
            total,
            started: Instant::now(),
            mode,
        }
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Bar(bar) => bar.inc(n),
            Mode::Lines(lines) => {
                let Ok(mut lines) = lines.lock() else { return };
                lines.done = lines.done.saturating_add(n);
                if lines.done >= lines.next_line_at {
                    let every = lines.every.unwrap_or(u64::MAX);
                    // The next multiple of `every` past what is done.
                    lines.next_line_at =
                        (lines.done / every).saturating_add(1).saturating_mul(every);
                    let line = self.periodic_line(lines.done, &lines.message);
                    (lines.sink)(&line);
                }
            }
        }
    }

    /// The short status shown beside the bar and at the end of the next line (e.g. the live
    /// loss or the number of skipped files).
    pub fn set_message(&self, message: impl Into<String>) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Bar(bar) => bar.set_message(message.into()),
            Mode::Lines(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    lines.message = message.into();
                }
            }
        }
    }

    /// The work is done: the bar stays with `summary` beside it; off a terminal one line
    /// `label: summary`.
    pub fn finish(&self, summary: &str) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Bar(bar) => bar.finish_with_message(summary.to_string()),
            Mode::Lines(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    let line = format!("{}: {summary}", self.label);
                    (lines.sink)(&line);
                }
            }
        }
    }

    /// The work is done and needs no summary: the bar is cleared; off a terminal nothing
    /// more is written.
    pub fn finish_quietly(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }

    /// The work stopped on an error: the bar is left as it is.
    pub fn abandon(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.abandon();
        }
    }

    fn periodic_line(&self, done: u64, message: &str) -> String {
        let elapsed = self.started.elapsed();
        let mut line = format!("{}: {done}/{}", self.label, self.total);
        if let Some(percent) = (done.min(self.total).saturating_mul(100)).checked_div(self.total) {
            line.push_str(&format!(" ({percent}%)"));
        }
        line.push_str(&format!(", {}", format_duration(elapsed)));
        if done > 0 && done < self.total {
            let left = elapsed.as_secs_f64() * (self.total - done) as f64 / done as f64;
            line.push_str(&format!(
                ", ETA {}",
                format_duration(Duration::from_secs_f64(left))
            ));
        }
        if !message.is_empty() {
            line.push_str(&format!(", {message}"));
        }
        line
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Hidden => "hidden",
            Mode::Bar(_) => "bar",
            Mode::Lines(_) => "lines",
        };
        f.debug_struct("Progress")
            .field("label", &self.label)
            .field("total", &self.total)
            .field("mode", &mode)
            .finish()
    }
}

/// A duration for people: `42 s`, `3 min 05 s`, `1 h 02 min`.
///
/// ```
/// use fracture::progress::format_duration;
/// use std::time::Duration;
/// assert_eq!(format_duration(Duration::from_secs_f64(41.6)), "42 s");
/// assert_eq!(format_duration(Duration::from_secs(185)), "3 min 05 s");
/// assert_eq!(format_duration(Duration::from_secs(3720)), "1 h 02 min");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64().round() as u64;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn collecting(
        label: &str,
        total: u64,
        every: Option<u64>,
    ) -> (Progress, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        let sink: LineSink = Box::new(move |line| seen.lock().unwrap().push(line.to_string()));
        (Progress::with_sink(label, total, every, sink), lines)
    }

    #[test]
    fn lines_come_every_n_items_with_counts_eta_and_message() {
        let (progress, lines) = collecting("scoring test", 1000, Some(250));
        progress.set_message("2 skipped");
        for _ in 0..10 {
            progress.inc(100);
        }
        progress.finish("1000 images, 2 skipped");
        let lines = lines.lock().unwrap();
        let counts: Vec<&str> = lines
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap_or_default())
            .collect();
        // Crossing 250, 500, 750 and 1000 (batches of 100 land on 300, 500, 800, 1000).
        assert_eq!(
            counts,
            ["300/1000", "500/1000", "800/1000", "1000/1000", "1000"]
        );
        assert!(
            lines[0].starts_with("scoring test: 300/1000 (30%), "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(", ETA ") && lines[0].ends_with(", 2 skipped"));
        assert!(!lines[3].contains("ETA"), "nothing left: {}", lines[3]);
        assert_eq!(lines[4], "scoring test: 1000 images, 2 skipped");
    }

    #[test]
    fn without_an_interval_only_the_final_line_is_written() {
        let (progress, lines) = collecting("Epoch 1/3", 64, None);
        progress.inc(64);
        progress.finish("train loss 0.5000");
        assert_eq!(*lines.lock().unwrap(), ["Epoch 1/3: train loss 0.5000"]);
    }

    #[test]
    fn hidden_progress_writes_nothing_and_durations_read_well() {
        let hidden = Progress::hidden();
        hidden.inc(5);
        hidden.finish("done");
        assert_eq!(format_duration(Duration::ZERO), "0 s");
        assert_eq!(format_duration(Duration::from_secs(59)), "59 s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1 min 00 s");
        assert_eq!(format_duration(Duration::from_secs(7325)), "2 h 02 min");
    }
}

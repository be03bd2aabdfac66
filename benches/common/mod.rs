//! Timing helpers shared by the fast-path benches (`fast_forward`, `efficientnet`): wall and
//! CPU clocks, the per-layer profile printout, and the line-based timing server that
//! `scripts/compare_cpu.py` drives. (A folder, not `benches/common.rs`, so that Cargo does not
//! take it for a bench of its own.)

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// Milliseconds since `start`.
pub fn millis(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// User + system CPU seconds of this process so far, all threads (Linux; 0 elsewhere).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

/// Runs `pass` five times and prints the median and minimum wall time and the CPU time per
/// pass: on a shared machine the CPU time is the steadier measure of the work done.
pub fn print_pass_times(batch: usize, mut pass: impl FnMut()) {
    const PASSES: usize = 5;
    let mut walls = Vec::with_capacity(PASSES);
    let cpu0 = cpu_seconds();
    for _ in 0..PASSES {
        let start = Instant::now();
        pass();
        walls.push(millis(start));
    }
    let cpu = (cpu_seconds() - cpu0) * 1e3 / PASSES as f64;
    walls.sort_by(f64::total_cmp);
    println!(
        "batch {batch}: median wall {:.1} ms, min wall {:.1} ms, CPU {cpu:.1} ms per pass",
        walls[PASSES / 2],
        walls[0]
    );
}

/// Prints each layer's time, then the times summed by kind (the name's last `/` part) as
/// shares of `total_ms`.
pub fn print_layer_profile(batch: usize, layers: &[(String, Duration)], total_ms: f64) {
    let mut by_kind: Vec<(String, f64)> = Vec::new();
    for (name, d) in layers {
        let kind = name.rsplit('/').next().unwrap_or(name).to_string();
        let ms = d.as_secs_f64() * 1e3;
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += ms,
            None => by_kind.push((kind, ms)),
        }
        println!("{name:<32} {ms:>9.3} ms");
    }
    println!("--- by kind (batch {batch}, total {total_ms:.1} ms)");
    for (kind, ms) in by_kind {
        println!("{kind:<32} {ms:>9.3} ms {:>5.1}%", 100.0 * ms / total_ms);
    }
}

/// Marks where the timed part of a server command starts (after its inputs are made).
#[derive(Default)]
pub struct Stopwatch {
    started: Option<(Instant, f64)>,
}

impl Stopwatch {
    /// Starts the wall and CPU clocks.
    pub fn start(&mut self) {
        self.started = Some((Instant::now(), cpu_seconds()));
    }
}

/// The timing server: prints `ready`, then reads `COMMAND B` lines from stdin. For each it calls
/// `run(command, B, stopwatch)`, which makes its inputs, starts the stopwatch, does the work and
/// returns `true` (or `false` for a command it does not know), and answers one line: wall and
/// CPU milliseconds since the start. `quit` ends it; anything else gets an `error:` line that
/// lists `usage`.
pub fn serve(usage: &str, mut run: impl FnMut(&str, usize, &mut Stopwatch) -> bool) {
    let stdout = std::io::stdout();
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        let (command, batch) = (words.next(), words.next().and_then(|b| b.parse().ok()));
        if command == Some("quit") {
            break;
        }
        let mut stopwatch = Stopwatch::default();
        let timed = match (command, batch) {
            (Some(command), Some(batch)) if run(command, batch, &mut stopwatch) => {
                stopwatch.started
            }
            _ => None,
        };
        let mut out = stdout.lock();
        match timed {
            Some((start, cpu_start)) => {
                let (ms, cpu_ms) = (millis(start), (cpu_seconds() - cpu_start) * 1e3);
                writeln!(out, "{ms:.3} {cpu_ms:.0}").expect("stdout");
            }
            None => {
                writeln!(out, "error: expected {usage} or `quit`, got {line:?}").expect("stdout")
            }
        }
        out.flush().expect("stdout");
    }
}

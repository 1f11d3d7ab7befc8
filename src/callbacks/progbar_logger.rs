use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Keras' progress bar (`keras.utils.Progbar`): on a terminal, one line redrawn in place
///
/// ```text
///  57/196 ━━━━━━━━━━━━━━━━━━━━ 18s 131ms/step - accuracy: 0.2531 - loss: 2.0172
/// ```
///
/// with the ETA while running and the elapsed time at the end. Off a terminal (a log file),
/// only the final line of each epoch is written, so logs stay readable.
/// `verbose 2` writes one line per epoch: `196/196 - 27s - 137ms/step - accuracy: ...`.
#[derive(Debug)]
pub struct Progbar {
    target: usize,
    verbose: u8,
    start: Instant,
    last_draw: Option<Instant>,
    tty: bool,
    prev_width: usize,
}

impl Progbar {
    /// A bar for `target` steps at verbosity `verbose` (0 silent, 1 bar, 2 one line).
    pub fn new(target: usize, verbose: u8) -> Self {
        Progbar {
            target,
            verbose,
            start: Instant::now(),
            last_draw: None,
            tty: std::io::stdout().is_terminal(),
            prev_width: 0,
        }
    }

    fn per_step(&self, current: usize) -> f64 {
        self.start.elapsed().as_secs_f64() / current.max(1) as f64
    }

    fn format_time(t: f64) -> String {
        if t >= 1.0 {
            format!("{t:.0}s/step")
        } else if t >= 1e-3 {
            format!("{:.0}ms/step", t * 1e3)
        } else {
            format!("{:.0}us/step", t * 1e6)
        }
    }

    fn format_values(values: &[(String, f64)]) -> String {
        values
            .iter()
            .map(|(k, v)| if v.abs() > 1e-3 { format!(" - {k}: {v:.4}") } else { format!(" - {k}: {v:.4e}") })
            .collect()
    }

    fn line(&self, current: usize, values: &[(String, f64)], finalize: bool) -> (String, usize) {
        let digits = self.target.max(1).to_string().len();
        let count = format!("{current:>digits$}/{}", self.target);
        let done = (20 * current) / self.target.max(1);
        let per = self.per_step(current);
        let time = if finalize {
            format!("{:.0}s", self.start.elapsed().as_secs_f64())
        } else {
            let eta = per * (self.target.saturating_sub(current)) as f64;
            if eta > 3600.0 {
                format!("{}:{:02}:{:02}", (eta / 3600.0) as u64, ((eta % 3600.0) / 60.0) as u64, (eta % 60.0) as u64)
            } else if eta > 60.0 {
                format!("{}:{:02}", (eta / 60.0) as u64, (eta % 60.0) as u64)
            } else {
                format!("{eta:.0}s")
            }
        };
        let tail = format!(" {}{}", Self::format_time(per), Self::format_values(values));
        let plain_width = count.len() + 1 + 20 + 1 + time.len() + tail.chars().count();
        let s = if self.tty {
            format!(
                "\x1b[1m{count}\x1b[0m \x1b[32m{}\x1b[0m\x1b[37m{}\x1b[0m \x1b[1m{time}\x1b[0m{tail}",
                "━".repeat(done),
                "━".repeat(20 - done)
            )
        } else {
            format!("{count} {}{} {time}{tail}", "━".repeat(done), "─".repeat(20 - done))
        };
        (s, plain_width)
    }

    /// Shows progress after `current` steps with the running averages `values`.
    pub fn update(&mut self, current: usize, values: &[(String, f64)]) {
        if self.verbose != 1 || !self.tty {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now.duration_since(t).as_secs_f64() < 0.05) {
            return;
        }
        self.last_draw = Some(now);
        let (line, width) = self.line(current, values, false);
        let pad = " ".repeat(self.prev_width.saturating_sub(width));
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{line}{pad}");
        let _ = out.flush();
        self.prev_width = width;
    }

    /// Writes the epoch's final line with all `values` (training and validation).
    pub fn finish(&mut self, current: usize, values: &[(String, f64)]) {
        let mut out = std::io::stdout().lock();
        match self.verbose {
            1 => {
                let (line, width) = self.line(current, values, true);
                let pad = " ".repeat(self.prev_width.saturating_sub(width));
                let lead = if self.tty { "\r" } else { "" };
                let _ = writeln!(out, "{lead}{line}{pad}");
            }
            2 => {
                let digits = self.target.max(1).to_string().len();
                let _ = writeln!(
                    out,
                    "{current:>digits$}/{} - {:.0}s - {}{}",
                    self.target,
                    self.start.elapsed().as_secs_f64(),
                    Self::format_time(self.per_step(current)),
                    Self::format_values(values)
                );
            }
            _ => {}
        }
        let _ = out.flush();
    }
}

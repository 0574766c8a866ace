//! Progress on stderr: a bar per item under way in an indicatif MultiProgress on a terminal,
//! status lines only otherwise, nothing but warnings with --quiet. stdout stays clean for
//! data (save to stdout, IDs).

use crate::progress::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bars on a terminal, lines otherwise.
pub struct CliProgress {
    bars: MultiProgress,
    active: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
}

/// How an item shows: a digest by its first 12 hex digits, anything else as it is.
fn label(id: &str) -> &str {
    match id.strip_prefix("sha256:") {
        Some(hex) => hex.get(..12).unwrap_or(hex),
        None => id,
    }
}

fn style(template: &str, fallback: ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or(fallback)
}

impl CliProgress {
    /// Progress on stderr; bars only when stderr is a terminal, and not with `quiet`.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        CliProgress {
            bars: MultiProgress::with_draw_target(target),
            active: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn line(&self, text: &str) {
        // Above the bars on a terminal; a plain line where no bar is drawn.
        if self.bars.is_hidden() || self.bars.println(text).is_err() {
            eprintln!("{text}");
        }
    }
}

impl Progress for CliProgress {
    fn begin(&self, id: &str, action: &str, total: Option<u64>) {
        if self.bars.is_hidden() {
            return;
        }
        // Drawn nowhere until it joins the others.
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        bar.set_style(match total {
            Some(_) => style(
                "{prefix}: {msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes}",
                ProgressStyle::default_bar(),
            ),
            None => style(
                "{prefix}: {msg} {spinner} {decimal_bytes}",
                ProgressStyle::default_spinner(),
            ),
        });
        bar.set_prefix(label(id).to_string());
        bar.set_message(action.to_string());
        let bar = self.bars.add(bar);
        if let Ok(mut active) = self.active.lock()
            && let Some(old) = active.insert(id.to_string(), bar)
        {
            old.finish_and_clear();
            self.bars.remove(&old);
        }
    }

    fn advance(&self, id: &str, n: u64) {
        if let Ok(active) = self.active.lock()
            && let Some(bar) = active.get(id)
        {
            bar.inc(n);
        }
    }

    fn finish(&self, id: &str, status: &str) {
        let bar = self.active.lock().ok().and_then(|mut a| a.remove(id));
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
        if !self.quiet {
            self.line(&format!("{}: {status}", label(id)));
        }
    }

    fn message(&self, line: &str) {
        if self.quiet && !line.starts_with("warning") {
            return;
        }
        self.line(line);
    }
}

impl Drop for CliProgress {
    /// Bars of items that never finished (a spinner of the whole command) go with it.
    fn drop(&mut self) {
        if let Ok(mut active) = self.active.lock() {
            for (_, bar) in active.drain() {
                bar.finish_and_clear();
                self.bars.remove(&bar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(label(&d), "abababababab");
        assert_eq!(label("archive"), "archive");
        assert_eq!(label("sha256:abc"), "abc");
    }
}

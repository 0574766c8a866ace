//! Progress output: one updating line per item on a terminal, plain lines otherwise, nothing
//! with --quiet. Written to stderr so stdout stays clean for data (save to stdout, IDs).

use crate::store::Progress;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};

/// Terminal or plain progress on stderr.
pub struct CliProgress {
    tty: bool,
    quiet: bool,
    items: HashMap<String, (String, Option<u64>, u64, u64)>,
}

impl CliProgress {
    /// Progress on stderr; bars only when stderr is a terminal.
    pub fn new(quiet: bool) -> Self {
        CliProgress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            items: HashMap::new(),
        }
    }
}

fn bar(done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => {
            let w = 30usize;
            let f = ((done.min(t) as f64 / t as f64) * w as f64) as usize;
            format!(
                "[{}>{}] {}/{}",
                "=".repeat(f),
                " ".repeat(w - f),
                super::human_size(done),
                super::human_size(t)
            )
        }
        _ => super::human_size(done),
    }
}

impl Progress for CliProgress {
    fn begin(&mut self, id: &str, action: &str, total: Option<u64>) {
        self.items
            .insert(id.to_string(), (action.to_string(), total, 0, 0));
        if !self.quiet && self.tty {
            eprint!("\r\x1b[K{id}: {action} {}", bar(0, total));
        }
    }
    fn advance(&mut self, id: &str, n: u64) {
        if let Some(it) = self.items.get_mut(id) {
            it.2 += n;
            if !self.quiet && self.tty && it.2 - it.3 >= 256 * 1024 {
                it.3 = it.2;
                eprint!("\r\x1b[K{id}: {} {}", it.0, bar(it.2, it.1));
                let _ = std::io::stderr().flush();
            }
        }
    }
    fn finish(&mut self, id: &str, status: &str) {
        self.items.remove(id);
        if self.quiet {
            return;
        }
        if self.tty {
            eprintln!("\r\x1b[K{id}: {status}");
        } else {
            eprintln!("{id}: {status}");
        }
    }
    fn message(&mut self, msg: &str) {
        if self.quiet && !msg.starts_with("warning") {
            return;
        }
        eprintln!("{msg}");
    }
}

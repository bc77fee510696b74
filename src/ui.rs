//! Human progress on stderr: colours only on a terminal, never on stdout.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Where progress and live step output go.
#[derive(Debug)]
pub struct Console {
    color: bool,
    /// Suppress live step output (progress lines still print).
    quiet: bool,
    /// Print nothing at all.
    silent: bool,
    lock: Mutex<()>,
}

impl Console {
    pub fn new(quiet: bool) -> Self {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Console { color, quiet, silent: false, lock: Mutex::new(()) }
    }

    /// A console that prints nothing (tests, library use).
    pub fn silent() -> Self {
        Console { color: false, quiet: true, silent: true, lock: Mutex::new(()) }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// One line of a step's output, prefixed `task/step`.
    pub fn step_line(&self, label: &str, step: &str, line: &str) {
        if self.quiet {
            return;
        }
        let prefix = self.dim(&format!("{label}/{step} │"));
        self.line(&format!("{prefix} {line}"));
    }

    /// A progress line.
    pub fn line(&self, s: &str) {
        if self.silent {
            return;
        }
        let _g = self.lock.lock();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{s}");
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

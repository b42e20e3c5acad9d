//! Progress bars for steps that can take more than a second: drawn on stderr when it is a
//! terminal, hidden otherwise (CI logs, pipes), so the same code serves both.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars are drawn (stderr is a terminal and `VIEWPULSE_NO_PROGRESS` is unset).
pub fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("VIEWPULSE_NO_PROGRESS").is_none()
}

/// A bar of `len` units (records, bytes: see `unit`) labelled `msg`.
pub fn bar(len: u64, msg: &str, unit: Unit) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = match unit {
        Unit::Bytes => "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        Unit::Items => "{msg:>12} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

/// A spinner for a step of unknown length.
pub fn spinner(msg: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// What a bar counts.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Bytes of input.
    Bytes,
    /// Records, households, iterations.
    Items,
}

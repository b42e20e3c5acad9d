//! Process exit codes: what each failure means to a script or a supervisor. Every module's
//! error type has an `exit_code()` that answers with one of these, so the mapping lives next
//! to the variants it classifies; the README's exit-code table lists them and
//! `tests/exit_codes.rs` runs each row through the binary.

/// A command-line mistake or an impossible setting (`--k` above the households, a bad
/// `--subsets`, an unknown `-X` key, a config file that does not parse).
pub const USAGE: i32 = 2;
/// Input data that cannot be used (sysexits `EX_DATAERR`).
pub const DATA: i32 = 65;
/// An input that does not exist or cannot be read (sysexits `EX_NOINPUT`).
pub const NO_INPUT: i32 = 66;
/// A service the command needs cannot be reached or used: a Kafka broker or topic, the HTTP
/// listen address (sysexits `EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;
/// An internal failure: a thread that panicked, an actor that stopped (sysexits
/// `EX_SOFTWARE`); a bug to report.
pub const SOFTWARE: i32 = 70;
/// An output that cannot be written (sysexits `EX_IOERR`).
pub const IO: i32 = 74;

/// The exit code of an I/O error while reading an input: a missing or unreadable input is
/// [`NO_INPUT`], bytes that are not what the reader decodes (not UTF-8, cut short) are
/// [`DATA`], a read that fails part-way (a device error) is [`IO`].
pub fn reading(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound | PermissionDenied | NotADirectory | IsADirectory => NO_INPUT,
        InvalidData | UnexpectedEof => DATA,
        _ => IO,
    }
}

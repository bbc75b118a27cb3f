//! The access log: one line per finished request on stderr.
//!
//! The line has the shape of the `tracing` lines around it (timestamp,
//! level, target, message, `key=value` fields), so one parser reads the
//! whole log, but it is formatted here directly: going through the
//! `tracing` formatter cost ~17k instructions per request (field visitors,
//! `Debug` escaping char by char), about a tenth of a proxied request.
//!
//! Lines are collected in memory and written by their own thread every
//! `WRITE_EVERY`, as nginx's `access_log ... buffer= flush=`: a `write` to
//! a file from the request thread costs a syscall per request and, while
//! the disk is busy, can wait for the file system's journal, which every
//! request on that thread then waits for too. A crash loses at most the
//! last `WRITE_EVERY` of lines (the ledger, not this log, is the bill);
//! [`flush`] at shutdown writes the rest.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::usage::{Units, Usage};

/// What one access log line tells about a request.
pub struct Entry<'a> {
    pub status: u16,
    pub group: &'a str,
    pub model: &'a str,
    pub channel: &'a str,
    pub attempts: usize,
    pub usage: Usage,
    /// Media units; written only where a request has any.
    pub units: Units,
    pub estimated: bool,
    pub ms: u64,
}

const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Beyond this the request thread writes the lines itself, so that memory
/// stays bounded if the writer thread cannot keep up.
const MAX_PENDING_BYTES: usize = 1 << 20;

/// Lines not yet written.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while lines are taken and written, so that batches keep their order.
static OUTPUT: Mutex<()> = Mutex::new(());
static WRITER: OnceLock<()> = OnceLock::new();

/// Queues the line for `entry` for stderr, unless `RUST_LOG` filters out
/// INFO for this target.
pub fn write(entry: &Entry<'_>) {
    if !tracing::enabled!(target: "tollgate::relay", tracing::Level::INFO) {
        return;
    }
    WRITER.get_or_init(start_writer);
    let mut pending = pending();
    format_line(&mut pending, SystemTime::now(), entry);
    if pending.len() > MAX_PENDING_BYTES {
        drop(pending);
        flush();
    }
}

/// Writes the queued lines now, with one `write` (the writer thread, and
/// shutdown).
pub fn flush() {
    let _output = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut lines = std::mem::take(&mut *pending());
    if lines.is_empty() {
        return;
    }
    // Nothing to do if stderr is gone.
    let _ = std::io::stderr().lock().write_all(&lines);
    // Keep the allocation for the next batch.
    lines.clear();
    let mut pending = pending();
    if pending.is_empty() {
        *pending = lines;
    }
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_writer() {
    let started = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| loop {
            std::thread::sleep(WRITE_EVERY);
            flush();
        });
    if let Err(e) = started {
        // Lines then wait for MAX_PENDING_BYTES or the shutdown flush.
        tracing::error!("cannot start the access log writer: {e}");
    }
}

fn format_line(out: &mut Vec<u8>, now: SystemTime, e: &Entry<'_>) {
    rfc3339_micros(out, now);
    out.extend_from_slice(b"  INFO tollgate::relay: request status=");
    number(out, u64::from(e.status));
    for (name, value) in [
        (" group=", e.group),
        (" model=", e.model),
        (" channel=", e.channel),
    ] {
        out.extend_from_slice(name.as_bytes());
        quoted(out, value);
    }
    let u = &e.usage;
    for (name, value) in [
        (" attempts=", e.attempts as u64),
        (" input=", u.input),
        (" output=", u.output),
        (" cached_input=", u.cached_input),
        (" cache_write=", u.cache_write),
        (" cache_write_1h=", u.cache_write_1h),
    ] {
        out.extend_from_slice(name.as_bytes());
        number(out, value);
    }
    let m = &e.units;
    for (name, value) in [
        (" images=", m.images),
        (" image_input=", m.image_input),
        (" audio_ms=", m.audio_ms),
        (" chars=", m.chars),
        (" image_output=", m.image_output),
    ] {
        if value != 0 {
            out.extend_from_slice(name.as_bytes());
            number(out, value);
        }
    }
    out.extend_from_slice(if e.estimated {
        b" estimated=true ms="
    } else {
        b" estimated=false ms="
    });
    number(out, e.ms);
    out.push(b'\n');
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `"value"`, escaped as Rust's `Debug` does, so that a value can never
/// end the line or fake a field.
fn quoted(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    if value
        .bytes()
        .all(|b| b != b'"' && b != b'\\' && !b.is_ascii_control())
    {
        out.extend_from_slice(value.as_bytes());
    } else {
        let _ = write!(out, "{}", value.escape_debug());
    }
    out.push(b'"');
}

/// `2026-11-22T04:17:00.123456Z`, the timestamp format of `tracing`.
fn rfc3339_micros(out: &mut Vec<u8>, now: SystemTime) {
    let t: DateTime<Utc> = now.into();
    let fields = [
        (t.year().max(0) as u32, 4usize, b'-'),
        (t.month(), 2, b'-'),
        (t.day(), 2, b'T'),
        (t.hour(), 2, b':'),
        (t.minute(), 2, b':'),
        (t.second(), 2, b'.'),
        (t.timestamp_subsec_micros().min(999_999), 6, b'Z'),
    ];
    for (value, width, then) in fields {
        let digits = itoa::Buffer::new().format(value).len();
        out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits)));
        number(out, u64::from(value));
        out.push(then);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_zero_padded() {
        let mut out = Vec::new();
        rfc3339_micros(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(951_782_405_000_042),
        );
        assert_eq!(out, b"2000-02-29T00:00:05.000042Z");
    }

    #[test]
    fn line_has_the_tracing_shape() {
        let at = UNIX_EPOCH + Duration::from_micros(1_763_785_020_123_456);
        let entry = Entry {
            status: 200,
            group: "default",
            model: "gpt-4o-mini",
            channel: "bench",
            attempts: 1,
            usage: Usage {
                input: 12,
                output: 180,
                cached_input: 3,
                cache_write: 0,
                cache_write_1h: 0,
            },
            units: Units::default(),
            estimated: false,
            ms: 7,
        };
        let mut out = Vec::new();
        format_line(&mut out, at, &entry);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-11-22T04:17:00.123456Z  INFO tollgate::relay: request status=200 \
             group=\"default\" model=\"gpt-4o-mini\" channel=\"bench\" attempts=1 input=12 \
             output=180 cached_input=3 cache_write=0 cache_write_1h=0 estimated=false ms=7\n"
        );
        // Media units where a request has any.
        let media = Entry {
            units: Units {
                images: 2,
                audio_ms: 1500,
                ..Units::default()
            },
            ..entry
        };
        let mut out = Vec::new();
        format_line(&mut out, at, &media);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with(" cache_write_1h=0 images=2 audio_ms=1500 estimated=false ms=7\n"),
            "{line}"
        );
    }

    #[test]
    fn values_cannot_break_the_line() {
        let mut out = Vec::new();
        quoted(&mut out, "a\"b\nc\\d");
        assert_eq!(out, br#""a\"b\nc\\d""#);
    }
}

//! Log output in batches: one `write` for many lines instead of one per request.
//!
//! The per-request line is written when the response body ends, before hyper writes the
//! answer, so a `write` syscall per line sat on every request's path (about one syscall in
//! seven of a small proxied request). Lines are held in a buffer and written together: once
//! [`FLUSH_AFTER`] has passed since the first one waiting, at once when [`FLUSH_AT`] bytes are
//! waiting, at once with anything at `WARN` or `ERROR` (and what waited before it, in order),
//! and at shutdown ([`BatchedLogs::flush`]). [`PlainFields`] writes the fields of a line
//! for less.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultVisitor, FormatFields, Writer};

/// The longest a line waits in the buffer.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// Waiting lines are written at once when they reach this many bytes.
pub const FLUSH_AT: usize = 32 * 1024;

/// A `tracing_subscriber` writer that batches lines into `sink` (stdout in the proxy).
/// Cloning shares the buffer; [`BatchedLogs::run`] must be spawned on the runtime for the
/// timed writes.
pub struct BatchedLogs<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for BatchedLogs<W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<W> {
    state: Mutex<State<W>>,
    /// Woken when a line lands in an empty buffer.
    waiting: Notify,
}

struct State<W> {
    buf: Vec<u8>,
    sink: W,
}

impl<W: Write> State<W> {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // As tracing-subscriber does with its own writes: a log that cannot be written is
        // dropped rather than failing the request.
        let _ = self.sink.write_all(&self.buf);
        let _ = self.sink.flush();
        self.buf.clear();
    }
}

impl<W: Write + Send + 'static> BatchedLogs<W> {
    /// Batches lines into `sink`.
    pub fn new(sink: W) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    buf: Vec::with_capacity(FLUSH_AT),
                    sink,
                }),
                waiting: Notify::new(),
            }),
        }
    }

    /// Writes the waiting lines now.
    pub fn flush(&self) {
        self.inner.lock().flush();
    }

    /// Writes waiting lines [`FLUSH_AFTER`] after the first of them arrived; never returns
    /// (spawn it). Idle, it sleeps without a timer.
    pub async fn run(self) {
        loop {
            self.inner.waiting.notified().await;
            tokio::time::sleep(FLUSH_AFTER).await;
            self.flush();
        }
    }
}

impl<W> Inner<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W: Write> Inner<W> {
    fn append(&self, line: &[u8], urgent: bool) {
        let mut state = self.lock();
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        if urgent || state.buf.len() >= FLUSH_AT {
            state.flush();
        } else if was_empty {
            self.waiting.notify_one();
        }
    }
}

/// One event's writer: tracing-subscriber formats a line, then writes it here whole.
pub struct LineWriter<'a, W> {
    inner: &'a Inner<W>,
    urgent: bool,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The line is accepted: the batch decides when it is written.
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchedLogs<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            inner: &self.inner,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            inner: &self.inner,
            // `Level` orders by verbosity: ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// Event fields as `name=value`, the same text tracing-subscriber's default writes without
/// ANSI styling, at a fraction of the cost for the fields of the per-request line: numbers,
/// booleans and plain strings are written directly instead of through `core::fmt` and its
/// (no-op) styling calls, about 9,000 instructions a request. The message, `Debug` values
/// and errors go to tracing-subscriber's own visitor (which escapes terminal control
/// sequences in messages).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes ` name=` (no space before the first field).
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::replace(&mut self.is_empty, false) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    fn plain(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| self.writer.write_str(value));
        }
    }

    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut inner = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut inner);
        self.result = inner.finish();
        // The default visitor skips `log.*` fields (metadata of `log` records).
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // `Debug` of a str quotes it and escapes quotes, backslashes and control or
        // non-printing characters; printable ASCII without those reads the same unescaped.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if field.name() != "message" && plain {
            if self.result.is_ok() {
                self.result = self.name(field).and_then(|()| {
                    self.writer.write_char('"')?;
                    self.writer.write_str(value)?;
                    self.writer.write_char('"')
                });
            }
        } else {
            self.delegate(field, |inner| inner.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |inner| inner.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.delegate(field, |inner| inner.record_debug(field, value));
    }
}

//! The server's log: tracing's fmt output (text or JSON lines), written to stderr by a thread of
//! its own.
//!
//! Why a thread: a log line written where it is made, inside a request, blocks that request (and
//! the tokio worker running it) for as long as stderr's reader does not read. A reader that stalls
//! (a pipe to a process that stopped reading, a terminal on hold) would stall the server; a test
//! harness did exactly that once (`tests/crash`). Lines go to a bounded queue instead; when the
//! queue is full they are dropped and counted (`portcullis_log_lines_dropped_total` in
//! `/metrics`), never waited for.

use std::io::Write;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::config::LogFormat;

/// Lines held while the writer thread is behind: at a few hundred bytes each, a few MiB at most.
pub const QUEUED_LINES: usize = 8192;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread; dropping it writes out the queued lines (waiting a second at most).
#[must_use = "dropping the guard stops the log"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the process's log: `RUST_LOG` filters it (`info,sled=warn` without it), `format`
/// shapes it, colours only on a terminal.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = queued(std::io::stderr(), QUEUED_LINES);
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    LogGuard { _writer: guard }
}

/// A writer that queues up to `lines` lines for a thread that writes them to `output`, and drops
/// (and counts) what finds the queue full.
fn queued(output: impl Write + Send + 'static, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name("log-writer")
        .finish(output)
}

/// Log lines dropped so far because the queue was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use tracing_subscriber::fmt::MakeWriter;

    /// An output that never returns from its first write until told to.
    struct Stalled(mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking_the_caller() {
        let (release, stalled) = mpsc::channel();
        let (writer, guard) = queued(Stalled(stalled), 4);
        // Were the writer to wait for its output, this would never return.
        for line in 0..100 {
            writeln!(writer.make_writer(), "line {line}").unwrap();
        }
        // The writer thread holds at most one line, the queue four: the rest are dropped.
        assert!(writer.error_counter().dropped_lines() >= 95, "{}", writer.error_counter().dropped_lines());
        drop(release);
        drop(guard);
    }
}

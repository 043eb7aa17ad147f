//! What zrpc reports through the `metrics` facade (free until the
//! application installs a recorder; any exporter then). Names:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `zrpc_server_calls_started_total` | counter | `method` |
//! | `zrpc_server_calls_finished_total` | counter | `method`, `code` |
//! | `zrpc_server_calls_in_flight` | gauge | |
//! | `zrpc_server_call_duration_seconds` | histogram | `method` |
//! | `zrpc_connections_opened_total` | counter | |
//! | `zrpc_connections` | gauge | |
//! | `zrpc_received_bytes_total`, `zrpc_sent_bytes_total` | counter | |
//! | `zrpc_send_stalls_total` (a send waited for credit or buffer room) | counter | |
//! | `zrpc_calls_shed_total` (the server-wide receive budget) | counter | |
//!
//! `method` is the name a handler was registered under, or `(unknown)` for
//! calls no handler takes: a peer cannot grow the label set. Handles are
//! made on first use, so install the recorder before serving.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use zrpc_core::Code;

/// Every `Code`, in number order (the `code` label's values).
const CODES: usize = 17;

/// One method's metric handles.
pub(crate) struct MethodMetrics {
    name: Arc<str>,
    started: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    finished: [OnceLock<Counter>; CODES],
}

impl MethodMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            started: OnceLock::new(),
            duration: OnceLock::new(),
            finished: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The metrics of calls no handler takes.
    pub(crate) fn unknown() -> &'static MethodMetrics {
        static UNKNOWN: OnceLock<MethodMetrics> = OnceLock::new();
        UNKNOWN.get_or_init(|| MethodMetrics::new("(unknown)"))
    }

    /// A call started.
    pub(crate) fn started(&self) {
        self.started
            .get_or_init(
                || counter!("zrpc_server_calls_started_total", "method" => self.name.clone()),
            )
            .increment(1);
        gauge!("zrpc_server_calls_in_flight").increment(1.0);
    }

    /// A call that [`started`](Self::started) finished with `code` after
    /// `seconds`.
    pub(crate) fn finished(&self, code: Code, seconds: f64) {
        self.finished_only(code);
        self.duration
            .get_or_init(
                || histogram!("zrpc_server_call_duration_seconds", "method" => self.name.clone()),
            )
            .record(seconds);
        gauge!("zrpc_server_calls_in_flight").decrement(1.0);
    }

    /// A call finished without having started a handler (a refusal).
    pub(crate) fn finished_only(&self, code: Code) {
        let i = (code as usize).min(CODES - 1);
        self.finished[i]
            .get_or_init(|| {
                counter!(
                    "zrpc_server_calls_finished_total",
                    "method" => self.name.clone(),
                    "code" => code.to_string()
                )
            })
            .increment(1);
    }
}

/// A connection opened (and is open until the guard drops).
pub(crate) struct ConnectionGauge;

impl ConnectionGauge {
    pub(crate) fn open() -> Self {
        counter!("zrpc_connections_opened_total").increment(1);
        gauge!("zrpc_connections").increment(1.0);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        gauge!("zrpc_connections").decrement(1.0);
    }
}

/// Bytes received and sent, counted per connection's handles.
pub(crate) fn received_bytes() -> Counter {
    counter!("zrpc_received_bytes_total")
}

pub(crate) fn sent_bytes() -> Counter {
    counter!("zrpc_sent_bytes_total")
}

/// A send waited for credit or buffer room.
pub(crate) fn send_stalled() {
    counter!("zrpc_send_stalls_total").increment(1);
}

/// The server-wide receive budget ended a call.
pub(crate) fn call_shed() {
    counter!("zrpc_calls_shed_total").increment(1);
}

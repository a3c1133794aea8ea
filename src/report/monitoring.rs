//! The monitoring charts of memory-aware batching: what each logged step's batch held and the
//! memory the process peaked at, drawn for all runs after the other charts wherever a run
//! logged them.

/// The metrics of the monitoring charts, in order.
pub const METRICS: [&str; 3] = [
    "train/batch_size",
    "train/padding_ratio",
    "train/peak_memory_bytes",
];

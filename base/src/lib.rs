//! What every flowscope crate shares that is not the span schema: human durations and
//! sizes, the memory budget, the registry of background stages, the process's telemetry
//! and the one clock. No dependencies, so a crate that parses `30s` builds no Arrow.
//!
//! ```text
//!  flags, config, rules ──parse_duration / parse_size──> Duration, bytes
//!  receivers ──MemoryBudget::admit──> Reservation        stores ──take_buffered / release_buffered
//!  every background stage ──Liveness::start──> StageGuard ──> /healthz, /api/status, /metrics
//!  receivers, SQL, alerts ──Telemetry──> /metrics
//!  the edges ──clock::now_ns()──> time passed in to the pure code
//! ```

pub mod clock;
pub mod duration;
pub mod liveness;
pub mod memory;
pub mod size;
pub mod telemetry;

pub use duration::{format_duration, parse_duration};
pub use size::parse_size;

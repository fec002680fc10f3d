//! Running a loaded model: building the prompt exactly as the reference does, encoding the
//! images, prefill, then the decode loop with streaming text. Front ends (`ask`, later the
//! TUI through engine messages) call this; it never prints.

mod pipeline;

pub use pipeline::{Answer, DType as ModelDType, DevicePref, EngineError, Pipeline, Stop, Timings};

//! One integration-test binary whose modules group the suites (as ripgrep does).

mod ask;
mod cli;
mod dicom;
mod e2e;
mod engine;
mod engine_cache;
mod eval;
mod export;
mod hostile;
mod hub;
mod layout;
mod parity;
mod preprocess;
mod prompts;
mod quant;
mod safety;
mod serve;
mod tui;
mod util;

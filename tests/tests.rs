//! One integration-test binary whose modules group the suites (as ripgrep does).

mod cli;
mod parity;
mod preprocess;
mod prompts;
mod util;

//! huatuo: run the HuatuoGPT-Vision medical vision-language models locally.
//!
//! The library holds everything the `huatuo` binary does, so that the integration tests can
//! drive the same code: `model` (checkpoint loading and the network, no IO beyond files),
//! `chat` (conversation and prompt text, pure), `tiny` (deterministic tiny checkpoints in the
//! real on-disk layout, for tests and parity fixtures) and `cmd` (the subcommands).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod chat;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod hub;
pub mod model;
pub mod term;
pub mod tiny;
pub mod tui;

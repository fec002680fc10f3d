//! huatuo: run the HuatuoGPT-Vision medical vision-language models locally.
//!
//! The library holds everything the `huatuo` binary does, so that the integration tests can
//! drive the same code. Dependencies point one way: `protocol` (the plain values and messages
//! between front ends and engines) and `text` import nothing of huatuo; `model` (checkpoint
//! loading and the network) imports only those; `chat` (the conversation core, the prompt
//! template, sessions) builds every turn; `engine` runs `model` behind the protocol; `hub`
//! finds and downloads checkpoints; the front ends (`tui`, `cmd`) sit on top, and `cli` turns
//! arguments into protocol values. `tiny` (deterministic tiny checkpoints in the real on-disk
//! layout) exists only with the `test-support` feature, as do the hub stand-in and fault
//! injection.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod chat;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod dicom;
pub mod engine;
pub mod eval;
pub mod hub;
pub mod kernels;
pub mod model;
pub mod protocol;
pub mod provenance;
pub mod term;
pub mod text;
#[cfg(feature = "test-support")]
pub mod tiny;
pub mod tui;

//! `huatuo dev ...`: hidden developer tools.

use anyhow::Result;

use crate::cli::DevCommand;
use crate::tiny::{write_checkpoint, TinySpec};

pub fn run(command: DevCommand) -> Result<()> {
    match command {
        DevCommand::TinyCheckpoint {
            family,
            seed,
            tokenizer,
            out,
        } => {
            let spec = if family == "yi" {
                TinySpec::yi(seed)
            } else {
                TinySpec::qwen2(seed)
            };
            write_checkpoint(&spec, &tokenizer, &out)
        }
        DevCommand::HubServer { root, port } => super::models::hub_server(&root, port),
    }
}

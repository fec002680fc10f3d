//! `huatuo dev ...`: hidden developer tools.

use anyhow::Result;

use crate::cli::DevCommand;
use crate::tiny::{write_checkpoint, TinySpec};

pub fn run(command: DevCommand) -> Result<()> {
    match command {
        DevCommand::TinyCheckpoint {
            family,
            seed,
            full_size,
            tokenizer,
            out,
        } => {
            let spec = if full_size {
                if family != "qwen2" {
                    anyhow::bail!("--full-size is only available for --family qwen2 (the 7B)");
                }
                TinySpec::full_7b(seed)
            } else if family == "yi" {
                TinySpec::yi(seed)
            } else {
                TinySpec::qwen2(seed)
            };
            write_checkpoint(&spec, &tokenizer, &out)
        }
        DevCommand::HubServer { root, port } => super::models::hub_server(&root, port),
    }
}

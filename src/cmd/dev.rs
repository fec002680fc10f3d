//! `huatuo dev ...`: hidden developer tools for the test suite and the fixture scripts (tiny
//! checkpoints, the hub stand-in). Only in builds with the `test-support` feature.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::DevCommand;
use crate::hub;
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
        DevCommand::HubServer { root, port } => hub_server(&root, port),
    }
}

/// `huatuo dev hub-server --root DIR`: serves every `DIR/org/name/` checkpoint as the `main`
/// commit of `org/name` on a local hub stand-in, prints its URL, and runs until killed.
pub fn hub_server(root: &Path, port: u16) -> Result<()> {
    let server = hub::stand_in::StandIn::start_on(port).context("starting the hub stand-in")?;
    let mut count = 0;
    for org in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let org = org?;
        if !org.file_type()?.is_dir() {
            continue;
        }
        for name in std::fs::read_dir(org.path())? {
            let name = name?;
            if !name.file_type()?.is_dir() {
                continue;
            }
            let repo = format!(
                "{}/{}",
                org.file_name().to_string_lossy(),
                name.file_name().to_string_lossy()
            );
            let dir: PathBuf = name.path();
            let sha = server.add_dir(&repo, "main", &dir)?;
            eprintln!("serving {repo} at {sha}");
            count += 1;
        }
    }
    if count == 0 {
        bail!("no org/name folders under {}", root.display());
    }
    println!("{}", server.url());
    std::io::stdout().flush()?;
    server.serve_forever();
    Ok(())
}

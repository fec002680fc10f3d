//! The `huatuo` binary: parse arguments, dispatch, and own the process contract — exit 0 on
//! success, 2 on any error (one line on stderr with its whole cause chain), and a silent 0 when
//! stdout is closed under us (`huatuo ask ... | head`), as ripgrep does.

use std::process::ExitCode;

use clap::Parser;
use huatuo::cli::{Cli, Command};
use huatuo::cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ask(args) => cmd::ask::run(args),
        Command::Dev { command } => cmd::dev::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("huatuo: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

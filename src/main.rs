//! The `huatuo` binary: parse arguments, dispatch, and own the process contract — exit 0 on
//! success, 2 on any error (one line on stderr with its whole cause chain), 130 after Ctrl-C,
//! and a silent 0 when stdout is closed under us (`huatuo ask ... | head`), as ripgrep does.

use std::process::ExitCode;

use clap::Parser;
use huatuo::cli::{Cli, Command};
use huatuo::cmd;
use huatuo::term::TermFacts;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let facts = TermFacts::detect(cli.color.forced());
    let result = huatuo::config::select_kernels().and_then(|_| match cli.command {
        None => cmd::chat::default_args().and_then(|args| cmd::chat::run(args, facts)),
        Some(Command::Chat(args)) => cmd::chat::run(args, facts),
        Some(Command::Ask(args)) => cmd::ask::run(args, facts),
        Some(Command::Sessions { command }) => cmd::sessions::run(command),
        Some(Command::Pull(args)) => cmd::models::pull(args, facts),
        Some(Command::List(args)) => cmd::models::list(args),
        Some(Command::Rm(args)) => cmd::models::rm(args),
        Some(Command::Info(args)) => cmd::models::info(args),
        Some(Command::Bench(args)) => cmd::bench::run(args),
        Some(Command::Render(args)) => cmd::render::run(args),
        Some(Command::Verify(args)) => cmd::verify::run(args, facts),
        Some(Command::Serve(args)) => cmd::serve::run(args),
        Some(Command::Export(args)) => cmd::export::run(args, facts),
        Some(Command::Eval(args)) => cmd::eval::run(args, facts),
        #[cfg(feature = "test-support")]
        Some(Command::Dev { command }) => cmd::dev::run(command),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<cmd::Interrupted>().is_some() {
                return ExitCode::from(130);
            }
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let prefix = if facts.color {
                "\x1b[1;31mhuatuo: error:\x1b[0m"
            } else {
                "huatuo: error:"
            };
            // One line: the cause chain joined with ": ", newlines flattened, and every other
            // control character (from file names, server messages…) shown escaped.
            let message = huatuo::text::error_line(err.chain());
            let message = huatuo::term::sanitize(&message);
            eprintln!("{prefix} {message}");
            ExitCode::from(2)
        }
    }
}

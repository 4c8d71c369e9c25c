//! The `mainloop` command: parses the command line and runs one subcommand. Exit codes:
//! 0 ok, 1 failed (for the client: the server said no), 2 usage, and for the client
//! 3 not found, 4 cannot reach the server or the token is refused, 5 server error.

use clap::Parser;
use mainloop::cli;
use mainloop::client::ClientError;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("could not start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&format!("{e:#}"));
            e.downcast_ref::<ClientError>()
                .map_or(ExitCode::FAILURE, |c| ExitCode::from(c.exit_code()))
        }
    }
}

#[allow(clippy::print_stderr)]
fn report(message: &str) {
    eprintln!("mainloop: {message}");
}

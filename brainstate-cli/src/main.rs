//! `brainstate`: inspect, show, diff, verify and convert checkpoint files. See the library
//! (`brainstate_cli`) for the commands.
use brainstate_cli::{run, Cli, Command};
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A bug must still give one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        eprintln!(
            "brainstate: internal error (please report): {}",
            msg.replace('\n', "; ")
        );
    }));
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cli, &mut out)));
    let _ = out.flush();
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            let verify = matches!(cli.command, Command::Verify { .. });
            eprintln!(
                "brainstate: {}: {}",
                if verify { "FAILED" } else { "error" },
                e.one_line()
            );
            // diff: 1 means "they differ", so trouble is 2 (as diff(1)); everything else: 1.
            ExitCode::from(if matches!(cli.command, Command::Diff { .. }) {
                2
            } else {
                1
            })
        }
        Err(_) => ExitCode::from(101),
    }
}

//! `cargo xtask`: build the images, make ISOs, boot them, run the tests. See `cargo xtask help`.

mod bench;
mod bochs;
mod cli;
mod compare;
mod emulator;
mod fuzz;
mod images;
mod iso;
mod kvm;
mod json;
mod manifest;
mod report;
mod run;
mod test;
mod tools;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(opts) => opts,
        Err(cli::CliError::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(cli::CliError::Bad(message)) => {
            eprintln!("error: {message}\n(see `cargo xtask --help`)");
            return ExitCode::from(2);
        }
    };
    emulator::kill_children_on_interrupt();
    let result = match opts.command {
        cli::Command::Build => run::build(&opts).map(|_| 0),
        cli::Command::Iso => run::iso(&opts).map(|_| 0),
        cli::Command::Run => run::run(&opts),
        cli::Command::Test => test::test(&opts),
        cli::Command::Compare => compare::compare(&opts),
        cli::Command::Fuzz => fuzz::fuzz(&opts),
        cli::Command::Bench => bench::bench(&opts),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

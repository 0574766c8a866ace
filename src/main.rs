//! `strata`: the image CLI. Parses arguments and hands them to the library's `cli` module.

use clap::Parser;

fn main() {
    let cli = strata::cli::Cli::parse();
    std::process::exit(strata::cli::run(cli));
}

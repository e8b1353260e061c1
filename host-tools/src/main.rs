//! `odt`: the host tool of the ODT appliance. Thin: parses the command line and hands off
//! to `odt_tools::cmd`.

use clap::Parser;

fn main() {
    let cli = odt_tools::Cli::parse();
    odt_tools::init_logging(cli.verbose);
    match odt_tools::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("odt: error: {}", odt_store::error::one_line(e.as_ref()));
            std::process::exit(1);
        }
    }
}

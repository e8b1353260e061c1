//! `odt`: the host tool of the ODT appliance. Thin: parses the command line, hands off to
//! `odt_tools::cmd`, and reports any failure by the one convention of `odt_tools::exit`
//! (a kind, a message, an exit code; JSON on stdout with `--json`).

fn main() {
    let cli = match odt_tools::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // Parsing failed, so whether --json was asked is read from the raw arguments.
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            std::process::exit(odt_tools::exit::usage(e, json));
        }
    };
    odt_tools::init_logging(cli.verbose);
    let json = cli.command.json();
    match odt_tools::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let failure = odt_tools::exit::classify(&e);
            std::process::exit(odt_tools::exit::report(&failure, json));
        }
    }
}

//! `odt completions SHELL` and `odt man`: shell completions and manual pages generated
//! from the same command line definition that parses the arguments, so they never drift.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// `odt completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// `odt man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing; default: the current folder).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Prints the completion script for the shell on stdout.
pub fn run_completions(a: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = crate::cli_command();
    clap_complete::generate(a.shell, &mut cmd, "odt", &mut std::io::stdout());
    Ok(0)
}

/// Writes `odt.1` and one page per command and subcommand (`odt-job-new.1`), then lists
/// them on stdout.
pub fn run_man(a: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create the folder {}", a.out.display()))?;
    let mut written = Vec::new();
    write_pages(crate::cli_command(), "odt", &a.out, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(0)
}

/// Writes the page of `cmd` (named `name`) and, recursively, of its subcommands.
fn write_pages(
    cmd: clap::Command,
    name: &str,
    out: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // The page's title and the names in its synopsis are the full command (`odt job new`).
    let cmd = cmd.name(name.to_string()).bin_name(name.replace('-', " "));
    let path = out.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("cannot render the manual page of `{}`", name))?;
    std::fs::write(&path, page).with_context(|| {
        format!(
            "cannot write {}; check the folder is writable",
            path.display()
        )
    })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub.clone(), &sub_name, out, written)?;
    }
    Ok(())
}

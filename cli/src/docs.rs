//! `completions SHELL` and `man`: the shell completion scripts and the manual page, generated from the
//! same clap `Command` as `--help`, so they never disagree with it.
//!
//! Both only print; they never connect to the orchestrator.

use crate::cli::command;

/// Prints the completion script of `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "conductorctl", &mut script);
    outln!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

/// Prints the manual page (roff) on stdout.
pub fn man() -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command()).render(&mut page)?;
    outln!("{}", String::from_utf8_lossy(&page).trim_end());
    Ok(())
}

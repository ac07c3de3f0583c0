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

/// Prints the manual page (roff) on stdout: clap's sections, with the commands listed in place
/// (there is one page, no `conductorctl-run(1)`), and the environment and exit status sections.
pub fn man() -> anyhow::Result<()> {
    // NAME reads "conductorctl - run, watch, …", not the name twice.
    let command = command()
        .about("run, watch, approve and audit the workflows of a Conductorio orchestrator");
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(commands_section(&command).as_bytes());
    page.extend_from_slice(ENVIRONMENT.as_bytes());
    page.extend_from_slice(EXIT_STATUS.as_bytes());
    man.render_version_section(&mut page)?;
    outln!("{}", String::from_utf8_lossy(&page).trim_end());
    Ok(())
}

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBCONDUCTOR_ORCHESTRATOR\fR
The orchestrator's gRPC address, as \fB\-\-orchestrator\fR takes it.
.TP
\fBCONDUCTOR_CONTEXT\fR
A context of the contexts file, as \fB\-\-context\fR takes it.
.TP
\fBCONDUCTOR_TOKEN\fR, \fBCONDUCTOR_TOKEN_FILE\fR
The bearer token, or a file holding it.
.TP
\fBCONDUCTORCTL_CONFIG\fR
The contexts file (default: $XDG_CONFIG_HOME/conductorctl/config.json, else ~/.config/conductorctl/config.json).
.TP
\fBNO_COLOR\fR
Set to anything but empty: no colour, whatever \fB\-\-color\fR says.
"#;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
0 ok; 1 failure or denied; 2 usage; 3 cannot reach the orchestrator (or the address is not one); 124 \fBwait \-\-timeout\fR passed (the workflow keeps running); 130 interrupted (Ctrl\-C).
"#;

/// Every command and subcommand with its one-line description, in the one page.
fn commands_section(command: &clap::Command) -> String {
    fn walk(command: &clap::Command, path: &str, out: &mut String) {
        for sub in command.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_text(&name),
                roff_text(&about)
            ));
            walk(sub, &name, out);
        }
    }
    let mut out = ".SH COMMANDS\n".to_owned();
    walk(command, "conductorctl", &mut out);
    out.push_str(
        ".PP\nEach command's flags and an example: \\fBconductorctl COMMAND \\-\\-help\\fR.\n",
    );
    out
}

/// Text safe in roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff_text(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

//! The command line: `lbfo-agentd -c FILE`, `status`, `keygen PATH`, `check`, parsed by argh.
//!
//! The doc comments and attributes below are the `--help` texts (argh builds them from these),
//! which the manual page lbfo-agentd(8) describes item by item (`tests/tests/man.rs` holds the
//! two together). `main` turns argh's early exits into exit codes: 0 for help, 2 for a usage
//! error.

use argh::FromArgs;
use std::path::PathBuf;

/// lbfo's agent: keeps the shared service table that the lbfo NSS module answers from, and
/// takes commands from its FIFO.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(
    example = "lbfo-agentd -c /etc/lbfo.conf\necho \"down web.lan 10.0.0.11\" > /var/run/lbfo.sock\n{command_name} status --json",
    note = "Runs in the foreground and logs one line per event to stderr. SIGHUP reloads the config; SIGTERM and SIGINT exit, leaving the table answering.",
    error_code(1, "runtime failure"),
    error_code(2, "bad usage or config")
)]
pub struct Cli {
    /// the config file: agent settings (`table PATH`, `fifo PATH`) and commands
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the command; none runs the agent
    #[argh(subcommand)]
    pub command: Option<Sub>,
}

/// A command, with what was given after it.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Sub {
    /// `status ...`.
    Status(Status),
    /// `keygen PATH`.
    Keygen(Keygen),
    /// `check [-c FILE]`.
    Check(Check),
}

/// Write a new random cluster key (32 bytes, hex) to PATH with mode 0600; refuses to overwrite.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "keygen",
    example = "{command_name} /etc/lbfo.key   # then copy it to every node and add `key /etc/lbfo.key`",
    error_code(1, "the file cannot be written (or exists)")
)]
pub struct Keygen {
    /// where to write the key
    #[argh(positional)]
    pub path: PathBuf,
}

/// Check a config file without touching the running agent or its table: every line parses and
/// every command applies; prints `FILE: ok` or the first problem as FILE:LINE:COLUMN.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "check",
    example = "{command_name} -c /etc/lbfo.conf && /etc/init.d/lbfo reload",
    error_code(2, "bad usage or config")
)]
pub struct Check {
    /// the config file to check
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Show the shared table: services, policies, backends, state, weight, prio, limit, lookups.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "status",
    example = "{command_name} -c /etc/lbfo.conf\n{command_name} --table /run/lbfo/table --json\n{command_name} --prometheus > lbfo.prom.tmp && mv lbfo.prom.tmp lbfo.prom",
    note = "The table is --table, else the config's `table` setting, else /run/lbfo/table. Works whether or not the agent runs. With --prometheus an unreadable table still prints lbfo_table_readable 0 (and exits 1); lbfo-agentd(8) shows how to feed node_exporter's textfile collector.",
    error_code(1, "the table cannot be read"),
    error_code(2, "bad usage or config")
)]
pub struct Status {
    /// config file whose `table` setting names the table
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the table file (overrides the config)
    #[argh(option)]
    pub table: Option<PathBuf>,
    /// print one JSON object, for scripts
    #[argh(switch)]
    pub json: bool,
    /// print Prometheus text exposition format (for node_exporter's textfile collector)
    #[argh(switch)]
    pub prometheus: bool,
}

/// What the command line asks for: a command to run, or an early exit.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Run this.
    Run(Cli),
    /// Help was asked for: print this to stdout and exit 0.
    Help(String),
    /// A usage error: print these lines to stderr and exit 2.
    Usage(String),
}

/// Parses the arguments after the program's name.
pub fn parse(args: &[&str]) -> Parsed {
    match Cli::from_args(&["lbfo-agentd"], args) {
        Ok(cli) => Parsed::Run(cli),
        Err(early) => match early.status {
            Ok(()) => Parsed::Help(early.output),
            Err(()) => Parsed::Usage(format!(
                "{}\nRun lbfo-agentd --help for more information.",
                early.output.trim_ascii_end()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    //! The outcomes `main` relies on; argh's own rules (`--`, `help CMD`, repeated options) are
    //! argh's to test.
    use super::*;

    #[test]
    fn the_outcomes_the_agent_relies_on() {
        let Parsed::Run(cli) = parse(&["-c", "/etc/lbfo.conf"]) else {
            panic!()
        };
        assert_eq!(
            (cli.config, cli.command),
            (Some(PathBuf::from("/etc/lbfo.conf")), None)
        );
        let Parsed::Run(cli) = parse(&["status", "--json", "--table", "t"]) else {
            panic!()
        };
        assert_eq!(
            cli.command,
            Some(Sub::Status(Status {
                config: None,
                table: Some("t".into()),
                json: true,
                prometheus: false
            }))
        );
        let Parsed::Help(help) = parse(&["help", "check"]) else {
            panic!()
        };
        assert!(
            help.starts_with("Usage: lbfo-agentd check [-c <config>]\n"),
            "{help}"
        );
        assert_eq!(
            parse(&["keygen"]),
            Parsed::Usage(
                "Required positional arguments not provided:\n    path\n\
                 Run lbfo-agentd --help for more information."
                    .into()
            )
        );
    }
}

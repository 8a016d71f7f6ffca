//! The command line: `lbfo-agentd -c FILE`, `status`, `keygen PATH`, `check`.
//!
//! Parsed here by argh's rules, not by argh itself: on the routers argh's parser and derived code
//! were 9.6 KB more than this module, of the 200 KiB budget (size-report/run.sh), for four
//! commands and five options.
//! The rules, which the tests below check against argh's own derive over every short command line
//! and many long ones, so that scripts and the manual pages see no difference:
//! - `--help` or `help` anywhere asks for the help of the command it follows (`help status` is
//!   `status --help`); an option after it is an error.
//! - An option's value is the next argument, whatever it looks like (`-c --json` reads the file
//!   `--json`); a value option given twice is an error; a switch may repeat.
//! - `--` ends the options: what follows is positional (`keygen -- help` writes the file `help`).
//! - The first argument that names a command hands the rest of the line to that command.
//!
//! Errors come back as one line of text (the caller adds "Run lbfo-agentd --help ..."); help as
//! the command's whole help text, written out here once as argh's derive would lay it out.

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Cli<'a> {
    /// `-c FILE` before any command: the config.
    pub config: Option<&'a str>,
    /// The command, if one was named; none runs the agent.
    pub command: Option<Sub<'a>>,
}

/// A command, with what was given after it.
#[derive(Debug, PartialEq, Eq)]
pub enum Sub<'a> {
    /// `status ...`.
    Status(Status<'a>),
    /// `keygen PATH`.
    Keygen(&'a str),
    /// `check [-c FILE]`.
    Check(Option<&'a str>),
}

/// `status [-c FILE] [--table FILE] [--json] [--prometheus]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Status<'a> {
    /// `-c FILE`: the config whose `table` setting names the table.
    pub config: Option<&'a str>,
    /// `--table FILE`.
    pub table: Option<&'a str>,
    /// `--json`.
    pub json: bool,
    /// `--prometheus`.
    pub prometheus: bool,
}

/// Why parsing stopped short of a command to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Help was asked for: print this to stdout and exit 0.
    Help(&'static str),
    /// A usage error (exit 2), without a trailing newline.
    Usage(String),
}

/// Where an option's value goes.
#[derive(Clone, Copy)]
enum Slot {
    Value(usize),
    Switch(usize),
}

/// One command's grammar.
struct Grammar {
    help: &'static str,
    options: &'static [(&'static str, Slot)],
    /// The name of its one (required) positional argument, if it takes one.
    positional: Option<&'static str>,
}

/// What one command's arguments held.
#[derive(Default)]
struct Found<'a> {
    values: [Option<&'a str>; 2],
    switches: [bool; 2],
    positional: Option<&'a str>,
}

const TOP: Grammar = Grammar {
    help: TOP_HELP,
    options: &[("-c", Slot::Value(0)), ("--config", Slot::Value(0))],
    positional: None,
};

/// The commands, by name; the order is [`parse`]'s.
const COMMANDS: [(&str, Grammar); 3] = [
    (
        "status",
        Grammar {
            help: STATUS_HELP,
            options: &[
                ("-c", Slot::Value(0)),
                ("--config", Slot::Value(0)),
                ("--table", Slot::Value(1)),
                ("--json", Slot::Switch(0)),
                ("--prometheus", Slot::Switch(1)),
            ],
            positional: None,
        },
    ),
    (
        "keygen",
        Grammar {
            help: KEYGEN_HELP,
            options: &[],
            positional: Some("path"),
        },
    ),
    (
        "check",
        Grammar {
            help: CHECK_HELP,
            options: &[("-c", Slot::Value(0)), ("--config", Slot::Value(0))],
            positional: None,
        },
    ),
];

/// Parses the arguments after the program's name.
pub fn parse<'a>(args: &[&'a str]) -> Result<Cli<'a>, Exit> {
    let (top, command) = scan(&TOP, args, false, true)?;
    let command = match command {
        None => None,
        Some((k, rest, help)) => {
            let (f, _) = scan(&COMMANDS[k].1, rest, help, false)?;
            Some(match k {
                0 => Sub::Status(Status {
                    config: f.values[0],
                    table: f.values[1],
                    json: f.switches[0],
                    prometheus: f.switches[1],
                }),
                // `scan` refused a keygen without its path.
                1 => Sub::Keygen(f.positional.unwrap_or_default()),
                _ => Sub::Check(f.values[0]),
            })
        }
    };
    Ok(Cli {
        config: top.values[0],
        command,
    })
}

/// The command found while scanning: its index in [`COMMANDS`], the arguments after its name,
/// and whether help was asked for before it.
type Handoff<'b, 'a> = Option<(usize, &'b [&'a str], bool)>;

/// Scans one command's arguments by its grammar; with `commands`, stops at the first argument
/// that names a command and hands over the rest.
fn scan<'b, 'a>(
    g: &Grammar,
    args: &'b [&'a str],
    mut help: bool,
    commands: bool,
) -> Result<(Found<'a>, Handoff<'b, 'a>), Exit> {
    let mut found = Found::default();
    let mut ended = false;
    let mut rest = args.iter();
    while let Some(&arg) = rest.next() {
        if !ended && (arg == "--help" || arg == "help") {
            help = true;
            continue;
        }
        if !ended && arg.starts_with('-') {
            if arg == "--" {
                ended = true;
                continue;
            }
            if help {
                return Err(Exit::Usage(
                    "Trailing arguments are not allowed after `help`.".into(),
                ));
            }
            match g.options.iter().find(|(name, _)| *name == arg) {
                None => return Err(unrecognized(arg)),
                Some((_, Slot::Switch(i))) => found.switches[*i] = true,
                Some((_, Slot::Value(i))) => {
                    let Some(&value) = rest.next() else {
                        return Err(Exit::Usage(format!(
                            "No value provided for option '{arg}'."
                        )));
                    };
                    if found.values[*i].replace(value).is_some() {
                        return Err(Exit::Usage(format!(
                            "Error parsing option '{arg}' with value '{value}': duplicate values provided"
                        )));
                    }
                }
            }
            continue;
        }
        if commands {
            if let Some(k) = COMMANDS.iter().position(|(name, _)| *name == arg) {
                return Ok((found, Some((k, rest.as_slice(), help))));
            }
        }
        if g.positional.is_none() || found.positional.replace(arg).is_some() {
            return Err(unrecognized(arg));
        }
    }
    if help {
        return Err(Exit::Help(g.help));
    }
    match g.positional {
        Some(name) if found.positional.is_none() => Err(Exit::Usage(format!(
            "Required positional arguments not provided:\n    {name}"
        ))),
        _ => Ok((found, None)),
    }
}

fn unrecognized(arg: &str) -> Exit {
    Exit::Usage(format!("Unrecognized argument: {arg}"))
}

const TOP_HELP: &str = r#"Usage: lbfo-agentd [-c <config>] [<command>] [<args>]

lbfo's agent: keeps the shared service table that the lbfo NSS module answers from, and takes commands from its FIFO.

Options:
  -c, --config      the config file: agent settings (`table PATH`, `fifo PATH`)
                    and commands
  --help, help      display usage information

Commands:
  status            Show the shared table: services, policies, backends, state,
                    weight, prio, limit, lookups.
  keygen            Write a new random cluster key (32 bytes, hex) to PATH with
                    mode 0600; refuses to overwrite.
  check             Check a config file without touching the running agent or
                    its table: every line parses and every command applies;
                    prints `FILE: ok` or the first problem as FILE:LINE:COLUMN.

Examples:
  lbfo-agentd -c /etc/lbfo.conf
  echo "down web.lan 10.0.0.11" > /var/run/lbfo.sock
  lbfo-agentd status --json

Notes:
  Runs in the foreground and logs one line per event to stderr. SIGHUP reloads the config; SIGTERM and SIGINT exit, leaving the table answering.

Error codes:
  1 runtime failure
  2 bad usage or config
"#;

const STATUS_HELP: &str = r#"Usage: lbfo-agentd status [-c <config>] [--table <table>] [--json] [--prometheus]

Show the shared table: services, policies, backends, state, weight, prio, limit, lookups.

Options:
  -c, --config      config file whose `table` setting names the table
  --table           the table file (overrides the config)
  --json            print one JSON object, for scripts
  --prometheus      print Prometheus text exposition format (for node_exporter's
                    textfile collector)
  --help, help      display usage information

Examples:
  lbfo-agentd status -c /etc/lbfo.conf
  lbfo-agentd status --table /run/lbfo/table --json
  lbfo-agentd status --prometheus > lbfo.prom.tmp && mv lbfo.prom.tmp lbfo.prom

Notes:
  The table is --table, else the config's `table` setting, else /run/lbfo/table. Works whether or not the agent runs. With --prometheus an unreadable table still prints lbfo_table_readable 0 (and exits 1); lbfo-agentd(8) shows how to feed node_exporter's textfile collector.

Error codes:
  1 the table cannot be read
  2 bad usage or config
"#;

const KEYGEN_HELP: &str = r#"Usage: lbfo-agentd keygen [--] <path>

Write a new random cluster key (32 bytes, hex) to PATH with mode 0600; refuses to overwrite.

Positional Arguments:
  path              where to write the key

Options:
  --help, help      display usage information

Examples:
  lbfo-agentd keygen /etc/lbfo.key   # then copy it to every node and add `key /etc/lbfo.key`

Error codes:
  1 the file cannot be written (or exists)
"#;

const CHECK_HELP: &str = r#"Usage: lbfo-agentd check [-c <config>]

Check a config file without touching the running agent or its table: every line parses and every command applies; prints `FILE: ok` or the first problem as FILE:LINE:COLUMN.

Options:
  -c, --config      the config file to check
  --help, help      display usage information

Examples:
  lbfo-agentd check -c /etc/lbfo.conf && /etc/init.d/lbfo reload

Error codes:
  2 bad usage or config
"#;

#[cfg(test)]
mod tests {
    //! The parser against argh's derive, as the agent used it before this module (argh is a
    //! dev-dependency for this comparison only): the same structs and attributes, and for every
    //! command line of up to four words from the vocabulary below (and 20,000 longer ones) the
    //! same outcome: the same values, the same help text, the same error line.
    use super::*;
    use crate::TestRng;
    use argh::FromArgs;
    use std::path::PathBuf;

    /// lbfo's agent: keeps the shared service table that the lbfo NSS module answers from, and
    /// takes commands from its FIFO.
    #[derive(FromArgs, Debug)]
    #[argh(
        example = "lbfo-agentd -c /etc/lbfo.conf\necho \"down web.lan 10.0.0.11\" > /var/run/lbfo.sock\n{command_name} status --json",
        note = "Runs in the foreground and logs one line per event to stderr. SIGHUP reloads the config; SIGTERM and SIGINT exit, leaving the table answering.",
        error_code(1, "runtime failure"),
        error_code(2, "bad usage or config")
    )]
    struct ArghCli {
        /// the config file: agent settings (`table PATH`, `fifo PATH`) and commands
        #[argh(option, short = 'c')]
        config: Option<PathBuf>,
        #[argh(subcommand)]
        command: Option<ArghSub>,
    }

    #[derive(FromArgs, Debug)]
    #[argh(subcommand)]
    enum ArghSub {
        Status(StatusCmd),
        Keygen(KeygenCmd),
        Check(CheckCmd),
    }

    /// Write a new random cluster key (32 bytes, hex) to PATH with mode 0600; refuses to overwrite.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "keygen",
        example = "{command_name} /etc/lbfo.key   # then copy it to every node and add `key /etc/lbfo.key`",
        error_code(1, "the file cannot be written (or exists)")
    )]
    struct KeygenCmd {
        /// where to write the key
        #[argh(positional)]
        path: PathBuf,
    }

    /// Check a config file without touching the running agent or its table: every line parses and
    /// every command applies; prints `FILE: ok` or the first problem as FILE:LINE:COLUMN.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "check",
        example = "{command_name} -c /etc/lbfo.conf && /etc/init.d/lbfo reload",
        error_code(2, "bad usage or config")
    )]
    struct CheckCmd {
        /// the config file to check
        #[argh(option, short = 'c')]
        config: Option<PathBuf>,
    }

    /// Show the shared table: services, policies, backends, state, weight, prio, limit, lookups.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "status",
        example = "{command_name} -c /etc/lbfo.conf\n{command_name} --table /run/lbfo/table --json\n{command_name} --prometheus > lbfo.prom.tmp && mv lbfo.prom.tmp lbfo.prom",
        note = "The table is --table, else the config's `table` setting, else /run/lbfo/table. Works whether or not the agent runs. With --prometheus an unreadable table still prints lbfo_table_readable 0 (and exits 1); lbfo-agentd(8) shows how to feed node_exporter's textfile collector.",
        error_code(1, "the table cannot be read"),
        error_code(2, "bad usage or config")
    )]
    struct StatusCmd {
        /// config file whose `table` setting names the table
        #[argh(option, short = 'c')]
        config: Option<PathBuf>,
        /// the table file (overrides the config)
        #[argh(option)]
        table: Option<PathBuf>,
        /// print one JSON object, for scripts
        #[argh(switch)]
        json: bool,
        /// print Prometheus text exposition format (for node_exporter's textfile collector)
        #[argh(switch)]
        prometheus: bool,
    }

    /// Every option and command name, the help words, `--`, near misses and plain words.
    const WORDS: [&str; 16] = [
        "-c",
        "--config",
        "--table",
        "--json",
        "--prometheus",
        "--help",
        "help",
        "--",
        "status",
        "keygen",
        "check",
        "x",
        "y",
        "-h",
        "-",
        "--bogus",
    ];

    /// argh's outcome in this module's terms: the command line's [`Cli`], in Debug form.
    fn argh(args: &[&str]) -> Result<String, Exit> {
        let cli = match ArghCli::from_args(&["lbfo-agentd"], args) {
            Ok(cli) => cli,
            Err(early) => {
                return Err(match early.status {
                    Ok(()) => Exit::Help(Box::leak(early.output.into_boxed_str())),
                    Err(()) => Exit::Usage(early.output.trim_ascii_end().to_owned()),
                })
            }
        };
        let s = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_str().unwrap().to_owned());
        let (config, status_config, table) = match &cli.command {
            Some(ArghSub::Status(st)) => (s(&cli.config), s(&st.config), s(&st.table)),
            Some(ArghSub::Check(c)) => (s(&cli.config), s(&c.config), None),
            _ => (s(&cli.config), None, None),
        };
        let command = cli.command.as_ref().map(|c| match c {
            ArghSub::Status(st) => Sub::Status(Status {
                config: status_config.as_deref(),
                table: table.as_deref(),
                json: st.json,
                prometheus: st.prometheus,
            }),
            ArghSub::Keygen(k) => Sub::Keygen(k.path.to_str().unwrap()),
            ArghSub::Check(_) => Sub::Check(status_config.as_deref()),
        });
        Ok(format!(
            "{:?}",
            Cli {
                config: config.as_deref(),
                command
            }
        ))
    }

    /// This module's outcome, in the same form.
    fn ours(args: &[&str]) -> Result<String, Exit> {
        parse(args).map(|cli| format!("{cli:?}"))
    }

    fn same(args: &[&str]) {
        assert_eq!(ours(args), argh(args), "command line {args:?}");
    }

    #[test]
    fn every_short_command_line_parses_as_argh_parses_it() {
        let mut line = Vec::new();
        let mut count = 0;
        // All lines of 0 to 4 words: a counter in base 16, one length at a time.
        for len in 0..=4u32 {
            for n in 0..WORDS.len().pow(len) {
                line.clear();
                let mut n = n;
                for _ in 0..len {
                    line.push(WORDS[n % WORDS.len()]);
                    n /= WORDS.len();
                }
                same(&line);
                count += 1;
            }
        }
        assert_eq!(count, 1 + 16 + 256 + 4096 + 65536);
    }

    #[test]
    fn long_command_lines_parse_as_argh_parses_them() {
        let mut rng = TestRng(0x1bf0_c11a);
        for _ in 0..20_000 {
            let len = 5 + rng.below(5) as usize;
            let line: Vec<&str> = (0..len)
                .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                .collect();
            same(&line);
        }
    }

    #[test]
    fn the_outcomes_the_agent_relies_on() {
        assert_eq!(
            parse(&["-c", "/etc/lbfo.conf"]),
            Ok(Cli {
                config: Some("/etc/lbfo.conf"),
                command: None
            })
        );
        assert_eq!(
            parse(&["status", "--json", "--table", "t"]).map(|c| c.command),
            Ok(Some(Sub::Status(Status {
                config: None,
                table: Some("t"),
                json: true,
                prometheus: false
            })))
        );
        assert_eq!(
            parse(&["keygen", "--", "help"]).map(|c| c.command),
            Ok(Some(Sub::Keygen("help")))
        );
        assert_eq!(parse(&["help", "check"]), Err(Exit::Help(CHECK_HELP)));
        assert_eq!(
            parse(&["keygen"]),
            Err(Exit::Usage(
                "Required positional arguments not provided:\n    path".into()
            ))
        );
        assert_eq!(
            parse(&["-c", "a", "-c", "b"]),
            Err(Exit::Usage(
                "Error parsing option '-c' with value 'b': duplicate values provided".into()
            ))
        );
    }
}

//! The strict command-line parser every example shares.
//!
//! - `--help` (or `-h`) anywhere prints the usage and exits with status 0 before any work.
//! - An unknown flag, a flag given twice, a flag without its value, a value given to a switch
//!   or an unexpected positional argument is a usage error.
//! - Integers parse as integers: `2.9`, `-1`, `1e30` and `abc` are errors that say why, and
//!   every getter checks its range.
//! - [`main`] prints an error as `error: <message>` and exits with status 2 for a usage error
//!   ([`CliError::usage`]) or 1 for a failure while running (any [`handgrad::Error`]).
//!
//! Both `--name VALUE` and `--name=VALUE` are accepted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// One flag: its name (with `--`), the name of its value (`None` for a switch), its help line.
pub struct Flag {
    /// `--name`.
    pub name: &'static str,
    /// What the value is, for the usage (`"N"`, `"DIR"`); `None` for a switch.
    pub value: Option<&'static str>,
    /// One line of help, with the default.
    pub help: &'static str,
}

/// A flag that takes a value (`--name VALUE`).
pub const fn opt(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: Some(value),
        help,
    }
}

/// A switch (`--name`, no value).
pub const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: None,
        help,
    }
}

/// Why an example stopped: the message and the exit status (2: the command line is wrong, 1:
/// something failed while running).
#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    /// Exit status: 2 for usage errors, 1 for runtime errors.
    pub code: i32,
    /// What went wrong, said for a person.
    pub message: String,
}

impl CliError {
    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// A failure while running (exit status 1).
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<handgrad::Error> for CliError {
    fn from(e: handgrad::Error) -> CliError {
        CliError::failed(e.to_string())
    }
}

/// The result of an example's `run`.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Runs `run` and exits: status 0 on success, otherwise prints `error: <message>` to stderr and
/// exits with the error's status (2 for usage errors, with a pointer to `--help`).
pub fn main(program: &str, run: impl FnOnce() -> CliResult) -> ! {
    match run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {}", e.message);
            if e.code == 2 {
                eprintln!("(see `cargo run --release --example {program} -- --help`)");
            }
            std::process::exit(e.code)
        }
    }
}

/// What an example accepts: its name, a paragraph about it, its flags and its positional
/// arguments.
pub struct Command {
    /// The example's name (`cargo run --example NAME`).
    pub program: &'static str,
    /// What it does, printed first by `--help`.
    pub about: &'static str,
    /// Every flag it accepts (`--help` is implied).
    pub flags: &'static [Flag],
    /// The name of its positional arguments in the usage line (e.g. `"[PHOTO ...]"`), or
    /// `None` when it takes none.
    pub positional: Option<&'static str>,
}

/// What a command line asks for: the usage text, or a run with these arguments.
pub enum Parsed {
    /// `--help` was given: the usage text.
    Help(String),
    /// The arguments of a run.
    Run(Args),
}

impl Command {
    /// The usage text: the about paragraph, the usage line and one line per flag.
    pub fn usage(&self) -> String {
        let mut s = format!(
            "{}\n\nUsage: cargo run --release --example {} -- [FLAGS]{}\n\nFlags:\n",
            self.about,
            self.program,
            self.positional.map(|p| format!(" {p}")).unwrap_or_default()
        );
        let help = switch("--help", "print this help and exit");
        for f in self.flags.iter().chain(std::iter::once(&help)) {
            let left = match f.value {
                Some(v) => format!("{} {v}", f.name),
                None => f.name.to_string(),
            };
            s.push_str(&format!("  {left:<28} {}\n", f.help));
        }
        s
    }

    /// The flag names, for error messages.
    fn names(&self) -> String {
        let names: Vec<&str> = self.flags.iter().map(|f| f.name).collect();
        if names.is_empty() {
            "it takes none besides --help".to_string()
        } else {
            format!("its flags are {} and --help", names.join(", "))
        }
    }

    /// Parses `argv` (without the program name).
    ///
    /// # Errors
    /// A usage error for an unknown flag, a flag given twice, a missing value, a value given
    /// to a switch, or a positional argument the command does not take.
    pub fn parse_from<I, S>(&self, argv: I) -> CliResult<Parsed>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        if argv.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(Parsed::Help(self.usage()));
        }
        let program = self.program;
        let mut out = Args {
            program,
            known: self.flags.iter().map(|f| f.name).collect(),
            values: HashMap::new(),
            switches: Vec::new(),
            positional: Vec::new(),
        };
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            i += 1;
            if !a.starts_with("--") {
                if self.positional.is_none() {
                    return Err(CliError::usage(format!(
                        "{program} takes no positional argument, got {a:?} ({})",
                        self.names()
                    )));
                }
                out.positional.push(a.clone());
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            let Some(f) = self.flags.iter().find(|f| f.name == name) else {
                return Err(CliError::usage(format!(
                    "unknown flag {name} for {program}; {}",
                    self.names()
                )));
            };
            if out.values.contains_key(f.name) || out.switches.contains(&f.name) {
                return Err(CliError::usage(format!("{name} is given twice")));
            }
            match (f.value, inline) {
                (None, Some(v)) => {
                    return Err(CliError::usage(format!(
                        "{name} is a switch and takes no value, got {name}={v}"
                    )))
                }
                (None, None) => out.switches.push(f.name),
                (Some(_), Some(v)) => {
                    out.values.insert(f.name, v);
                }
                (Some(what), None) => {
                    let v = argv
                        .get(i)
                        .filter(|v| !v.starts_with("--"))
                        .ok_or_else(|| {
                            CliError::usage(format!("{name} needs a value ({name} {what})"))
                        })?;
                    out.values.insert(f.name, v.clone());
                    i += 1;
                }
            }
        }
        Ok(Parsed::Run(out))
    }

    /// Parses the process's arguments; `--help` prints the usage and exits with status 0.
    ///
    /// # Errors
    /// As [`Command::parse_from`].
    pub fn parse(&self) -> CliResult<Args> {
        match self.parse_from(std::env::args().skip(1))? {
            Parsed::Help(text) => {
                print!("{text}");
                std::process::exit(0)
            }
            Parsed::Run(args) => Ok(args),
        }
    }
}

/// The parsed command line: values by flag name, switches, and positional arguments. The
/// getters check types and ranges.
pub struct Args {
    program: &'static str,
    known: Vec<&'static str>,
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
    /// The positional arguments, in order.
    pub positional: Vec<String>,
}

/// Why `text` is not a whole number in `lo..=hi` ("is negative", …), or `None` if it is one.
fn int_problem(text: &str, lo: u64, hi: u64) -> Option<String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return if n < lo {
            Some(format!("is below the minimum {lo}"))
        } else if n > hi {
            Some(format!("is above the maximum {hi}"))
        } else {
            None
        };
    }
    Some(match t.parse::<f64>() {
        Ok(x) if x.is_nan() || x.is_infinite() => "is not a finite number".to_string(),
        Ok(x) if x < 0.0 => "is negative".to_string(),
        Ok(x) if x.fract() != 0.0 => "is not a whole number".to_string(),
        Ok(_) => format!("is above the maximum {hi}"),
        Err(_) => "is not a number".to_string(),
    })
}

/// `lo..=hi` in words.
fn int_range(lo: u64, hi: u64) -> String {
    if hi == u64::MAX {
        format!("a whole number ≥ {lo}")
    } else {
        format!("a whole number from {lo} to {hi}")
    }
}

impl Args {
    /// Checks that a getter asks for a declared flag (a typo would silently read nothing).
    fn known(&self, name: &str) {
        assert!(
            self.known.contains(&name),
            "{}: the getter asks for {name}, which is not declared",
            self.program
        );
    }

    /// Whether switch `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.known(name);
        self.switches.contains(&name)
    }

    /// The raw value of `name`, if given.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.known(name);
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` was given (a value or a switch).
    pub fn given(&self, name: &str) -> bool {
        self.string(name).is_some() || self.switches.contains(&name)
    }

    /// The value of `name` as a path, if given.
    ///
    /// # Errors
    /// A usage error for an empty value.
    pub fn path(&self, name: &str) -> CliResult<Option<PathBuf>> {
        match self.string(name) {
            Some("") => Err(CliError::usage(format!("{name} needs a non-empty path"))),
            Some(p) => Ok(Some(PathBuf::from(p))),
            None => Ok(None),
        }
    }

    /// A whole number in `lo..=hi`, if given.
    ///
    /// # Errors
    /// A usage error saying why the value is not one (`2.9` is not a whole number, `-1` is
    /// negative, `1e30` is above the maximum, `abc` is not a number).
    pub fn int(&self, name: &str, lo: u64, hi: u64) -> CliResult<Option<u64>> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        match int_problem(v, lo, hi) {
            None => Ok(Some(v.trim().parse().expect("checked by int_problem"))),
            Some(why) => Err(CliError::usage(format!(
                "{name} {v}: {v} {why}; expected {}",
                int_range(lo, hi)
            ))),
        }
    }

    /// [`Args::int`] as a `usize`, `default` when not given.
    ///
    /// # Errors
    /// As [`Args::int`].
    pub fn usize_or(&self, name: &str, default: usize, lo: usize, hi: usize) -> CliResult<usize> {
        Ok(self
            .int(name, lo as u64, hi as u64)?
            .map_or(default, |n| n as usize))
    }

    /// Applies the sampling flags this command declares — `--do-sample`, `--temperature`
    /// (0, 100], `--top-k` ≥ 1, `--top-p` (0, 1], `--repetition-penalty` (0, 100] and `--seed`
    /// — to `cfg`, leaving the others at `cfg`'s values.
    ///
    /// # Errors
    /// A usage error for a value out of its range.
    pub fn sampling(&self, cfg: &mut handgrad::generate::GenerateConfig) -> CliResult<()> {
        let declared = |name: &str| self.known.contains(&name);
        if declared("--do-sample") {
            cfg.do_sample = self.flag("--do-sample");
        }
        for (name, hi, field) in [
            ("--temperature", 100.0, &mut cfg.temperature),
            ("--top-p", 1.0, &mut cfg.top_p),
            ("--repetition-penalty", 100.0, &mut cfg.repetition_penalty),
        ] {
            if declared(name)
                && let Some(v) = self.float(name, 0.0, hi, true)?
            {
                *field = v as f32;
            }
        }
        if declared("--top-k")
            && let Some(k) = self.int("--top-k", 1, u32::MAX as u64)?
        {
            cfg.top_k = Some(k as usize);
        }
        if declared("--seed") {
            cfg.seed = self.u64_or("--seed", cfg.seed)?;
        }
        Ok(())
    }

    /// [`Args::int`] over all of `u64` (a seed), `default` when not given.
    ///
    /// # Errors
    /// As [`Args::int`].
    pub fn u64_or(&self, name: &str, default: u64) -> CliResult<u64> {
        Ok(self.int(name, 0, u64::MAX)?.unwrap_or(default))
    }

    /// A finite number in `lo..=hi` (or `lo < x ≤ hi` when `open_lo`), if given.
    ///
    /// # Errors
    /// A usage error for a value that is not a number, not finite, or out of range.
    pub fn float(&self, name: &str, lo: f64, hi: f64, open_lo: bool) -> CliResult<Option<f64>> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        let range = if open_lo {
            format!("a number in ({lo}, {hi}]")
        } else {
            format!("a number in [{lo}, {hi}]")
        };
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && (x > lo || (!open_lo && x == lo)) && x <= hi => Ok(Some(x)),
            Ok(x) if !x.is_finite() => Err(CliError::usage(format!(
                "{name} {v}: {v} is not a finite number; expected {range}"
            ))),
            Ok(_) => Err(CliError::usage(format!(
                "{name} {v}: {v} is out of range; expected {range}"
            ))),
            Err(_) => Err(CliError::usage(format!(
                "{name} {v}: {v} is not a number; expected {range}"
            ))),
        }
    }

    /// A comma-separated list of whole numbers, each `< limit`, if given (`1,2,3`).
    ///
    /// # Errors
    /// A usage error naming the first bad entry, or for an empty list.
    pub fn ids(&self, name: &str, limit: usize) -> CliResult<Option<Vec<usize>>> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        let hi = limit.saturating_sub(1) as u64;
        let mut out = Vec::new();
        for (k, part) in v.split(',').enumerate() {
            if let Some(why) = int_problem(part, 0, hi) {
                return Err(CliError::usage(format!(
                    "{name} {v}: entry {} ({:?}) {why}; expected comma-separated ids from 0 to \
                     {hi}",
                    k + 1,
                    part.trim()
                )));
            }
            out.push(part.trim().parse().expect("checked by int_problem"));
        }
        Ok(Some(out))
    }

    /// A usage error unless at most one of `names` was given.
    ///
    /// # Errors
    /// When two or more were given.
    pub fn at_most_one(&self, names: &[&str]) -> CliResult<()> {
        let given: Vec<&str> = names.iter().copied().filter(|n| self.given(n)).collect();
        if given.len() > 1 {
            return Err(CliError::usage(format!(
                "{} exclude each other: give at most one",
                given.join(" and ")
            )));
        }
        Ok(())
    }
}

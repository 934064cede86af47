//! A small, strict command-line parser shared by the examples: `--help`, unknown flags and
//! missing values are errors, integers parse as integers (`--top-k 2.7` is rejected), and
//! every value is range-checked by its getter.

#![allow(dead_code)]

use handgrad::{Error, Result};
use std::collections::HashMap;

/// One flag: its name (with `--`), whether it takes a value, and its help line.
pub struct Flag {
    pub name: &'static str,
    pub value: Option<&'static str>,
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

/// A switch (`--name`).
pub const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: None,
        help,
    }
}

/// The parsed command line: values by flag name, switches, and positional arguments.
pub struct Args {
    program: &'static str,
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
    pub positional: Vec<String>,
}

/// Prints the usage of `program` (its `about` text and every flag).
pub fn usage(program: &str, about: &str, flags: &[Flag]) -> String {
    let mut s =
        format!("{about}\n\nUsage: cargo run --release --example {program} -- [FLAGS]\n\nFlags:\n");
    for f in flags {
        let left = match f.value {
            Some(v) => format!("{} {v}", f.name),
            None => f.name.to_string(),
        };
        s.push_str(&format!("  {left:<28} {}\n", f.help));
    }
    s.push_str(&format!(
        "  {:<28} {}\n",
        "--help", "print this help and exit"
    ));
    s
}

impl Args {
    /// Parses `std::env::args()`; `--help` prints the usage and exits with status 0.
    ///
    /// # Errors
    /// An unknown flag, a flag given twice, a missing value, or positional arguments when
    /// `positional` is false.
    pub fn parse(
        program: &'static str,
        about: &str,
        flags: &[Flag],
        positional: bool,
    ) -> Result<Args> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        if argv.iter().any(|a| a == "--help" || a == "-h") {
            print!("{}", usage(program, about, flags));
            std::process::exit(0);
        }
        let mut out = Args {
            program,
            values: HashMap::new(),
            switches: Vec::new(),
            positional: Vec::new(),
        };
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            if !a.starts_with("--") {
                if !positional {
                    return Err(Error::config(program, "argument", a, "a flag (see --help)"));
                }
                out.positional.push(a.clone());
                i += 1;
                continue;
            }
            let Some(f) = flags.iter().find(|f| f.name == a) else {
                return Err(Error::config(
                    program,
                    "flag",
                    a,
                    "one of the flags listed by --help",
                ));
            };
            if out.values.contains_key(f.name) || out.switches.contains(&f.name) {
                return Err(Error::config(
                    program,
                    f.name,
                    "given twice",
                    "at most once",
                ));
            }
            match f.value {
                Some(what) => {
                    let v = argv
                        .get(i + 1)
                        .filter(|v| !v.starts_with("--"))
                        .ok_or_else(|| {
                            Error::config(
                                program,
                                f.name,
                                "nothing",
                                format!("a value ({what}) after it"),
                            )
                        })?;
                    out.values.insert(f.name, v.clone());
                    i += 2;
                }
                None => {
                    out.switches.push(f.name);
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Whether switch `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// The raw value of `name`, if given.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// An integer in `lo..=hi`, if given.
    ///
    /// # Errors
    /// Not a whole number, or out of range.
    pub fn int(&self, name: &str, lo: u64, hi: u64) -> Result<Option<u64>> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(Error::config(
                self.program,
                name,
                v,
                format!("a whole number in {lo}..={hi}"),
            )),
        }
    }

    /// A finite number in `lo..=hi`, if given.
    ///
    /// # Errors
    /// Not a number, not finite, or out of range.
    pub fn float(&self, name: &str, lo: f64, hi: f64) -> Result<Option<f64>> {
        let Some(v) = self.string(name) else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= lo && x <= hi => Ok(Some(x)),
            _ => Err(Error::config(
                self.program,
                name,
                v,
                format!("a number in [{lo}, {hi}]"),
            )),
        }
    }
}

//! The examples' shared command-line parser and path checks (examples/common/), included here
//! so that they are tested without running an example: help, unknown flags, missing values,
//! whole numbers (`2.9`, `-1`, `1e30`), ranges, exit statuses, and what a model folder holds.

#[path = "../../examples/common/args.rs"]
mod args;
#[path = "../../examples/common/paths.rs"]
mod paths;

use args::{opt, switch, Args, CliError, Command, Flag, Parsed};
use std::path::PathBuf;

const FLAGS: &[Flag] = &[
    opt("--steps", "N", "optimizer steps (default 10)"),
    opt("--out", "DIR", "output folder"),
    opt("--temperature", "T", "sampling temperature"),
    opt("--ids", "1,2,3", "token ids"),
    opt("--seed", "S", "seed"),
    switch("--fast", "a short run"),
];
const CMD: Command = Command {
    program: "demo",
    about: "A demo command.",
    flags: FLAGS,
    positional: None,
};
const WITH_FILES: Command = Command {
    program: "demo",
    about: "A demo command with files.",
    flags: FLAGS,
    positional: Some("[FILE ...]"),
};

fn parse(argv: &[&str]) -> Result<Args, CliError> {
    match CMD.parse_from(argv.iter().copied())? {
        Parsed::Run(a) => Ok(a),
        Parsed::Help(_) => panic!("{argv:?} asked for help"),
    }
}

/// The usage error of `argv`, checking that it is one (exit status 2).
fn usage_error(argv: &[&str]) -> String {
    let e = match CMD.parse_from(argv.iter().copied()) {
        Err(e) => e,
        Ok(_) => panic!("{argv:?} parsed"),
    };
    assert_eq!(e.code, 2, "{argv:?}: {}", e.message);
    e.message
}

/// The usage error of reading `--steps` from `--steps value` as a whole number in `lo..=hi`.
fn steps_error(value: &str, lo: u64, hi: u64) -> String {
    let a = parse(&["--steps", value]).unwrap();
    let e = a.int("--steps", lo, hi).unwrap_err();
    assert_eq!(e.code, 2, "{value}: {}", e.message);
    e.message
}

#[test]
fn help_lists_every_flag_and_wins_over_everything_else() {
    for argv in [
        vec!["--help"],
        vec!["-h"],
        vec!["--steps", "2.9", "--help"],
        vec!["--bogus", "--help"],
    ] {
        let Ok(Parsed::Help(text)) = CMD.parse_from(argv.iter().copied()) else {
            panic!("{argv:?} did not give the help");
        };
        assert!(text.starts_with("A demo command.\n"), "{text}");
        assert!(
            text.contains("Usage: cargo run --release --example demo -- [FLAGS]\n"),
            "{text}"
        );
        for f in FLAGS {
            let left = match f.value {
                Some(v) => format!("{} {v}", f.name),
                None => f.name.to_string(),
            };
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&left))
                .unwrap_or_else(|| panic!("no line for {left} in\n{text}"));
            assert!(line.ends_with(f.help), "{line}");
        }
        assert!(text.contains("--help"), "{text}");
    }
    let Ok(Parsed::Help(text)) = WITH_FILES.parse_from(["--help"]) else {
        panic!("no help");
    };
    assert!(text.contains("-- [FLAGS] [FILE ...]\n"), "{text}");
}

#[test]
fn values_switches_and_equals_signs_parse() {
    let a = parse(&["--steps", "7", "--fast", "--out=some dir", "--seed", "0"]).unwrap();
    assert_eq!(a.int("--steps", 1, 10).unwrap(), Some(7));
    assert!(a.flag("--fast"));
    assert_eq!(a.path("--out").unwrap(), Some(PathBuf::from("some dir")));
    assert_eq!(a.u64_or("--seed", 5).unwrap(), 0);
    // absent values take their defaults
    let a = parse(&[]).unwrap();
    assert!(!a.flag("--fast"));
    assert_eq!(a.usize_or("--steps", 10, 1, 100).unwrap(), 10);
    assert_eq!(a.u64_or("--seed", 5).unwrap(), 5);
    assert_eq!(a.int("--steps", 1, 10).unwrap(), None);
    assert_eq!(a.float("--temperature", 0.0, 1.0, true).unwrap(), None);
    // a negative number is a value, not a flag
    let a = parse(&["--temperature", "-0.5"]).unwrap();
    assert_eq!(a.string("--temperature"), Some("-0.5"));
}

#[test]
fn unknown_flags_are_errors_that_list_the_flags() {
    let m = usage_error(&["--steps", "3", "--bogus"]);
    assert!(m.contains("unknown flag --bogus for demo"), "{m}");
    assert!(
        m.contains("--steps, --out, --temperature, --ids, --seed, --fast and --help"),
        "{m}"
    );
    let m = usage_error(&["--bogus=3"]);
    assert!(m.contains("unknown flag --bogus for demo"), "{m}");
}

#[test]
fn missing_values_repeated_flags_and_stray_arguments_are_errors() {
    let m = usage_error(&["--steps"]);
    assert_eq!(m, "--steps needs a value (--steps N)");
    let m = usage_error(&["--out", "--fast"]);
    assert_eq!(m, "--out needs a value (--out DIR)");
    let m = usage_error(&["--steps", "1", "--steps", "2"]);
    assert_eq!(m, "--steps is given twice");
    let m = usage_error(&["--fast", "--fast"]);
    assert_eq!(m, "--fast is given twice");
    let m = usage_error(&["--fast=yes"]);
    assert!(m.contains("--fast is a switch and takes no value"), "{m}");
    let m = usage_error(&["photo.jpg"]);
    assert!(
        m.contains("demo takes no positional argument, got \"photo.jpg\""),
        "{m}"
    );
    let Ok(Parsed::Run(a)) = WITH_FILES.parse_from(["a.jpg", "--fast", "b.png"]) else {
        panic!("positional arguments rejected");
    };
    assert_eq!(a.positional, ["a.jpg", "b.png"]);
    assert!(a.flag("--fast"));
}

#[test]
fn integers_must_be_whole_non_negative_and_in_range() {
    assert_eq!(
        steps_error("2.9", 1, 128),
        "--steps 2.9: 2.9 is not a whole number; expected a whole number from 1 to 128"
    );
    assert_eq!(
        steps_error("-1", 0, u64::MAX),
        "--steps -1: -1 is negative; expected a whole number ≥ 0"
    );
    assert_eq!(
        steps_error("1e30", 1, 128),
        "--steps 1e30: 1e30 is above the maximum 128; expected a whole number from 1 to 128"
    );
    // 1e30 does not fit a u64 either: never cast or wrapped
    assert!(steps_error("1e30", 0, u64::MAX).contains("is above the maximum"));
    assert!(steps_error("18446744073709551616", 0, u64::MAX).contains("is above the maximum"));
    assert!(steps_error("abc", 1, 10).contains("abc is not a number"));
    assert!(steps_error("", 1, 10).contains("is not a number"));
    assert!(steps_error("nan", 1, 10).contains("is not a finite number"));
    assert!(steps_error("0", 1, 10).contains("0 is below the minimum 1"));
    assert!(steps_error("11", 1, 10).contains("11 is above the maximum 10"));
    // the bounds themselves are accepted, so are a plus sign and spaces
    for (v, n) in [("1", 1), ("10", 10), ("+4", 4), (" 5 ", 5)] {
        let a = parse(&["--steps", v]).unwrap();
        assert_eq!(a.int("--steps", 1, 10).unwrap(), Some(n), "{v}");
    }
    let a = parse(&["--steps", "2.9"]).unwrap();
    assert!(a.usize_or("--steps", 3, 1, 10).is_err());
    let a = parse(&["--seed", "-1"]).unwrap();
    assert!(a
        .u64_or("--seed", 0)
        .unwrap_err()
        .message
        .contains("negative"));
    let a = parse(&["--seed", "18446744073709551615"]).unwrap();
    assert_eq!(a.u64_or("--seed", 0).unwrap(), u64::MAX);
}

#[test]
fn floats_must_be_finite_and_in_range() {
    let get = |v: &str, open: bool| {
        parse(&["--temperature", v])
            .unwrap()
            .float("--temperature", 0.0, 100.0, open)
    };
    assert_eq!(get("0.7", true).unwrap(), Some(0.7));
    assert_eq!(get("100", true).unwrap(), Some(100.0));
    assert_eq!(get("0", false).unwrap(), Some(0.0));
    let m = get("0", true).unwrap_err().message;
    assert_eq!(
        m,
        "--temperature 0: 0 is out of range; expected a number in (0, 100]"
    );
    assert!(get("100.5", true).is_err());
    assert!(get("-1", false).is_err());
    for v in ["inf", "NaN", "1e400"] {
        let e = get(v, false).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("is not a finite number"), "{v}: {e}");
    }
    assert!(get("warm", false)
        .unwrap_err()
        .message
        .contains("warm is not a number"));
}

#[test]
fn id_lists_name_the_bad_entry() {
    let a = parse(&["--ids", "1, 2,3"]).unwrap();
    assert_eq!(a.ids("--ids", 10).unwrap(), Some(vec![1, 2, 3]));
    let a = parse(&["--ids", "1,x,3"]).unwrap();
    let m = a.ids("--ids", 10).unwrap_err().message;
    assert_eq!(
        m,
        "--ids 1,x,3: entry 2 (\"x\") is not a number; expected comma-separated ids from 0 to 9"
    );
    let a = parse(&["--ids", "1,10"]).unwrap();
    let m = a.ids("--ids", 10).unwrap_err().message;
    assert!(m.contains("entry 2 (\"10\") is above the maximum 9"), "{m}");
    let a = parse(&["--ids", "1,,2"]).unwrap();
    assert!(a.ids("--ids", 10).is_err());
    let a = parse(&["--ids", "2.5"]).unwrap();
    assert!(a
        .ids("--ids", 10)
        .unwrap_err()
        .message
        .contains("is not a whole number"));
}

#[test]
fn exclusive_flags_and_exit_statuses() {
    let a = parse(&["--steps", "1", "--fast"]).unwrap();
    assert!(a.at_most_one(&["--steps", "--out"]).is_ok());
    let e = a.at_most_one(&["--steps", "--fast", "--out"]).unwrap_err();
    assert_eq!(e.code, 2);
    assert_eq!(
        e.message,
        "--steps and --fast exclude each other: give at most one"
    );
    // a library error is a failure while running: status 1, its message unchanged
    let lib = handgrad::Error::config("Adam", "lr", -1.0, "a finite value > 0");
    let e = CliError::from(lib);
    assert_eq!(e.code, 1);
    assert_eq!(
        e.to_string(),
        "Adam: invalid lr = -1; expected a finite value > 0"
    );
    assert_eq!(CliError::usage("x").code, 2);
    assert_eq!(CliError::failed("x").code, 1);
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handgrad-cli-{}-{name}", std::process::id()))
}

#[test]
fn out_dirs_are_created_and_checked_writable() {
    let root = tmp("out");
    let dir = root.join("a/b");
    paths::prepare_out_dir("--out", &dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the probe file is removed"
    );
    // a file is not a folder
    let file = root.join("file");
    std::fs::write(&file, "x").unwrap();
    let e = paths::prepare_out_dir("--out", &file).unwrap_err();
    assert_eq!(e.code, 1);
    assert!(e.message.contains("exists and is not a folder"), "{e}");
    // nor can a folder be made inside one
    let e = paths::prepare_out_dir("--out", &file.join("sub")).unwrap_err();
    assert!(e.message.starts_with("--out "), "{e}");
    assert!(e.message.contains("cannot create this folder"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn model_checks_say_what_a_model_folder_must_hold() {
    let parts = [&paths::CONFIG, &paths::WEIGHTS, &paths::BPE_TOKENIZER];
    let root = tmp("model");
    let e = paths::check_model("--model", &root, &parts, false).unwrap_err();
    assert_eq!(e.code, 1);
    assert!(e.message.contains("does not exist"), "{e}");
    for needed in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.json + merges.txt",
    ] {
        assert!(e.message.contains(needed), "{needed} not in: {e}");
    }
    assert!(!e.message.contains(".gguf"), "{e}");
    // a folder with only a config lacks the weights and the tokenizer, and says so
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("config.json"), "{}").unwrap();
    let e = paths::check_model("--model", &root, &parts, true).unwrap_err();
    let m = &e.message;
    assert!(
        m.contains("this model folder lacks model.safetensors"),
        "{m}"
    );
    assert!(
        m.contains("(the tokenizer)") && m.contains(".gguf file"),
        "{m}"
    );
    assert!(!m.contains("config.json"), "{m}");
    // a .gguf file passes where GGUF is accepted; any other file does not
    let gguf = root.join("m.gguf");
    std::fs::write(&gguf, "GGUF").unwrap();
    paths::check_model("--model", &gguf, &parts, true).unwrap();
    let e = paths::check_model("--model", &gguf, &parts, false).unwrap_err();
    assert!(e.message.contains("is a file, not a model folder"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
    // the tiny Llama fixture is a complete folder (with a chat template)
    let tiny = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama/llama_tiny"
    ));
    let all = [
        &paths::CONFIG,
        &paths::WEIGHTS,
        &paths::BPE_TOKENIZER,
        &paths::CHAT_TEMPLATE,
    ];
    paths::check_model("--model", &tiny, &all, false).unwrap();
}

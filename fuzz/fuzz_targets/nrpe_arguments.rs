//! Fuzz target for the NRPE argument rules: any values must be accepted or refused without a
//! panic, and what the strict rule accepts must hold nothing `/bin/sh` would split, glob,
//! comment out, expand or redirect (the promise in docs/nagios.md).
//!
//! Run: `cargo fuzz run nrpe_arguments --sanitizer none`.

#![no_main]

use cohort_nagios::nrpe::{ArgumentRule, substitute};
use libfuzzer_sys::fuzz_target;

/// Characters that mean something to the shell in an unquoted word.
const SHELL: &[char] = &[
    ' ', '\t', '\n', '\r', '*', '?', '[', ']', '#', '$', '`', '\'', '"', '\\', '|', '&', ';', '<',
    '>', '(', ')', '{', '}', '!',
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let command = "/usr/lib/nagios/plugins/check_x -w $ARG1$ -c $ARG2$ $ARG3$";
    if let Ok(line) = substitute(command, &args, ArgumentRule::Strict) {
        for arg in &args {
            assert!(!arg.chars().any(|c| SHELL.contains(&c) || !c.is_ascii()), "{arg:?}");
            // `~` only as a Nagios range start (`~:`), never a home directory.
            assert!(arg.match_indices('~').all(|(at, _)| arg[at + 1..].starts_with(':')), "{arg:?}");
        }
        assert!(!line.contains("$ARG"), "{line}");
    }
    if substitute(command, &args, ArgumentRule::NrpeMetachars).is_ok() {
        for arg in &args {
            assert!(!arg.contains(['|', '`', '&', '>', '<', ';', '$', '\n']), "{arg:?}");
        }
    }
});

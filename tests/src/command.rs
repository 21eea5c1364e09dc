//! Running external commands (iproute2) with errors that name the command
//! line and carry its stderr.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::error::{Error, Result};

/// Renders a command line for error messages; arguments with spaces or
/// quotes are single-quoted so the line can be pasted into a shell.
pub(crate) fn render_command<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut line = program.to_owned();
    for arg in args {
        let arg = arg.as_ref().to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            line.push('\'');
            line.push_str(&arg.replace('\'', r"'\''"));
            line.push('\'');
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `program args` to completion and returns its output whatever its
/// exit status; fails only if it could not be started.
pub(crate) fn output<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    tracing::trace!(command = %render_command(program, args.clone()), "run");
    Command::new(program)
        .args(args.clone())
        .output()
        .map_err(|source| Error::Spawn {
            command: render_command(program, args),
            source,
        })
}

/// Runs `program args` and returns its stdout; a non-zero exit becomes
/// [`Error::Command`] with the command line and stderr.
pub(crate) fn checked<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let out = output(program, args.clone())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: render_command(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip args` (iproute2), checked.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    checked("ip", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_plain_and_quoted_arguments() {
        assert_eq!(
            render_command("ip", ["-n", "skiff-a-1-0", "link", "show"]),
            "ip -n skiff-a-1-0 link show"
        );
        assert_eq!(
            render_command("sh", ["-c", "echo 'hi' there", ""]),
            r"sh -c 'echo '\''hi'\'' there' ''"
        );
    }

    #[test]
    fn failing_command_error_names_command_and_stderr() {
        // Unprivileged and side-effect free: `sh` exits 3 after writing to stderr.
        let err = checked("sh", ["-c", "echo boom >&2; exit 3"]).expect_err("must fail");
        let Error::Command {
            command,
            status,
            stderr,
        } = &err
        else {
            panic!("wrong variant: {err:?}");
        };
        assert_eq!(command, "sh -c 'echo boom >&2; exit 3'");
        assert!(status.contains('3'), "{status}");
        assert_eq!(stderr, "boom");
        assert!(err.to_string().contains("boom"));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = checked("skiff-no-such-program", ["x"]).expect_err("must fail");
        assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn successful_command_returns_stdout() {
        assert_eq!(checked("sh", ["-c", "printf ok"]).expect("sh runs"), "ok");
    }
}

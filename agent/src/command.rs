//! Running external programs (`ip`, `iptables`, `unshare`) with errors that
//! name the command line and carry its stderr.
//!
//! The agent drives iproute2 and iptables through their command-line tools
//! rather than netlink: pod setup is a handful of one-shot operations per
//! pod, the tools exist wherever the agent runs, their errors are readable,
//! and a failing command line can be pasted into a shell to reproduce.
//! Children inherit the calling thread's network namespace, which is what
//! lets a whole agent run inside a test node's namespace.

use std::ffi::OsStr;
use std::process::Output;

use crate::error::{AgentError, Result};

/// Renders a command line for messages; arguments with spaces or quotes
/// are single-quoted so the line can be pasted into a shell.
pub(crate) fn render<I, S>(program: &str, args: I) -> String
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

/// Runs `program args` to completion; returns its output whatever the exit
/// status. Fails only if it could not be started.
pub(crate) async fn output<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let line = render(program, args);
    tracing::trace!(command = %line, "run");
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| AgentError::Spawn {
            command: line,
            source,
        })
}

/// Runs `program args` and returns stdout; a non-zero exit is
/// [`AgentError::Command`].
pub(crate) async fn checked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = output(program, args).await?;
    into_checked(program, args, out)
}

/// The blocking twin of [`checked`], for cleanup paths that run without a
/// runtime.
pub(crate) fn checked_blocking<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let line = render(program, args);
    tracing::trace!(command = %line, "run");
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| AgentError::Spawn {
            command: line,
            source,
        })?;
    into_checked(program, args, out)
}

fn into_checked<S: AsRef<OsStr>>(program: &str, args: &[S], out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(AgentError::Command {
            command: render(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_plain_and_quoted_arguments() {
        assert_eq!(render("ip", ["link", "show"]), "ip link show");
        assert_eq!(
            render("sh", ["-c", "echo 'a' b", ""]),
            r"sh -c 'echo '\''a'\'' b' ''"
        );
    }

    #[tokio::test]
    async fn failing_command_names_command_and_stderr() {
        let err = checked("sh", &["-c", "echo boom >&2; exit 3"])
            .await
            .expect_err("exit 3 must fail");
        match err {
            AgentError::Command {
                command, stderr, ..
            } => {
                assert_eq!(command, "sh -c 'echo boom >&2; exit 3'");
                assert_eq!(stderr, "boom");
            }
            other => panic!("wrong error {other:?}"),
        }
        assert_eq!(checked("sh", &["-c", "printf ok"]).await.expect("ok"), "ok");
        assert!(matches!(
            checked_blocking("skiff-no-such-program", &["x"]),
            Err(AgentError::Spawn { .. })
        ));
    }
}

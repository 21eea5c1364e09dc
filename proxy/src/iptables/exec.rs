//! Running the iptables tools: the only part of the iptables dataplane
//! that touches the system, behind the [`Executor`] trait so everything
//! above it can be tested without root.

use std::fmt;
use std::io::{self, Write as _};
use std::process::{Command, Output, Stdio};

use super::conntrack::StaleFlow;
use super::render::{JumpRule, Table};

/// Which kernel interface the iptables tools drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// x_tables (`iptables-legacy`).
    Legacy,
    /// nf_tables through the iptables compatibility layer (`iptables-nft`).
    Nft,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nf_tables",
        })
    }
}

/// Reads the backend from `iptables --version` output, e.g.
/// `iptables v1.8.9 (nf_tables)` or `iptables v1.8.9 (legacy)`. Versions
/// before 1.8 print no backend and are always legacy.
pub fn parse_backend(version_output: &str) -> Option<Backend> {
    let line = version_output.lines().next()?.trim();
    if !line.starts_with("iptables") {
        return None;
    }
    if line.contains("(nf_tables)") {
        Some(Backend::Nft)
    } else if line.contains("(legacy)") || !line.contains('(') {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// Failure to run one of the tools.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started (missing, not executable).
    #[error("cannot start {program}")]
    Spawn {
        /// Program (with its `ip netns exec` prefix, if any).
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Feeding the restore payload or collecting output failed.
    #[error("talking to {program}")]
    Io {
        /// Program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The program ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status as printed by the OS.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// `iptables --version` printed something we cannot read.
    #[error("cannot tell the iptables backend from {output:?}")]
    UnknownBackend {
        /// What it printed.
        output: String,
    },
}

/// What the iptables dataplane needs from the system.
pub trait Executor: Send {
    /// Applies a payload with `iptables-restore --noflush`.
    fn restore(&mut self, payload: &str) -> Result<(), ExecError>;
    /// `iptables-save -t <table>` output.
    fn save(&mut self, table: Table) -> Result<String, ExecError>;
    /// Whether the jump rule is installed (`iptables -C`).
    fn jump_exists(&mut self, jump: &JumpRule) -> Result<bool, ExecError>;
    /// Inserts the jump rule first in its chain (`iptables -I`).
    fn insert_jump(&mut self, jump: &JumpRule) -> Result<(), ExecError>;
    /// Deletes one rule from a built-in chain (`iptables -D chain <spec>`).
    fn delete_rule(&mut self, table: Table, chain: &str, spec: &[String]) -> Result<(), ExecError>;
    /// Deletes matching conntrack entries; `Ok(None)` when the conntrack
    /// tool is not installed (the caller warns), else how many went.
    fn delete_conntrack(&mut self, flow: &StaleFlow) -> Result<Option<u64>, ExecError>;
    /// Which backend the iptables binaries use.
    fn backend(&mut self) -> Result<Backend, ExecError>;
}

/// Runs the real binaries, optionally inside a named network namespace
/// (`ip netns exec NAME ...`), optionally pinned to one backend
/// (`iptables-legacy*` / `iptables-nft*` instead of plain `iptables*`).
#[derive(Debug, Clone, Default)]
pub struct CommandExecutor {
    netns: Option<String>,
    pinned: Option<Backend>,
    /// Looked up once: `ip netns exec` would hide a missing program
    /// behind its own exit status.
    conntrack_installed: Option<bool>,
}

impl CommandExecutor {
    /// Plain `iptables*` tools in this process's network namespace.
    pub fn new() -> CommandExecutor {
        CommandExecutor::default()
    }

    /// Runs every command inside the named network namespace.
    pub fn in_netns(mut self, name: impl Into<String>) -> CommandExecutor {
        self.netns = Some(name.into());
        self
    }

    /// Uses the tools of one backend explicitly.
    pub fn with_backend(mut self, backend: Backend) -> CommandExecutor {
        self.pinned = Some(backend);
        self
    }

    /// The namespace commands run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn tool(&self, base: &str) -> String {
        // iptables-restore -> iptables-legacy-restore, iptables -> iptables-legacy
        match self.pinned {
            None => base.to_string(),
            Some(backend) => {
                let flavour = match backend {
                    Backend::Legacy => "legacy",
                    Backend::Nft => "nft",
                };
                match base.strip_prefix("iptables") {
                    Some(rest) => format!("iptables-{flavour}{rest}"),
                    None => base.to_string(),
                }
            }
        }
    }

    fn command(&self, program: &str, args: &[String]) -> (Command, String) {
        let mut words: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            words.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
        }
        words.push(program.to_string());
        words.extend(args.iter().cloned());
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        (command, words.join(" "))
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<Output, ExecError> {
        let (mut command, line) = self.command(program, args);
        tracing::trace!(command = %line, "exec");
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: line.clone(),
            source,
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe after writing closes it, ending the input.
            pipe.write_all(input.as_bytes())
                .map_err(|source| ExecError::Io {
                    program: line.clone(),
                    source,
                })?;
        }
        child.wait_with_output().map_err(|source| ExecError::Io {
            program: line,
            source,
        })
    }

    fn run_ok(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<Output, ExecError> {
        let output = self.run(program, args, stdin)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(failed(&self.command(program, args).1, &output))
        }
    }
}

/// Whether an executable of that name is in one of `$PATH`'s directories.
fn program_on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

fn failed(command: &str, output: &Output) -> ExecError {
    ExecError::Failed {
        command: command.to_string(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

fn jump_args(op: &str, jump: &JumpRule) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-w".into(),
        "-t".into(),
        jump.table.as_str().into(),
        op.into(),
        jump.chain.into(),
    ];
    args.extend(jump.spec.iter().map(|s| s.to_string()));
    args
}

/// Number from conntrack's "N flow entries have been deleted." message.
/// The tool exits 1 when nothing matched, so the count is how success is
/// told apart from failure.
fn deleted_count(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|line| line.contains("flow entries have been deleted"))
        .and_then(|line| line.split("):").nth(1).or(Some(line)))
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl Executor for CommandExecutor {
    fn restore(&mut self, payload: &str) -> Result<(), ExecError> {
        let args = ["--noflush", "--wait"].map(String::from);
        self.run_ok(&self.tool("iptables-restore"), &args, Some(payload))
            .map(drop)
    }

    fn save(&mut self, table: Table) -> Result<String, ExecError> {
        let args = ["-t".to_string(), table.as_str().to_string()];
        let output = self.run_ok(&self.tool("iptables-save"), &args, None)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn jump_exists(&mut self, jump: &JumpRule) -> Result<bool, ExecError> {
        let program = self.tool("iptables");
        let args = jump_args("-C", jump);
        let output = self.run(&program, &args, None)?;
        // -C: 0 = present, 1 = absent, anything else = could not check.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(&self.command(&program, &args).1, &output)),
        }
    }

    fn insert_jump(&mut self, jump: &JumpRule) -> Result<(), ExecError> {
        self.run_ok(&self.tool("iptables"), &jump_args("-I", jump), None)
            .map(drop)
    }

    fn delete_rule(&mut self, table: Table, chain: &str, spec: &[String]) -> Result<(), ExecError> {
        let mut args: Vec<String> = vec![
            "-w".into(),
            "-t".into(),
            table.as_str().into(),
            "-D".into(),
            chain.into(),
        ];
        args.extend(spec.iter().cloned());
        self.run_ok(&self.tool("iptables"), &args, None).map(drop)
    }

    fn delete_conntrack(&mut self, flow: &StaleFlow) -> Result<Option<u64>, ExecError> {
        let installed = *self
            .conntrack_installed
            .get_or_insert_with(|| program_on_path("conntrack"));
        if !installed {
            return Ok(None);
        }
        let args = flow.conntrack_args();
        let output = self.run("conntrack", &args, None)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        match (output.status.code(), deleted_count(&stderr)) {
            (Some(0), count) => Ok(Some(count.unwrap_or(0))),
            (Some(1), Some(0)) => Ok(Some(0)),
            _ => Err(failed(&self.command("conntrack", &args).1, &output)),
        }
    }

    fn backend(&mut self) -> Result<Backend, ExecError> {
        let output = self.run_ok(&self.tool("iptables"), &["--version".to_string()], None)?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        parse_backend(&text).ok_or(ExecError::UnknownBackend { output: text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_version_line() {
        assert_eq!(
            parse_backend("iptables v1.8.9 (nf_tables)\n"),
            Some(Backend::Nft)
        );
        assert_eq!(
            parse_backend("iptables v1.8.9 (legacy)\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(parse_backend("iptables v1.6.1\n"), Some(Backend::Legacy));
        assert_eq!(parse_backend("iptables v1.9 (something)\n"), None);
        assert_eq!(parse_backend("bash: iptables: not found"), None);
    }

    #[test]
    fn pinned_backend_picks_tool_names() {
        let nft = CommandExecutor::new().with_backend(Backend::Nft);
        assert_eq!(nft.tool("iptables-restore"), "iptables-nft-restore");
        assert_eq!(nft.tool("iptables"), "iptables-nft");
        let legacy = CommandExecutor::new().with_backend(Backend::Legacy);
        assert_eq!(legacy.tool("iptables-save"), "iptables-legacy-save");
        assert_eq!(
            CommandExecutor::new().tool("iptables-save"),
            "iptables-save"
        );
    }

    #[test]
    fn netns_prefixes_commands() {
        let exec = CommandExecutor::new().in_netns("skiff-t-1");
        let (_, line) = exec.command("iptables-restore", &["--noflush".to_string()]);
        assert_eq!(line, "ip netns exec skiff-t-1 iptables-restore --noflush");
        let (_, plain) = CommandExecutor::new().command("iptables-save", &[]);
        assert_eq!(plain, "iptables-save");
    }

    #[test]
    fn conntrack_count_parsing() {
        assert_eq!(
            deleted_count(
                "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"
            ),
            Some(0)
        );
        assert_eq!(
            deleted_count(
                "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"
            ),
            Some(3)
        );
        assert_eq!(deleted_count("conntrack v1.4.7: operation failed\n"), None);
    }
}

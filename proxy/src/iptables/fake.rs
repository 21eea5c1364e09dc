//! An in-memory stand-in for the iptables tools, strict enough to catch
//! payloads the real `iptables-restore` would reject (rules for undeclared
//! chains, jumps to missing chains, deleting a chain that is still in use
//! or not empty). Test-only.

use std::collections::BTreeSet;

use super::conntrack::StaleFlow;
use super::exec::{Backend, ExecError, Executor};
use super::render::{Chains, JumpRule, Table, Tables};

const BUILTIN: [(Table, &str); 7] = [
    (Table::Filter, "INPUT"),
    (Table::Filter, "FORWARD"),
    (Table::Filter, "OUTPUT"),
    (Table::Nat, "PREROUTING"),
    (Table::Nat, "INPUT"),
    (Table::Nat, "OUTPUT"),
    (Table::Nat, "POSTROUTING"),
];
const TARGETS: [&str; 7] = [
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "MARK",
    "MASQUERADE",
];

/// Simulated tables plus a record of what was asked.
#[derive(Debug, Clone)]
pub struct FakeIptables {
    pub tables: Tables,
    pub restores: Vec<String>,
    pub conntrack: Vec<StaleFlow>,
    pub fail_next_restore: bool,
}

impl FakeIptables {
    pub fn new() -> FakeIptables {
        let mut tables = Tables::default();
        for (table, chain) in BUILTIN {
            tables.get_mut(table).insert(chain.to_string(), Vec::new());
        }
        FakeIptables {
            tables,
            restores: Vec::new(),
            conntrack: Vec::new(),
            fail_next_restore: false,
        }
    }

    /// Only the chains Skiff owns.
    pub fn skiff_chains(&self) -> Tables {
        let mut out = Tables::default();
        for table in Table::ALL {
            for (name, lines) in self.tables.get(table) {
                if name.starts_with("SKIFF-") {
                    out.get_mut(table).insert(name.clone(), lines.clone());
                }
            }
        }
        out
    }

    fn is_builtin(table: Table, chain: &str) -> bool {
        BUILTIN.contains(&(table, chain))
    }

    fn apply(&mut self, payload: &str) -> Result<(), String> {
        let mut current: Option<(Table, Chains)> = None;
        for line in payload.lines() {
            if let Some(name) = line.strip_prefix('*') {
                let table = match name {
                    "nat" => Table::Nat,
                    "filter" => Table::Filter,
                    other => return Err(format!("unknown table {other}")),
                };
                current = Some((table, self.tables.get(table).clone()));
                continue;
            }
            let Some((table, chains)) = current.as_mut() else {
                return Err(format!("line outside a table: {line}"));
            };
            if line == "COMMIT" {
                for (name, lines) in chains.iter() {
                    for rule in lines {
                        let target = target_of(rule);
                        if !TARGETS.contains(&target) && !chains.contains_key(target) {
                            return Err(format!("{name}: jump to missing chain {target}"));
                        }
                    }
                }
                let (table, chains) = current.take().ok_or("no table")?;
                *self.tables.get_mut(table) = chains;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().ok_or("empty declaration")?;
                if Self::is_builtin(*table, name) {
                    return Err(format!("declaring built-in chain {name} would reset it"));
                }
                // Declaring an existing chain flushes it (noflush mode).
                chains.insert(name.to_string(), Vec::new());
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let name = rest.split_whitespace().next().ok_or("empty rule")?;
                chains
                    .get_mut(name)
                    .ok_or(format!("rule for undeclared chain {name}"))?
                    .push(line.to_string());
            } else if let Some(name) = line.strip_prefix("-X ") {
                match chains.get(name) {
                    None => return Err(format!("deleting missing chain {name}")),
                    Some(rules) if !rules.is_empty() => {
                        return Err(format!("deleting non-empty chain {name}"));
                    }
                    Some(_) => {}
                }
                if let Some(user) = chains
                    .iter()
                    .find(|(_, rules)| rules.iter().any(|r| target_of(r) == name))
                {
                    return Err(format!("deleting {name} still referenced from {}", user.0));
                }
                chains.remove(name);
            } else if !line.is_empty() {
                return Err(format!("unexpected line {line}"));
            }
        }
        if current.is_some() {
            return Err("missing COMMIT".into());
        }
        Ok(())
    }
}

fn target_of(rule: &str) -> &str {
    rule.split(" -j ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_default()
}

fn spec_line(chain: &str, spec: &[impl AsRef<str>]) -> String {
    let words: Vec<String> = spec
        .iter()
        .map(|w| {
            let w = w.as_ref();
            if w.contains(' ') {
                format!("\"{w}\"")
            } else {
                w.to_string()
            }
        })
        .collect();
    format!("-A {chain} {}", words.join(" "))
}

fn fail(what: &str, why: String) -> ExecError {
    ExecError::Failed {
        command: what.to_string(),
        status: "exit status: 1".into(),
        stderr: why,
    }
}

impl Executor for FakeIptables {
    fn restore(&mut self, payload: &str) -> Result<(), ExecError> {
        self.restores.push(payload.to_string());
        if std::mem::take(&mut self.fail_next_restore) {
            return Err(fail("iptables-restore", "injected failure".into()));
        }
        self.apply(payload).map_err(|why| {
            fail(
                "iptables-restore",
                format!("{why}\n--- payload:\n{payload}"),
            )
        })
    }

    fn save(&mut self, table: Table) -> Result<String, ExecError> {
        let mut out = format!("# Generated by fake\n*{}\n", table.as_str());
        let chains = self.tables.get(table);
        for name in chains.keys() {
            let policy = if Self::is_builtin(table, name) {
                "ACCEPT"
            } else {
                "-"
            };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for lines in chains.values() {
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }

    fn jump_exists(&mut self, jump: &JumpRule) -> Result<bool, ExecError> {
        let line = spec_line(jump.chain, &jump.spec);
        Ok(self.tables.get(jump.table)[jump.chain].contains(&line))
    }

    fn insert_jump(&mut self, jump: &JumpRule) -> Result<(), ExecError> {
        let target = jump.spec.last().copied().unwrap_or_default();
        if !self.tables.get(jump.table).contains_key(target) {
            return Err(fail(
                "iptables -I",
                format!("chain {target} does not exist"),
            ));
        }
        let line = spec_line(jump.chain, &jump.spec);
        let chain = self
            .tables
            .get_mut(jump.table)
            .get_mut(jump.chain)
            .ok_or_else(|| fail("iptables -I", "no such built-in chain".into()))?;
        chain.insert(0, line);
        Ok(())
    }

    fn delete_rule(&mut self, table: Table, chain: &str, spec: &[String]) -> Result<(), ExecError> {
        let line = spec_line(chain, spec);
        let rules = self
            .tables
            .get_mut(table)
            .get_mut(chain)
            .ok_or_else(|| fail("iptables -D", format!("no chain {chain}")))?;
        let index = rules
            .iter()
            .position(|r| *r == line)
            .ok_or_else(|| fail("iptables -D", format!("no rule {line}")))?;
        rules.remove(index);
        Ok(())
    }

    fn delete_conntrack(&mut self, flow: &StaleFlow) -> Result<Option<u64>, ExecError> {
        self.conntrack.push(flow.clone());
        Ok(Some(1))
    }

    fn backend(&mut self) -> Result<Backend, ExecError> {
        Ok(Backend::Nft)
    }
}

/// Every chain named in any rule of a payload's declarations.
pub fn declared_chains(payload: &str) -> BTreeSet<String> {
    payload
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|d| d.split_whitespace().next())
        .map(String::from)
        .collect()
}

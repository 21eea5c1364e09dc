//! The iptables fallback dataplane: kube-proxy's iptables semantics under
//! Skiff's own `SKIFF-` chains, applied with `iptables-restore --noflush`.
//!
//! - [`render`] (pure) turns a [`DesiredState`] into chains and payloads;
//!   its module docs describe the rule layout.
//! - [`save`] (pure) reads `iptables-save` output back.
//! - [`conntrack`] (pure) decides which UDP flows go stale.
//! - [`exec`] runs the tools, optionally inside a network namespace.
//!
//! [`IptablesDataplane`] ties them together. Its first sync (and any sync
//! after a failure or a change of node settings) is *full*: it reads the
//! installed Skiff chains, rewrites only the ones that differ from the
//! rendering, deletes strays and ensures the jump rules. Later syncs are
//! *incremental*: only the chains of services that changed are written,
//! and the shared dispatch chains only when their content changes. This
//! matters most with the nft backend, where restoring a whole large table
//! is super-linear (see FIELD-NOTES).

pub mod conntrack;
pub mod exec;
pub mod render;
pub mod save;

#[cfg(test)]
mod fake;

use std::time::Instant;

pub use exec::{Backend, CommandExecutor, ExecError, Executor};
pub use render::{Drift, Ruleset, Table, Tables};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{DesiredState, ServicePortKey, diff};
use conntrack::StaleFlow;

/// What the dataplane last applied successfully.
#[derive(Debug, Clone)]
struct Applied {
    state: DesiredState,
    rules: Ruleset,
}

/// iptables implementation of [`Dataplane`].
#[derive(Debug)]
pub struct IptablesDataplane<E = CommandExecutor> {
    exec: E,
    applied: Option<Applied>,
    backend: Option<Backend>,
    warned_no_conntrack: bool,
}

impl IptablesDataplane<CommandExecutor> {
    /// Programs this process's network namespace with the default
    /// `iptables*` tools.
    pub fn new() -> IptablesDataplane<CommandExecutor> {
        IptablesDataplane::with_executor(CommandExecutor::new())
    }
}

impl Default for IptablesDataplane<CommandExecutor> {
    fn default() -> Self {
        IptablesDataplane::new()
    }
}

fn iptables_err(context: &'static str) -> impl FnOnce(ExecError) -> DataplaneError {
    move |source| DataplaneError::Iptables { context, source }
}

impl<E: Executor> IptablesDataplane<E> {
    /// Uses the given executor (a namespaced [`CommandExecutor`], or a
    /// fake in tests).
    pub fn with_executor(exec: E) -> IptablesDataplane<E> {
        IptablesDataplane {
            exec,
            applied: None,
            backend: None,
            warned_no_conntrack: false,
        }
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.exec
    }

    /// Detects which backend the iptables tools drive (and remembers it).
    pub fn backend(&mut self) -> Result<Backend, DataplaneError> {
        if let Some(backend) = self.backend {
            return Ok(backend);
        }
        let backend = self
            .exec
            .backend()
            .map_err(iptables_err("detecting the iptables backend"))?;
        tracing::info!(backend = %backend, "iptables backend");
        self.backend = Some(backend);
        Ok(backend)
    }

    /// The rules applied last, if any sync succeeded since the last
    /// failure or cleanup.
    pub fn applied_rules(&self) -> Option<&Ruleset> {
        self.applied.as_ref().map(|a| &a.rules)
    }

    /// Reads the installed chains of both tables.
    pub fn installed(&mut self) -> Result<Tables, DataplaneError> {
        let mut tables = Tables::default();
        for table in Table::ALL {
            let text = self
                .exec
                .save(table)
                .map_err(iptables_err("reading installed rules"))?;
            *tables.get_mut(table) = save::parse_save(&text, table);
        }
        Ok(tables)
    }

    /// How the installed Skiff chains differ from the last applied rules
    /// (everything counts as unexpected if nothing was applied).
    pub fn drift(&mut self) -> Result<Drift, DataplaneError> {
        let installed = self.installed()?;
        let empty = Ruleset::default();
        let rules = self.applied.as_ref().map_or(&empty, |a| &a.rules);
        let mut drift = rules.drift(&installed);
        if self.applied.is_none() {
            // With nothing applied, the static chains are not "missing".
            drift.missing.clear();
        }
        Ok(drift)
    }

    /// Compares everything installed with the last applied state and
    /// repairs any drift: rewrites chains that differ, deletes stray
    /// `SKIFF-` chains, re-inserts missing jump rules. Meant to run
    /// periodically; cheap when nothing drifted.
    pub fn full_resync(&mut self) -> Result<SyncReport, DataplaneError> {
        let start = Instant::now();
        let Some(applied) = self.applied.take() else {
            return Err(DataplaneError::NeverSynced {
                dataplane: "iptables",
            });
        };
        // On failure nothing is remembered, so the next sync is full too.
        self.full_sync(&applied.state, Some(&applied), start)
    }

    fn full_sync(
        &mut self,
        desired: &DesiredState,
        previous: Option<&Applied>,
        start: Instant,
    ) -> Result<SyncReport, DataplaneError> {
        if self.backend.is_none() {
            // Only informative; a strange version string must not stop
            // the proxy.
            if let Err(err) = self.backend() {
                tracing::warn!(error = %err, "cannot tell the iptables backend");
            }
        }
        let installed = self.installed()?;
        let rules = Ruleset::render(desired);
        let payload = rules.full_payload(Some(&installed));
        if !payload.is_empty() {
            for part in &payload.parts {
                self.exec
                    .restore(part)
                    .map_err(iptables_err("restoring all chains"))?;
            }
        }
        let jumps_added = self.ensure_jumps()?;

        let (services_changed, flows) = match previous {
            Some(previous) => {
                let changes = diff(&previous.state, desired);
                let flows = conntrack::stale_udp_flows(&previous.state, desired, changes.keys());
                (changes.len(), flows)
            }
            None => (desired.services.len(), Vec::new()),
        };
        let flows_flushed = self.flush_flows(&flows);
        self.applied = Some(Applied {
            state: desired.clone(),
            rules,
        });
        let report = SyncReport {
            services_changed,
            full: true,
            duration: start.elapsed(),
            objects_written: payload.chains_written + jumps_added,
            objects_removed: payload.chains_deleted,
            flows_flushed,
        };
        tracing::info!(
            services = desired.services.len(),
            services_changed,
            chains_written = payload.chains_written,
            chains_deleted = payload.chains_deleted,
            jumps_added,
            flows_flushed,
            duration_ms = report.duration.as_millis() as u64,
            "iptables full sync"
        );
        Ok(report)
    }

    /// Inserts missing jump rules from the built-in chains (check first,
    /// so running this again changes nothing). Returns how many it added.
    fn ensure_jumps(&mut self) -> Result<usize, DataplaneError> {
        let mut added = 0;
        for jump in render::jump_rules() {
            let present = self
                .exec
                .jump_exists(&jump)
                .map_err(iptables_err("checking a jump rule"))?;
            if !present {
                self.exec
                    .insert_jump(&jump)
                    .map_err(iptables_err("inserting a jump rule"))?;
                tracing::debug!(
                    table = jump.table.as_str(),
                    chain = jump.chain,
                    "jump rule inserted"
                );
                added += 1;
            }
        }
        Ok(added)
    }

    /// Deletes stale UDP flows; failures are logged, not fatal, because the
    /// rules are already in place and the flows will also time out.
    fn flush_flows(&mut self, flows: &[StaleFlow]) -> usize {
        let mut flushed = 0;
        for flow in flows {
            match self.exec.delete_conntrack(flow) {
                Ok(Some(count)) => {
                    flushed += usize::try_from(count).unwrap_or(usize::MAX);
                }
                Ok(None) => {
                    if !self.warned_no_conntrack {
                        tracing::warn!(
                            "conntrack tool not installed: stale UDP flows to removed endpoints stay until they time out"
                        );
                        self.warned_no_conntrack = true;
                    }
                    return flushed;
                }
                Err(err) => {
                    tracing::warn!(error = %err, orig_dst = ?flow.orig_dst, port = flow.orig_dst_port, "deleting stale UDP flows failed");
                }
            }
        }
        flushed
    }
}

impl<E: Executor> Dataplane for IptablesDataplane<E> {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        let start = Instant::now();
        let mut applied = match self.applied.take() {
            Some(applied) if applied.state.same_node_config(desired) => applied,
            // First sync, after a failure, or node settings changed.
            previous => return self.full_sync(desired, previous.as_ref(), start),
        };

        let changes = diff(&applied.state, desired);
        if changes.is_empty() {
            self.applied = Some(applied);
            return Ok(SyncReport {
                duration: start.elapsed(),
                ..SyncReport::default()
            });
        }
        let keys: Vec<&ServicePortKey> = changes.keys().into_iter().collect();
        let update = applied.rules.incremental(desired, keys.iter().copied());
        if !update.payload.is_empty() {
            // On failure `applied` is dropped: the next sync is full.
            for part in &update.payload.parts {
                self.exec
                    .restore(part)
                    .map_err(iptables_err("restoring changed chains"))?;
            }
        }
        let flows = conntrack::stale_udp_flows(&applied.state, desired, keys.iter().copied());
        let (written, deleted) = (update.payload.chains_written, update.payload.chains_deleted);
        applied.rules.commit(update);
        for key in &keys {
            match desired.services.get(*key) {
                Some(entry) => {
                    applied.state.services.insert((*key).clone(), entry.clone());
                }
                None => {
                    applied.state.services.remove(*key);
                }
            }
        }
        self.applied = Some(applied);
        let flows_flushed = self.flush_flows(&flows);
        let report = SyncReport {
            services_changed: changes.len(),
            full: false,
            duration: start.elapsed(),
            objects_written: written,
            objects_removed: deleted,
            flows_flushed,
        };
        tracing::debug!(
            services_changed = report.services_changed,
            chains_written = written,
            chains_deleted = deleted,
            flows_flushed,
            duration_ms = report.duration.as_millis() as u64,
            "iptables incremental sync"
        );
        Ok(report)
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.applied = None;
        let installed = self.installed()?;
        // Rules outside our chains that jump into them (our jump rules, or
        // any left behind) must go before the chains can be deleted.
        for table in Table::ALL {
            for (chain, lines) in installed.get(table) {
                if chain.starts_with(render::CHAIN_PREFIX) {
                    continue;
                }
                for line in lines {
                    let Some((_, spec)) = save::rule_args(line) else {
                        continue;
                    };
                    let targets_ours = spec
                        .windows(2)
                        .any(|w| w[0] == "-j" && w[1].starts_with(render::CHAIN_PREFIX));
                    if targets_ours {
                        self.exec
                            .delete_rule(table, chain, &spec)
                            .map_err(iptables_err("deleting a jump rule"))?;
                    }
                }
            }
        }
        let payload = render::cleanup_payload(&installed);
        if !payload.is_empty() {
            self.exec
                .restore(&payload.text)
                .map_err(iptables_err("deleting Skiff chains"))?;
        }
        tracing::info!(
            chains_deleted = payload.chains_deleted,
            "iptables rules removed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeIptables, declared_chains};
    use super::*;
    use crate::model::{Endpoint, Protocol, ServiceEntry};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn endpoint(last: u8, local: bool, ready: bool) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            node_name: None,
            is_local: local,
            ready,
            serving: true,
            terminating: !ready,
        }
    }

    fn entry(name: &str, protocol: Protocol, eps: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry {
            key: ServicePortKey::new("default", name, "p"),
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 1)),
            port: 80,
            protocol,
            node_port: None,
            external_local: false,
            internal_local: false,
            affinity_timeout_secs: None,
            endpoints: eps,
        }
    }

    fn state(entries: Vec<ServiceEntry>) -> DesiredState {
        DesiredState {
            services: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
            node_name: "n1".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
            cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
        }
    }

    fn jumps_installed(fake: &mut FakeIptables) -> bool {
        render::jump_rules()
            .iter()
            .all(|j| fake.jump_exists(j).expect("fake never fails"))
    }

    #[test]
    fn first_sync_is_full_then_incremental_then_noop() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        let s1 = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true)],
        )]);
        let r1 = dp.sync(&s1).expect("first sync");
        assert!(r1.full);
        assert_eq!(r1.services_changed, 1);
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s1).tables());
        let mut fake = dp.executor().clone();
        assert!(jumps_installed(&mut fake));
        assert!(dp.drift().expect("drift").is_empty());

        let s2 = state(vec![
            entry("a", Protocol::Tcp, vec![endpoint(1, false, true)]),
            entry("b", Protocol::Tcp, vec![endpoint(2, false, true)]),
        ]);
        let r2 = dp.sync(&s2).expect("second sync");
        assert!(!r2.full);
        assert_eq!(r2.services_changed, 1);
        let last = dp.executor().restores.last().expect("a restore").clone();
        // b's chains and the dispatch chain are written; a's are not.
        let a_svc = render::svc_chain(s1.services.values().next().expect("a"));
        assert!(!declared_chains(&last).contains(&a_svc), "{last}");
        assert!(declared_chains(&last).contains("SKIFF-SERVICES"), "{last}");
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s2).tables());

        let restores = dp.executor().restores.len();
        let r3 = dp.sync(&s2).expect("no-op sync");
        assert_eq!((r3.services_changed, r3.objects_written), (0, 0));
        assert_eq!(
            dp.executor().restores.len(),
            restores,
            "no-op sync must not run restore"
        );
    }

    /// `n` services of 10 endpoints each, endpoint addresses offset by
    /// `base` (so two states share no endpoint chains).
    fn big_state(n: usize, base: u8) -> DesiredState {
        state(
            (0..n)
                .map(|i| {
                    let eps = (0..10).map(|e| endpoint(base + e, false, true)).collect();
                    let mut svc = entry(&format!("s{i}"), Protocol::Tcp, eps);
                    svc.node_port = Some(30000 + u16::try_from(i).expect("small"));
                    svc
                })
                .collect(),
        )
    }

    #[test]
    fn big_payloads_are_split_in_a_safe_order() {
        // 12 chains per service: 220 services are over the split limit.
        let s1 = big_state(220, 1);
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        dp.sync(&s1).expect("first sync");
        let first = dp.executor().restores.len();
        assert!(first > 1, "a first sync of 220 services must be split");
        for part in &dp.executor().restores {
            let chains = declared_chains(part).len();
            assert!(chains <= render::MAX_CHAINS_PER_RESTORE, "{chains} chains");
        }
        // The strict fake rejected every part that jumped to a chain not
        // yet written; the end result is the whole ruleset.
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s1).tables());

        // Every endpoint replaced: thousands of chains written and deleted,
        // deletions only once nothing jumps to them any more.
        let s2 = big_state(220, 101);
        let report = dp.sync(&s2).expect("second sync");
        assert!(!report.full);
        assert!(dp.executor().restores.len() > first + 1);
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s2).tables());
        assert!(dp.drift().expect("drift").is_empty());

        // And back to a few services.
        let s3 = big_state(3, 1);
        dp.sync(&s3).expect("third sync");
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s3).tables());
    }

    #[test]
    fn failed_restore_forces_a_full_sync() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        let s1 = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true)],
        )]);
        dp.sync(&s1).expect("first sync");
        let s2 = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(2, false, true)],
        )]);
        dp.exec.fail_next_restore = true;
        assert!(matches!(dp.sync(&s2), Err(DataplaneError::Iptables { .. })));
        let report = dp.sync(&s2).expect("retry");
        assert!(
            report.full,
            "after a failure the dataplane must not trust its memory"
        );
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s2).tables());
    }

    #[test]
    fn node_config_change_forces_full_sync() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        let s1 = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true)],
        )]);
        dp.sync(&s1).expect("first sync");
        let mut s2 = s1.clone();
        s2.cluster_cidr = None;
        let report = dp.sync(&s2).expect("second sync");
        assert!(report.full);
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s2).tables());
    }

    #[test]
    fn full_resync_repairs_drift() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        let s = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true), endpoint(2, false, true)],
        )]);
        assert!(matches!(
            dp.full_resync(),
            Err(DataplaneError::NeverSynced { .. })
        ));
        dp.sync(&s).expect("sync");
        let svc = render::svc_chain(&s.services.values().next().expect("a").clone());
        dp.exec.tables.nat.insert(svc.clone(), Vec::new());
        dp.exec
            .tables
            .nat
            .insert("SKIFF-SEP-STRAY".into(), Vec::new());
        dp.exec
            .tables
            .nat
            .get_mut("OUTPUT")
            .expect("OUTPUT")
            .clear();
        let drift = dp.drift().expect("drift");
        assert_eq!(drift.differing, [(Table::Nat, svc.clone())]);
        assert_eq!(
            drift.unexpected,
            [(Table::Nat, "SKIFF-SEP-STRAY".to_string())]
        );

        let before = dp.executor().restores.len();
        let report = dp.full_resync().expect("resync");
        assert!(report.full);
        assert_eq!(
            (report.objects_written, report.objects_removed),
            (2, 1),
            "one chain + one jump"
        );
        let payload = &dp.executor().restores[before];
        assert_eq!(
            declared_chains(payload),
            [svc, "SKIFF-SEP-STRAY".to_string()].into()
        );
        assert!(dp.drift().expect("drift").is_empty());
        let mut fake = dp.executor().clone();
        assert!(jumps_installed(&mut fake));

        // Nothing drifted: nothing written.
        let before = dp.executor().restores.len();
        let report = dp.full_resync().expect("resync");
        assert_eq!((report.objects_written, report.objects_removed), (0, 0));
        assert_eq!(dp.executor().restores.len(), before);
    }

    #[test]
    fn restart_adopts_installed_rules_without_rewriting() {
        let s = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true)],
        )]);
        let mut first = IptablesDataplane::with_executor(FakeIptables::new());
        first.sync(&s).expect("sync");
        // A new process finds the rules of the previous one.
        let mut second = IptablesDataplane::with_executor(first.executor().clone());
        let before = second.executor().restores.len();
        let report = second.sync(&s).expect("sync after restart");
        assert!(report.full);
        assert_eq!(report.objects_written, 0);
        assert_eq!(second.executor().restores.len(), before);
    }

    #[test]
    fn cleanup_removes_chains_and_jumps_only() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        dp.exec
            .tables
            .nat
            .get_mut("PREROUTING")
            .expect("PREROUTING")
            .push("-A PREROUTING -p tcp -j ACCEPT".to_string());
        let s = state(vec![entry(
            "a",
            Protocol::Tcp,
            vec![endpoint(1, false, true)],
        )]);
        dp.sync(&s).expect("sync");
        dp.cleanup().expect("cleanup");
        assert_eq!(dp.executor().skiff_chains(), Tables::default());
        for table in Table::ALL {
            for lines in dp.executor().tables.get(table).values() {
                assert!(lines.iter().all(|l| !l.contains("SKIFF-")), "{lines:?}");
            }
        }
        assert_eq!(
            dp.executor().tables.nat["PREROUTING"],
            ["-A PREROUTING -p tcp -j ACCEPT"]
        );
        // And it comes back.
        assert!(dp.sync(&s).expect("sync again").full);
        assert_eq!(dp.executor().skiff_chains(), Ruleset::render(&s).tables());
    }

    #[test]
    fn udp_endpoint_removal_flushes_conntrack() {
        let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
        let both = state(vec![entry(
            "dns",
            Protocol::Udp,
            vec![endpoint(1, false, true), endpoint(2, false, true)],
        )]);
        dp.sync(&both).expect("sync");
        assert!(dp.executor().conntrack.is_empty());
        let one = state(vec![entry(
            "dns",
            Protocol::Udp,
            vec![endpoint(2, false, true)],
        )]);
        let report = dp.sync(&one).expect("sync");
        assert_eq!(report.flows_flushed, 1);
        assert_eq!(
            dp.executor().conntrack,
            [conntrack::StaleFlow {
                orig_dst: Some(Ipv4Addr::new(10, 96, 0, 1)),
                orig_dst_port: 80,
                endpoint: Some((Ipv4Addr::new(10, 244, 0, 1), 8080)),
            }]
        );
    }

    fn arb_entry(name: &'static str) -> impl Strategy<Value = Option<ServiceEntry>> {
        let eps = proptest::collection::btree_map(1u8..6, (any::<bool>(), 0u8..3), 0..5);
        (
            any::<bool>(),
            eps,
            prop_oneof![Just(None), Just(Some(30000u16)), Just(Some(30001u16))],
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(None), Just(Some(60u32))],
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
            1u8..3,
        )
            .prop_map(
                move |(
                    present,
                    eps,
                    node_port,
                    external_local,
                    internal_local,
                    affinity,
                    protocol,
                    ip,
                )| {
                    present.then(|| {
                        let endpoints = eps
                            .into_iter()
                            .map(|(last, (local, condition))| {
                                let mut ep = endpoint(last, local, condition == 0);
                                ep.serving = condition != 2;
                                ep
                            })
                            .collect();
                        let mut e = entry(name, protocol, endpoints);
                        e.cluster_ip = Some(Ipv4Addr::new(10, 96, 0, ip));
                        e.node_port = node_port;
                        e.external_local = external_local;
                        e.internal_local = internal_local;
                        e.affinity_timeout_secs = affinity;
                        e
                    })
                },
            )
    }

    fn arb_state() -> impl Strategy<Value = DesiredState> {
        (arb_entry("a"), arb_entry("b"), arb_entry("c"))
            .prop_map(|(a, b, c)| state([a, b, c].into_iter().flatten().collect()))
    }

    proptest! {
        /// Any sequence of incremental syncs leaves exactly the rendering
        /// of the last state installed, every payload is accepted by the
        /// strict fake, and payloads never touch unchanged services.
        #[test]
        fn incremental_syncs_converge(states in proptest::collection::vec(arb_state(), 1..8)) {
            let mut dp = IptablesDataplane::with_executor(FakeIptables::new());
            let mut previous: Option<DesiredState> = None;
            for s in &states {
                let before = dp.executor().restores.len();
                let report = dp.sync(s).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(report.full, previous.is_none());
                prop_assert_eq!(dp.executor().skiff_chains(), Ruleset::render(s).tables());
                if let Some(prev) = &previous {
                    let changed = diff(prev, s);
                    for restore in &dp.executor().restores[before..] {
                        for (key, entry) in &s.services {
                            if !changed.keys().contains(key) {
                                let svc = render::svc_chain(entry);
                                prop_assert!(!declared_chains(restore).contains(&svc),
                                    "unchanged {} rewritten:\n{}", key, restore);
                            }
                        }
                    }
                }
                previous = Some(s.clone());
            }
        }
    }
}

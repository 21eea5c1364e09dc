//! Pure rendering of a [`DesiredState`] into iptables chains and
//! `iptables-restore --noflush` payloads, with kube-proxy's layout under
//! Skiff's own `SKIFF-` prefix.
//!
//! Layout (nat table):
//!
//! ```text
//! PREROUTING, OUTPUT ─► SKIFF-SERVICES ─┬─ -d clusterIP --dport p ─► SKIFF-SVC-h (or SKIFF-SVL-h)
//!                                       └─ (last) addrtype LOCAL ─► SKIFF-NODEPORTS ─ --dport np ─► SKIFF-EXT-h
//! SKIFF-EXT-h  Cluster policy: mark masquerade, ─► SKIFF-SVC-h
//!              Local policy:   pod/LOCAL sources short-circuit to SKIFF-SVC-h, the rest ─► SKIFF-SVL-h
//! SKIFF-SVC-h / SKIFF-SVL-h   affinity (recent --rcheck), then nth round-robin ─► SKIFF-SEP-e
//! SKIFF-SEP-e  hairpin mark, [recent --set], DNAT --to-destination ip:port
//! POSTROUTING ─► SKIFF-POSTROUTING: MASQUERADE packets carrying mark 0x4000, clear the mark
//! ```
//!
//! In the filter table `SKIFF-SERVICES` (from FORWARD and OUTPUT) and
//! `SKIFF-EXTERNAL` (from INPUT and FORWARD) REJECT traffic to services
//! without endpoints, so clients see "connection refused" at once, and DROP
//! traffic a Local policy cannot serve on this node; `SKIFF-FORWARD`
//! accepts forwarded service traffic even under a DROP policy.
//!
//! Every rule is written in the exact form `iptables-save` prints it
//! (legacy and nft backends alike), so installed chains can be compared
//! with rendered ones line by line to find drift.
//!
//! Round-robin: for `n` endpoints, rule `i` (0-based) of a service chain
//! matches `-m statistic --mode nth --every (n-i) --packet 0` and the last
//! rule matches unconditionally. Each rule has its own counter and sees
//! only the new connections the rules before it passed on, so every block
//! of `n` consecutive new connections visits each endpoint exactly once
//! (rule 0 takes the n-th, rule 1 every (n-1)-th of the rest, ...). Counters
//! restart when a chain is rewritten; with the legacy backend every table
//! write restarts all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use data_encoding::BASE32;
use ipnetwork::Ipv4Network;
use sha2::{Digest, Sha256};

use crate::model::{DesiredState, Endpoint, ServiceEntry, ServicePortKey};

/// Prefix of every chain Skiff owns.
pub const CHAIN_PREFIX: &str = "SKIFF-";
/// Dispatch chain (nat: ClusterIP capture; filter: REJECT/DROP of
/// ClusterIPs without usable endpoints).
pub const SERVICES_CHAIN: &str = "SKIFF-SERVICES";
/// NodePort dispatch chain (nat).
pub const NODEPORTS_CHAIN: &str = "SKIFF-NODEPORTS";
/// Chain that marks a packet for masquerading (nat).
pub const MARK_MASQ_CHAIN: &str = "SKIFF-MARK-MASQ";
/// Chain that masquerades marked packets (nat, from POSTROUTING).
pub const POSTROUTING_CHAIN: &str = "SKIFF-POSTROUTING";
/// REJECT/DROP of NodePorts without usable endpoints (filter).
pub const EXTERNAL_CHAIN: &str = "SKIFF-EXTERNAL";
/// Accepts forwarded service traffic (filter, from FORWARD).
pub const FORWARD_CHAIN: &str = "SKIFF-FORWARD";
/// Packet mark bit that requests masquerading (kube-proxy's default).
pub const MASQ_MARK: &str = "0x4000";

/// An iptables table Skiff writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// The `filter` table.
    Filter,
    /// The `nat` table.
    Nat,
}

impl Table {
    /// Name as iptables spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }

    /// Both tables, in the order payloads write them.
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];
}

/// Chains by name, each holding its complete rule lines (`-A CHAIN ...`) in
/// order.
pub type Chains = BTreeMap<String, Vec<String>>;

/// The chains of both tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// filter table chains.
    pub filter: Chains,
    /// nat table chains.
    pub nat: Chains,
}

impl Tables {
    /// Chains of one table.
    pub fn get(&self, table: Table) -> &Chains {
        match table {
            Table::Filter => &self.filter,
            Table::Nat => &self.nat,
        }
    }

    /// Chains of one table, mutably.
    pub fn get_mut(&mut self, table: Table) -> &mut Chains {
        match table {
            Table::Filter => &mut self.filter,
            Table::Nat => &mut self.nat,
        }
    }
}

/// A rule in a built-in chain that hands traffic to a Skiff chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    /// Table of both chains.
    pub table: Table,
    /// Built-in chain the rule sits in (inserted first).
    pub chain: &'static str,
    /// Rule specification as separate arguments (for `iptables -C/-I/-D`).
    pub spec: Vec<&'static str>,
}

/// The jump rules from built-in chains, in the order they are ensured.
pub fn jump_rules() -> Vec<JumpRule> {
    const PORTALS: &str = "skiff service portals";
    const EXTERNAL: &str = "skiff externally-visible service portals";
    let new_conns = ["-m", "conntrack", "--ctstate", "NEW"];
    let with_new = |comment: &'static str, target: &'static str| {
        let mut spec = new_conns.to_vec();
        spec.extend(["-m", "comment", "--comment", comment, "-j", target]);
        spec
    };
    let plain = |comment: &'static str, target: &'static str| {
        vec!["-m", "comment", "--comment", comment, "-j", target]
    };
    vec![
        JumpRule {
            table: Table::Nat,
            chain: "PREROUTING",
            spec: plain(PORTALS, SERVICES_CHAIN),
        },
        JumpRule {
            table: Table::Nat,
            chain: "OUTPUT",
            spec: plain(PORTALS, SERVICES_CHAIN),
        },
        JumpRule {
            table: Table::Nat,
            chain: "POSTROUTING",
            spec: plain("skiff postrouting rules", POSTROUTING_CHAIN),
        },
        JumpRule {
            table: Table::Filter,
            chain: "INPUT",
            spec: with_new(EXTERNAL, EXTERNAL_CHAIN),
        },
        JumpRule {
            table: Table::Filter,
            chain: "FORWARD",
            spec: with_new(PORTALS, SERVICES_CHAIN),
        },
        JumpRule {
            table: Table::Filter,
            chain: "FORWARD",
            spec: with_new(EXTERNAL, EXTERNAL_CHAIN),
        },
        JumpRule {
            table: Table::Filter,
            chain: "FORWARD",
            spec: plain("skiff forwarding rules", FORWARD_CHAIN),
        },
        JumpRule {
            table: Table::Filter,
            chain: "OUTPUT",
            spec: with_new(PORTALS, SERVICES_CHAIN),
        },
    ]
}

/// kube-proxy's chain hash: base32(sha256(input)), first 16 characters.
fn chain_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut encoded = BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

fn service_hash(entry: &ServiceEntry) -> String {
    chain_hash(&format!("{}{}", entry.key, entry.protocol))
}

/// Name of the cluster-policy chain of a service port.
pub fn svc_chain(entry: &ServiceEntry) -> String {
    format!("SKIFF-SVC-{}", service_hash(entry))
}

/// Name of the local-policy chain of a service port.
pub fn svl_chain(entry: &ServiceEntry) -> String {
    format!("SKIFF-SVL-{}", service_hash(entry))
}

/// Name of the external-traffic (NodePort) chain of a service port.
pub fn ext_chain(entry: &ServiceEntry) -> String {
    format!("SKIFF-EXT-{}", service_hash(entry))
}

/// Name of the chain that DNATs to one endpoint of a service port.
pub fn sep_chain(entry: &ServiceEntry, endpoint: &Endpoint) -> String {
    format!(
        "SKIFF-SEP-{}",
        chain_hash(&format!(
            "{}{}{}",
            entry.key,
            entry.protocol,
            endpoint.addr_port()
        ))
    )
}

/// The rules one service port adds to the shared dispatch chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchRules {
    /// nat `SKIFF-SERVICES` (ClusterIP capture).
    pub nat_services: Vec<String>,
    /// nat `SKIFF-NODEPORTS`.
    pub nat_nodeports: Vec<String>,
    /// filter `SKIFF-SERVICES` (ClusterIP REJECT/DROP).
    pub filter_services: Vec<String>,
    /// filter `SKIFF-EXTERNAL` (NodePort REJECT/DROP).
    pub filter_external: Vec<String>,
}

/// Everything one service port renders to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// nat chains the service owns (`SVC`, `SVL`, `EXT`, `SEP`).
    pub nat_chains: Chains,
    /// Its rules in the shared dispatch chains.
    pub dispatch: DispatchRules,
}

/// The four shared dispatch chains, identifying which part of
/// [`DispatchRules`] feeds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    NatServices,
    NatNodeports,
    FilterServices,
    FilterExternal,
}

impl Dispatch {
    const ALL: [Dispatch; 4] = [
        Dispatch::NatServices,
        Dispatch::NatNodeports,
        Dispatch::FilterServices,
        Dispatch::FilterExternal,
    ];

    fn table(self) -> Table {
        match self {
            Dispatch::NatServices | Dispatch::NatNodeports => Table::Nat,
            Dispatch::FilterServices | Dispatch::FilterExternal => Table::Filter,
        }
    }

    fn chain(self) -> &'static str {
        match self {
            Dispatch::NatServices | Dispatch::FilterServices => SERVICES_CHAIN,
            Dispatch::NatNodeports => NODEPORTS_CHAIN,
            Dispatch::FilterExternal => EXTERNAL_CHAIN,
        }
    }

    fn part(self, rules: &DispatchRules) -> &[String] {
        match self {
            Dispatch::NatServices => &rules.nat_services,
            Dispatch::NatNodeports => &rules.nat_nodeports,
            Dispatch::FilterServices => &rules.filter_services,
            Dispatch::FilterExternal => &rules.filter_external,
        }
    }

    /// Rules that end the chain whatever the services are.
    fn trailer(self) -> Vec<String> {
        match self {
            // Last, so that ClusterIP rules win over a node address match.
            Dispatch::NatServices => vec![format!(
                "-A {SERVICES_CHAIN} -m comment --comment \"skiff service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j {NODEPORTS_CHAIN}"
            )],
            _ => Vec::new(),
        }
    }
}

/// Rules Skiff installs whatever the services are.
fn static_chains() -> Tables {
    let mut tables = Tables::default();
    tables.nat.insert(
        MARK_MASQ_CHAIN.to_string(),
        vec![format!(
            "-A {MARK_MASQ_CHAIN} -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}"
        )],
    );
    tables.nat.insert(
        POSTROUTING_CHAIN.to_string(),
        vec![
            format!("-A {POSTROUTING_CHAIN} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            // XOR clears the bit (only marked packets get here) so a packet
            // re-entering the stack is not masqueraded twice.
            format!("-A {POSTROUTING_CHAIN} -j MARK --set-xmark {MASQ_MARK}/0x0"),
            format!(
                "-A {POSTROUTING_CHAIN} -m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully"
            ),
        ],
    );
    tables.filter.insert(
        FORWARD_CHAIN.to_string(),
        vec![
            format!(
                "-A {FORWARD_CHAIN} -m comment --comment \"skiff forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
            ),
            format!(
                "-A {FORWARD_CHAIN} -m comment --comment \"skiff forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ),
        ],
    );
    tables
}

/// Renders one service port (pure; the heart of the layout).
pub fn render_service<'e>(
    entry: &'e ServiceEntry,
    cluster_cidr: Option<Ipv4Network>,
) -> ServiceRules {
    let key = &entry.key;
    let proto = entry.protocol.as_str();
    let svc = svc_chain(entry);
    let svl = svl_chain(entry);
    let ext = ext_chain(entry);

    let cluster_eps = entry.cluster_endpoints();
    let local_eps = entry.local_endpoints();
    let has_endpoints = !cluster_eps.is_empty();
    let (internal_chain, internal_eps) = if entry.internal_local {
        (&svl, &local_eps)
    } else {
        (&svc, &cluster_eps)
    };
    let external_eps = if entry.external_local {
        &local_eps
    } else {
        &cluster_eps
    };
    let has_internal = !internal_eps.is_empty();
    let has_external = !external_eps.is_empty();
    let node_port = entry.node_port;
    let uses_ext_chain = has_endpoints && node_port.is_some();
    // The cluster chain also serves as the short-circuit target of a
    // Local-policy EXT chain, so NodePort services keep it.
    let build_svc = has_endpoints && (!entry.internal_local || node_port.is_some());
    let build_svl = !local_eps.is_empty()
        && (entry.internal_local || (entry.external_local && node_port.is_some()));

    let mut rules = ServiceRules::default();
    let cluster_ip_match = entry.cluster_ip.map(|ip| {
        format!(
            "-d {ip}/32 -p {proto} -m comment --comment \"{key} cluster IP\" -m {proto} --dport {}",
            entry.port
        )
    });

    // Dispatch rules.
    if let Some(cluster_ip_match) = &cluster_ip_match {
        if has_internal {
            rules.dispatch.nat_services.push(format!(
                "-A {SERVICES_CHAIN} {cluster_ip_match} -j {internal_chain}"
            ));
        } else {
            let (comment, target) = filter_verdict(key, has_endpoints);
            let ip = entry
                .cluster_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            rules.dispatch.filter_services.push(format!(
                "-A {SERVICES_CHAIN} -d {ip}/32 -p {proto} -m comment --comment \"{comment}\" -m {proto} --dport {} -j {target}",
                entry.port
            ));
        }
    }
    if let Some(node_port) = node_port {
        if uses_ext_chain {
            rules.dispatch.nat_nodeports.push(format!(
                "-A {NODEPORTS_CHAIN} -p {proto} -m comment --comment \"{key}\" -m {proto} --dport {node_port} -j {ext}"
            ));
        }
        if !has_external {
            let (comment, target) = filter_verdict(key, has_endpoints);
            rules.dispatch.filter_external.push(format!(
                "-A {EXTERNAL_CHAIN} -p {proto} -m comment --comment \"{comment}\" -m addrtype --dst-type LOCAL -m {proto} --dport {node_port} -j {target}"
            ));
        }
    }

    // Policy chains and the endpoint chains they use.
    let mut seps: BTreeMap<String, &'e Endpoint> = BTreeMap::new();
    let mut policy_chain = |chain: &String, eps: &[&'e Endpoint], nat: &mut Chains| {
        let mut lines = Vec::new();
        if chain == internal_chain
            && let (Some(cidr), Some(cluster_ip_match)) = (cluster_cidr, &cluster_ip_match)
        {
            // Traffic from outside the pod network may leave this node
            // for a remote endpoint: masquerade so replies come back here.
            lines.push(format!(
                "-A {chain} ! -s {cidr} {cluster_ip_match} -j {MARK_MASQ_CHAIN}"
            ));
        }
        lines.extend(endpoint_rules(entry, chain, eps));
        for ep in eps {
            seps.insert(sep_chain(entry, ep), ep);
        }
        nat.insert(chain.clone(), lines);
    };
    if build_svc {
        policy_chain(&svc, &cluster_eps, &mut rules.nat_chains);
    }
    if build_svl {
        policy_chain(&svl, &local_eps, &mut rules.nat_chains);
    }

    if uses_ext_chain {
        let mut lines = Vec::new();
        if entry.external_local {
            if let Some(cidr) = cluster_cidr {
                // Pods reaching a NodePort behave as if they went out to a
                // load balancer and came back: cluster policy applies.
                lines.push(format!(
                    "-A {ext} -s {cidr} -m comment --comment \"pod traffic for {key} external destinations\" -j {svc}"
                ));
            }
            // Traffic from this node carries a node address as source,
            // which the endpoint could not answer directly: masquerade and
            // let it use any endpoint.
            lines.push(format!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {key} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ_CHAIN}"
            ));
            lines.push(format!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for {key} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            ));
            if has_external {
                lines.push(format!("-A {ext} -j {svl}"));
            }
        } else {
            // The endpoint may be on another node: masquerade so the reply
            // comes back through this node's conntrack.
            lines.push(format!(
                "-A {ext} -m comment --comment \"masquerade traffic for {key} external destinations\" -j {MARK_MASQ_CHAIN}"
            ));
            lines.push(format!("-A {ext} -j {svc}"));
        }
        rules.nat_chains.insert(ext, lines);
    }

    for (name, ep) in seps {
        let recent = if entry.affinity_timeout_secs.is_some() {
            format!(" -m recent --set --name {name} --mask 255.255.255.255 --rsource")
        } else {
            String::new()
        };
        let lines = vec![
            // Hairpin: an endpoint reaching itself through the service must
            // not see its own address as the source.
            format!(
                "-A {name} -s {}/32 -m comment --comment \"{key}\" -j {MARK_MASQ_CHAIN}",
                ep.addr
            ),
            format!(
                "-A {name} -p {proto} -m comment --comment \"{key}\"{recent} -m {proto} -j DNAT --to-destination {}",
                ep.addr_port()
            ),
        ];
        rules.nat_chains.insert(name, lines);
    }
    rules
}

fn filter_verdict(key: &ServicePortKey, has_endpoints: bool) -> (String, &'static str) {
    if has_endpoints {
        (format!("{key} has no local endpoints"), "DROP")
    } else {
        (
            format!("{key} has no endpoints"),
            "REJECT --reject-with icmp-port-unreachable",
        )
    }
}

/// Affinity checks then the round-robin rules of one policy chain.
fn endpoint_rules(entry: &ServiceEntry, chain: &str, eps: &[&Endpoint]) -> Vec<String> {
    let key = &entry.key;
    let mut lines = Vec::new();
    if let Some(timeout) = entry.affinity_timeout_secs {
        for ep in eps {
            let sep = sep_chain(entry, ep);
            lines.push(format!(
                "-A {chain} -m comment --comment \"{key} -> {}\" -m recent --rcheck --seconds {timeout} --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}",
                ep.addr_port()
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = sep_chain(entry, ep);
        let nth = if i + 1 < n {
            format!(" -m statistic --mode nth --every {} --packet 0", n - i)
        } else {
            String::new()
        };
        lines.push(format!(
            "-A {chain} -m comment --comment \"{key} -> {}\"{nth} -j {sep}",
            ep.addr_port()
        ));
    }
    lines
}

/// The rendered form of a whole [`DesiredState`], kept per service so an
/// update re-renders only the services that changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    cluster_cidr: Option<Ipv4Network>,
    services: BTreeMap<ServicePortKey, ServiceRules>,
}

/// An `iptables-restore --noflush` payload and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The whole change as one iptables-restore input (one transaction
    /// per table); empty when there is nothing to do.
    pub text: String,
    /// The same change as the iptables-restore inputs to apply, in order:
    /// `[text]` unless it touches more than [`MAX_CHAINS_PER_RESTORE`]
    /// chains, then split so that every chain is written before any rule
    /// jumps to it and deletions come last (see [`MAX_CHAINS_PER_RESTORE`]).
    pub parts: Vec<String>,
    /// Chains (re)written.
    pub chains_written: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
}

impl Payload {
    /// Whether applying the payload would change nothing.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Chains one iptables-restore call writes or deletes at most. The nft
/// backend's `--noflush` restore costs time quadratic in the chains of one
/// call (FIELD-NOTES: 10,000 services × 10 endpoints in one call took
/// 460 s; calls of about 250 services were 13× faster), so big payloads
/// are split. The price: a split change is not atomic; the order of the
/// parts keeps every intermediate state consistent (no jump to a missing
/// chain, old chains removed only after nothing uses them), but a
/// connection may meet a mix of old and new services while it applies.
pub const MAX_CHAINS_PER_RESTORE: usize = 2_500;

/// Write order of a chain in a split payload: chains that others jump to
/// come before the chains that jump to them.
fn write_rank(name: &str) -> u8 {
    match name {
        MARK_MASQ_CHAIN | POSTROUTING_CHAIN | FORWARD_CHAIN => 0,
        n if n.starts_with("SKIFF-SEP-") => 1,
        n if n.starts_with("SKIFF-SVC-") || n.starts_with("SKIFF-SVL-") => 2,
        n if n.starts_with("SKIFF-EXT-") => 3,
        // The dispatch chains jump to per-service chains: last.
        _ => 4,
    }
}

/// How installed Skiff chains differ from the rendered ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Rendered chains that are not installed.
    pub missing: Vec<(Table, String)>,
    /// Chains installed with other rules than rendered.
    pub differing: Vec<(Table, String)>,
    /// Installed `SKIFF-` chains that should not exist.
    pub unexpected: Vec<(Table, String)>,
}

impl Drift {
    /// Whether the installed chains are exactly the rendered ones.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.differing.is_empty() && self.unexpected.is_empty()
    }
}

/// A prepared incremental update: the payload to apply and the per-service
/// renderings to keep once it has been applied.
#[derive(Debug, Clone, Default)]
pub struct IncrementalUpdate {
    /// What to give iptables-restore.
    pub payload: Payload,
    replacements: BTreeMap<ServicePortKey, Option<ServiceRules>>,
}

impl Ruleset {
    /// Renders every service of `state`.
    pub fn render(state: &DesiredState) -> Ruleset {
        Ruleset {
            cluster_cidr: state.cluster_cidr,
            services: state
                .services
                .iter()
                .map(|(key, entry)| (key.clone(), render_service(entry, state.cluster_cidr)))
                .collect(),
        }
    }

    /// Rendering of one service port, if present.
    pub fn service(&self, key: &ServicePortKey) -> Option<&ServiceRules> {
        self.services.get(key)
    }

    /// Every chain of both tables: static, dispatch and per-service.
    pub fn tables(&self) -> Tables {
        let mut tables = static_chains();
        for dispatch in Dispatch::ALL {
            tables.get_mut(dispatch.table()).insert(
                dispatch.chain().to_string(),
                self.dispatch_chain(dispatch, None),
            );
        }
        for rules in self.services.values() {
            for (name, lines) in &rules.nat_chains {
                tables.nat.insert(name.clone(), lines.clone());
            }
        }
        tables
    }

    /// Rules of one dispatch chain, with `overlay` replacing (or removing,
    /// with `None`) some services' renderings.
    fn dispatch_chain(
        &self,
        dispatch: Dispatch,
        overlay: Option<&BTreeMap<ServicePortKey, Option<ServiceRules>>>,
    ) -> Vec<String> {
        let mut all: BTreeMap<&ServicePortKey, &ServiceRules> = self.services.iter().collect();
        for (key, rules) in overlay.into_iter().flatten() {
            match rules {
                Some(rules) => {
                    all.insert(key, rules);
                }
                None => {
                    all.remove(key);
                }
            }
        }
        let mut lines: Vec<String> = all
            .values()
            .flat_map(|rules| dispatch.part(&rules.dispatch).iter().cloned())
            .collect();
        lines.extend(dispatch.trailer());
        lines
    }

    /// Payload that brings installed chains to this ruleset: rewrites chains
    /// that are missing or differ and deletes `SKIFF-` chains that should
    /// not exist. With `installed` unknown (`None`) every chain is written.
    pub fn full_payload(&self, installed: Option<&Tables>) -> Payload {
        let desired = self.tables();
        let mut writer = PayloadWriter::default();
        for table in Table::ALL {
            let want = desired.get(table);
            let have = installed.map(|tables| tables.get(table));
            for (name, lines) in want {
                if have.and_then(|chains| chains.get(name)) != Some(lines) {
                    writer.write(table, name, lines);
                }
            }
            for name in have.into_iter().flat_map(|chains| chains.keys()) {
                if name.starts_with(CHAIN_PREFIX) && !want.contains_key(name) {
                    writer.delete(table, name);
                }
            }
        }
        writer.finish()
    }

    /// Compares installed chains (from `iptables-save`, see
    /// [`super::save::parse_save`]) with this ruleset.
    pub fn drift(&self, installed: &Tables) -> Drift {
        let desired = self.tables();
        let mut drift = Drift::default();
        for table in Table::ALL {
            let want = desired.get(table);
            let have = installed.get(table);
            for (name, lines) in want {
                match have.get(name) {
                    None => drift.missing.push((table, name.clone())),
                    Some(installed) if installed != lines => {
                        drift.differing.push((table, name.clone()))
                    }
                    Some(_) => {}
                }
            }
            for name in have.keys() {
                if name.starts_with(CHAIN_PREFIX) && !want.contains_key(name) {
                    drift.unexpected.push((table, name.clone()));
                }
            }
        }
        drift
    }

    /// Prepares the update from this (installed) ruleset to `desired`,
    /// re-rendering only the services in `changed`. Only chains whose rules
    /// differ are written, chains no longer rendered are deleted, and a
    /// dispatch chain is rewritten only if some changed service's part of
    /// it changed. Apply the payload, then [`Ruleset::commit`] the update.
    ///
    /// The node-wide settings of `desired` must match the ones this ruleset
    /// was rendered with; otherwise re-render everything.
    pub fn incremental<'a>(
        &self,
        desired: &DesiredState,
        changed: impl IntoIterator<Item = &'a ServicePortKey>,
    ) -> IncrementalUpdate {
        let replacements: BTreeMap<ServicePortKey, Option<ServiceRules>> = changed
            .into_iter()
            .map(|key| {
                let rendered = desired
                    .services
                    .get(key)
                    .map(|entry| render_service(entry, self.cluster_cidr));
                (key.clone(), rendered)
            })
            .collect();

        let mut writer = PayloadWriter::default();
        for dispatch in Dispatch::ALL {
            let touched = replacements.iter().any(|(key, new)| {
                let old = self.services.get(key).map(|r| dispatch.part(&r.dispatch));
                let new = new.as_ref().map(|r| dispatch.part(&r.dispatch));
                old.unwrap_or_default() != new.unwrap_or_default()
            });
            if touched {
                let lines = self.dispatch_chain(dispatch, Some(&replacements));
                writer.write(dispatch.table(), dispatch.chain(), &lines);
            }
        }
        let empty = Chains::new();
        for (key, new) in &replacements {
            let old_chains = self.services.get(key).map_or(&empty, |r| &r.nat_chains);
            let new_chains = new.as_ref().map_or(&empty, |r| &r.nat_chains);
            for (name, lines) in new_chains {
                if old_chains.get(name) != Some(lines) {
                    writer.write(Table::Nat, name, lines);
                }
            }
            for name in old_chains.keys() {
                if !new_chains.contains_key(name) {
                    writer.delete(Table::Nat, name);
                }
            }
        }
        IncrementalUpdate {
            payload: writer.finish(),
            replacements,
        }
    }

    /// Records an applied incremental update.
    pub fn commit(&mut self, update: IncrementalUpdate) {
        for (key, rules) in update.replacements {
            match rules {
                Some(rules) => {
                    self.services.insert(key, rules);
                }
                None => {
                    self.services.remove(&key);
                }
            }
        }
    }
}

/// Payload that removes every given Skiff chain (after the jump rules to
/// them are gone). Chains are flushed first, so references between them
/// do not block their deletion.
pub fn cleanup_payload(installed: &Tables) -> Payload {
    let mut writer = PayloadWriter::default();
    for table in Table::ALL {
        for name in installed.get(table).keys() {
            if name.starts_with(CHAIN_PREFIX) {
                writer.delete(table, name);
            }
        }
    }
    writer.finish()
}

/// Collects chain writes and deletions per table and lays them out in the
/// order iptables-restore needs: every chain declared first (which creates
/// it, or flushes it if it exists), then the rules, then deletions.
#[derive(Default)]
struct PayloadWriter {
    write: BTreeMap<Table, BTreeMap<String, Vec<String>>>,
    delete: BTreeMap<Table, BTreeSet<String>>,
}

impl PayloadWriter {
    fn write(&mut self, table: Table, chain: &str, lines: &[String]) {
        self.write
            .entry(table)
            .or_default()
            .insert(chain.to_string(), lines.to_vec());
    }

    fn delete(&mut self, table: Table, chain: &str) {
        self.delete
            .entry(table)
            .or_default()
            .insert(chain.to_string());
    }

    fn finish(self) -> Payload {
        self.finish_split(MAX_CHAINS_PER_RESTORE)
    }

    /// The payload, split into parts of at most `max_chains` chain writes
    /// and deletions when it has more.
    fn finish_split(self, max_chains: usize) -> Payload {
        let mut payload = Payload::default();
        let no_writes = BTreeMap::new();
        let no_deletes = BTreeSet::new();
        // Per table: written chains in a fixed order (shared ones first,
        // then per-service chains by name) and the deleted ones.
        let mut ops: Vec<(Table, Vec<&String>, &BTreeSet<String>)> = Vec::new();
        for table in Table::ALL {
            let writes = self.write.get(&table).unwrap_or(&no_writes);
            let deletes = self.delete.get(&table).unwrap_or(&no_deletes);
            if writes.is_empty() && deletes.is_empty() {
                continue;
            }
            let mut names: Vec<&String> = writes.keys().collect();
            names.sort_by_key(|name| (!is_shared_chain(name), name.as_str()));
            render_table(&mut payload.text, table, &names, writes, deletes);
            payload.chains_written += writes.len();
            payload.chains_deleted += deletes.len();
            ops.push((table, names, deletes));
        }
        if payload.is_empty() {
            return payload;
        }
        if payload.chains_written + payload.chains_deleted <= max_chains {
            payload.parts = vec![payload.text.clone()];
            return payload;
        }
        // Split: per table, writes by rank in parts of `max_chains`, then
        // the deletions in parts of their own.
        let empty = BTreeSet::new();
        for (table, mut names, deletes) in ops {
            let writes = &self.write[&table];
            names.sort_by_key(|name| (write_rank(name), name.as_str()));
            for chunk in names.chunks(max_chains.max(1)) {
                let mut text = String::new();
                render_table(&mut text, table, chunk, writes, &empty);
                payload.parts.push(text);
            }
            // Chains that jump come before the chains they jump to (an old
            // service chain goes before its old endpoint chains).
            let mut deletes: Vec<&String> = deletes.iter().collect();
            deletes.sort_by_key(|name| (std::cmp::Reverse(write_rank(name)), name.as_str()));
            for chunk in deletes.chunks(max_chains.max(1)) {
                let chunk: BTreeSet<String> = chunk.iter().map(|n| (*n).clone()).collect();
                let mut text = String::new();
                render_table(&mut text, table, &[], &no_writes, &chunk);
                payload.parts.push(text);
            }
        }
        payload
    }
}

/// One table's transaction: every chain declared first (which creates it,
/// or flushes it if it exists), then the rules, then deletions.
fn render_table(
    text: &mut String,
    table: Table,
    names: &[&String],
    writes: &BTreeMap<String, Vec<String>>,
    deletes: &BTreeSet<String>,
) {
    let _ = writeln!(text, "*{}", table.as_str());
    for name in names.iter().copied().chain(deletes) {
        let _ = writeln!(text, ":{name} - [0:0]");
    }
    for name in names {
        for line in &writes[*name] {
            let _ = writeln!(text, "{line}");
        }
    }
    for name in deletes {
        let _ = writeln!(text, "-X {name}");
    }
    let _ = writeln!(text, "COMMIT");
}

fn is_shared_chain(name: &str) -> bool {
    matches!(
        name,
        SERVICES_CHAIN
            | NODEPORTS_CHAIN
            | EXTERNAL_CHAIN
            | FORWARD_CHAIN
            | MARK_MASQ_CHAIN
            | POSTROUTING_CHAIN
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServiceEntry};
    use std::net::Ipv4Addr;

    fn endpoint(last: u8, local: bool) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
            node_name: None,
            is_local: local,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn entry(name: &str, eps: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry {
            key: ServicePortKey::new("default", name, "http"),
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 80,
            protocol: Protocol::Tcp,
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
            node_ips: vec![],
            cluster_cidr: None,
        }
    }

    #[test]
    fn chain_names_are_stable_and_fit_iptables() {
        let e = entry("web", vec![endpoint(1, false)]);
        let svc = svc_chain(&e);
        assert_eq!(svc, svc_chain(&e.clone()));
        assert!(svc.len() <= 28, "iptables chain names are at most 28 bytes");
        assert_ne!(svc, svc_chain(&entry("other", vec![])));
        let mut udp = e.clone();
        udp.protocol = Protocol::Udp;
        assert_ne!(svc, svc_chain(&udp));
        assert_ne!(
            sep_chain(&e, &endpoint(1, false)),
            sep_chain(&e, &endpoint(2, false))
        );
        // The hash is kube-proxy's: base32 alphabet, 16 characters.
        let hash = svc.trim_start_matches("SKIFF-SVC-");
        assert_eq!(hash.len(), 16);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
    }

    #[test]
    fn round_robin_rules_use_nth_with_shrinking_every() {
        let e = entry(
            "web",
            vec![endpoint(1, false), endpoint(2, false), endpoint(3, false)],
        );
        let rules = render_service(&e, None);
        let svc = &rules.nat_chains[&svc_chain(&e)];
        assert_eq!(svc.len(), 3);
        assert!(
            svc[0].contains("--mode nth --every 3 --packet 0"),
            "{}",
            svc[0]
        );
        assert!(
            svc[1].contains("--mode nth --every 2 --packet 0"),
            "{}",
            svc[1]
        );
        assert!(!svc[2].contains("statistic"), "{}", svc[2]);
    }

    /// Simulates the kernel's xt_statistic nth counters over the rendered
    /// rules: each new connection walks the rules in order, each rule's
    /// counter advancing when the rule is evaluated.
    #[test]
    fn nth_rules_cycle_exactly() {
        for n in 1..=7usize {
            let eps: Vec<Endpoint> = (1..=n as u8).map(|i| endpoint(i, false)).collect();
            let e = entry("web", eps);
            let rules = &render_service(&e, None).nat_chains[&svc_chain(&e)];
            let every: Vec<Option<usize>> = rules
                .iter()
                .map(|line| {
                    line.split("--every ")
                        .nth(1)
                        .and_then(|rest| rest.split(' ').next())
                        .map(|v| v.parse().expect("number"))
                })
                .collect();
            let mut counters = vec![0usize; n];
            let mut hits = vec![0usize; n];
            for conn in 0..(n * 10) {
                let mut chosen = None;
                for (i, every) in every.iter().enumerate() {
                    match every {
                        None => {
                            chosen = Some(i);
                            break;
                        }
                        Some(every) => {
                            // Kernel: count = (count == every-1) ? 0 : count+1; match on 0.
                            counters[i] = if counters[i] == every - 1 {
                                0
                            } else {
                                counters[i] + 1
                            };
                            if counters[i] == 0 {
                                chosen = Some(i);
                                break;
                            }
                        }
                    }
                }
                let chosen = chosen.expect("last rule always matches");
                hits[chosen] += 1;
                if (conn + 1) % n == 0 {
                    assert!(
                        hits.iter().all(|h| *h == (conn + 1) / n),
                        "n={n}: uneven after {} connections: {hits:?}",
                        conn + 1
                    );
                }
            }
        }
    }

    #[test]
    fn no_endpoints_rejects_in_filter_only() {
        let mut e = entry("web", vec![]);
        e.node_port = Some(30080);
        let rules = render_service(&e, None);
        assert!(rules.nat_chains.is_empty());
        assert!(rules.dispatch.nat_services.is_empty());
        assert!(rules.dispatch.nat_nodeports.is_empty());
        assert!(rules.dispatch.filter_services[0].contains("has no endpoints"));
        assert!(
            rules.dispatch.filter_services[0]
                .ends_with("-j REJECT --reject-with icmp-port-unreachable")
        );
        assert!(rules.dispatch.filter_external[0].contains("--dport 30080"));
    }

    #[test]
    fn local_policy_without_local_endpoints_drops_nodeport() {
        let mut e = entry("web", vec![endpoint(1, false)]);
        e.node_port = Some(30080);
        e.external_local = true;
        let rules = render_service(&e, None);
        assert!(
            rules.dispatch.filter_services.is_empty(),
            "ClusterIP still served"
        );
        assert_eq!(rules.dispatch.filter_external.len(), 1);
        assert!(rules.dispatch.filter_external[0].ends_with("-j DROP"));
        let ext = &rules.nat_chains[&ext_chain(&e)];
        assert!(ext.iter().all(|l| !l.contains("SKIFF-SVL-")), "{ext:?}");
    }

    #[test]
    fn incremental_writes_only_changed_chains() {
        let a = entry("a", vec![endpoint(1, false), endpoint(2, false)]);
        let b = entry("b", vec![endpoint(3, false)]);
        let old_state = state(vec![a.clone(), b.clone()]);
        let old = Ruleset::render(&old_state);

        // Endpoint 2 of service a goes away; b is untouched.
        let mut a2 = a.clone();
        a2.endpoints.pop();
        let new_state = state(vec![a2.clone(), b.clone()]);
        let changes = crate::model::diff(&old_state, &new_state);
        let update = old.incremental(&new_state, changes.keys());
        let text = &update.payload.text;
        assert!(text.contains(&format!(":{} - [0:0]", svc_chain(&a))));
        assert!(text.contains(&format!("-X {}", sep_chain(&a, &endpoint(2, false)))));
        assert!(
            !text.contains(&svc_chain(&b)),
            "untouched service rewritten:\n{text}"
        );
        assert!(
            !text.contains(&format!(":{} ", sep_chain(&a, &endpoint(1, false)))),
            "unchanged endpoint chain rewritten:\n{text}"
        );
        assert!(
            !text.contains(":SKIFF-SERVICES"),
            "dispatch membership did not change:\n{text}"
        );
        assert_eq!(
            (update.payload.chains_written, update.payload.chains_deleted),
            (1, 1)
        );

        let mut applied = old.clone();
        applied.commit(update);
        assert_eq!(applied, Ruleset::render(&new_state));
    }

    #[test]
    fn incremental_removal_rewrites_dispatch_and_deletes_chains() {
        let a = entry("a", vec![endpoint(1, false)]);
        let b = entry("b", vec![endpoint(3, false)]);
        let old_state = state(vec![a.clone(), b.clone()]);
        let old = Ruleset::render(&old_state);
        let new_state = state(vec![b.clone()]);
        let changes = crate::model::diff(&old_state, &new_state);
        let update = old.incremental(&new_state, changes.keys());
        let text = update.payload.text.clone();
        assert!(text.contains(":SKIFF-SERVICES - [0:0]"), "{text}");
        assert!(text.contains(&format!("-X {}", svc_chain(&a))));
        assert!(text.contains("-A SKIFF-SERVICES -d 10.96.0.10/32"));
        assert!(!text.contains(&format!("-j {}", svc_chain(&a))));
        // Declarations come before rules, deletions after them.
        let decl = text.find(&format!(":{}", svc_chain(&a))).expect("declared");
        let first_rule = text.find("\n-A ").expect("rules");
        let del = text.find("-X ").expect("deletion");
        assert!(decl < first_rule && first_rule < del, "{text}");
        let mut applied = old.clone();
        applied.commit(update);
        assert_eq!(applied, Ruleset::render(&new_state));
    }

    #[test]
    fn full_payload_against_installed_writes_only_differences() {
        let a = entry("a", vec![endpoint(1, false)]);
        let rules = Ruleset::render(&state(vec![a.clone()]));
        let mut installed = rules.tables();
        assert!(rules.full_payload(Some(&installed)).is_empty());
        assert!(rules.drift(&installed).is_empty());

        installed.nat.insert(svc_chain(&a), vec![]);
        installed.nat.insert("SKIFF-SEP-STALE".into(), vec![]);
        installed.nat.insert("KUBE-SERVICES".into(), vec![]);
        let payload = rules.full_payload(Some(&installed));
        assert_eq!((payload.chains_written, payload.chains_deleted), (1, 1));
        assert!(payload.text.contains("-X SKIFF-SEP-STALE"));
        assert!(
            !payload.text.contains("KUBE-"),
            "never touches chains it does not own"
        );
        let drift = rules.drift(&installed);
        assert_eq!(drift.differing, [(Table::Nat, svc_chain(&a))]);
        assert_eq!(
            drift.unexpected,
            [(Table::Nat, "SKIFF-SEP-STALE".to_string())]
        );
    }

    #[test]
    fn cleanup_payload_deletes_only_skiff_chains() {
        let mut installed =
            Ruleset::render(&state(vec![entry("a", vec![endpoint(1, false)])])).tables();
        installed.filter.insert("INPUT".into(), vec![]);
        let payload = cleanup_payload(&installed);
        assert!(!payload.text.contains("INPUT"));
        assert_eq!(payload.chains_written, 0);
        assert_eq!(
            payload.chains_deleted,
            installed.nat.len() + installed.filter.len() - 1
        );
    }
}

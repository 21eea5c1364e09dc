//! The three measured cases, on either dataplane:
//!
//! 1. `conn_rate`: connection rate through the ClusterIP ÷ straight to the
//!    pods, in alternating (ABBA) rounds; medians.
//! 2. `latency_scale`: p50/p99 transaction latency with N services
//!    installed ÷ with 1, the 1-service baseline measured before growing
//!    and again after shrinking back (pooled), so drift weighs on it too.
//! 3. `program`: time to program many services × endpoints from empty, and
//!    one endpoint change with all of them present.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use skiff_proxy::dataplane::{Dataplane, SyncReport};
use skiff_proxy::ebpf::plan::Planner;
use skiff_proxy::ebpf::{EbpfConfig, EbpfDataplane};
use skiff_proxy::iptables::{Backend, CommandExecutor, IptablesDataplane};
use skiff_tests::Netns;

use crate::progress;
use crate::report::{Figure, Record, Report, Skipped, Target};
use crate::states::{self, BACKEND_PORT, MEASURED_IP, SERVICE_PORT};
use crate::stats::{Latency, Side, ab_order, median};
use crate::topology::{Backends, CgroupGuard, PinRoot, Topology};
use crate::workload::{self, Budget, Rate};

/// Which dataplane a phase measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Ebpf,
    Iptables,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ebpf => "ebpf",
            Kind::Iptables => "iptables",
        }
    }

    /// Short namespace prefix.
    fn tag(self) -> &'static str {
        match self {
            Kind::Ebpf => "be",
            Kind::Iptables => "bi",
        }
    }
}

/// Sizes and budgets of a run.
#[derive(Clone, Debug)]
pub struct Config {
    pub backends: usize,
    pub warmup: Budget,
    pub rate_rounds: usize,
    pub rate_budget: Budget,
    /// Latency samples per side (ClusterIP, direct) at each scale.
    pub latency_conns: usize,
    /// ABBA blocks those samples are taken in.
    pub latency_blocks: usize,
    /// Time limit per side at each scale.
    pub latency_max_time: Duration,
    pub ebpf_scales: Vec<usize>,
    pub iptables_scales: Vec<usize>,
    /// Scales left out for iptables, with the reason printed.
    pub iptables_skipped: Vec<(usize, String)>,
    /// Services of case 3 (the eBPF targets apply at this size).
    pub program_services: usize,
    /// Services of case 3 on iptables (see [`Config::iptables_program_note`]).
    pub iptables_program_services: usize,
    /// Why iptables programs fewer services, when it does.
    pub iptables_program_note: String,
    pub program_endpoints: usize,
    pub ebpf_changes: usize,
    pub iptables_changes: usize,
    /// `None`: whatever `iptables` is on this machine.
    pub iptables_tool: Option<Backend>,
}

impl Config {
    pub fn json(&self) -> Value {
        json!({
            "backends": self.backends,
            "warmup_conns": self.warmup.max_conns,
            "rate_rounds_per_side": self.rate_rounds,
            "rate_max_conns_per_round": self.rate_budget.max_conns,
            "rate_max_seconds_per_round": self.rate_budget.max_time.as_secs_f64(),
            "latency_conns_per_side": self.latency_conns,
            "latency_blocks": self.latency_blocks,
            "ebpf_scales": self.ebpf_scales,
            "iptables_scales": self.iptables_scales,
            "program_services": self.program_services,
            "iptables_program_services": self.iptables_program_services,
            "program_endpoints": self.program_endpoints,
            "ebpf_endpoint_changes": self.ebpf_changes,
            "iptables_endpoint_changes": self.iptables_changes,
            "iptables_tool": self.iptables_tool.map(|b| b.to_string()),
        })
    }

    fn executor(&self, netns: &Netns) -> CommandExecutor {
        let exec = CommandExecutor::new().in_netns(netns.name());
        match self.iptables_tool {
            Some(backend) => exec.with_backend(backend),
            None => exec,
        }
    }
}

/// The dataplane of a traffic phase, with what must outlive it. Fields
/// drop in order: the dataplane (and its program fds) before the cgroup.
enum Subject {
    Ebpf {
        dp: Box<EbpfDataplane>,
        _cgroup: CgroupGuard,
    },
    Iptables {
        dp: IptablesDataplane,
    },
}

impl Subject {
    fn start(kind: Kind, cfg: &Config, pins: Option<&PinRoot>, topo: &Topology) -> Result<Self> {
        match kind {
            Kind::Ebpf => {
                let pins = pins.context("eBPF phase without a pin root")?;
                // The whole bench process joins the cgroup: the client
                // threads' connect() calls then pass the socket-LB hooks.
                let cgroup = CgroupGuard::enter("traffic")?;
                let dp = EbpfDataplane::start(&EbpfConfig {
                    node_name: "traffic".into(),
                    pin_root: pins.path().to_owned(),
                    cgroup: Some(cgroup.path().to_owned()),
                    interfaces: Vec::new(),
                    node_addr: None,
                })
                .context("starting the eBPF dataplane with socket-LB")?;
                Ok(Subject::Ebpf {
                    dp: Box::new(dp),
                    _cgroup: cgroup,
                })
            }
            Kind::Iptables => {
                let mut dp = IptablesDataplane::with_executor(cfg.executor(&topo.node));
                let backend = dp.backend().context("detecting the iptables backend")?;
                progress(&format!("iptables backend: {backend}"));
                Ok(Subject::Iptables { dp })
            }
        }
    }

    fn dp(&mut self) -> &mut dyn Dataplane {
        match self {
            Subject::Ebpf { dp, .. } => dp.as_mut(),
            Subject::Iptables { dp } => dp,
        }
    }

    fn sync(&mut self, state: &skiff_proxy::model::DesiredState) -> Result<(SyncReport, Duration)> {
        let start = Instant::now();
        let report = self.dp().sync(state).context("dataplane sync")?;
        Ok((report, start.elapsed()))
    }

    /// Dataplane facts for the JSON file (eBPF drop/translate counters,
    /// iptables backend).
    fn facts(&mut self) -> Value {
        match self {
            Subject::Ebpf { dp, .. } => match dp.maps().reason_counts() {
                Ok(counts) => json!({
                    "reason_counters": counts
                        .into_iter()
                        .map(|(r, n)| (r.name().to_string(), json!(n)))
                        .collect::<serde_json::Map<String, Value>>(),
                }),
                Err(e) => json!({ "reason_counters_error": e.to_string() }),
            },
            Subject::Iptables { dp } => match dp.backend() {
                Ok(b) => json!({ "iptables_backend": b.to_string() }),
                Err(e) => json!({ "iptables_backend_error": e.to_string() }),
            },
        }
    }
}

fn sync_json(report: &SyncReport, took: Duration) -> Value {
    json!({
        "seconds": took.as_secs_f64(),
        "full": report.full,
        "services_changed": report.services_changed,
        "objects_written": report.objects_written,
        "objects_removed": report.objects_removed,
    })
}

fn vip() -> SocketAddrV4 {
    SocketAddrV4::new(MEASURED_IP, SERVICE_PORT)
}

/// Cases 1 and 2 on one dataplane, in one topology.
pub fn traffic(
    kind: Kind,
    cfg: &Config,
    pins: Option<&PinRoot>,
    rate: bool,
    latency: bool,
    report: &mut Report,
) -> Result<()> {
    progress(&format!(
        "{}: building namespaces, {} backends",
        kind.name(),
        cfg.backends
    ));
    let topo = Topology::build(kind.tag(), cfg.backends)?;
    let _backends = Backends::start(&topo.pods, &topo.backends)?;
    let mut subject = Subject::start(kind, cfg, pins, &topo)?;
    subject.sync(&states::traffic(1, &topo.backends))?;
    // Both paths must work before anything is timed.
    workload::rate(&topo.client, &[vip()], cfg.warmup).context("warm-up via the ClusterIP")?;
    workload::rate(&topo.client, &direct(&topo), cfg.warmup).context("warm-up direct")?;
    if rate {
        conn_rate(kind, cfg, &topo, &mut subject, report)?;
    }
    if latency {
        latency_scale(kind, cfg, &topo, &mut subject, report)?;
    }
    subject.dp().cleanup().context("dataplane cleanup")?;
    Ok(())
}

fn direct(topo: &Topology) -> Vec<SocketAddrV4> {
    topo.backends
        .iter()
        .map(|ip| SocketAddrV4::new(*ip, BACKEND_PORT))
        .collect()
}

fn conn_rate(
    kind: Kind,
    cfg: &Config,
    topo: &Topology,
    subject: &mut Subject,
    report: &mut Report,
) -> Result<()> {
    progress(&format!(
        "{}: case 1, connection rate, {} rounds per side",
        kind.name(),
        cfg.rate_rounds
    ));
    let direct = direct(topo);
    let (mut via, mut straight): (Vec<Rate>, Vec<Rate>) = (Vec::new(), Vec::new());
    for round in 0..cfg.rate_rounds {
        for side in ab_order(round) {
            match side {
                Side::A => via.push(workload::rate(&topo.client, &[vip()], cfg.rate_budget)?),
                Side::B => straight.push(workload::rate(&topo.client, &direct, cfg.rate_budget)?),
            }
        }
        progress(&format!(
            "  round {}/{}: via ClusterIP {:.0} conn/s, direct {:.0} conn/s",
            round + 1,
            cfg.rate_rounds,
            via[round].per_sec(),
            straight[round].per_sec()
        ));
    }
    let per_sec = |v: &[Rate]| v.iter().map(Rate::per_sec).collect::<Vec<f64>>();
    let (a, b) = (per_sec(&via), per_sec(&straight));
    let round_ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    // The robust companion: connections per second at the median
    // connect-to-close time of all connections of a side. A preempted
    // connection (another process on our CPU) moves the mean, hence the
    // throughput, but hardly the median.
    let median_us = |v: &[Rate]| {
        let all: Vec<Duration> = v.iter().flat_map(|r| r.each.iter().copied()).collect();
        Latency::of(&all).p50_us
    };
    let (ma, mb) = (median_us(&via), median_us(&straight));
    let raw = json!({
        "method": "1 client thread, sequential connect + 1-byte request/response + RST close (TCP_CRR-style); ABBA rounds",
        "clusterip_conn_per_s": a,
        "direct_conn_per_s": b,
        "round_ratios": round_ratios,
        "median_round_ratio": median(&round_ratios),
        "clusterip_median_conn_us": ma,
        "direct_median_conn_us": mb,
        "clusterip_conns": via.iter().map(|r| r.conns).collect::<Vec<_>>(),
        "direct_conns": straight.iter().map(|r| r.conns).collect::<Vec<_>>(),
        "clusterip_seconds": via.iter().map(|r| r.elapsed.as_secs_f64()).collect::<Vec<_>>(),
        "direct_seconds": straight.iter().map(|r| r.elapsed.as_secs_f64()).collect::<Vec<_>>(),
        "dataplane": subject.facts(),
    });
    report.add(Record {
        case: "conn_rate",
        dataplane: kind.name().into(),
        what: "ClusterIP ÷ direct, conn/s (median)".into(),
        a: Figure::new(median(&a), "conn/s"),
        b: Some(Figure::new(median(&b), "conn/s")),
        target: Some(Target::AtLeast(0.95)),
        raw: raw.clone(),
    });
    report.add(Record {
        case: "conn_rate",
        dataplane: kind.name().into(),
        what: "same, 1 ÷ median conn time (robust)".into(),
        a: Figure::new(1e6 / ma, "conn/s"),
        b: Some(Figure::new(1e6 / mb, "conn/s")),
        target: None,
        raw,
    });
    Ok(())
}

/// Latency samples through the ClusterIP and, interleaved with them in
/// ABBA blocks, straight to the pods (which tells machine drift apart from
/// a cost that grows with the number of services).
struct Sampled {
    via: Vec<Duration>,
    direct: Vec<Duration>,
    /// Per block, in time order: whether slow samples cluster in time
    /// (the machine was busy) or spread over one side (the path is slow).
    blocks: Vec<Value>,
}

impl Sampled {
    fn chain(&self, other: &Sampled) -> Sampled {
        Sampled {
            via: self.via.iter().chain(&other.via).copied().collect(),
            direct: self.direct.iter().chain(&other.direct).copied().collect(),
            blocks: self.blocks.iter().chain(&other.blocks).cloned().collect(),
        }
    }
}

fn block_json(side: Side, samples: &[Duration]) -> Value {
    let l = Latency::of(samples);
    json!({
        "side": match side { Side::A => "clusterip", Side::B => "direct" },
        "samples": l.samples,
        "p50_us": l.p50_us,
        "p99_us": l.p99_us,
        "over_1ms": samples.iter().filter(|d| **d > Duration::from_millis(1)).count(),
    })
}

fn measure_latency(cfg: &Config, topo: &Topology) -> Result<Sampled> {
    workload::rate(&topo.client, &[vip()], cfg.warmup)?;
    let blocks = cfg.latency_blocks.max(1);
    let per_block = cfg.latency_conns.div_ceil(blocks);
    let block_time = cfg.latency_max_time / blocks as u32;
    let direct = direct(topo);
    let mut sampled = Sampled {
        via: Vec::new(),
        direct: Vec::new(),
        blocks: Vec::new(),
    };
    for block in 0..blocks {
        for side in ab_order(block) {
            let (targets, into) = match side {
                Side::A => (&[vip()][..], &mut sampled.via),
                Side::B => (&direct[..], &mut sampled.direct),
            };
            let samples = workload::latencies(&topo.client, targets, per_block, block_time)?;
            sampled.blocks.push(block_json(side, &samples));
            into.extend(samples);
        }
    }
    ensure!(
        !sampled.via.is_empty() && !sampled.direct.is_empty(),
        "no latency samples"
    );
    Ok(sampled)
}

fn latency_json(l: &Latency) -> Value {
    json!({
        "samples": l.samples,
        "p50_us": l.p50_us,
        "p90_us": l.p90_us,
        "p99_us": l.p99_us,
        "max_us": l.max_us,
        "mean_us": l.mean_us,
    })
}

fn sampled_json(s: &Sampled) -> Value {
    json!({
        "via_clusterip": latency_json(&Latency::of(&s.via)),
        "direct": latency_json(&Latency::of(&s.direct)),
        "blocks": s.blocks,
    })
}

fn latency_scale(
    kind: Kind,
    cfg: &Config,
    topo: &Topology,
    subject: &mut Subject,
    report: &mut Report,
) -> Result<()> {
    let scales: Vec<usize> = match kind {
        Kind::Ebpf => cfg.ebpf_scales.clone(),
        Kind::Iptables => cfg.iptables_scales.clone(),
    };
    progress(&format!(
        "{}: case 2, latency at {:?} services",
        kind.name(),
        scales
    ));
    let show = |label: &str, s: &Sampled| {
        let (v, d) = (Latency::of(&s.via), Latency::of(&s.direct));
        progress(&format!(
            "  {label}: via ClusterIP p50 {:.1} µs p99 {:.1} µs; direct p50 {:.1} µs p99 {:.1} µs",
            v.p50_us, v.p99_us, d.p50_us, d.p99_us
        ));
    };
    let before = measure_latency(cfg, topo)?;
    show("1 service (before)", &before);
    let mut measured = Vec::new();
    for &n in scales.iter().filter(|n| **n > 1) {
        progress(&format!("  programming {n} services"));
        let (sync, took) = subject.sync(&states::traffic(n, &topo.backends))?;
        progress(&format!("  programmed in {:.3} s", took.as_secs_f64()));
        let sampled = measure_latency(cfg, topo)?;
        show(&format!("{n} services"), &sampled);
        measured.push((n, sampled, sync_json(&sync, took)));
    }
    progress("  back to 1 service");
    let (shrink, shrink_took) = subject.sync(&states::traffic(1, &topo.backends))?;
    progress(&format!(
        "  programmed in {:.3} s",
        shrink_took.as_secs_f64()
    ));
    let after = measure_latency(cfg, topo)?;
    show("1 service (after)", &after);
    let pooled = before.chain(&after);
    let (base_via, base_direct) = (Latency::of(&pooled.via), Latency::of(&pooled.direct));
    let facts = subject.facts();
    for (n, sampled, sync) in measured {
        let (via, direct) = (Latency::of(&sampled.via), Latency::of(&sampled.direct));
        let raw = json!({
            "services": n,
            "at_scale": sampled_json(&sampled),
            "baseline_pooled": sampled_json(&pooled),
            "baseline_before": sampled_json(&before),
            "baseline_after": sampled_json(&after),
            "sync_to_scale": sync,
            "sync_back_to_1": sync_json(&shrink, shrink_took),
            "method": "sequential connect + 1-byte request/response, timed to the response byte; ClusterIP and direct in interleaved ABBA blocks",
            "dataplane": facts,
        });
        let rows = [
            (
                "p50",
                via.p50_us,
                base_via.p50_us,
                Some(Target::AtMost(1.05)),
                "",
            ),
            (
                "p99",
                via.p99_us,
                base_via.p99_us,
                Some(Target::AtMost(1.05)),
                "",
            ),
            ("p50", direct.p50_us, base_direct.p50_us, None, "direct "),
        ];
        for (label, at, at_base, target, path) in rows {
            report.add(Record {
                case: "latency_scale",
                dataplane: kind.name().into(),
                what: format!("{path}{label} at {n} services ÷ at 1"),
                a: Figure::new(at, "µs"),
                b: Some(Figure::new(at_base, "µs")),
                target,
                raw: raw.clone(),
            });
        }
    }
    if kind == Kind::Iptables {
        for (n, why) in &cfg.iptables_skipped {
            report.skip(Skipped {
                case: "latency_scale",
                dataplane: kind.name().into(),
                what: format!("p50/p99 at {n} services ÷ at 1"),
                why: why.clone(),
            });
        }
    }
    Ok(())
}

/// Case 3 figures of one dataplane at one size.
pub struct Programmed {
    pub services: usize,
    pub endpoints: usize,
    pub from_empty: Duration,
    pub full_report: SyncReport,
    pub changes: Vec<Duration>,
    pub extra: Value,
}

impl Programmed {
    fn change_median_ms(&self) -> f64 {
        let ms: Vec<f64> = self.changes.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        median(&ms)
    }

    fn size(&self) -> String {
        format!("{}×{}", self.services, self.endpoints)
    }

    fn json(&self) -> Value {
        json!({
            "services": self.services,
            "endpoints_per_service": self.endpoints,
            "from_empty": sync_json(&self.full_report, self.from_empty),
            "endpoint_change_ms": self.changes.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "extra": self.extra,
        })
    }
}

fn timed_changes(
    dp: &mut dyn Dataplane,
    variants: &[skiff_proxy::model::DesiredState; 2],
    count: usize,
) -> Result<Vec<Duration>> {
    // The proxy loop knows which service ports an API event touched and
    // says so (Dataplane::sync_changed), as here: the one that changed.
    let changed: std::collections::BTreeSet<skiff_proxy::model::ServicePortKey> =
        skiff_proxy::model::diff(&variants[0], &variants[1])
            .keys()
            .into_iter()
            .cloned()
            .collect();
    ensure!(
        changed.len() == 1,
        "the variants must differ in one service"
    );
    let mut changes = Vec::with_capacity(count);
    for k in 0..count {
        let start = Instant::now();
        let r = dp
            .sync_changed(&variants[k % 2], &changed)
            .context("one-endpoint sync")?;
        changes.push(start.elapsed());
        ensure!(
            !r.full && r.services_changed == 1,
            "an endpoint change must be an incremental sync of one service: {r:?}"
        );
    }
    Ok(changes)
}

/// Case 3 on the eBPF dataplane with `services` services: maps only (no
/// attachment is needed to program them). Each call uses its own pin
/// directory under `pins`.
pub fn program_ebpf(cfg: &Config, pins: &PinRoot, services: usize) -> Result<Programmed> {
    let e = cfg.program_endpoints;
    progress(&format!(
        "ebpf: case 3, programming {services} services × {e} endpoints"
    ));
    let big = states::program(services, e);
    let variants = [
        states::with_one_endpoint_changed(&big, 0),
        states::with_one_endpoint_changed(&big, 1),
    ];
    let mut dp = EbpfDataplane::start(&EbpfConfig {
        node_name: format!("program-{services}"),
        pin_root: pins.path().to_owned(),
        cgroup: None,
        interfaces: Vec::new(),
        node_addr: None,
    })
    .context("starting the eBPF dataplane")?;
    let start = Instant::now();
    let full_report = dp.sync(&big).context("programming from empty")?;
    let from_empty = start.elapsed();
    progress(&format!("  from empty: {:.3} s", from_empty.as_secs_f64()));
    let changes = timed_changes(&mut dp, &variants, cfg.ebpf_changes)?;
    // What one walk of the conntrack map costs: syncs no longer walk it
    // when a backend goes (flows move lazily), but start-up does once
    // (ServiceMaps::max_backend_id_referenced) and an explicit flush
    // (ServiceMaps::remove_backends) does.
    let start = Instant::now();
    let ct_entries = dp.maps().conntrack_entries().len();
    let ct_walk = start.elapsed();
    // The same kind of walk over a map that is full (the backends): its
    // per-entry cost says what a populated conntrack map would cost.
    let start = Instant::now();
    let be_entries = dp.maps().dump_backends().len();
    let be_walk = start.elapsed();
    dp.cleanup().context("eBPF cleanup")?;
    drop(dp);

    // The pure userspace planner alone, to split sync time into planning
    // and kernel map writes.
    let mut planner = Planner::new();
    let start = Instant::now();
    planner.plan(&big)?;
    let plan_full = start.elapsed();
    let start = Instant::now();
    let ops = planner.plan(&variants[0])?;
    let plan_change = start.elapsed();
    Ok(Programmed {
        services,
        endpoints: e,
        from_empty,
        full_report,
        changes,
        extra: json!({
            "planner_only_from_empty_s": plan_full.as_secs_f64(),
            "planner_only_one_change_ms": plan_change.as_secs_f64() * 1e3,
            "ops_for_one_change": ops.len(),
            "conntrack_walk_ms": ct_walk.as_secs_f64() * 1e3,
            "conntrack_entries_walked": ct_entries,
            "backends_walk_ms": be_walk.as_secs_f64() * 1e3,
            "backends_entries_walked": be_entries,
        }),
    })
}

/// Case 3 on iptables with `services` services, in a namespace of its
/// own. No cleanup: deleting the namespace removes its tables, where
/// deleting the chains would take about as long as loading them.
pub fn program_iptables(cfg: &Config, services: usize) -> Result<Programmed> {
    let e = cfg.program_endpoints;
    progress(&format!(
        "iptables: case 3, programming {services} services × {e} endpoints"
    ));
    let ns = Netns::new("bip").context("iptables program namespace")?;
    let big = states::program(services, e);
    let variants = [
        states::with_one_endpoint_changed(&big, 0),
        states::with_one_endpoint_changed(&big, 1),
    ];
    let mut dp = IptablesDataplane::with_executor(cfg.executor(&ns));
    let backend = dp.backend().context("detecting the iptables backend")?;
    let start = Instant::now();
    let full_report = dp.sync(&big).context("programming from empty")?;
    let from_empty = start.elapsed();
    progress(&format!("  from empty: {:.3} s", from_empty.as_secs_f64()));
    let changes = timed_changes(&mut dp, &variants, cfg.iptables_changes)?;
    Ok(Programmed {
        services,
        endpoints: e,
        from_empty,
        full_report,
        changes,
        extra: json!({ "iptables_backend": backend.to_string() }),
    })
}

fn program_rows(kind: &str, p: &Programmed, targets: bool, report: &mut Report) {
    report.add(Record {
        case: "program",
        dataplane: kind.into(),
        what: format!("{} from empty", p.size()),
        a: Figure::new(p.from_empty.as_secs_f64(), "s"),
        b: None,
        target: targets.then_some(Target::AtMost(0.5)),
        raw: p.json(),
    });
    report.add(Record {
        case: "program",
        dataplane: kind.into(),
        what: format!("1 endpoint change, {} present (median)", p.services),
        a: Figure::new(p.change_median_ms(), "ms"),
        b: None,
        target: targets.then_some(Target::AtMost(1.0)),
        raw: p.json(),
    });
}

/// Case 3 on the selected dataplanes, with its records. The eBPF targets
/// apply at `program_services`; iptables runs at `iptables_program_services`
/// (smaller by default, see `Config`), and eBPF is measured at that size
/// too when it differs, so that the eBPF ÷ iptables ratios compare equal
/// work.
pub fn program(
    cfg: &Config,
    pins: Option<&PinRoot>,
    iptables: bool,
    report: &mut Report,
) -> Result<()> {
    let ebpf = match pins {
        Some(pins) => Some(program_ebpf(cfg, pins, cfg.program_services)?),
        None => None,
    };
    if let Some(p) = &ebpf {
        program_rows("ebpf", p, true, report);
    }
    if !iptables {
        return Ok(());
    }
    let size = cfg.iptables_program_services;
    let ipt = program_iptables(cfg, size)?;
    program_rows("iptables", &ipt, false, report);
    if size < cfg.program_services {
        report.skip(Skipped {
            case: "program",
            dataplane: "iptables".into(),
            what: format!(
                "{}×{} from empty",
                cfg.program_services, cfg.program_endpoints
            ),
            why: cfg.iptables_program_note.clone(),
        });
    }
    let ebpf_same = match (pins, &ebpf) {
        (Some(_), Some(p)) if p.services == size => ebpf,
        (Some(pins), Some(_)) => Some(program_ebpf(cfg, pins, size)?),
        _ => None,
    };
    let Some(x) = ebpf_same else {
        return Ok(());
    };
    if x.services != cfg.program_services {
        program_rows("ebpf", &x, false, report);
    }
    report.add(Record {
        case: "program",
        dataplane: "ebpf/iptables".into(),
        what: format!("{} from empty: eBPF ÷ iptables", x.size()),
        a: Figure::new(x.from_empty.as_secs_f64(), "s"),
        b: Some(Figure::new(ipt.from_empty.as_secs_f64(), "s")),
        target: None,
        raw: json!({ "ebpf": x.json(), "iptables": ipt.json() }),
    });
    report.add(Record {
        case: "program",
        dataplane: "ebpf/iptables".into(),
        what: format!("1 endpoint change, {} present: eBPF ÷ iptables", x.services),
        a: Figure::new(x.change_median_ms(), "ms"),
        b: Some(Figure::new(ipt.change_median_ms(), "ms")),
        target: None,
        raw: json!({ "ebpf": x.json(), "iptables": ipt.json() }),
    });
    Ok(())
}

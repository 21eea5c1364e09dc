//! Resource quantities and the requests a pod makes, computed the way
//! kube-scheduler's `NodeResourcesFit` does.
//!
//! Quantities (`"250m"`, `"1.5Gi"`, `"2e3"`) are parsed exactly (integer
//! arithmetic, no floats) and rounded *up* to the unit we count in:
//! millicores for CPU, bytes for memory, whole pods for `pods`.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU millicores a container without a CPU request counts as when
/// *scoring* (kube-scheduler's `DefaultMilliCPURequest`): keeps best-effort
/// pods from all piling onto one node.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring
/// (kube-scheduler's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A quantity string that is not Kubernetes quantity syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {quantity:?}: {reason}")]
pub struct QuantityError {
    /// The text as written.
    pub quantity: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// CPU and memory amounts: what a node offers or what pods request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl Resources {
    /// Both amounts zero.
    pub const ZERO: Resources = Resources {
        milli_cpu: 0,
        memory: 0,
    };

    /// Element-wise maximum.
    #[must_use]
    pub fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, rhs: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(rhs.milli_cpu),
            memory: self.memory.saturating_add(rhs.memory),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, rhs: Resources) {
        *self = *self + rhs;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, rhs: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(rhs.milli_cpu),
            memory: self.memory.saturating_sub(rhs.memory),
        }
    }
}

/// What one pod asks of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// The effective requests used for fitting (`NodeResourcesFit`).
    pub requests: Resources,
    /// The same with [`DEFAULT_MILLI_CPU_REQUEST`] / [`DEFAULT_MEMORY_REQUEST`]
    /// substituted per container for missing requests: used for scoring.
    pub non_zero: Resources,
}

/// Parses a quantity and returns its value times `scale`, rounded up
/// (`scale` 1000 gives milli-units). Values beyond `i64` saturate.
///
/// # Errors
/// [`QuantityError`] when the text is not `<number><suffix>` with a suffix
/// of `Ki Mi Gi Ti Pi Ei`, `n u m k M G T P E`, none, or `e<exp>`/`E<exp>`.
pub fn parse_quantity_scaled(text: &str, scale: i64) -> Result<i64, QuantityError> {
    let err = |reason| QuantityError {
        quantity: text.to_owned(),
        reason,
    };
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." {
        return Err(err("missing number"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => {
            if f.contains('.') {
                return Err(err("more than one decimal point"));
            }
            (i, f)
        }
        None => (number, ""),
    };
    // Digits as one integer and a power of ten that places the point.
    let digits: String = format!("{int_part}{frac_part}")
        .trim_start_matches('0')
        .to_owned();
    if digits.len() > 30 {
        return Err(err("too many digits"));
    }
    let mut mantissa: i128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa * 10 + i128::from(d - b'0');
    }
    let mut exp10 = -i32::try_from(frac_part.len()).map_err(|_| err("too many digits"))?;
    let mut pow2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        other if other.starts_with(['e', 'E']) => {
            let e: i32 = other[1..].parse().map_err(|_| err("bad exponent"))?;
            if e.abs() > 40 {
                return Err(err("exponent out of range"));
            }
            exp10 += e;
        }
        _ => return Err(err("unknown suffix")),
    }
    let mut value = mantissa.saturating_mul(i128::from(scale));
    value = value.saturating_mul(1i128 << pow2.min(62));
    if exp10 >= 0 {
        for _ in 0..exp10 {
            value = value.saturating_mul(10);
        }
    } else {
        let mut divisor: i128 = 1;
        for _ in 0..(-exp10) {
            divisor = divisor.saturating_mul(10);
        }
        // Round up, as Kubernetes does when it converts to a coarser unit.
        value = value / divisor + i128::from(value % divisor != 0);
    }
    if negative {
        value = -value;
    }
    Ok(i64::try_from(value).unwrap_or(if negative { i64::MIN } else { i64::MAX }))
}

/// CPU in millicores from a quantity (`"250m"` → 250, `"2"` → 2000).
///
/// # Errors
/// See [`parse_quantity_scaled`].
pub fn milli_cpu(q: &Quantity) -> Result<i64, QuantityError> {
    parse_quantity_scaled(&q.0, 1000)
}

/// A plain count or byte amount from a quantity, rounded up.
///
/// # Errors
/// See [`parse_quantity_scaled`].
pub fn value(q: &Quantity) -> Result<i64, QuantityError> {
    parse_quantity_scaled(&q.0, 1)
}

/// CPU and memory of a resource list (`requests`, `limits`,
/// `allocatable`); absent entries are zero.
///
/// # Errors
/// The first unparseable quantity.
pub fn resource_list(
    list: Option<&BTreeMap<String, Quantity>>,
) -> Result<Resources, QuantityError> {
    let mut r = Resources::ZERO;
    if let Some(list) = list {
        if let Some(q) = list.get("cpu") {
            r.milli_cpu = milli_cpu(q)?;
        }
        if let Some(q) = list.get("memory") {
            r.memory = value(q)?;
        }
    }
    Ok(r)
}

/// One container's requests. A resource with a limit but no request
/// requests its limit: Kubernetes' API defaulting does this, and we do it
/// here too so objects stored without that defaulting schedule the same.
fn container_requests(c: &Container) -> Result<(Resources, Resources), QuantityError> {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let pick = |name: &str| {
        requests
            .and_then(|m| m.get(name))
            .or_else(|| limits.and_then(|m| m.get(name)))
    };
    let mut r = Resources::ZERO;
    let mut nz = Resources {
        milli_cpu: DEFAULT_MILLI_CPU_REQUEST,
        memory: DEFAULT_MEMORY_REQUEST,
    };
    if let Some(q) = pick("cpu") {
        r.milli_cpu = milli_cpu(q)?;
        nz.milli_cpu = r.milli_cpu;
    }
    if let Some(q) = pick("memory") {
        r.memory = value(q)?;
        nz.memory = r.memory;
    }
    Ok((r, nz))
}

/// The pod's effective requests (kube-scheduler's `computePodResourceRequest`):
/// the sum over app containers and restartable ("sidecar") init
/// containers, or — if larger, per resource — what any ordinary init
/// container needs while it runs (its own request plus the sidecars
/// started before it); plus `spec.overhead`.
///
/// # Errors
/// The first unparseable quantity in the pod's containers or overhead.
pub fn pod_requests(pod: &Pod) -> Result<PodRequests, QuantityError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(PodRequests::default());
    };
    let mut sum = Resources::ZERO;
    let mut sum_nz = Resources::ZERO;
    for c in &spec.containers {
        let (r, nz) = container_requests(c)?;
        sum += r;
        sum_nz += nz;
    }
    let mut sidecars = Resources::ZERO;
    let mut sidecars_nz = Resources::ZERO;
    let mut init_peak = Resources::ZERO;
    let mut init_peak_nz = Resources::ZERO;
    for c in spec.init_containers.iter().flatten() {
        let (r, nz) = container_requests(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars += r;
            sidecars_nz += nz;
        } else {
            init_peak = init_peak.max(sidecars + r);
            init_peak_nz = init_peak_nz.max(sidecars_nz + nz);
        }
    }
    let overhead = resource_list(spec.overhead.as_ref())?;
    Ok(PodRequests {
        requests: (sum + sidecars).max(init_peak) + overhead,
        non_zero: (sum_nz + sidecars_nz).max(init_peak_nz) + overhead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn parses_cpu_forms() {
        assert_eq!(milli_cpu(&q("250m")).unwrap(), 250);
        assert_eq!(milli_cpu(&q("2")).unwrap(), 2000);
        assert_eq!(milli_cpu(&q("0.5")).unwrap(), 500);
        assert_eq!(milli_cpu(&q("1.25")).unwrap(), 1250);
        // Sub-millicore amounts round up.
        assert_eq!(milli_cpu(&q("100u")).unwrap(), 1);
        assert_eq!(milli_cpu(&q("1n")).unwrap(), 1);
        assert_eq!(milli_cpu(&q("0")).unwrap(), 0);
        assert_eq!(milli_cpu(&q("1e3")).unwrap(), 1_000_000);
    }

    #[test]
    fn parses_memory_forms() {
        assert_eq!(value(&q("128Mi")).unwrap(), 128 << 20);
        assert_eq!(value(&q("1Gi")).unwrap(), 1 << 30);
        assert_eq!(value(&q("1.5Gi")).unwrap(), 3 << 29);
        assert_eq!(value(&q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(value(&q("64k")).unwrap(), 64_000);
        assert_eq!(value(&q("129e6")).unwrap(), 129_000_000);
        assert_eq!(value(&q("1E")).unwrap(), 1_000_000_000_000_000_000);
        assert_eq!(value(&q("110")).unwrap(), 110);
        // Fractional bytes round up.
        assert_eq!(value(&q("1500m")).unwrap(), 2);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1Qi", "1..5", "Mi", "1e", "--1"] {
            assert!(value(&q(bad)).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(value(&q("9Ei")).unwrap(), i64::MAX);
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| kv.iter().map(|(k, v)| ((*k).to_owned(), q(v))).collect())
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: (!init.is_empty()).then_some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_sum_and_init_containers_take_max() {
        let p = pod(
            vec![
                container(&[("cpu", "200m"), ("memory", "100Mi")], &[]),
                container(&[("cpu", "300m"), ("memory", "100Mi")], &[]),
            ],
            vec![
                container(&[("cpu", "1"), ("memory", "50Mi")], &[]),
                container(&[("cpu", "100m"), ("memory", "300Mi")], &[]),
            ],
        );
        let r = pod_requests(&p).unwrap();
        // cpu: max(500m, 1000m); memory: max(200Mi, 300Mi), per resource.
        assert_eq!(
            r.requests,
            Resources {
                milli_cpu: 1000,
                memory: 300 << 20
            }
        );
    }

    #[test]
    fn sidecar_init_containers_add_to_the_sum() {
        let mut sidecar = container(&[("cpu", "100m")], &[]);
        sidecar.restart_policy = Some("Always".into());
        let p = pod(
            vec![container(&[("cpu", "200m")], &[])],
            vec![sidecar, container(&[("cpu", "250m")], &[])],
        );
        let r = pod_requests(&p).unwrap();
        // Sum 200 + sidecar 100 = 300; init after sidecar 100 + 250 = 350.
        assert_eq!(r.requests.milli_cpu, 350);
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let p = pod(
            vec![container(&[], &[("cpu", "500m"), ("memory", "1Gi")])],
            vec![],
        );
        assert_eq!(
            pod_requests(&p).unwrap().requests,
            Resources {
                milli_cpu: 500,
                memory: 1 << 30
            }
        );
    }

    #[test]
    fn non_zero_requests_default_missing_values_for_scoring() {
        let p = pod(
            vec![container(&[("memory", "1Gi")], &[]), Container::default()],
            vec![],
        );
        let r = pod_requests(&p).unwrap();
        assert_eq!(
            r.requests,
            Resources {
                milli_cpu: 0,
                memory: 1 << 30
            }
        );
        assert_eq!(
            r.non_zero,
            Resources {
                milli_cpu: 2 * DEFAULT_MILLI_CPU_REQUEST,
                memory: (1 << 30) + DEFAULT_MEMORY_REQUEST
            }
        );
    }

    #[test]
    fn overhead_is_added() {
        let mut p = pod(vec![container(&[("cpu", "100m")], &[])], vec![]);
        if let Some(spec) = p.spec.as_mut() {
            spec.overhead = Some([("cpu".to_owned(), q("50m"))].into());
        }
        assert_eq!(pod_requests(&p).unwrap().requests.milli_cpu, 150);
    }

    #[test]
    fn bad_quantity_in_pod_is_an_error() {
        let p = pod(vec![container(&[("cpu", "lots")], &[])], vec![]);
        assert!(pod_requests(&p).is_err());
    }
}

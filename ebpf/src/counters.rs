//! Per-CPU reason counters: no atomics needed, userspace sums the CPUs.

use skiff_ebpf_common::Reason;

use crate::maps::REASONS;

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(ptr) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *ptr += 1 };
    }
}

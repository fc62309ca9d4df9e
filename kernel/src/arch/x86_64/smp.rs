//! CPUs beyond the BSP: starting them through the Limine MP response, who is online, running a
//! function on other CPUs, and the cross-CPU ping.
//!
//! CPU indices are dense: the BSP is 0, the APs follow in the order of the MP response. An
//! index is what the per-CPU entry area and every per-CPU table use; the APIC ID is only for
//! addressing IPIs.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::Once;

use super::cpu::{self, Features};
use super::entry::vector;
use super::{apic, cea, paging, percpu};
use crate::boot::MpCpu;

/// The most CPUs the kernel runs: every per-CPU table is sized by it, and CPUs beyond it stay
/// asleep. 1,024 entry areas take 512 MiB of the CEA window; the static per-CPU tables about
/// 300 KiB (the ping sets, a bit per CPU pair, are 256 KiB of it).
pub const MAX_CPUS: usize = 1024;
const WORDS: usize = MAX_CPUS.div_ceil(64);

/// A set of CPU indices that any CPU may update.
pub struct CpuSet([AtomicU64; WORDS]);

impl CpuSet {
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; WORDS])
    }
    pub fn insert(&self, cpu: usize) {
        self.0[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::AcqRel);
    }
    pub fn contains(&self, cpu: usize) -> bool {
        self.0[cpu / 64].load(Ordering::Acquire) & (1 << (cpu % 64)) != 0
    }
    /// Empties the set, returning what it held.
    pub fn take(&self) -> [u64; WORDS] {
        core::array::from_fn(|w| self.0[w].swap(0, Ordering::AcqRel))
    }
    pub fn clear(&self) {
        self.take();
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.load(Ordering::Acquire).count_ones() as usize).sum()
    }
}

fn members(words: [u64; WORDS]) -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(move |&c| words[c / 64] & (1 << (c % 64)) != 0)
}

static FEATURES: Once<Features> = Once::new();
static ONLINE: AtomicUsize = AtomicUsize::new(0);
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Function pointers waiting to run on each CPU (0 = none).
static MAILBOX: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);

/// `PINGED_BY[c]`: CPUs waiting for `c` to answer; `ANSWERED[s]`: CPUs that answered `s`.
static PINGED_BY: [CpuSet; MAX_CPUS] = [const { CpuSet::new() }; MAX_CPUS];
static ANSWERED: [CpuSet; MAX_CPUS] = [const { CpuSet::new() }; MAX_CPUS];

pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

pub fn apic_id(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Acquire)
}

/// Publishes this CPU as online: its entry area, per-CPU data and APIC are ready.
fn mark_online(cpu: usize) {
    boot_clock::ONLINE[cpu].store(boot_clock::now(), Ordering::Relaxed);
    APIC_IDS[cpu].store(apic::id(), Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// TSC readings of the boot's milestones (0 until reached), for the boot figures of
/// `cargo xtask bench`: kernel entry to READY, and each AP's release to online.
pub mod boot_clock {
    use super::MAX_CPUS;
    use core::sync::atomic::{AtomicU64, Ordering};

    pub static KERNEL_ENTRY: AtomicU64 = AtomicU64::new(0);
    pub static APS_RELEASED: AtomicU64 = AtomicU64::new(0);
    pub static READY: AtomicU64 = AtomicU64::new(0);
    pub(super) static ONLINE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

    pub fn now() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is clear).
        unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (hi as u64) << 32 | lo as u64
    }

    pub fn stamp(milestone: &AtomicU64) {
        milestone.store(now(), Ordering::Relaxed);
    }

    /// When CPU `cpu` went online.
    pub fn online(cpu: usize) -> u64 {
        ONLINE.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed))
    }
}

/// Records the CPU features every AP turns on (read once, on the BSP).
pub fn set_features(features: Features) {
    FEATURES.call_once(|| features);
}

/// Marks the BSP online, once its local APIC is up.
pub fn bsp_online() {
    mark_online(0);
}

/// Sends every AP of the MP response to the park (`ap_park`), where it halts until
/// [`start_aps`]. Called first thing on the BSP, so that APs do not spin in the bootloader
/// while the BSP builds page tables and heap. Returns how many APs were parked.
pub fn park_aps(cpus: &[&MpCpu], bsp_lapic_id: u32) -> usize {
    super::ap_park::park(cpus, bsp_lapic_id)
}

/// Releases every parked AP to `ap_entry`, all at once, and waits until they are all online
/// or `timeout_ticks` of the BSP's timer have passed. Returns how many APs came up.
pub fn start_aps(cpus: &[&MpCpu], bsp_lapic_id: u32, timeout_ticks: u64) -> usize {
    boot_clock::stamp(&boot_clock::APS_RELEASED);
    let mut expected = 1;
    for cpu in cpus.iter().filter(|c| c.lapic_id != bsp_lapic_id).take(MAX_CPUS - 1) {
        super::ap_park::release(cpu);
        expected += 1;
    }
    let start = percpu::this().ticks.load(Ordering::Relaxed);
    while online() < expected && percpu::this().ticks.load(Ordering::Relaxed) - start < timeout_ticks {
        x86_64::instructions::hlt();
    }
    if online() < expected {
        log::error!("only {} of {} CPUs came online", online(), expected);
    }
    online() - 1
}

/// Where each AP arrives from the park: on the bootloader's page tables and stack.
pub(super) extern "C" fn ap_entry(cpu: &MpCpu) -> ! {
    paging::load();
    let features = FEATURES.get().copied().unwrap_or_else(Features::read);
    cpu::enable_protections(&features);
    super::fpu::init_this_cpu();
    let index = cpu.extra.load(Ordering::Acquire) as usize;
    let stack = cea::bring_up(index, cpu.lapic_id);
    super::run_on_stack(stack.top, ap_main, index)
}

extern "C" fn ap_main(index: usize) -> ! {
    apic::init_this_cpu();
    apic::start_timer();
    mark_online(index);
    idle()
}

/// The idle loop: run whatever lands in this CPU's mailbox, then ready threads, otherwise
/// sleep until an interrupt.
pub fn idle() -> ! {
    let me = percpu::this().cpu_index;
    loop {
        // Frames of ended threads' stacks go back while interrupts are still on.
        crate::mm::kvm::reclaim_stacks();
        // Interrupts stay off from the mailbox check until `idle_once`'s STI;HLT, so a wake-up
        // IPI cannot slip in between and be lost.
        x86_64::instructions::interrupts::disable();
        let f = MAILBOX[me].swap(0, Ordering::AcqRel);
        if f != 0 {
            x86_64::instructions::interrupts::enable();
            // SAFETY: only `run_on` stores to mailboxes, and it stores `fn()` pointers.
            let f: fn() = unsafe { core::mem::transmute(f) };
            f();
            OUTSTANDING.fetch_sub(1, Ordering::AcqRel);
        } else {
            crate::sched::idle_once();
        }
    }
}

/// The one TLB shootdown in flight: which address space and range, and who still has to
/// acknowledge it.
static SHOOTDOWN_LOCK: spin::Mutex<()> = spin::Mutex::new(());
static SHOOTDOWN_PML4: AtomicU64 = AtomicU64::new(0);
static SHOOTDOWN_RANGE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static SHOOTDOWN_PENDING: CpuSet = CpuSet::new();

/// Ranges longer than this many pages are flushed whole (a CR3 reload) instead of page by
/// page: the IPI handler runs with interrupts off, so its work must not grow with the range.
const FLUSH_PAGES_MAX: u64 = 32;

/// Makes every CPU in `cpus` forget translations of `[start, start+len)` in address space
/// `pml4` (all of them if the range is long), and waits until they have. Called with
/// interrupts enabled.
pub fn tlb_shootdown(pml4: u64, start: u64, len: u64, cpus: &CpuSet) {
    let _one_at_a_time = SHOOTDOWN_LOCK.lock();
    SHOOTDOWN_PML4.store(pml4, Ordering::Release);
    SHOOTDOWN_RANGE[0].store(start, Ordering::Release);
    SHOOTDOWN_RANGE[1].store(start + len, Ordering::Release);
    let me = percpu::this().cpu_index;
    for cpu in (0..online()).filter(|&c| cpus.contains(c)) {
        if cpu == me {
            flush_range(pml4, start, start + len);
        } else {
            SHOOTDOWN_PENDING.insert(cpu);
            apic::send_ipi(apic_id(cpu), vector::IPI_TLB_SHOOTDOWN);
        }
    }
    while SHOOTDOWN_PENDING.len() != 0 {
        core::hint::spin_loop();
    }
}

/// `SHOOTDOWN_PML4` of a kernel-half shootdown: flushed on every CPU whatever it runs.
const KERNEL_SPACE: u64 = u64::MAX;

/// Makes every online CPU forget its translations of kernel `[start, start+len)` (all
/// kernel translations if the range is long), and waits until they have. Called with
/// interrupts enabled.
pub fn tlb_shootdown_kernel(start: u64, len: u64) {
    let all = CpuSet::new();
    for cpu in 0..online() {
        all.insert(cpu);
    }
    tlb_shootdown(KERNEL_SPACE, start, len.min(u64::MAX - start), &all);
}

fn flush_range(pml4: u64, start: u64, end: u64) {
    if pml4 == KERNEL_SPACE {
        if (end - start) / 4096 > FLUSH_PAGES_MAX {
            // Toggling CR4.PGE drops every translation, global ones included (SDM Vol. 3A
            // §4.10.4.1).
            // SAFETY: clearing and setting PGE again changes no mapping, only flushes the TLB.
            unsafe {
                use x86_64::registers::control::{Cr4, Cr4Flags};
                let cr4 = Cr4::read();
                if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
                    Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
                    Cr4::write(cr4);
                } else {
                    x86_64::instructions::tlb::flush_all();
                }
            }
        } else {
            for va in (start..end).step_by(4096) {
                x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
            }
        }
        return;
    }
    let (cr3, _) = x86_64::registers::control::Cr3::read_raw();
    if cr3.start_address().as_u64() != pml4 {
        return; // not loaded here: the next CR3 load flushes anyway
    }
    if (end - start) / 4096 > FLUSH_PAGES_MAX {
        // Reloading CR3 drops every non-global translation and paging-structure cache entry
        // (SDM Vol. 3A §4.10.4.1); user pages are never global.
        x86_64::instructions::tlb::flush_all();
        return;
    }
    for va in (start..end).step_by(4096) {
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
    }
}

/// The IPI_TLB_SHOOTDOWN handler.
pub fn on_tlb_shootdown() {
    let me = percpu::this().cpu_index;
    flush_range(
        SHOOTDOWN_PML4.load(Ordering::Acquire),
        SHOOTDOWN_RANGE[0].load(Ordering::Acquire),
        SHOOTDOWN_RANGE[1].load(Ordering::Acquire),
    );
    SHOOTDOWN_PENDING.0[me / 64].fetch_and(!(1 << (me % 64)), Ordering::AcqRel);
}

/// Queues `f` on CPU `cpu` (not the caller) and wakes it.
pub fn run_on(cpu: usize, f: fn()) {
    OUTSTANDING.fetch_add(1, Ordering::AcqRel);
    while MAILBOX[cpu].compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Acquire).is_err() {
        core::hint::spin_loop();
    }
    apic::send_ipi(apic_id(cpu), vector::IPI_WAKE);
}

/// Runs `f` on every online CPU, the caller included, and waits until all have finished.
pub fn run_on_all(f: fn()) {
    let me = percpu::this().cpu_index;
    for cpu in (0..online()).filter(|&c| c != me) {
        run_on(cpu, f);
    }
    f();
    while OUTSTANDING.load(Ordering::Acquire) != 0 {
        crate::sched::idle_once();
    }
}

/// Asks CPU `target` (which may be this one) to answer.
pub fn ping(target: usize) {
    let me = percpu::this().cpu_index;
    PINGED_BY[target].insert(me);
    apic::send_ipi(apic_id(target), vector::IPI_PING);
}

/// Whether `target` answered a ping from this CPU.
pub fn answered_by(target: usize) -> bool {
    ANSWERED[percpu::this().cpu_index].contains(target)
}

pub fn answers_received() -> usize {
    ANSWERED[percpu::this().cpu_index].len()
}

/// The IPI_PING handler: answer every CPU that pinged us.
pub fn on_ping() {
    let me = percpu::this().cpu_index;
    for sender in members(PINGED_BY[me].take()) {
        ANSWERED[sender].insert(me);
    }
}

/// `PerCpu::nmi_request` bits: what the sender of an NMI wants the receiver to do.
pub const NMI_BACKTRACE: u64 = 1 << 0;
pub const NMI_STOP: u64 = 1 << 1;

static BACKTRACES: AtomicUsize = AtomicUsize::new(0);

/// Sends every other online CPU an NMI carrying `request`; returns how many were sent.
pub fn nmi_others(request: u64) -> usize {
    let me = percpu::cpu_index_or_boot();
    let mut sent = 0;
    for cpu in (0..online()).filter(|&c| c != me) {
        percpu::of(cpu).nmi_request.fetch_or(request, Ordering::AcqRel);
        apic::send_nmi(apic_id(cpu));
        sent += 1;
    }
    sent
}

pub(crate) fn backtrace_answered() {
    BACKTRACES.fetch_add(1, Ordering::AcqRel);
}

/// Asks every other CPU where it is, by NMI (works even with their interrupts off), and waits
/// up to `spins` iterations for the answers; returns how many answered.
pub fn backtrace_others(spins: u64) -> usize {
    let before = BACKTRACES.load(Ordering::Acquire);
    let sent = nmi_others(NMI_BACKTRACE);
    let mut n = 0;
    while BACKTRACES.load(Ordering::Acquire) - before < sent && n < spins {
        core::hint::spin_loop();
        n += 1;
    }
    BACKTRACES.load(Ordering::Acquire) - before
}

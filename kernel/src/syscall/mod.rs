//! System-call dispatch: decode, validate every argument, run, and put the result in RAX.
//! Nothing a user program passes can make the kernel panic: bad numbers, ranges and pointers
//! come back as `abi::Error` values.

mod fastpath;
pub mod ipc;
pub mod uaccess;

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::{apic, percpu, smp};
use crate::mm::aspace::user_range_ok;
use crate::mm::unmap_walk::{Budget, Freed};
use alloc::vec::Vec;
use crate::sched::{self, Process, Thread};
use abi::layout::USER_STACK_TOP;
use abi::{syscall as nr, Error};

/// Longest line `log` accepts.
const MAX_LOG: usize = 512;
/// Largest single `map`.
const MAX_MAP: u64 = 64 * 1024 * 1024;
/// RFLAGS bits a user context may set: CF PF AF ZF SF TF DF OF, AC, RF, ID.
const USER_RFLAGS: u64 = 0x0000_0cd5 | 1 << 8 | 1 << 18 | 1 << 16 | 1 << 21;

pub fn dispatch(frame: &mut TrapFrame) {
    #[cfg(feature = "testing")]
    if (nr::BENCH_FIRST..=nr::BENCH_LAST).contains(&frame.rax) {
        return crate::testing::bench::dispatch(frame);
    }
    if fastpath::try_fast(frame) {
        return;
    }
    let Some(thread) = sched::current() else {
        frame.rax = Error::NoSuchCall.to_raw();
        return;
    };
    let Some(process) = thread.process.clone() else {
        frame.rax = Error::NoSuchCall.to_raw();
        return;
    };
    if let Some(result) = ipc::dispatch(frame, &thread, &process) {
        frame.rax = match result {
            Ok(v) => v,
            Err(e) => e.to_raw(),
        };
        return;
    }
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let result = match frame.rax {
        nr::LOG => log(&process, args[0], args[1]),
        nr::YIELD => {
            sched::schedule();
            Ok(0)
        }
        nr::SLEEP => {
            let ticks = args[0].min(3_600_000).div_ceil(1000 / apic::TIMER_HZ);
            sched::sleep_ticks(ticks);
            Ok(0)
        }
        nr::THREAD_EXIT => {
            drop(thread);
            sched::exit_current()
        }
        nr::THREAD_CREATE => thread_create(&process, args),
        nr::CPU_ID => Ok(percpu::this().cpu_index as u64),
        nr::CPU_COUNT => Ok(smp::online() as u64),
        nr::MAP => map(&process, args[0]),
        nr::UNMAP => unmap(&process, args[0], args[1]),
        nr::PROCESS_EXIT => {
            thread.set_exit_status(abi::thread_exit::PROCESS_ENDED);
            process.kill(args[0] as i64);
            drop((thread, process));
            sched::exit_current()
        }
        nr::SET_RETURN_CONTEXT => {
            if !uaccess::is_user_range(args[1], 0) {
                Err(Error::BadAddress)
            } else {
                frame.rip = args[0];
                frame.rsp = args[1];
                frame.rflags = (args[2] & USER_RFLAGS) | 0x202;
                Ok(0)
            }
        }
        nr::EXIT_PATH_COUNTS => exit_path_counts(args[0]),
        nr::THREAD_ID => Ok(thread.tid),
        nr::WAIT_THREADS => {
            process.wait_others(&thread);
            Ok(0)
        }
        _ => Err(Error::NoSuchCall),
    };
    frame.rax = match result {
        Ok(v) => v,
        Err(e) => e.to_raw(),
    };
}

fn log(process: &Process, ptr: u64, len: u64) -> Result<u64, Error> {
    let len = (len as usize).min(MAX_LOG);
    let mut buf = [0u8; MAX_LOG];
    uaccess::copy_from_user(&mut buf[..len], ptr)?;
    if !sched::user_log_allowed(process) {
        return Ok(0);
    }
    let text = core::str::from_utf8(&buf[..len]).unwrap_or("<not UTF-8>");
    log::info!(target: process.name.as_str(), "{}", text.trim_end());
    Ok(len as u64)
}

fn thread_create(process: &Arc<Process>, args: [u64; 6]) -> Result<u64, Error> {
    let [entry, stack_top, arg, cpu, ..] = args;
    if entry >= abi::layout::USER_END || stack_top % 16 != 0 || !uaccess::is_user_range(stack_top, 0) {
        return Err(Error::InvalidArgument);
    }
    let cpu = match cpu {
        nr::ANY_CPU => None,
        c if (c as usize) < smp::online() => Some(c as usize),
        _ => return Err(Error::NotFound),
    };
    crate::mm::kvm::reclaim_stacks();
    let t: Arc<Thread> = sched::spawn_user(process, entry, stack_top, [arg, 0], cpu).ok_or(Error::NoMemory)?;
    Ok(t.tid)
}

fn map(process: &Process, len: u64) -> Result<u64, Error> {
    if len == 0 || len > MAX_MAP {
        return Err(Error::InvalidArgument);
    }
    let len = len.div_ceil(4096) * 4096;
    let mut next = process.next_map.lock();
    let addr = *next;
    if addr + len > USER_STACK_TOP - abi::layout::USER_STACK_SIZE {
        return Err(Error::NoMemory);
    }
    // Reserve only: each page is mapped, zeroed, when first touched (`Process::demand_fault`).
    process.demand.lock().insert(addr, addr + len).map_err(|_| Error::NoMemory)?;
    // Leave an unreserved page between mappings so an overrun faults.
    *next = addr + len + 4096;
    Ok(addr)
}

/// What one `unmap` call may do before it returns partial progress: page-table entries read
/// (at every level; an empty entry skips everything below it) and pages freed.
const UNMAP_BUDGET: Budget = Budget { visits: 8192, pages: 1024 };

/// `unmap(addr, len) -> bytes done`: the reservation of the whole range ends at once; the
/// pages of `[addr, addr + done)` are freed. `done < len` when the budget ran out (see
/// `abi::syscall::UNMAP`): the caller goes on from `addr + done`.
fn unmap(process: &Process, addr: u64, len: u64) -> Result<u64, Error> {
    let len = len.checked_next_multiple_of(4096).ok_or(Error::InvalidArgument)?;
    if !user_range_ok(addr, len) || addr < abi::layout::USER_MAP_BASE {
        return Err(Error::InvalidArgument);
    }
    process.demand.lock().remove(addr, addr + len).map_err(|_| Error::NoMemory)?;
    // Each freed table cost at least 512 visits (its own entries): the vector never grows.
    let mut freed = Vec::new();
    freed.try_reserve_exact(UNMAP_BUDGET.pages + UNMAP_BUDGET.visits / 512 + 1).map_err(|_| Error::NoMemory)?;
    let (mut low, mut high) = (u64::MAX, 0);
    let progress = process.aspace.lock().unmap(addr, len, UNMAP_BUDGET, |f| {
        freed.push(match f {
            Freed::Page { frame, virt } => {
                (low, high) = (low.min(virt), high.max(virt + 4096));
                frame
            }
            Freed::Table(table) => table,
        })
    });
    // Free only once no CPU can still reach the pages through a stale TLB entry. Nothing was
    // mapped: nothing can be cached. A freed page table may sit in paging-structure caches for
    // any address it covered: flush everything then.
    if progress.tables > 0 {
        smp::tlb_shootdown(process.pml4(), 0, abi::layout::USER_END, &process.ran_on);
    } else if progress.pages > 0 {
        smp::tlb_shootdown(process.pml4(), low, high - low, &process.ran_on);
    }
    let aspace = process.aspace.lock();
    for frame in freed {
        aspace.free_frame(frame);
    }
    Ok(progress.next - addr)
}

fn exit_path_counts(out: u64) -> Result<u64, Error> {
    let mut totals = [0u64; 3];
    for c in 0..smp::online() {
        let p = percpu::of(c);
        totals[0] += p.sysret_exits.load(Ordering::Relaxed);
        totals[1] += p.iret_exits.load(Ordering::Relaxed);
        totals[2] += p.bad_iret_kills.load(Ordering::Relaxed);
    }
    let mut bytes = [0u8; 24];
    for (i, t) in totals.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&t.to_le_bytes());
    }
    uaccess::copy_to_user(out, &bytes)?;
    Ok(0)
}

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use rt::{println, sys, thread, Error};

/// Bytes each worker maps, fills and unmaps.
const MAP_LEN: usize = 64 * 1024;

/// Workers that found something wrong, in the current run.
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// How a run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Workers asked for: one per CPU.
    pub workers: usize,
    /// Workers that could not be started or reported a failure.
    pub failed: usize,
}

/// Starts worker `w` pinned to CPU `w` for every `w < cpus` and waits until all have ended.
/// Each worker prints `worker W on cpu C: ok (N syscalls)`, or what went wrong.
///
/// Waits with `wait_threads`, so call it while no other thread of the process runs.
pub fn run_one_per_cpu(cpus: usize) -> Outcome {
    FAILED.store(0, Ordering::Relaxed);
    for w in 0..cpus {
        if let Err(e) = thread::spawn(worker, w, Some(w)) {
            println!("worker {w}: cannot start on cpu {w}: {e:?}");
            FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Err(e) = sys::wait_threads() {
        println!("workers: wait_threads failed: {e:?}");
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    Outcome {
        workers: cpus,
        failed: FAILED.load(Ordering::Relaxed),
    }
}

fn worker(w: usize) {
    let mut calls = 0;
    match check_everything(w, &mut calls) {
        Ok(()) => println!("worker {w} on cpu {w}: ok ({calls} syscalls)"),
        Err(failure) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            println!("worker {w}: error: {failure} (after {calls} syscalls)");
        }
    }
}

enum Failure {
    Call(&'static str, Error),
    WrongCpu {
        when: &'static str,
        on: usize,
    },
    Memory {
        offset: usize,
        found: u64,
        expected: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Failure::Call(name, e) => write!(f, "{name} failed: {e:?}"),
            Failure::WrongCpu { when, on } => write!(f, "running on cpu {on} {when}"),
            Failure::Memory {
                offset,
                found,
                expected,
            } => write!(
                f,
                "mapped memory at offset {offset:#x} holds {found:#x}, expected {expected:#x}"
            ),
        }
    }
}

/// Counts a system call and names it if it failed.
fn call<T>(calls: &mut u32, name: &'static str, r: Result<T, Error>) -> Result<T, Failure> {
    *calls += 1;
    r.map_err(|e| Failure::Call(name, e))
}

fn check_everything(w: usize, calls: &mut u32) -> Result<(), Failure> {
    let on_own_cpu = |calls: &mut u32, when| {
        let on = call(calls, "cpu_id", sys::cpu_id())?;
        if on == w {
            Ok(())
        } else {
            Err(Failure::WrongCpu { when, on })
        }
    };
    on_own_cpu(calls, "at start")?;
    call(calls, "yield", sys::yield_now())?;
    on_own_cpu(calls, "after yield")?;
    call(calls, "sleep", sys::sleep_ms(10))?;
    on_own_cpu(calls, "after sleep")?;

    let region = call(calls, "map", sys::map(MAP_LEN))?;
    let checked = check_fresh_memory(region.cast::<u64>(), MAP_LEN / 8, w as u64);
    // SAFETY: `region` came from `map(MAP_LEN)` and nothing refers to it any more.
    call(calls, "unmap", unsafe { sys::unmap(region, MAP_LEN) })?;
    checked?;

    call(calls, "thread_id", sys::thread_id())?;
    Ok(())
}

/// Fresh memory must read as zero, then hold what we write.
fn check_fresh_memory(words: *mut u64, count: usize, seed: u64) -> Result<(), Failure> {
    let pattern = |i: usize| (seed << 56) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for i in 0..count {
        // SAFETY: `words` is `count` page-aligned, mapped, writable u64 that only this thread
        // uses; volatile, so every access really reaches the memory.
        let found = unsafe { words.add(i).read_volatile() };
        if found != 0 {
            return Err(Failure::Memory {
                offset: i * 8,
                found,
                expected: 0,
            });
        }
        // SAFETY: as above.
        unsafe { words.add(i).write_volatile(pattern(i)) };
    }
    for i in 0..count {
        // SAFETY: as above.
        let found = unsafe { words.add(i).read_volatile() };
        if found != pattern(i) {
            return Err(Failure::Memory {
                offset: i * 8,
                found,
                expected: pattern(i),
            });
        }
    }
    Ok(())
}

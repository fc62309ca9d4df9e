//! fuzz: the system-call fuzzer of the kernel scenario `fuzz` (`cargo xtask fuzz`), and its
//! victim. init starts one `worker` process pinned to every CPU and one `victim`:
//!
//! - `worker cpu=C seed=S count=N`: N random system calls with hostile arguments from a
//!   generator seeded by S and C (`worker`); prints progress, then `FUZZ` summary lines
//!   (`tally`); exit status 0 if all N were made and nothing anomalous was seen.
//! - `victim`: checks its registers and a memory pattern on every CPU the whole time, until
//!   init signals its stop notification (`victim`); exit status 0 if nothing changed.
//!
//! The same seed, count and CPU count give every worker the same sequence of calls (their
//! interleaving across CPUs is the machine's). Start capabilities: `initial(0)` the console
//! (SEND); the victim also `initial(1)`, its stop notification.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

// On the host only their unit tests use them.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod calls;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod hostile;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod rng;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod tally;
#[cfg(target_os = "none")]
mod victim;
#[cfg(target_os = "none")]
mod worker;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("fuzz runs on x86_64-unknown-none as a boot module: `cargo xtask fuzz` boots it");
    std::process::exit(2);
}

/// The value of `key=` in `arg`, decimal or `0x` hexadecimal.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
fn number(arg: &str, key: &str) -> Option<u64> {
    let v = arg.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[cfg(target_os = "none")]
mod program {
    use rt::println;

    fn main(arg: &str) -> i32 {
        rt::console::set(abi::cap::initial(0), "fuzz");
        let mode = arg.split_whitespace().next().unwrap_or("");
        match mode {
            "worker" => match (super::number(arg, "cpu"), super::number(arg, "seed"), super::number(arg, "count")) {
                (Some(cpu), Some(seed), Some(count)) => super::worker::run(cpu, seed, count),
                _ => {
                    println!("usage: worker cpu=C seed=S count=N (got {arg:?})");
                    2
                }
            },
            "victim" => super::victim::run(),
            _ => {
                println!("usage: fuzz worker cpu=C seed=S count=N | fuzz victim (got {arg:?})");
                2
            }
        }
    }

    rt::entry!(main);
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_read_in_decimal_and_hex() {
        assert_eq!(super::number("worker cpu=3 seed=0x10 count=100", "seed"), Some(16));
        assert_eq!(super::number("worker cpu=3 seed=0x10 count=100", "count"), Some(100));
        assert_eq!(super::number("worker cpu=3", "count"), None);
        assert_eq!(super::number("worker xcount=5", "count"), None);
        assert_eq!(super::number("worker count=five", "count"), None);
    }
}

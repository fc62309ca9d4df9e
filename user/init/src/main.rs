//! init, the root task (pid 1): for now it greets, runs one worker thread per CPU (pinned
//! there) and returns when all are done.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("init runs on x86_64-unknown-none as a boot module: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use rt::{println, sys};

    fn main(arg: &str) -> i32 {
        let cpus = match sys::cpu_count() {
            Ok(n) => n,
            Err(e) => {
                println!("init: cpu_count failed: {e:?}");
                return 1;
            }
        };
        println!("init: hello from pid-1, {cpus} CPUs, arg {arg:?}");
        let outcome = workers::run_one_per_cpu(cpus);
        if outcome.failed == 0 {
            println!("init: all {} workers done", outcome.workers);
            0
        } else {
            println!(
                "init: all {} workers done, {} failed",
                outcome.workers, outcome.failed
            );
            1
        }
    }

    rt::entry!(main);
}

//! utest: the user side of the kernel's test scenarios. The argument string (the scenario
//! name) picks one; the kernel side judges the log and how the process and its threads ended.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "utest runs on x86_64-unknown-none as a boot module: the kernel's test scenarios start it"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod bounded;
#[cfg(target_os = "none")]
mod caps;
#[cfg(target_os = "none")]
mod faults;
#[cfg(target_os = "none")]
mod fpu;
#[cfg(target_os = "none")]
mod hazards;
#[cfg(target_os = "none")]
mod ipc;
#[cfg(target_os = "none")]
mod preempt;
#[cfg(target_os = "none")]
mod sysret;

#[cfg(target_os = "none")]
mod program {
    use rt::{println, sys};

    /// A scenario: its name (the argument string) and what runs it (the exit status).
    struct Scenario {
        name: &'static str,
        run: fn() -> i32,
    }

    const SCENARIOS: &[Scenario] = &[
        Scenario {
            name: "user",
            run: user,
        },
        Scenario {
            name: "sysret",
            run: crate::sysret::run,
        },
        Scenario {
            name: "user_faults",
            run: crate::faults::run,
        },
        Scenario {
            name: "preempt",
            run: crate::preempt::run,
        },
        Scenario {
            name: "ipc",
            run: crate::ipc::run,
        },
        Scenario {
            name: "caps",
            run: crate::caps::run,
        },
        Scenario {
            name: "hazards",
            run: crate::hazards::run,
        },
        Scenario {
            name: "fpu_a",
            run: || crate::fpu::run_pair(1),
        },
        Scenario {
            name: "fpu_b",
            run: || crate::fpu::run_pair(2),
        },
        Scenario {
            name: "fpu_secret",
            run: crate::fpu::run_secret,
        },
        Scenario {
            name: "fpu_fresh",
            run: crate::fpu::run_fresh,
        },
        Scenario {
            name: "bounded",
            run: crate::bounded::run,
        },
    ];

    fn main(arg: &str) -> i32 {
        let name = arg.trim();
        match SCENARIOS.iter().find(|s| s.name == name) {
            Some(scenario) => (scenario.run)(),
            None => {
                println!("utest: unknown scenario {name:?}; known scenarios:");
                for scenario in SCENARIOS {
                    println!("utest:   {}", scenario.name);
                }
                2
            }
        }
    }

    rt::entry!(main);

    /// The init demo: one worker pinned to each CPU, each checking a few system calls.
    fn user() -> i32 {
        let cpus = match sys::cpu_count() {
            Ok(n) => n,
            Err(e) => {
                println!("user: cpu_count failed: {e:?}");
                return 1;
            }
        };
        println!("user: {cpus} CPUs, one worker each");
        let outcome = workers::run_one_per_cpu(cpus);
        println!(
            "user: all {} workers done, {} failed",
            outcome.workers, outcome.failed
        );
        i32::from(outcome.failed != 0)
    }
}

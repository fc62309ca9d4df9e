//! Building the bare-metal images: the kernel, the bridge and every boot module.
//!
//! A file `boot:///boot/NAME` in limine.cfg is the ELF of the workspace binary `NAME`, built for
//! x86_64-unknown-none: `kernel` by the kernel package, `init`, `console`, ... by the user/
//! packages (whichever package has a `[[bin]]` of that name).

use crate::manifest::Manifest;
use crate::util::{cargo, run_visible, step, target_dir, Fnv, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const TARGET: &str = "x86_64-unknown-none";
pub const KERNEL_BIN: &str = "kernel";
pub const BRIDGE_BIN: &str = "limine-bridge";

/// A built image and the hash of its bytes (for the ISO cache key).
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub hash: u64,
}

/// The images of one build, by binary name.
#[derive(Clone, Debug, Default)]
pub struct Images {
    pub by_name: BTreeMap<String, Image>,
}

impl Images {
    pub fn get(&self, name: &str) -> Result<&Image> {
        self.by_name
            .get(name)
            .ok_or_else(|| format!("internal: image {name} was not built"))
    }
}

fn profile_dir(release: bool) -> PathBuf {
    target_dir()
        .join(TARGET)
        .join(if release { "release" } else { "debug" })
}

/// Which kernel: a production one, or one with the test scenarios, their verdicts and the
/// benchmark calls compiled in (the kernel's cargo feature `testing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Production,
    Testing,
}

impl Flavor {
    /// The kernel's file name in the profile folder: each flavor keeps its own copy.
    fn kernel_file(self) -> &'static str {
        match self {
            Flavor::Production => "kernel.production",
            Flavor::Testing => "kernel.testing",
        }
    }

    /// Testing when the kernel command line asks for a scenario (`test=NAME`).
    pub fn for_cmdline(cmdline: &str) -> Flavor {
        match crate::run::scenario_in(cmdline) {
            Some(_) => Flavor::Testing,
            None => Flavor::Production,
        }
    }
}

fn cargo_build(release: bool, selection: &[&str], bins: &[&str], features: &[&str]) -> Result<()> {
    let mut command = cargo();
    command.arg("build").args(["--target", TARGET]);
    if release {
        command.arg("--release");
    }
    command.args(selection);
    for feature in features {
        command.args(["--features", feature]);
    }
    for bin in bins {
        command.args(["--bin", bin]);
    }
    run_visible(&mut command)
}

/// Builds the production kernel alone (quietly) and returns its path.
pub fn build_production_kernel() -> Result<PathBuf> {
    crate::tools::ensure_rust_target()?;
    cargo_build(true, &["-p", "kernel"], &[KERNEL_BIN], &[])?;
    let copy = profile_dir(true).join("kernel.production");
    std::fs::copy(profile_dir(true).join(KERNEL_BIN), &copy).map_err(|e| format!("cannot copy the kernel to {}: {e}", copy.display()))?;
    Ok(copy)
}

/// The kernel ELF (with its debug information) that an ISO of `flavor` carries, stripped.
pub fn kernel_path(release: bool, flavor: Flavor) -> PathBuf {
    profile_dir(release).join(flavor.kernel_file())
}

/// The ELF of the user program `name`, with its debug information.
pub fn program_path(release: bool, name: &str) -> PathBuf {
    profile_dir(release).join(name)
}

/// Builds the kernel, the modules the manifest names and (for the bridge path) the bridge.
pub fn build(manifest: &Manifest, release: bool, with_bridge: bool, flavor: Flavor) -> Result<Images> {
    crate::tools::ensure_rust_target()?;
    let mut names: Vec<String> = Vec::new();
    match flavor {
        Flavor::Production => {
            step("building kernel...");
            cargo_build(release, &["-p", "kernel"], &[KERNEL_BIN], &[])?;
        }
        Flavor::Testing => {
            step("building kernel (with test scenarios)...");
            cargo_build(release, &["-p", "kernel"], &[KERNEL_BIN], &["testing"])?;
        }
    }
    let kernel = flavor.kernel_file();
    // Both flavors build to the same path: keep each one's bytes apart, so a build of the
    // other flavor cannot change an ISO being made from this one.
    let kernel_copy = profile_dir(release).join(kernel);
    std::fs::copy(profile_dir(release).join(KERNEL_BIN), &kernel_copy)
        .map_err(|e| format!("cannot copy the kernel to {}: {e}", kernel_copy.display()))?;
    names.push(KERNEL_BIN.into());
    if with_bridge {
        step("building bridge...");
        cargo_build(release, &["-p", "bridge"], &[BRIDGE_BIN], &[])?;
        names.push(BRIDGE_BIN.into());
    }
    let modules: Vec<&str> = manifest
        .files()
        .into_iter()
        .map(|p| p.binary_name())
        .filter(|n| !names.iter().any(|m| m == n))
        .collect();
    if !modules.is_empty() {
        step(format!("building modules {}...", modules.join(", ")));
        // --workspace with --bin builds only the packages that have these binaries; the host
        // tools are left out so their dependencies' features do not leak into the images.
        cargo_build(
            release,
            &[
                "--workspace",
                "--exclude",
                "xtask",
                "--exclude",
                "boot-tests",
            ],
            &modules,
            &[],
        )?;
        names.extend(modules.iter().map(|m| m.to_string()));
    }
    let mut images = Images::default();
    for name in names {
        let path = profile_dir(release).join(if name == KERNEL_BIN { kernel } else { &name });
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cargo built {name} but {} is unreadable: {e}",
                path.display()
            )
        })?;
        let hash = Fnv::new().bytes(&bytes).finish();
        images.by_name.insert(name, Image { path, hash });
    }
    Ok(images)
}

//! Host tools: check that they are there (and new enough), install them on Debian when we are
//! root, else stop with the exact commands to run.

use crate::util::{is_root, run_captured, run_visible, step, which, Result};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// QEMU older than this lacks x2APIC under TCG (bookworm's 7.2 does).
pub const QEMU_MIN: (u32, u32) = (8, 1);
const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Qemu,
    /// grub-mkrescue with the BIOS (i386-pc) modules.
    GrubRescue,
    Xorriso,
    /// `mformat`, which grub-mkrescue uses for the EFI image.
    Mtools,
    /// Debian's Bochs with its BIOS images (only when no `BOCHS` is given).
    Bochs,
    /// `objcopy`, which strips the debug sections off the images on an ISO.
    Binutils,
    /// OVMF, QEMU's UEFI firmware ([`OVMF_FD`]).
    Ovmf,
}

/// Debian's OVMF image for `qemu -bios` (package `ovmf`): code and variables in one, without
/// Secure Boot; the variables live only as long as the machine.
pub const OVMF_FD: &str = "/usr/share/ovmf/OVMF.fd";

impl Tool {
    fn packages(self) -> &'static [&'static str] {
        match self {
            Tool::Qemu => &["qemu-system-x86"],
            Tool::GrubRescue => &["grub-common", "grub-pc-bin"],
            Tool::Xorriso => &["xorriso"],
            Tool::Mtools => &["mtools"],
            // bochs-term satisfies bochs' GUI dependency without pulling in wxWidgets.
            Tool::Bochs => &["bochs", "bochs-term", "bochsbios", "vgabios"],
            Tool::Binutils => &["binutils"],
            Tool::Ovmf => &["ovmf"],
        }
    }

    /// `Ok` if the tool is usable, else why not.
    fn check(self) -> std::result::Result<(), String> {
        match self {
            Tool::Qemu => {
                let version = qemu_version()?;
                if version < QEMU_MIN {
                    return Err(format!(
                        "QEMU {}.{} is too old: TCG emulates x2APIC from {}.{} on",
                        version.0, version.1, QEMU_MIN.0, QEMU_MIN.1
                    ));
                }
                Ok(())
            }
            Tool::GrubRescue => {
                which("grub-mkrescue").ok_or("grub-mkrescue is missing")?;
                if !Path::new(GRUB_I386_PC).join("multiboot2.mod").is_file() {
                    return Err(format!("GRUB's BIOS modules ({GRUB_I386_PC}) are missing"));
                }
                Ok(())
            }
            Tool::Xorriso => which("xorriso")
                .map(drop)
                .ok_or_else(|| "xorriso is missing".into()),
            Tool::Mtools => which("mformat")
                .map(drop)
                .ok_or_else(|| "mformat (mtools) is missing".into()),
            Tool::Binutils => which("objcopy")
                .map(drop)
                .ok_or_else(|| "objcopy (binutils) is missing".into()),
            Tool::Ovmf => match Path::new(OVMF_FD).is_file() {
                true => Ok(()),
                false => Err(format!("OVMF ({OVMF_FD}) is missing")),
            },
            Tool::Bochs => {
                which("bochs").ok_or("bochs is missing")?;
                for file in [
                    "/usr/share/bochs/BIOS-bochs-latest",
                    "/usr/share/vgabios/vgabios.bin",
                ] {
                    if !Path::new(file).is_file() {
                        return Err(format!("{file} is missing"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// `qemu-system-x86_64 --version` as (major, minor).
pub fn qemu_version() -> std::result::Result<(u32, u32), String> {
    which("qemu-system-x86_64").ok_or("qemu-system-x86_64 is missing")?;
    let output = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    parse_qemu_version(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| "cannot read the version from `qemu-system-x86_64 --version`".into())
}

/// Reads "QEMU emulator version 10.0.2 (Debian ...)".
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((major, minor))
}

fn os_codename() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// Whether any apt source already lists `suite`.
fn apt_suite_enabled(suite: &str) -> bool {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()).filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("list" | "sources")
            )
        }));
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.split_whitespace().any(|w| w == suite))
        })
}

/// `debian.sources` with `backports` added to the `Suites:` line that lists `codename` itself;
/// `None` if there is no such line.
pub fn add_backports_suite(sources: &str, codename: &str) -> Option<String> {
    let backports = format!("{codename}-backports");
    let mut changed = false;
    let lines: Vec<String> = sources
        .lines()
        .map(|line| match line.strip_prefix("Suites:") {
            Some(suites) if !changed && suites.split_whitespace().any(|s| s == codename) => {
                changed = true;
                format!("{} {backports}", line.trim_end())
            }
            _ => line.to_string(),
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn apt_get(args: &[&str]) -> Result<()> {
    let mut command = Command::new("apt-get");
    // Another apt-get (unattended upgrades on a fresh machine, a second xtask) holds dpkg's
    // lock for a while: wait for it rather than fail.
    command.args(["-o", "DPkg::Lock::Timeout=600"]).args(args).env("DEBIAN_FRONTEND", "noninteractive");
    step(format!("apt-get {}", args.join(" ")));
    run_captured(&mut command).map(drop)
}

fn apt_update() -> Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        apt_get(&["update", "-q"])?;
    }
    Ok(())
}

/// The commands that install `missing` (for the message when we may not run them).
fn install_commands(missing: &[Tool], codename: &str) -> Vec<String> {
    let mut commands = vec!["apt-get update".to_string()];
    let mut plain: Vec<&str> = Vec::new();
    let mut qemu = false;
    for tool in missing {
        if *tool == Tool::Qemu && codename == "bookworm" {
            qemu = true;
        } else {
            plain.extend(tool.packages());
        }
    }
    if qemu {
        if !apt_suite_enabled("bookworm-backports") {
            commands.insert(
                0,
                format!(
                    "sed -E -i '/^Suites:(.* )?bookworm( |$)/ s/$/ bookworm-backports/' {DEBIAN_SOURCES}"
                ),
            );
        }
        commands.push("apt-get install -y -t bookworm-backports qemu-system-x86".into());
    }
    if !plain.is_empty() {
        commands.push(format!(
            "apt-get install -y --no-install-recommends {}",
            plain.join(" ")
        ));
    }
    commands
}

/// Makes sure every tool in `tools` is usable: installs what is missing when we are root,
/// else returns an error listing the commands to run.
pub fn ensure(tools: &[Tool]) -> Result<()> {
    let missing: Vec<(Tool, String)> = tools
        .iter()
        .filter_map(|&t| t.check().err().map(|why| (t, why)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let codename = os_codename();
    let reasons: Vec<String> = missing.iter().map(|(_, why)| why.clone()).collect();
    let tools_missing: Vec<Tool> = missing.iter().map(|(t, _)| *t).collect();
    if !is_root() || which("apt-get").is_none() {
        let commands = install_commands(&tools_missing, &codename);
        return Err(format!(
            "{}.\nInstall the host tools (as root, on Debian {}):\n{}",
            reasons.join("; "),
            if codename.is_empty() {
                "bookworm"
            } else {
                &codename
            },
            commands
                .iter()
                .map(|c| format!("    {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    step(format!("{}: installing", reasons.join("; ")));
    install(&tools_missing, &codename)?;
    let still: Vec<String> = tools_missing
        .iter()
        .filter_map(|t| t.check().err())
        .collect();
    if !still.is_empty() {
        return Err(format!(
            "installed the packages, but still: {}",
            still.join("; ")
        ));
    }
    Ok(())
}

fn install(missing: &[Tool], codename: &str) -> Result<()> {
    if missing.contains(&Tool::Qemu) && codename == "bookworm" {
        if !apt_suite_enabled("bookworm-backports") {
            let text = std::fs::read_to_string(DEBIAN_SOURCES).map_err(|e| {
                format!("cannot read {DEBIAN_SOURCES} to enable bookworm-backports: {e}")
            })?;
            let updated = add_backports_suite(&text, codename).ok_or_else(|| {
                format!("{DEBIAN_SOURCES} has no `Suites:` line with bookworm; add bookworm-backports by hand")
            })?;
            step(format!("enabling bookworm-backports in {DEBIAN_SOURCES}"));
            std::fs::write(DEBIAN_SOURCES, updated)
                .map_err(|e| format!("cannot write {DEBIAN_SOURCES}: {e}"))?;
            APT_UPDATED.store(false, Ordering::SeqCst);
        }
        apt_update()?;
        apt_get(&[
            "install",
            "-y",
            "-q",
            "-t",
            "bookworm-backports",
            "qemu-system-x86",
        ])?;
    }
    let mut packages: Vec<&str> = Vec::new();
    for tool in missing {
        if !(*tool == Tool::Qemu && codename == "bookworm") {
            packages.extend(tool.packages());
        }
    }
    if !packages.is_empty() {
        apt_update()?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(packages);
        apt_get(&args)?;
    }
    Ok(())
}

/// `rustup` installs the toolchain and targets of rust-toolchain.toml on first use; a build
/// step that needs them says so clearly if that did not happen.
pub fn ensure_rust_target() -> Result<()> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(crate::util::root())
        .output();
    let Ok(output) = output else { return Ok(()) };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let lib = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-none");
    if lib.is_dir() {
        return Ok(());
    }
    step("installing the x86_64-unknown-none target (rust-toolchain.toml)");
    run_visible(
        Command::new("rustup")
            .args(["target", "add", "x86_64-unknown-none"])
            .current_dir(crate::util::root()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version_is_read_from_the_banner() {
        let banner =
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(banner), Some((10, 0)));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian)"),
            Some((7, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 8.1.0-rc2"),
            Some((8, 1))
        );
        assert_eq!(parse_qemu_version("garbage"), None);
    }

    #[test]
    fn bookworm_qemu_is_too_old() {
        assert!((7, 2) < QEMU_MIN && (8, 1) >= QEMU_MIN && (10, 0) >= QEMU_MIN);
    }

    #[test]
    fn backports_go_on_the_main_suites_line_only() {
        let sources = "Types: deb\nURIs: http://mirror/debian\nSuites: bookworm bookworm-updates\n\
                       Components: main\n\nTypes: deb\nURIs: http://mirror/debian-security\n\
                       Suites: bookworm-security\nComponents: main\n";
        let updated = add_backports_suite(sources, "bookworm").unwrap();
        assert!(updated.contains("Suites: bookworm bookworm-updates bookworm-backports\n"));
        assert!(updated.contains("Suites: bookworm-security\n"));
        assert_eq!(
            add_backports_suite("Suites: bookworm-security\n", "bookworm"),
            None
        );
    }

    #[test]
    fn ovmf_is_installed_from_debians_ovmf_package() {
        let commands = install_commands(&[Tool::Ovmf], "bookworm");
        assert_eq!(commands, ["apt-get update", "apt-get install -y --no-install-recommends ovmf"]);
    }

    #[test]
    fn install_commands_use_backports_for_qemu_on_bookworm() {
        let commands = install_commands(&[Tool::Qemu, Tool::Xorriso], "bookworm");
        assert!(commands
            .contains(&"apt-get install -y -t bookworm-backports qemu-system-x86".to_string()));
        assert!(
            commands.contains(&"apt-get install -y --no-install-recommends xorriso".to_string())
        );
        let trixie = install_commands(&[Tool::Qemu], "trixie");
        assert_eq!(
            trixie.last().unwrap(),
            "apt-get install -y --no-install-recommends qemu-system-x86"
        );
    }
}

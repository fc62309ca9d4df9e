//! Finding a Bochs, learning what it can do, and writing its configuration.
//!
//! Which binary: `$BOCHS` if set (with `$BOCHS_SHARE` for its BIOS files, else
//! `<prefix>/share/bochs`), else a FRED build at [`FRED_BUILD`] if present, else `bochs` on
//! `PATH` (Debian's 2.7: BIOS from bochsbios, VGA BIOS from vgabios).
//!
//! What it can do is asked of the binary: its CPU models (`--help cpu`), whether it has the
//! internal debugger (then it stops at a prompt unless `-rc` gives it a `c`), whether it has the
//! `nogui` display (Debian's 2.7 does not: `rfb` with `timeout=0` instead), whether it has
//! low-level sound (then `sound: driver=dummy`, else Debian's 2.7 aborts at start on a machine
//! without a sound card), and whether its `wildcat_lake` model really reports FRED: a
//! one-sector probe boots, runs CPUID.(7,1) and prints EAX bit 17 to port 0xE9. The model
//! exists in builds without the FRED option too, so the model list alone does not tell. The
//! probe's answer is cached per binary.

use crate::util::{step, target_dir, which, Fnv, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the project's docs suggest building a FRED-enabled Bochs.
pub const FRED_BUILD: &str = "/opt/bochs-fred/bin/bochs";
pub const FRED_MODEL: &str = boot_tests::matrix::BOCHS_FRED_MODEL;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Display {
    Nogui,
    /// `rfb` listens on TCP 5900: only one such Bochs can run at a time.
    Rfb,
}

#[derive(Clone, Debug)]
pub struct Bochs {
    pub binary: PathBuf,
    pub rom: PathBuf,
    pub vga_rom: PathBuf,
    pub version: String,
    pub debugger: bool,
    pub display: Display,
    /// Built with low-level sound: then its sound must be the dummy driver, or Debian's 2.7
    /// aborts ("buffer overflow detected") after ALSA finds no sound card.
    pub sound: bool,
    pub models: Vec<String>,
    /// Whether `wildcat_lake` reports FRED (CPUID.(EAX=7,ECX=1):EAX[17]).
    pub fred: bool,
}

/// The binaries to consider, in order of preference.
fn candidates() -> Vec<PathBuf> {
    if let Some(bochs) = std::env::var_os("BOCHS").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(bochs)];
    }
    let mut list = Vec::new();
    if Path::new(FRED_BUILD).is_file() {
        list.push(PathBuf::from(FRED_BUILD));
    }
    if let Some(path) = which("bochs") {
        if !list.contains(&path) {
            list.push(path);
        }
    }
    list
}

fn share_dir(binary: &Path) -> PathBuf {
    if std::env::var_os("BOCHS").is_some() {
        if let Some(share) = std::env::var_os("BOCHS_SHARE").filter(|v| !v.is_empty()) {
            return PathBuf::from(share);
        }
    }
    let prefix = binary
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/usr"));
    prefix.join("share/bochs")
}

fn first_file(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().find(|p| p.is_file()).cloned()
}

/// Runs `bochs <args>` and returns what it printed (it prints help on stderr).
fn ask(binary: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(text)
}

/// The CPU models listed by `bochs --help cpu`.
pub fn parse_cpu_models(help: &str) -> Vec<String> {
    let mut models = Vec::new();
    let mut in_list = false;
    for line in help.lines() {
        let line = line.trim();
        if line.starts_with("Supported CPU models") {
            in_list = true;
        } else if in_list {
            if line.is_empty() {
                if !models.is_empty() {
                    break;
                }
            } else if line.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                models.push(line.to_string());
            }
        }
    }
    models
}

/// "Bochs x86 Emulator 2.7" -> "2.7".
pub fn parse_version(help: &str) -> String {
    help.lines()
        .find_map(|l| l.trim().strip_prefix("Bochs x86 Emulator "))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The plugin folder a plugin build reports, if it is one.
fn plugin_dir(help: &str) -> Option<PathBuf> {
    let line = help.lines().find(|l| l.contains("LTDL_LIBRARY_PATH"))?;
    let start = line.find('\'')? + 1;
    let end = line[start..].find('\'')? + start;
    Some(PathBuf::from(&line[start..end]))
}

/// (has the `nogui` display, has low-level sound), from its plugin folder or, for a build
/// without plugins, from the strings compiled into it.
fn display_and_sound(binary: &Path, help: &str) -> (bool, bool) {
    match plugin_dir(help) {
        // Display libraries are plugins named libbx_<name>_gui.so, sound drivers libbx_sound<name>.so.
        Some(dir) => (
            dir.join("libbx_nogui_gui.so").exists() || dir.join("libbx_nogui.so").exists(),
            dir.join("libbx_sounddummy.so").exists(),
        ),
        None => {
            let bytes = std::fs::read(binary).unwrap_or_default();
            let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            // The display table names each library compiled in; the config parser has this
            // message only when sound is compiled out.
            (
                has(b"nogui\0"),
                !has(b"not compiled with lowlevel sound support"),
            )
        }
    }
}

/// Inspects one binary; an error says why it cannot be used.
pub fn inspect(binary: &Path) -> Result<Bochs> {
    if !crate::util::is_executable(binary) {
        return Err(format!("{} is not an executable", binary.display()));
    }
    let share = share_dir(binary);
    let rom = first_file(&[share.join("BIOS-bochs-latest")]).ok_or_else(|| {
        format!(
            "no BIOS-bochs-latest in {} (set BOCHS_SHARE)",
            share.display()
        )
    })?;
    let vga_rom = first_file(&[
        share.join("VGABIOS-lgpl-latest.bin"),
        "/usr/share/vgabios/vgabios.bin".into(),
    ])
    .ok_or_else(|| {
        format!(
            "no VGA BIOS in {} or /usr/share/vgabios (package vgabios)",
            share.display()
        )
    })?;
    let help = ask(binary, &["--help"])?;
    let (nogui, sound) = display_and_sound(binary, &help);
    let models = parse_cpu_models(&ask(binary, &["--help", "cpu"])?);
    let mut bochs = Bochs {
        binary: binary.to_path_buf(),
        rom,
        vga_rom,
        version: parse_version(&help),
        debugger: help.contains("-rc filename"),
        display: if nogui { Display::Nogui } else { Display::Rfb },
        sound,
        models,
        fred: false,
    };
    if bochs.models.iter().any(|m| m == FRED_MODEL) {
        bochs.fred = fred_probe_cached(&bochs)?;
    }
    Ok(bochs)
}

/// The first usable Bochs, preferring [`FRED_BUILD`] and `$BOCHS`; the error lists what was
/// tried.
pub fn find() -> Result<Bochs> {
    let mut tried = Vec::new();
    for binary in candidates() {
        match inspect(&binary) {
            Ok(bochs) => return Ok(bochs),
            Err(why) => tried.push(why),
        }
    }
    if tried.is_empty() {
        tried.push("BOCHS is unset and there is no bochs on PATH".into());
    }
    Err(format!("no usable Bochs: {}", tried.join("; ")))
}

/// The first Bochs built with its internal debugger (Debian's): `$BOCHS` or the FRED build if
/// they are one, else `bochs` on `PATH`.
pub fn find_debugger() -> Result<Bochs> {
    let mut tried = Vec::new();
    let mut binaries = candidates();
    if let Some(path) = which("bochs") {
        if !binaries.contains(&path) {
            binaries.push(path);
        }
    }
    for binary in binaries {
        match inspect(&binary) {
            Ok(bochs) if bochs.debugger => return Ok(bochs),
            Ok(bochs) => tried.push(format!("{} ({}) has no internal debugger", binary.display(), bochs.version)),
            Err(why) => tried.push(why),
        }
    }
    if tried.is_empty() {
        tried.push("there is no bochs on PATH".into());
    }
    Err(format!("no Bochs built with its debugger (Debian's bochs package is one): {}", tried.join("; ")))
}

/// The first FRED-capable Bochs; the error says why each candidate is not one.
pub fn find_fred() -> Result<Bochs> {
    let mut tried = Vec::new();
    for binary in candidates() {
        match inspect(&binary) {
            Ok(bochs) if bochs.fred => return Ok(bochs),
            Ok(bochs) if bochs.models.iter().any(|m| m == FRED_MODEL) => tried.push(format!(
                "{} ({}) has {FRED_MODEL} but it reports no FRED (built without --enable-fred)",
                binary.display(),
                bochs.version
            )),
            Ok(bochs) => tried.push(format!(
                "{} ({}) has no {FRED_MODEL} model",
                binary.display(),
                bochs.version
            )),
            Err(why) => tried.push(why),
        }
    }
    if tried.is_empty() {
        tried.push("BOCHS is unset and there is no bochs on PATH".into());
    }
    Err(format!(
        "no FRED-capable Bochs: {}. Build Bochs >= 3.1 with --enable-x86-64 --enable-smp \
         --enable-fred and point BOCHS at it",
        tried.join("; ")
    ))
}

impl Bochs {
    /// The bochsrc for a CD boot. `exclude_fred` adds `exclude_features="fred"` to the CPU
    /// (the IST twin of a FRED model).
    pub fn config(
        &self,
        model: &str,
        exclude_fred: bool,
        smp: u32,
        boot: &BootMedium,
        dir: &Path,
    ) -> String {
        let mut cpu = format!(
            "cpu: model={model}, count={smp}, ips=100000000, reset_on_triple_fault=0, ignore_bad_msrs=1"
        );
        if exclude_fred {
            cpu.push_str(", exclude_features=\"fred\"");
        }
        let (medium, boot_from) = match boot {
            BootMedium::Cdrom(iso) => (
                format!(
                    "ata0-master: type=cdrom, path={}, status=inserted",
                    iso.display()
                ),
                "cdrom",
            ),
            BootMedium::Floppy(image) => (
                format!("floppya: 1_44={}, status=inserted", image.display()),
                "floppy",
            ),
        };
        let display = match self.display {
            Display::Nogui => "display_library: nogui".to_string(),
            // No client ever connects; timeout=0 keeps Bochs from waiting for one.
            Display::Rfb => "display_library: rfb, options=\"timeout=0\"".to_string(),
        };
        format!(
            "# Generated by `cargo xtask`.\n\
             megs: 256\n\
             {cpu}\n\
             romimage: file={rom}\n\
             vgaromimage: file={vga}\n\
             {medium}\n\
             boot: {boot_from}\n\
             com1: enabled=1, mode=file, dev={serial}\n\
             port_e9_hack: enabled=1\n\
             {display}\n\
             log: {log}\n\
             clock: sync=none\n\
             {sound}",
            rom = self.rom.display(),
            vga = self.vga_rom.display(),
            serial = dir.join("serial.log").display(),
            log = dir.join("bochs.log").display(),
            sound = if self.sound {
                "sound: driver=dummy\n"
            } else {
                ""
            },
        )
    }

    /// The command that runs Bochs on the bochsrc in `dir` (written by the caller).
    pub fn command(&self, dir: &Path) -> Result<Command> {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(dir)
            .args(["-q", "-f"])
            .arg(dir.join("bochsrc"));
        if self.debugger {
            // A debugger build stops at its prompt before the first instruction; `c` continues.
            let rc = dir.join("debugger.rc");
            std::fs::write(&rc, "c\n")
                .map_err(|e| format!("cannot write {}: {e}", rc.display()))?;
            command.arg("-rc").arg(rc);
        }
        if let Some(share) = self.rom.parent() {
            command.env("BXSHARE", share);
        }
        Ok(command)
    }
}

pub enum BootMedium {
    Cdrom(PathBuf),
    Floppy(PathBuf),
}

const PROBE_MARK: &str = "bochs-fred-probe: fred=";

/// A floppy boot sector (real mode, loaded at 0x7c00) that prints
/// `bochs-fred-probe: fred=<CPUID.(7,1).EAX[17]>` to port 0xE9 and shuts Bochs down through
/// port 0x8900.
fn probe_boot_sector() -> Vec<u8> {
    const ORG: u16 = 0x7c00;
    let report = format!("{PROBE_MARK}?\n\0");
    let shutdown = "Shutdown\0";
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xfa,                               // 00 cli
        0xfc,                               // 01 cld
        0x31, 0xc0,                         // 02 xor ax, ax
        0x8e, 0xd8,                         // 04 mov ds, ax
        0x8e, 0xd0,                         // 06 mov ss, ax
        0xbc, 0x00, 0x7c,                   // 08 mov sp, 0x7c00
        0x66, 0xb8, 0x07, 0, 0, 0,          // 0b mov eax, 7
        0x66, 0xb9, 0x01, 0, 0, 0,          // 11 mov ecx, 1
        0x0f, 0xa2,                         // 17 cpuid
        0xb3, b'0',                         // 19 mov bl, '0'
        0x66, 0x0f, 0xba, 0xe0, 17,         // 1b bt eax, 17
        0x73, 0x02,                         // 20 jnc 24
        0xb3, b'1',                         // 22 mov bl, '1'
        0x88, 0x1e, 0, 0,                   // 24 mov [digit], bl       (patched)
        0xbe, 0, 0,                         // 28 mov si, report        (patched)
        0xba, 0xe9, 0x00,                   // 2b mov dx, 0xe9
        0xe8, 0x0c, 0x00,                   // 2e call puts (3d)
        0xbe, 0, 0,                         // 31 mov si, shutdown      (patched)
        0xba, 0x00, 0x89,                   // 34 mov dx, 0x8900
        0xe8, 0x03, 0x00,                   // 37 call puts (3d)
        0xf4,                               // 3a hlt
        0xeb, 0xfd,                         // 3b jmp 3a
        0xac,                               // 3d puts: lodsb
        0x84, 0xc0,                         // 3e test al, al
        0x74, 0x03,                         // 40 jz 45
        0xee,                               // 42 out dx, al
        0xeb, 0xf8,                         // 43 jmp 3d
        0xc3,                               // 45 ret
    ];
    let report_at = ORG + code.len() as u16;
    let digit_at = report_at + PROBE_MARK.len() as u16;
    let shutdown_at = report_at + report.len() as u16;
    code[0x26..0x28].copy_from_slice(&digit_at.to_le_bytes());
    code[0x29..0x2b].copy_from_slice(&report_at.to_le_bytes());
    code[0x32..0x34].copy_from_slice(&shutdown_at.to_le_bytes());
    code.extend_from_slice(report.as_bytes());
    code.extend_from_slice(shutdown.as_bytes());
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xaa]);
    code
}

/// What the probe printed: `Some(true)` if FRED, `None` if the probe said nothing.
pub fn parse_probe(output: &str) -> Option<bool> {
    let at = output.find(PROBE_MARK)? + PROBE_MARK.len();
    match output[at..].chars().next()? {
        '1' => Some(true),
        '0' => Some(false),
        _ => None,
    }
}

fn fred_probe_cached(bochs: &Bochs) -> Result<bool> {
    let meta = bochs
        .binary
        .metadata()
        .map_err(|e| format!("{}: {e}", bochs.binary.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let key = Fnv::new()
        .bytes(bochs.binary.to_string_lossy().as_bytes())
        .bytes(&meta.len().to_le_bytes())
        .bytes(&modified.map(|d| d.as_nanos()).unwrap_or(0).to_le_bytes())
        .finish();
    let dir = target_dir()
        .join("bochs")
        .join(format!("fred-probe-{key:016x}"));
    let answer = dir.join("answer");
    if let Ok(text) = std::fs::read_to_string(&answer) {
        if let Some(fred) = parse_probe(&text) {
            return Ok(fred);
        }
    }
    step(format!(
        "probing {} for FRED ({FRED_MODEL}, CPUID.(7,1).EAX[17])",
        bochs.binary.display()
    ));
    let fred = fred_probe(bochs, &dir)?;
    let _ = std::fs::write(&answer, format!("{PROBE_MARK}{}\n", u8::from(fred)));
    Ok(fred)
}

fn fred_probe(bochs: &Bochs, dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let image = dir.join("probe.img");
    let mut floppy = probe_boot_sector();
    floppy.resize(1_474_560, 0);
    std::fs::write(&image, floppy).map_err(|e| format!("cannot write {}: {e}", image.display()))?;
    let config = bochs.config(FRED_MODEL, false, 1, &BootMedium::Floppy(image), dir);
    std::fs::write(dir.join("bochsrc"), config)
        .map_err(|e| format!("cannot write the probe bochsrc: {e}"))?;
    let mut child = bochs
        .command(dir)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bochs.binary.display()))?;
    let start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    parse_probe(&text).ok_or_else(|| {
        format!(
            "the FRED probe on {} printed no answer (see {}):\n{}",
            bochs.binary.display(),
            dir.join("bochs.log").display(),
            crate::util::tail(&text, 10)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_models_are_read_from_help() {
        let help = "00000000000i[      ] LTDL_LIBRARY_PATH not set.\nSupported CPU models:\n\n\
                    bx_generic\ntigerlake\nwildcat_lake\n\n00000000000i[SIM   ] quit_sim called\n";
        assert_eq!(
            parse_cpu_models(help),
            ["bx_generic", "tigerlake", "wildcat_lake"]
        );
    }

    #[test]
    fn version_and_plugin_dir_are_read_from_help() {
        let help = "00000000000i[      ] LTDL_LIBRARY_PATH not set. using compile time default \
                    '/usr/lib/x86_64-linux-gnu/bochs/plugins'\n   Bochs x86 Emulator 2.7\n";
        assert_eq!(parse_version(help), "2.7");
        assert_eq!(
            plugin_dir(help),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/bochs/plugins"))
        );
    }

    #[test]
    fn probe_sector_is_a_boot_sector_with_patched_addresses() {
        let sector = probe_boot_sector();
        assert_eq!(sector.len(), 512);
        assert_eq!(&sector[510..], &[0x55, 0xaa]);
        let report_at = u16::from_le_bytes([sector[0x29], sector[0x2a]]) as usize - 0x7c00;
        assert!(sector[report_at..].starts_with(PROBE_MARK.as_bytes()));
        let digit_at = u16::from_le_bytes([sector[0x26], sector[0x27]]) as usize - 0x7c00;
        assert_eq!(sector[digit_at], b'?');
        let shutdown_at = u16::from_le_bytes([sector[0x32], sector[0x33]]) as usize - 0x7c00;
        assert!(sector[shutdown_at..].starts_with(b"Shutdown\0"));
    }

    #[test]
    fn probe_answer_is_parsed() {
        assert_eq!(parse_probe("noise\nbochs-fred-probe: fred=1\n"), Some(true));
        assert_eq!(parse_probe("bochs-fred-probe: fred=0\n"), Some(false));
        assert_eq!(parse_probe("bochs-fred-probe: fred=?\n"), None);
        assert_eq!(parse_probe(""), None);
    }

    #[test]
    fn config_excludes_fred_and_picks_the_display() {
        let bochs = Bochs {
            binary: "/usr/bin/bochs".into(),
            rom: "/usr/share/bochs/BIOS-bochs-latest".into(),
            vga_rom: "/usr/share/vgabios/vgabios.bin".into(),
            version: "2.7".into(),
            debugger: true,
            display: Display::Rfb,
            sound: true,
            models: vec![],
            fred: false,
        };
        let config = bochs.config(
            "wildcat_lake",
            true,
            2,
            &BootMedium::Cdrom("/x.iso".into()),
            Path::new("/run"),
        );
        assert!(
            config.contains("cpu: model=wildcat_lake, count=2,"),
            "{config}"
        );
        assert!(config.contains("exclude_features=\"fred\""), "{config}");
        assert!(
            config.contains("display_library: rfb, options=\"timeout=0\""),
            "{config}"
        );
        assert!(
            config.contains("com1: enabled=1, mode=file, dev=/run/serial.log"),
            "{config}"
        );
        assert!(config.contains("boot: cdrom"), "{config}");
        assert!(config.contains("sound: driver=dummy"), "{config}");
    }
}

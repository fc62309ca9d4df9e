//! `limine.cfg`, the one boot manifest, parsed into a typed [`Manifest`] and rendered into
//! `limine.conf` (Limine >= 8) and `grub.cfg` (GRUB loading the boot/ bridge).
//!
//! Input syntax is classic Limine (what Limine 7 read as `limine.cfg`): global `KEY=value`
//! lines, `:Entry name` lines that open an entry, `KEY=value` lines inside it, and comments on
//! lines whose first non-blank character is `#`. Paths are `boot:///path` (the boot volume).

use std::fmt::{self, Write as _};

/// A path on the boot volume, stored without its leading `/`: `boot/kernel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPath(String);

impl BootPath {
    /// Parses a classic `boot:///boot/kernel` path.
    pub fn parse(value: &str) -> Result<BootPath, String> {
        let Some(rest) = value.strip_prefix("boot:///") else {
            return Err(format!(
                "path {value:?} is not on the boot volume; write it as boot:///boot/NAME"
            ));
        };
        let valid = !rest.is_empty()
            && !rest.ends_with('/')
            && rest
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if !valid {
            return Err(format!(
                "path {value:?} must name a file with letters, digits, '.', '_', '-' and '/' only"
            ));
        }
        Ok(BootPath(rest.to_string()))
    }

    /// Where the file sits inside the ISO: `boot/kernel`.
    pub fn iso_path(&self) -> &str {
        &self.0
    }

    /// The Limine >= 8 spelling, which is also what the bridge reports to the kernel:
    /// `boot():/boot/kernel`.
    pub fn limine(&self) -> String {
        format!("boot():/{}", self.0)
    }

    /// The binary this file is: its last component (`boot/init` is the user binary `init`).
    pub fn binary_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub path: BootPath,
    pub cmdline: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kernel_path: BootPath,
    pub cmdline: String,
    pub modules: Vec<Module>,
    /// Other entry options, passed to Limine unchanged (key lower-cased): `KASLR=no`.
    pub options: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub timeout: Option<u32>,
    pub serial: Option<bool>,
    /// Other global options, passed to Limine unchanged (key lower-cased): `VERBOSE=yes`.
    pub options: Vec<(String, String)>,
    pub entries: Vec<Entry>,
}

/// A syntax or content error, with the 1-based line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limine.cfg:{}: {}", self.line, self.message)
    }
}

struct EntryBuilder {
    line: usize,
    name: String,
    protocol: Option<String>,
    kernel_path: Option<BootPath>,
    cmdline: Option<String>,
    modules: Vec<Module>,
    /// Whether the last module already got its MODULE_CMDLINE.
    module_cmdline_set: bool,
    options: Vec<(String, String)>,
}

impl EntryBuilder {
    fn finish(self) -> Result<Entry, ParseError> {
        let err = |message: String| ParseError {
            line: self.line,
            message,
        };
        match self.protocol.as_deref() {
            Some("limine") => {}
            None => {
                return Err(err(format!(
                    "entry {:?} has no PROTOCOL; add `PROTOCOL=limine` (the kernel boots by the \
                     Limine protocol)",
                    self.name
                )))
            }
            Some(other) => {
                return Err(err(format!(
                    "entry {:?} has PROTOCOL={other}; only PROTOCOL=limine is supported (the \
                     bridge speaks the Limine protocol only)",
                    self.name
                )))
            }
        }
        let Some(kernel_path) = self.kernel_path else {
            return Err(err(format!(
                "entry {:?} has no KERNEL_PATH; add `KERNEL_PATH=boot:///boot/kernel`",
                self.name
            )));
        };
        Ok(Entry {
            name: self.name,
            kernel_path,
            cmdline: self.cmdline.unwrap_or_default(),
            modules: self.modules,
            options: self.options,
        })
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses the text of `limine.cfg`.
pub fn parse(text: &str) -> Result<Manifest, ParseError> {
    let mut manifest = Manifest {
        timeout: None,
        serial: None,
        options: Vec::new(),
        entries: Vec::new(),
    };
    let mut current: Option<EntryBuilder> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            if name.starts_with(':') {
                return Err(err(
                    "sub-entries (`::`) are not supported; write each entry as `:Name`".into(),
                ));
            }
            let name = name.trim();
            if name.is_empty() {
                return Err(err("entry without a name; write `:Name`".into()));
            }
            if let Some(done) = current.take() {
                manifest.entries.push(done.finish()?);
            }
            current = Some(EntryBuilder {
                line: line_no,
                name: name.to_string(),
                protocol: None,
                kernel_path: None,
                cmdline: None,
                modules: Vec::new(),
                module_cmdline_set: false,
                options: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!(
                "expected `KEY=value`, `:Entry name` or a `#` comment, found {line:?}"
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        if !valid_key(key) {
            return Err(err(format!(
                "{key:?} is not an option name; options are upper case like `KERNEL_PATH=`"
            )));
        }
        let duplicate = |key: &str| err(format!("{key} given twice; keep one"));
        match (&mut current, key) {
            (None, "TIMEOUT") => {
                if manifest.timeout.is_some() {
                    return Err(duplicate(key));
                }
                let seconds = value.parse().map_err(|_| {
                    err(format!("TIMEOUT takes a number of seconds, got {value:?}"))
                })?;
                manifest.timeout = Some(seconds);
            }
            (None, "SERIAL") => {
                if manifest.serial.is_some() {
                    return Err(duplicate(key));
                }
                manifest.serial = Some(match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(err(format!("SERIAL takes yes or no, got {value:?}"))),
                });
            }
            (
                None,
                "PROTOCOL" | "KERNEL_PATH" | "CMDLINE" | "KERNEL_CMDLINE" | "MODULE_PATH"
                | "MODULE_CMDLINE" | "MODULE_STRING",
            ) => {
                return Err(err(format!(
                    "{key} belongs to an entry; add an entry line such as `:microkernel` above it"
                )));
            }
            (None, _) => manifest.options.push((key.to_string(), value.to_string())),
            (Some(entry), "PROTOCOL") => {
                if entry.protocol.is_some() {
                    return Err(duplicate(key));
                }
                entry.protocol = Some(value.to_string());
            }
            (Some(entry), "KERNEL_PATH") => {
                if entry.kernel_path.is_some() {
                    return Err(duplicate(key));
                }
                entry.kernel_path = Some(BootPath::parse(value).map_err(err)?);
            }
            (Some(entry), "CMDLINE" | "KERNEL_CMDLINE") => {
                if entry.cmdline.is_some() {
                    return Err(duplicate("CMDLINE"));
                }
                entry.cmdline = Some(value.to_string());
            }
            (Some(entry), "MODULE_PATH") => {
                let path = BootPath::parse(value).map_err(err)?;
                let clash = entry.kernel_path.as_ref() == Some(&path)
                    || entry.modules.iter().any(|m| m.path == path);
                if clash {
                    return Err(err(format!("{value} is loaded twice in this entry")));
                }
                entry.modules.push(Module {
                    path,
                    cmdline: String::new(),
                });
                entry.module_cmdline_set = false;
            }
            (Some(entry), "MODULE_CMDLINE" | "MODULE_STRING") => {
                if entry.modules.is_empty() {
                    return Err(err(format!(
                        "{key} must follow the MODULE_PATH it belongs to"
                    )));
                }
                if entry.module_cmdline_set {
                    return Err(err(format!(
                        "second {key} for the same module; each MODULE_PATH takes one"
                    )));
                }
                entry.modules.last_mut().expect("checked non-empty").cmdline = value.to_string();
                entry.module_cmdline_set = true;
            }
            (Some(entry), _) => entry.options.push((key.to_string(), value.to_string())),
        }
    }
    if let Some(done) = current.take() {
        manifest.entries.push(done.finish()?);
    }
    if manifest.entries.is_empty() {
        return Err(ParseError {
            line: text.lines().count().max(1),
            message: "no boot entry; add `:microkernel` with PROTOCOL=limine and KERNEL_PATH=..."
                .into(),
        });
    }
    Ok(manifest)
}

impl Manifest {
    /// Whether any entry's kernel command line runs a scenario (`test=NAME`).
    pub fn runs_scenario(&self) -> bool {
        self.entries.iter().any(|e| crate::run::scenario_in(&e.cmdline).is_some())
    }

    /// Appends `extra` to the kernel command line of every entry.
    pub fn append_cmdline(&mut self, extra: &str) {
        let extra = extra.trim();
        if extra.is_empty() {
            return;
        }
        for entry in &mut self.entries {
            if entry.cmdline.is_empty() {
                entry.cmdline = extra.to_string();
            } else {
                entry.cmdline = format!("{} {extra}", entry.cmdline);
            }
        }
    }

    /// Every file the entries load (kernels first, then modules), each once.
    pub fn files(&self) -> Vec<&BootPath> {
        let mut files: Vec<&BootPath> = Vec::new();
        for entry in &self.entries {
            for path in
                std::iter::once(&entry.kernel_path).chain(entry.modules.iter().map(|m| &m.path))
            {
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
        files
    }

    /// `limine.conf` in the syntax of Limine 8 and newer.
    pub fn to_limine_conf(&self) -> String {
        let mut out =
            String::from("# Generated by `cargo xtask` from limine.cfg; edit that file instead.\n");
        if let Some(timeout) = self.timeout {
            let _ = writeln!(out, "timeout: {timeout}");
        }
        if let Some(serial) = self.serial {
            let _ = writeln!(out, "serial: {}", if serial { "yes" } else { "no" });
        }
        for (key, value) in &self.options {
            let _ = writeln!(out, "{}: {value}", key.to_ascii_lowercase());
        }
        for entry in &self.entries {
            let _ = writeln!(out, "\n/{}", entry.name);
            let _ = writeln!(out, "    protocol: limine");
            let _ = writeln!(out, "    kernel_path: {}", entry.kernel_path.limine());
            if !entry.cmdline.is_empty() {
                let _ = writeln!(out, "    cmdline: {}", entry.cmdline);
            }
            for (key, value) in &entry.options {
                let _ = writeln!(out, "    {}: {value}", key.to_ascii_lowercase());
            }
            for module in &entry.modules {
                let _ = writeln!(out, "    module_path: {}", module.path.limine());
                if !module.cmdline.is_empty() {
                    let _ = writeln!(out, "    module_cmdline: {}", module.cmdline);
                }
            }
        }
        out
    }

    /// `grub.cfg` for the bridge: GRUB loads `bridge` (a path in the ISO, `/boot/limine-bridge`)
    /// by Multiboot2 and every file as a module whose string is
    /// `<kernel|module> <Limine path> <command line>`: the bridge takes the role and the path
    /// from the first two words and hands the rest to the kernel as the command line.
    ///
    /// GRUB rebuilds a module string from the words of its `module2` line joined by single
    /// spaces, backslash-escapes quotes and backslashes, and double-quotes a word that holds a
    /// space. So on this path runs of spaces collapse to one, and a command line with `'`, `"`
    /// or `\` cannot be passed: that is an error naming the entry.
    pub fn to_grub_cfg(&self, bridge: &str) -> Result<String, String> {
        let mut out = String::from("set timeout=0\nset default=0\n");
        for entry in &self.entries {
            let _ = writeln!(out, "menuentry {} {{", grub_word(&entry.name));
            let _ = writeln!(out, "  multiboot2 {bridge}");
            let line = grub_module_line("kernel", &entry.kernel_path, &entry.cmdline)
                .map_err(|why| format!("entry {:?}, kernel command line: {why}", entry.name))?;
            let _ = writeln!(out, "  {line}");
            for module in &entry.modules {
                let line =
                    grub_module_line("module", &module.path, &module.cmdline).map_err(|why| {
                        format!(
                            "entry {:?}, module {}: {why}",
                            entry.name,
                            module.path.limine()
                        )
                    })?;
                let _ = writeln!(out, "  {line}");
            }
            let _ = writeln!(out, "}}");
        }
        Ok(out)
    }
}

fn grub_module_line(role: &str, path: &BootPath, cmdline: &str) -> Result<String, String> {
    if cmdline.contains(['\'', '"', '\\']) {
        return Err(format!(
            "{cmdline:?} has a quote or backslash, which GRUB would escape in the module string; \
             the bridge path cannot pass it (boot with --limine, or leave it out)"
        ));
    }
    let mut line = format!("module2 /{} {role} {}", path.iso_path(), path.limine());
    for word in cmdline.split_whitespace() {
        line.push(' ');
        line.push_str(&grub_word(word));
    }
    Ok(line)
}

/// Characters that stand for themselves in a GRUB script word.
fn grub_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.,/:=+@%()!~^".contains(c)
}

/// A GRUB script word with exactly the text `s`: bare if plain, else single-quoted so that GRUB
/// neither expands (`$`), splits (`;`) nor drops (`#`) anything. A single quote inside (only in
/// entry names) is written `'\''`, as in sh.
fn grub_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(grub_plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "\
# The boot manifest.
TIMEOUT=0
SERIAL=yes

:microkernel
    PROTOCOL=limine
    KERNEL_PATH=boot:///boot/kernel
    CMDLINE=
";

    const SERVERS: &str = "\
TIMEOUT=3
SERIAL=yes
:microkernel
    # comments may be indented
    PROTOCOL=limine
    KERNEL_PATH=boot:///boot/kernel
    CMDLINE=log=debug  test=boot
    MODULE_PATH=boot:///boot/init
    MODULE_CMDLINE=role=root spawn=console,name
    MODULE_PATH=boot:///boot/console
    MODULE_PATH=boot:///boot/name
    MODULE_CMDLINE=#1 $HOME;x
";

    fn error(text: &str) -> ParseError {
        parse(text).expect_err("expected a parse error")
    }

    #[test]
    fn project_manifest_parses() {
        let manifest = parse(PROJECT).unwrap();
        assert_eq!(manifest.timeout, Some(0));
        assert_eq!(manifest.serial, Some(true));
        assert_eq!(manifest.entries.len(), 1);
        let entry = &manifest.entries[0];
        assert_eq!(entry.name, "microkernel");
        assert_eq!(entry.kernel_path.iso_path(), "boot/kernel");
        assert_eq!(entry.kernel_path.binary_name(), "kernel");
        assert_eq!(entry.cmdline, "");
        assert!(entry.modules.is_empty());
    }

    #[test]
    fn the_repository_limine_cfg_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../limine.cfg"))
            .expect("limine.cfg at the workspace root");
        let manifest = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifest.entries[0].kernel_path.binary_name(), "kernel");
    }

    #[test]
    fn modules_keep_order_and_their_own_cmdlines() {
        let manifest = parse(SERVERS).unwrap();
        let entry = &manifest.entries[0];
        let modules: Vec<(&str, &str)> = entry
            .modules
            .iter()
            .map(|m| (m.path.binary_name(), m.cmdline.as_str()))
            .collect();
        assert_eq!(
            modules,
            [
                ("init", "role=root spawn=console,name"),
                ("console", ""),
                ("name", "#1 $HOME;x")
            ]
        );
        assert_eq!(entry.cmdline, "log=debug  test=boot");
    }

    #[test]
    fn limine_conf_of_project_manifest() {
        let conf = parse(PROJECT).unwrap().to_limine_conf();
        let body: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "timeout: 0",
                "serial: yes",
                "",
                "/microkernel",
                "    protocol: limine",
                "    kernel_path: boot():/boot/kernel",
            ]
        );
    }

    #[test]
    fn limine_conf_with_modules_and_cmdlines() {
        let conf = parse(SERVERS).unwrap().to_limine_conf();
        let body: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "timeout: 3",
                "serial: yes",
                "",
                "/microkernel",
                "    protocol: limine",
                "    kernel_path: boot():/boot/kernel",
                "    cmdline: log=debug  test=boot",
                "    module_path: boot():/boot/init",
                "    module_cmdline: role=root spawn=console,name",
                "    module_path: boot():/boot/console",
                "    module_path: boot():/boot/name",
                "    module_cmdline: #1 $HOME;x",
            ]
        );
    }

    #[test]
    fn limine_conf_passes_other_options_lower_cased() {
        let text = "VERBOSE=yes\n:k\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/kernel\nKASLR=no\n";
        let conf = parse(text).unwrap().to_limine_conf();
        assert!(conf.contains("\nverbose: yes\n"), "{conf}");
        assert!(conf.contains("\n    kaslr: no\n"), "{conf}");
    }

    #[test]
    fn grub_cfg_of_project_manifest() {
        let mut manifest = parse(PROJECT).unwrap();
        manifest.append_cmdline("test=boot entry=ist");
        assert_eq!(
            manifest.to_grub_cfg("/boot/limine-bridge").unwrap(),
            "set timeout=0\n\
             set default=0\n\
             menuentry microkernel {\n\
            \x20 multiboot2 /boot/limine-bridge\n\
            \x20 module2 /boot/kernel kernel boot():/boot/kernel test=boot entry=ist\n\
             }\n"
        );
    }

    #[test]
    fn grub_cfg_with_empty_cmdline_has_no_trailing_space() {
        let cfg = parse(PROJECT)
            .unwrap()
            .to_grub_cfg("/boot/limine-bridge")
            .unwrap();
        assert!(
            cfg.contains("\n  module2 /boot/kernel kernel boot():/boot/kernel\n"),
            "{cfg}"
        );
    }

    #[test]
    fn grub_cfg_with_modules_quotes_only_what_grub_would_change() {
        let cfg = parse(SERVERS)
            .unwrap()
            .to_grub_cfg("/boot/limine-bridge")
            .unwrap();
        let lines: Vec<&str> = cfg.lines().collect();
        assert_eq!(
            lines[3..],
            [
                "  multiboot2 /boot/limine-bridge",
                // GRUB joins words with one space: the double space cannot survive
                "  module2 /boot/kernel kernel boot():/boot/kernel log=debug test=boot",
                "  module2 /boot/init module boot():/boot/init role=root spawn=console,name",
                "  module2 /boot/console module boot():/boot/console",
                "  module2 /boot/name module boot():/boot/name '#1' '$HOME;x'",
                "}",
            ]
        );
    }

    #[test]
    fn grub_cfg_has_one_menuentry_per_entry() {
        let text = ":first\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/kernel\n\
                    :second entry\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/kernel\nCMDLINE=entry=ist\n";
        let manifest = parse(text).unwrap();
        let cfg = manifest.to_grub_cfg("/boot/limine-bridge").unwrap();
        assert!(cfg.contains("menuentry first {"), "{cfg}");
        assert!(cfg.contains("menuentry 'second entry' {"), "{cfg}");
        assert_eq!(
            manifest.files().len(),
            1,
            "the shared kernel is staged once"
        );
        let conf = manifest.to_limine_conf();
        assert!(
            conf.contains("\n/first\n") && conf.contains("\n/second entry\n"),
            "{conf}"
        );
    }

    #[test]
    fn append_cmdline_joins_with_one_space() {
        let mut manifest = parse(SERVERS).unwrap();
        manifest.append_cmdline(" entry=fred ");
        assert_eq!(
            manifest.entries[0].cmdline,
            "log=debug  test=boot entry=fred"
        );
        let mut empty = parse(PROJECT).unwrap();
        empty.append_cmdline("");
        assert_eq!(empty.entries[0].cmdline, "");
    }

    #[test]
    fn files_lists_kernel_then_modules() {
        let manifest = parse(SERVERS).unwrap();
        let names: Vec<&str> = manifest.files().iter().map(|p| p.binary_name()).collect();
        assert_eq!(names, ["kernel", "init", "console", "name"]);
    }

    #[test]
    fn garbage_line_is_reported_with_its_number() {
        let e = error("TIMEOUT=0\n:k\nPROTOCOL=limine\nKERNEL_PATH boot:///boot/kernel\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("expected `KEY=value`"), "{e}");
        assert!(e.to_string().starts_with("limine.cfg:4: "));
    }

    #[test]
    fn entry_option_before_any_entry_is_refused() {
        let e = error("TIMEOUT=0\nKERNEL_PATH=boot:///boot/kernel\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("add an entry line"), "{e}");
    }

    #[test]
    fn module_cmdline_without_module_is_refused() {
        let e = error(":k\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/kernel\nMODULE_CMDLINE=x\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("must follow the MODULE_PATH"), "{e}");
    }

    #[test]
    fn entry_without_kernel_is_refused_at_its_line() {
        let e = error("TIMEOUT=0\n\n:k\nPROTOCOL=limine\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("no KERNEL_PATH"), "{e}");
    }

    #[test]
    fn other_protocols_are_refused() {
        let e = error(":k\nPROTOCOL=multiboot2\nKERNEL_PATH=boot:///boot/kernel\n");
        assert!(e.message.contains("only PROTOCOL=limine"), "{e}");
    }

    #[test]
    fn paths_off_the_boot_volume_are_refused() {
        let e = error(":k\nPROTOCOL=limine\nKERNEL_PATH=hdd://1:1/kernel\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("boot:///boot/NAME"), "{e}");
        assert!(
            error(":k\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/../x\n")
                .message
                .contains("must name a file")
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert!(error("TIMEOUT=1\nTIMEOUT=2\n")
            .message
            .contains("given twice"));
        let e = error(":k\nPROTOCOL=limine\nKERNEL_PATH=boot:///boot/kernel\nMODULE_PATH=boot:///boot/kernel\n");
        assert!(e.message.contains("loaded twice"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(error("TIMEOUT=soon\n")
            .message
            .contains("number of seconds"));
        assert!(error("SERIAL=on\n").message.contains("yes or no"));
        assert!(error("timeout=0\n").message.contains("not an option name"));
        assert!(error("::sub\n").message.contains("sub-entries"));
    }

    #[test]
    fn manifest_without_entries_is_refused() {
        assert!(error("# nothing\nTIMEOUT=0\n")
            .message
            .contains("no boot entry"));
    }

    #[test]
    fn grub_cfg_refuses_what_grub_would_escape() {
        let mut manifest = parse(PROJECT).unwrap();
        manifest.append_cmdline(r#"msg="hi""#);
        let why = manifest.to_grub_cfg("/boot/limine-bridge").unwrap_err();
        assert!(
            why.contains(r#"entry "microkernel", kernel command line"#),
            "{why}"
        );
        assert!(why.contains("quote or backslash"), "{why}");
        // The Limine path passes it unchanged.
        assert!(manifest
            .to_limine_conf()
            .contains("    cmdline: msg=\"hi\"\n"));
    }

    #[test]
    fn grub_word_round_trips_through_sh_rules() {
        assert_eq!(grub_word("plain=1"), "plain=1");
        assert_eq!(grub_word("a b"), "'a b'");
        assert_eq!(grub_word("it's"), r"'it'\''s'");
        assert_eq!(grub_word(""), "''");
    }
}

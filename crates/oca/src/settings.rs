//! The server's configuration file: every `oca serve` (and `oca up`) flag can come from
//! a TOML file, environment variables override it, flags override both.
//!
//! The file is `--config PATH` (`$OCA_CONFIG_FILE`), else `/etc/oca/oca.toml` when it
//! exists; a `--config` that names no file is an error. Its keys are the flags' long
//! names without the dashes (`heartbeat-secs = 30`, `regions = ["cn-hangzhou"]`,
//! `data-dir = "/var/lib/oca"`); a key that is no flag is refused, and so is a value of
//! the wrong type (integers for numbers, strings for addresses, paths and names,
//! `true`/`false` for switches, arrays of strings for lists), naming the key. Every
//! flag also has an environment variable, `OCA_` and its name in capitals
//! (`OCA_HEARTBEAT_SECS`).
//!
//! How: the file's values become the flags' defaults before the command line is
//! parsed, so clap's own order (flag, then environment, then default) does the rest,
//! and `--help` shows them as the defaults. `--print-config` prints the result as
//! TOML, each value with where it came from, and exits.

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::any::TypeId;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/oca/oca.toml";

/// The subcommands that take the file, and the flags of theirs it may not set.
const CONFIGURED: &[&str] = &["serve", "up"];
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help", "version"];

/// What a flag's value is in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switch,
    Integer,
    Text,
    List,
}

impl Kind {
    fn of(arg: &clap::Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Kind::Switch;
        }
        if arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append) {
            return Kind::List;
        }
        let t = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<u16>(),
            TypeId::of::<usize>(),
            TypeId::of::<i64>(),
            TypeId::of::<i32>(),
        ];
        if integers.iter().any(|i| t == *i) {
            Kind::Integer
        } else {
            Kind::Text
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Switch => "true or false",
            Kind::Integer => "an integer",
            Kind::Text => "a string",
            Kind::List => "an array of strings",
        }
    }
}

/// The arguments of `oca`, with the configuration file's values as the defaults of
/// `oca serve`'s and `oca up`'s flags. `None`: `--print-config` printed them. Errors
/// of the command line itself end the process as clap ends it.
pub fn matches(cmd: Command, argv: Vec<OsString>) -> Result<Option<ArgMatches>> {
    matches_with(cmd, argv, Path::new(DEFAULT_PATH))
}

fn matches_with(cmd: Command, argv: Vec<OsString>, default: &Path) -> Result<Option<ArgMatches>> {
    // A first look finds the subcommand and its --config; anything it cannot read is
    // left to the real parse to refuse.
    let Ok(first) = cmd.clone().try_get_matches_from(&argv) else {
        let m = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
        return Ok(Some(m));
    };
    let Some((name, sub)) = first.subcommand().filter(|(n, _)| CONFIGURED.contains(n)) else {
        return Ok(Some(first));
    };
    let name = name.to_string();
    // The flags in the order they are declared (changing a default moves a flag last).
    let order: Vec<String> = cmd
        .find_subcommand(&name)
        .expect("a configured subcommand")
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let path = match sub.get_one::<PathBuf>("config") {
        Some(p) if !p.is_file() => bail!("the configuration file {} does not exist", p.display()),
        Some(p) => Some(p.clone()),
        None => default.is_file().then(|| default.to_path_buf()),
    };
    let mut cmd = cmd;
    let mut from_file = BTreeSet::new();
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        for (key, value) in &table {
            let (arg, applies) =
                file_arg(&cmd, &name, key).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let values =
                checked(&arg, key, value).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if !applies {
                // A flag of `oca up` only (`no-agent`): `oca serve` has no use for it.
                continue;
            }
            let id = arg.get_id().clone();
            // Defaults must live as long as the command; the file is read once.
            let values: Vec<&'static str> = values
                .into_iter()
                .map(|v| &*Box::leak(v.into_boxed_str()))
                .collect();
            cmd = cmd.mut_subcommand(&name, |sc| {
                sc.mut_arg(id, |a| match values.as_slice() {
                    [one] => a.default_value(*one),
                    many => a.default_values(many.to_vec()),
                })
            });
            from_file.insert(key.clone());
        }
    }
    let sub_cmd = cmd
        .find_subcommand(&name)
        .expect("a configured subcommand")
        .clone();
    let m = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let sub = m.subcommand_matches(&name).expect("the same subcommand");
    if sub.get_flag("print_config") {
        let shown = Shown {
            name: &name,
            path: path.as_deref(),
            order: &order,
            from_file: &from_file,
        };
        print!("{}", effective(&sub_cmd, sub, &shown));
        return Ok(None);
    }
    Ok(Some(m))
}

/// The flag a file key names, and whether subcommand `name` has it (else it is a flag
/// of another configured subcommand only); an error for a key that is no flag of any.
fn file_arg(cmd: &Command, name: &str, key: &str) -> Result<(clap::Arg, bool)> {
    let find = |sub: &str| {
        cmd.find_subcommand(sub).and_then(|sc| {
            sc.get_arguments()
                .find(|a| a.get_long() == Some(key) && !NOT_IN_FILE.contains(&key))
                .cloned()
        })
    };
    if let Some(arg) = find(name) {
        return Ok((arg, true));
    }
    if let Some(arg) = CONFIGURED.iter().find_map(|sub| find(sub)) {
        return Ok((arg, false));
    }
    let kebab = key.replace('_', "-");
    let hint = if kebab != key
        && CONFIGURED.iter().any(|sub| {
            cmd.find_subcommand(sub)
                .is_some_and(|sc| sc.get_arguments().any(|a| a.get_long() == Some(&kebab)))
        }) {
        format!(" (keys are spelled as the flags are: `{kebab}`)")
    } else {
        String::new()
    };
    bail!(
        "unknown key `{key}`{hint}: the keys are the long names of `oca {name}`'s flags \
         (`oca {name} --help`)"
    )
}

/// The command-line values of a file value, checked: its TOML type first, then by the
/// flag's own parser (as if given on the command line).
fn checked(arg: &clap::Arg, key: &str, value: &toml::Value) -> Result<Vec<String>> {
    let kind = Kind::of(arg);
    let wrong = || {
        anyhow!(
            "`{key}` must be {}, not {} ({value})",
            kind.name(),
            value.type_str()
        )
    };
    let values: Vec<String> = match (kind, value) {
        (Kind::Switch, toml::Value::Boolean(b)) => return Ok(vec![b.to_string()]),
        (Kind::Integer, toml::Value::Integer(i)) => vec![i.to_string()],
        (Kind::Text, toml::Value::String(s)) => vec![s.clone()],
        (Kind::List, toml::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(wrong))
            .collect::<Result<_>>()?,
        _ => return Err(wrong()),
    };
    // A command of this one flag, without its environment variable, parses the
    // values as the command line would.
    let long = arg.get_long().unwrap_or(key);
    let alone = Command::new("oca")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>).required(false));
    let mut line = Vec::new();
    for v in &values {
        line.push(format!("--{long}={v}"));
    }
    if let Err(e) = alone.try_get_matches_from(&line) {
        let why = e.render().to_string();
        let why = why
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        bail!("`{key}`: {why}");
    }
    Ok(values)
}

/// What `--print-config` says besides the values.
struct Shown<'a> {
    /// The subcommand.
    name: &'a str,
    /// The file read, if any.
    path: Option<&'a Path>,
    /// The flags, in their order.
    order: &'a [String],
    /// The flags the file set.
    from_file: &'a BTreeSet<String>,
}

/// The effective configuration as TOML, each value with where it came from.
fn effective(sub: &Command, m: &ArgMatches, shown: &Shown) -> String {
    let mut out = format!(
        "# The effective configuration of `oca {}`: the file ({}) < the environment < \
         the flags.\n",
        shown.name,
        shown
            .path
            .map_or_else(|| "none".to_string(), |p| p.display().to_string())
    );
    for long in shown.order {
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(long)) else {
            continue;
        };
        let long = long.as_str();
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if raw.is_empty() {
            out.push_str(&format!("# {long}: not set (its default applies)\n"));
            continue;
        }
        let text = |s: &str| toml::Value::String(s.to_string()).to_string();
        let value = match Kind::of(arg) {
            Kind::Switch | Kind::Integer => raw[0].clone(),
            Kind::Text => text(&raw[0]),
            Kind::List => format!(
                "[{}]",
                raw.iter().map(|s| text(s)).collect::<Vec<_>>().join(", ")
            ),
        };
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "environment {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            _ if shown.from_file.contains(long) => "file".to_string(),
            _ => "default".to_string(),
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Top {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Serve(crate::server::ServeArgs),
        Up(crate::server::UpArgs),
    }

    fn argv(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn every_flag_has_its_environment_variable() {
        let cmd = Top::command();
        for name in CONFIGURED {
            let sub = cmd.find_subcommand(name).unwrap();
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "print-config"].contains(&long) {
                    continue;
                }
                let want = if long == "config" {
                    "OCA_CONFIG_FILE".to_string()
                } else {
                    format!("OCA_{}", long.to_uppercase().replace('-', "_"))
                };
                assert_eq!(
                    arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    Some(want),
                    "--{long}"
                );
            }
        }
    }

    #[test]
    fn the_default_file_is_read_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("oca.toml");
        let m = matches_with(Top::command(), argv(&["oca", "serve"]), &default)
            .unwrap()
            .unwrap();
        let serve = m.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<u64>("heartbeat_secs"), Some(&30));
        std::fs::write(&default, "heartbeat-secs = 7\nno-agent = true\n").unwrap();
        let m = matches_with(Top::command(), argv(&["oca", "serve"]), &default)
            .unwrap()
            .unwrap();
        let serve = m.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<u64>("heartbeat_secs"), Some(&7));
        let m = matches_with(Top::command(), argv(&["oca", "up"]), &default)
            .unwrap()
            .unwrap();
        let up = m.subcommand_matches("up").unwrap();
        assert!(up.get_flag("no_agent"));
        assert_eq!(up.get_one::<u64>("heartbeat_secs"), Some(&7));
    }

    #[test]
    fn kinds() {
        let cmd = Top::command();
        let up = cmd.find_subcommand("up").unwrap();
        let kind = |long: &str| {
            Kind::of(
                up.get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .unwrap(),
            )
        };
        assert_eq!(kind("no-agent"), Kind::Switch);
        assert_eq!(kind("heartbeat-secs"), Kind::Integer);
        assert_eq!(kind("max-connections"), Kind::Integer);
        assert_eq!(kind("delivery-timeout-ms"), Kind::Integer);
        assert_eq!(kind("listen"), Kind::Text);
        assert_eq!(kind("data-dir"), Kind::Text);
        assert_eq!(kind("regions"), Kind::List);
    }
}

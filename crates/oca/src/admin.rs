//! `oca keys …` and `oca accounts …`: managing tenants and their access keys, offline
//! against a data directory; `oca audit`: reading the audit trail there. They open the database directly (WAL lets them run next
//! to a live server); the server reads keys and accounts on every request, so a
//! disable takes effect on the next call.

use crate::config;
use crate::server::{self, DataDir};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use oca_api::auth::Authenticator;
use oca_domain::time::{format_api, now_millis};
use oca_store::{AccountRecord, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct DataDirArg {
    /// The server's data directory [default: $OCA_HOME, else ~/.oca].
    #[arg(long, env = "OCA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an access key and print its id and secret (the secret is shown once).
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// The account the key acts for (it must exist, except `default`).
        #[arg(long, default_value = config::DEFAULT_ACCOUNT)]
        account: String,
    },
    /// List access keys (never their secrets).
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
    },
    /// Disable an access key: the server refuses it from the next request on.
    Disable {
        #[command(flatten)]
        dir: DataDirArg,
        access_key_id: String,
    },
    /// Enable a disabled access key again.
    Enable {
        #[command(flatten)]
        dir: DataDirArg,
        access_key_id: String,
    },
    /// Delete an access key for good.
    Delete {
        #[command(flatten)]
        dir: DataDirArg,
        access_key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account (a team): its keys see only its own commands, invocations
    /// and instances.
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// Letters, digits, `.`, `_` and `-`; at most 64.
        account_id: String,
        /// A human-readable name [default: the id].
        #[arg(long)]
        name: Option<String>,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Disable an account: every key of it is refused from the next request on.
    Disable {
        #[command(flatten)]
        dir: DataDirArg,
        account_id: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        dir: DataDirArg,
        account_id: String,
    },
    /// Delete an account for good; refused while it has access keys. Its id can never
    /// be created again, its agents are cut off, its records stay in the database,
    /// visible to no one.
    Delete {
        #[command(flatten)]
        dir: DataDirArg,
        account_id: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Only entries since this time: a duration back from now (`90s`, `15m`, `2h`,
    /// `7d`) or a time (`2025-01-31T08:00:00Z`, any RFC 3339 time, or `2025-01-31`
    /// for midnight UTC).
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    since: Option<i64>,
    /// Only this action: an API action (`RunCommand`, …), an agent's (`RegisterAgent`,
    /// `CutOffAgent`) or an offline change (`CreateAccessKey`, `DisableAccount`, …).
    #[arg(long)]
    action: Option<String>,
    /// Only this account's entries.
    #[arg(long)]
    account: Option<String>,
    /// Print at most this many entries: the newest, oldest first.
    #[arg(long, default_value_t = 1000)]
    limit: u64,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditFormat::Table)]
    output: AuditFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
}

/// `--since`: `<n>s|m|h|d` back from now, or an RFC 3339 time, or a UTC day.
fn parse_since(s: &str) -> std::result::Result<i64, String> {
    parse_since_at(s, now_millis())
}

fn parse_since_at(s: &str, now: i64) -> std::result::Result<i64, String> {
    let s = s.trim();
    let unit_ms = match s.chars().last() {
        Some('s') => Some(1_000),
        Some('m') => Some(60_000),
        Some('h') => Some(3_600_000),
        Some('d') => Some(86_400_000),
        _ => None,
    };
    if let Some(unit) = unit_ms {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            return Ok(now.saturating_sub(n.saturating_mul(unit)));
        }
    }
    oca_domain::time::parse_api(s)
        .or_else(|| oca_domain::time::parse_api(&format!("{s}T00:00:00Z")))
        .ok_or_else(|| {
            format!(
                "{s:?} is neither a duration (90s, 15m, 2h, 7d) nor a time \
                 (2025-01-31T08:00:00Z, 2025-01-31)"
            )
        })
}

/// `oca audit`: the audit trail of a data directory, newest entries oldest first.
pub async fn audit(args: AuditArgs) -> Result<ExitCode> {
    let data = open_existing(&args.dir)?;
    let filter = oca_store::AuditFilter {
        since: args.since,
        action: args.action,
        account_id: args.account,
        // One more, to tell whether there are more.
        limit: args.limit.saturating_add(1),
    };
    let mut entries = data.store.list_audit(&filter).await?;
    let more = entries.len() as u64 > args.limit;
    if more {
        entries.remove(0);
    }
    match args.output {
        AuditFormat::Json => {
            let items: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["time"] = format_api(e.at).into();
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        AuditFormat::Table => {
            println!(
                "{:<20} {:<16} {:<24} {:<15} {:<25} {:<22} {:<36} TARGETS",
                "TIME", "ACCOUNT", "ACCESS KEY", "SOURCE", "ACTION", "RESULT", "REQUEST ID"
            );
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            for e in &entries {
                let mut targets = e.targets.join(",");
                if e.omitted > 0 {
                    targets.push_str(&format!(" (+{})", e.omitted));
                }
                println!(
                    "{:<20} {:<16} {:<24} {:<15} {:<25} {:<22} {:<36} {}",
                    format_api(e.at),
                    dash(&e.account_id),
                    dash(&e.access_key_id),
                    dash(&e.source),
                    e.action,
                    e.result,
                    dash(&e.request_id),
                    dash(&targets),
                );
            }
        }
    }
    if more {
        eprintln!(
            "(the newest {} entries shown; older ones match too: raise --limit or narrow --since)",
            args.limit
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Records a change made offline (`oca keys …`, `oca accounts …`, the key `oca up`
/// makes) in the audit trail: source `local`, no access key (whoever can write the
/// data directory needs none), the key or account changed as the target.
pub async fn record_local(store: &dyn oca_store::Store, action: &str, account: &str, target: &str) {
    let entry = oca_store::AuditRecord {
        at: now_millis(),
        account_id: account.to_string(),
        access_key_id: String::new(),
        source: "local".to_string(),
        action: action.to_string(),
        targets: vec![target.to_string()],
        omitted: 0,
        result: "Success".to_string(),
        http_status: 0,
        request_id: oca_domain::ids::new_request_id(),
        authenticated: true,
    };
    if let Err(e) = store.record_audit(vec![entry], true).await {
        eprintln!("warning: the change was made but could not be recorded in the audit trail: {e}");
    }
}

/// The `default` account, created on first use.
pub fn default_account() -> AccountRecord {
    AccountRecord {
        account_id: config::DEFAULT_ACCOUNT.to_string(),
        name: config::DEFAULT_ACCOUNT.to_string(),
        created: now_millis(),
        enabled: true,
        deleted: None,
    }
}

fn valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Opens an existing data directory (a typo must not create an empty one).
fn open_existing(dir: &DataDirArg) -> Result<DataDir> {
    let path = config::data_dir(dir.data_dir.clone());
    if !path.join("oca.db").exists() {
        bail!(
            "{} has no OCA database (pass --data-dir, or start a server there first)",
            path.display()
        );
    }
    server::open_data_dir(&path)
}

fn created(ms: i64) -> String {
    format_api(ms)
}

fn status(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

pub async fn keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create { dir, account } => create_key(dir, &account).await,
        KeysCommand::List { dir, account } => {
            let data = open_existing(&dir)?;
            let keys = data.store.list_access_keys(account.as_deref()).await?;
            println!(
                "{:<28} {:<24} {:<9} CREATED",
                "ACCESS KEY ID", "ACCOUNT", "STATUS"
            );
            for k in keys {
                println!(
                    "{:<28} {:<24} {:<9} {}",
                    k.access_key_id,
                    k.account_id,
                    status(k.enabled),
                    created(k.created)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Disable { dir, access_key_id } => set_key(&dir, &access_key_id, false).await,
        KeysCommand::Enable { dir, access_key_id } => set_key(&dir, &access_key_id, true).await,
        KeysCommand::Delete { dir, access_key_id } => {
            let data = open_existing(&dir)?;
            let account = data
                .store
                .get_access_key(&access_key_id)
                .await?
                .map(|k| k.account_id)
                .unwrap_or_default();
            if !data.store.delete_access_key(&access_key_id).await? {
                bail!("no access key {access_key_id}");
            }
            record_local(
                data.store.as_ref(),
                "DeleteAccessKey",
                &account,
                &access_key_id,
            )
            .await;
            println!("Deleted access key {access_key_id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn set_key(dir: &DataDirArg, id: &str, enabled: bool) -> Result<ExitCode> {
    let data = open_existing(dir)?;
    if !data.store.set_access_key_enabled(id, enabled).await? {
        bail!("no access key {id}");
    }
    let account = data
        .store
        .get_access_key(id)
        .await?
        .map(|k| k.account_id)
        .unwrap_or_default();
    let action = if enabled {
        "EnableAccessKey"
    } else {
        "DisableAccessKey"
    };
    record_local(data.store.as_ref(), action, &account, id).await;
    println!("Access key {id} {}", status(enabled));
    Ok(ExitCode::SUCCESS)
}

async fn create_key(dir: DataDirArg, account: &str) -> Result<ExitCode> {
    let data = server::open_data_dir(&config::data_dir(dir.data_dir))?;
    if account == config::DEFAULT_ACCOUNT {
        data.store.ensure_account(&default_account()).await?;
    }
    match data.store.get_account(account).await? {
        None => bail!("no account {account:?} (create it first: oca accounts create {account})"),
        Some(a) if a.deleted.is_some() => {
            bail!("account {account:?} was deleted: it can have no access key")
        }
        Some(a) if !a.enabled => {
            eprintln!("warning: account {account} is disabled; the key works once it is enabled")
        }
        Some(_) => {}
    }
    let auth = Authenticator::new(data.store.clone(), data.secrets, 0);
    let (key, secret) = auth
        .create_key(account)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    record_local(
        data.store.as_ref(),
        "CreateAccessKey",
        &key.account_id,
        &key.access_key_id,
    )
    .await;
    println!("AccessKeyId: {}", key.access_key_id);
    println!("AccessKeySecret: {secret}");
    println!("Account: {}", key.account_id);
    Ok(ExitCode::SUCCESS)
}

pub async fn accounts(command: AccountsCommand) -> Result<ExitCode> {
    match command {
        AccountsCommand::Create {
            dir,
            account_id,
            name,
        } => {
            if !valid_account_id(&account_id) {
                bail!(
                    "{account_id:?} is not a valid account id (letters, digits, '.', '_', '-'; \
                     at most 64)"
                );
            }
            let data = server::open_data_dir(&config::data_dir(dir.data_dir))?;
            let record = AccountRecord {
                name: name.unwrap_or_else(|| account_id.clone()),
                account_id,
                created: now_millis(),
                enabled: true,
                deleted: None,
            };
            match data.store.insert_account(&record).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    let id = &record.account_id;
                    match data.store.get_account(id).await? {
                        Some(a) if a.deleted.is_some() => bail!(
                            "account {id} was deleted on {}; a deleted account's id is never \
                             used again (its records are kept): choose another id",
                            created(a.deleted.unwrap_or_default())
                        ),
                        _ => bail!("account {id} already exists"),
                    }
                }
                Err(e) => return Err(e).context("creating the account"),
            }
            let id = &record.account_id;
            record_local(data.store.as_ref(), "CreateAccount", id, id).await;
            println!("Created account {}", record.account_id);
            println!(
                "Create a key for it with: oca keys create --account {}",
                record.account_id
            );
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::List { dir } => {
            let data = open_existing(&dir)?;
            let accounts = data.store.list_accounts().await?;
            let keys = data.store.list_access_keys(None).await?;
            println!(
                "{:<24} {:<24} {:<9} {:>4} CREATED",
                "ACCOUNT", "NAME", "STATUS", "KEYS"
            );
            for a in accounts {
                let n = keys.iter().filter(|k| k.account_id == a.account_id).count();
                println!(
                    "{:<24} {:<24} {:<9} {:>4} {}",
                    a.account_id,
                    a.name,
                    if a.deleted.is_some() {
                        "deleted"
                    } else {
                        status(a.enabled)
                    },
                    n,
                    created(a.created)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Disable { dir, account_id } => set_account(&dir, &account_id, false).await,
        AccountsCommand::Enable { dir, account_id } => set_account(&dir, &account_id, true).await,
        AccountsCommand::Delete { dir, account_id } => {
            let data = open_existing(&dir)?;
            match data.store.delete_account(&account_id).await {
                Ok(true) => {}
                Ok(false) => match data.store.get_account(&account_id).await? {
                    Some(a) if a.deleted.is_some() => {
                        bail!("account {account_id} is already deleted")
                    }
                    _ => bail!("no account {account_id}"),
                },
                Err(StoreError::Conflict(_)) => bail!(
                    "account {account_id} still has access keys; delete them first \
                     (oca keys list --account {account_id}, oca keys delete <id>)"
                ),
                Err(e) => return Err(e).context("deleting the account"),
            }
            record_local(
                data.store.as_ref(),
                "DeleteAccount",
                &account_id,
                &account_id,
            )
            .await;
            println!("Deleted account {account_id}");
            println!(
                "Its id is never used again; a running server cuts its agents off within \
                 seconds."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn set_account(dir: &DataDirArg, id: &str, enabled: bool) -> Result<ExitCode> {
    let data = open_existing(dir)?;
    match data.store.set_account_enabled(id, enabled).await {
        Ok(true) => {}
        Ok(false) => bail!("no account {id}"),
        Err(StoreError::Conflict(_)) => bail!("account {id} was deleted: it stays disabled"),
        Err(e) => return Err(e).context("changing the account"),
    }
    let action = if enabled {
        "EnableAccount"
    } else {
        "DisableAccount"
    };
    record_local(data.store.as_ref(), action, id, id).await;
    println!("Account {id} {}", status(enabled));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{parse_since_at, valid_account_id};

    #[test]
    fn since() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_since_at("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since_at("15m", now), Ok(now - 900_000));
        assert_eq!(parse_since_at("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since_at("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_since_at("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_since_at("2023-11-14", now), Ok(1_699_920_000_000));
        assert!(parse_since_at("yesterday", now).is_err());
        assert!(parse_since_at("5", now).is_err());
        assert!(parse_since_at("xs", now).is_err());
    }

    #[test]
    fn account_ids() {
        assert!(valid_account_id("default"));
        assert!(valid_account_id("team-a.prod_1"));
        assert!(!valid_account_id(""));
        assert!(!valid_account_id("a b"));
        assert!(!valid_account_id("a/b"));
        assert!(!valid_account_id(&"x".repeat(65)));
    }
}

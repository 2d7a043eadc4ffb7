//! The everyday commands: `oca run`, `oca invocations`, `oca results`, `oca instances`,
//! `oca deregister`.

use crate::client::Client;
use crate::config::Credentials;
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Common {
    /// Credentials file [default: $OCA_CONFIG, else ~/.oca/credentials.json].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Instance to run on (repeat for several) [default: every online instance].
    #[arg(long = "instance", short = 'i')]
    instances: Vec<String>,
    /// Run on the instances carrying this tag, KEY=VALUE or KEY for any value (repeat:
    /// every tag must match).
    #[arg(long = "tag", value_name = "KEY[=VALUE]")]
    tags: Vec<String>,
    /// Seconds before the run is killed.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// User to run as [default: the agent's user, root].
    #[arg(long)]
    user: Option<String>,
    /// Working directory [default: the user's home].
    #[arg(long)]
    dir: Option<String>,
    /// Return at once with the invocation id instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Run on a schedule instead of now: `rate(5m)`, `at(2030-01-01 08:00:00 UTC)` or
    /// a cron expression with seconds, e.g. `0 */20 * * * ?` (stop it with the API's
    /// StopInvocation). Prints the invocation id and returns.
    #[arg(long, value_name = "FREQUENCY", conflicts_with = "on_boot")]
    every: Option<String>,
    /// Run every time the instances start after a reboot (`EveryReboot`).
    #[arg(long)]
    on_boot: bool,
    /// The shell script.
    script: String,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    common: Common,
    /// How many to show (at most 50).
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

#[derive(clap::Args, Debug)]
pub struct ResultsArgs {
    #[command(flatten)]
    common: Common,
    /// The invocation (t-…).
    invoke_id: String,
}

fn client(common: &Common) -> Result<Client> {
    Client::new(Credentials::load(common.config.as_deref())?)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(x) => cur = x,
            None => return vec![],
        }
    }
    cur.as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

async fn online_instances(c: &Client) -> Result<Vec<String>> {
    let body = c
        .call("DescribeCloudAssistantStatus", &[("PageSize", "50".into())])
        .await?;
    Ok(items(
        &body,
        &[
            "InstanceCloudAssistantStatusSet",
            "InstanceCloudAssistantStatus",
        ],
    )
    .into_iter()
    .filter(|i| s(i, "CloudAssistantStatus") == "true")
    .map(|i| s(i, "InstanceId").to_string())
    .collect())
}

async fn all_results(c: &Client, invoke_id: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let body = c
            .call(
                "DescribeInvocationResults",
                &[
                    ("InvokeId", invoke_id.to_string()),
                    ("ContentEncoding", "PlainText".into()),
                    ("PageSize", "50".into()),
                    ("PageNumber", page.to_string()),
                ],
            )
            .await?;
        let inv = &body["Invocation"];
        let batch: Vec<Value> = items(inv, &["InvocationResults", "InvocationResult"])
            .into_iter()
            .cloned()
            .collect();
        let total = inv["TotalCount"].as_u64().unwrap_or(0);
        let n = batch.len();
        out.extend(batch);
        if n == 0 || out.len() as u64 >= total {
            return Ok(out);
        }
        page += 1;
    }
}

fn print_result(r: &Value) {
    let exit = r
        .get("ExitCode")
        .and_then(Value::as_i64)
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    println!(
        "== {}  {}  exit {}{}",
        s(r, "InstanceId"),
        s(r, "InvocationStatus"),
        exit,
        match s(r, "ErrorCode") {
            "" => String::new(),
            code => format!("  {code}: {}", s(r, "ErrorInfo")),
        }
    );
    let output = s(r, "Output");
    if !output.is_empty() {
        print!("{output}");
        if !output.ends_with('\n') {
            println!();
        }
    }
    if let Some(d) = r.get("Dropped").and_then(Value::as_u64).filter(|d| *d > 0) {
        println!(
            "[{d} bytes of output dropped from the middle; the whole output is kept by the server]"
        );
    }
}

pub async fn run(a: RunArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let mut owned: Vec<(String, String)> = vec![
        ("Type".into(), "RunShellScript".into()),
        ("CommandContent".into(), a.script.clone()),
        ("ContentEncoding".into(), "PlainText".into()),
        ("Timeout".into(), a.timeout.to_string()),
    ];
    if let Some(u) = &a.user {
        owned.push(("Username".into(), u.clone()));
    }
    if let Some(d) = &a.dir {
        owned.push(("WorkingDir".into(), d.clone()));
    }
    if let Some(f) = &a.every {
        owned.push(("RepeatMode".into(), "Period".into()));
        owned.push(("Frequency".into(), f.clone()));
    } else if a.on_boot {
        owned.push(("RepeatMode".into(), "EveryReboot".into()));
    }
    if !a.tags.is_empty() {
        if !a.instances.is_empty() {
            bail!("name instances with --instance or with --tag, not both");
        }
        owned.extend(tag_params("ResourceTag", &a.tags));
    } else {
        let instances = if a.instances.is_empty() {
            let online = online_instances(&c).await?;
            if online.is_empty() {
                bail!("no instance is online; start an agent or name one with --instance");
            }
            online
        } else {
            a.instances.clone()
        };
        for (n, id) in instances.iter().enumerate() {
            owned.push((format!("InstanceId.{}", n + 1), id.clone()));
        }
    }
    let params: Vec<(&str, String)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let body = c.call("RunCommand", &params).await?;
    let invoke_id = s(&body, "InvokeId").to_string();
    if a.no_wait || a.every.is_some() || a.on_boot {
        println!("{invoke_id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{invoke_id}: running");
    let mut delay = Duration::from_millis(100);
    let results = loop {
        let results = all_results(&c, &invoke_id).await?;
        let done = !results.is_empty()
            && results
                .iter()
                .all(|r| !matches!(s(r, "InvokeRecordStatus"), "Running"));
        if done {
            break results;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    };
    for r in &results {
        print_result(r);
    }
    let all_ok = results
        .iter()
        .all(|r| s(r, "InvocationStatus") == "Success");
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn invocations(a: ListArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let body = c
        .call(
            "DescribeInvocations",
            &[("PageSize", a.limit.min(50).to_string())],
        )
        .await?;
    println!(
        "{:<26} {:<14} {:<14} {:<20} {:>9}  NAME",
        "INVOKE ID", "STATUS", "LEGACY", "CREATED", "INSTANCES"
    );
    for i in items(&body, &["Invocations", "Invocation"]) {
        let n = items(i, &["InvokeInstances", "InvokeInstance"]).len();
        println!(
            "{:<26} {:<14} {:<14} {:<20} {:>9}  {}",
            s(i, "InvokeId"),
            s(i, "InvocationStatus"),
            s(i, "InvokeStatus"),
            s(i, "CreationTime"),
            n,
            s(i, "CommandName")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn results(a: ResultsArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let results = all_results(&c, &a.invoke_id).await?;
    if results.is_empty() {
        bail!("no results for {}", a.invoke_id);
    }
    for r in &results {
        print_result(r);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(a: ResultsArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    c.call("StopInvocation", &[("InvokeId", a.invoke_id.clone())])
        .await?;
    eprintln!("{}: stopping", a.invoke_id);
    Ok(ExitCode::SUCCESS)
}

pub async fn instances(a: ListArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let body = c
        .call(
            "DescribeManagedInstances",
            &[("PageSize", a.limit.min(50).to_string())],
        )
        .await?;
    println!(
        "{:<26} {:<7} {:<20} {:<10} {:<20}  NAME",
        "INSTANCE ID", "ONLINE", "HOSTNAME", "AGENT", "LAST INVOKED"
    );
    for i in body["Instances"].as_array().into_iter().flatten() {
        println!(
            "{:<26} {:<7} {:<20} {:<10} {:<20}  {}",
            s(i, "InstanceId"),
            if i["Connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            s(i, "Hostname"),
            s(i, "AgentVersion"),
            s(i, "LastInvokedTime"),
            s(i, "InstanceName")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct DeregisterArgs {
    #[command(flatten)]
    common: Common,
    /// The instance (mi-…).
    instance: String,
}

pub async fn deregister(a: DeregisterArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let body = c
        .call(
            "DeregisterManagedInstance",
            &[("InstanceId", a.instance.clone())],
        )
        .await?;
    let i = &body["Instance"];
    eprintln!(
        "{}: deregistered ({}, host {})",
        s(i, "InstanceId"),
        s(i, "InstanceName"),
        s(i, "Hostname")
    );
    Ok(ExitCode::SUCCESS)
}

/// `KEY=VALUE` / `KEY` arguments as `Name.N.Key` / `Name.N.Value` parameters.
fn tag_params(name: &str, tags: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, t) in tags.iter().enumerate() {
        let (k, v) = t.split_once('=').unwrap_or((t.as_str(), ""));
        out.push((format!("{name}.{}.Key", n + 1), k.to_string()));
        out.push((format!("{name}.{}.Value", n + 1), v.to_string()));
    }
    out
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    #[command(flatten)]
    common: Common,
    /// The instance (mi-…).
    instance: String,
    /// Tags to set, KEY=VALUE.
    #[arg(required = true, value_name = "KEY=VALUE")]
    tags: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct UntagArgs {
    #[command(flatten)]
    common: Common,
    /// The instance (mi-…).
    instance: String,
    /// Tag keys to remove.
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,
}

pub async fn tag(a: TagArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let mut owned = vec![
        ("ResourceType".to_string(), "instance".to_string()),
        ("ResourceId.1".to_string(), a.instance.clone()),
    ];
    owned.extend(tag_params("Tag", &a.tags));
    let params: Vec<(&str, String)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    c.call("TagResources", &params).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn untag(a: UntagArgs) -> Result<ExitCode> {
    let c = client(&a.common)?;
    let mut owned = vec![
        ("ResourceType".to_string(), "instance".to_string()),
        ("ResourceId.1".to_string(), a.instance.clone()),
    ];
    for (n, k) in a.keys.iter().enumerate() {
        owned.push((format!("TagKey.{}", n + 1), k.clone()));
    }
    let params: Vec<(&str, String)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    c.call("UntagResources", &params).await?;
    Ok(ExitCode::SUCCESS)
}

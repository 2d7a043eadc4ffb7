//! `oca activations create|list|disable|delete`: the codes hosts join with, through
//! the API. `create` prints the line to run on each host (`oca-agent install …`), the
//! one the server answers in CreateActivation's `InstallCommand`.

use crate::cli::Common;
use crate::client::Client;
use crate::config::Credentials;
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ActivationsCommand {
    /// Create an activation and print the line that installs an agent with it on a
    /// host (its code is shown this once).
    Create(CreateArgs),
    /// List activations: how many hosts used each, whether it is disabled.
    List {
        #[command(flatten)]
        common: Common,
        /// How many to show (at most 50).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Disable an activation: no more hosts register with it (registered ones stay).
    Disable {
        #[command(flatten)]
        common: Common,
        /// The activation (act-…).
        activation_id: String,
    },
    /// Delete an activation (refused while an instance registered with it is
    /// registered).
    Delete {
        #[command(flatten)]
        common: Common,
        /// The activation (act-…).
        activation_id: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    common: Common,
    /// How many hosts may register with it [server's default: 10].
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    /// The name its instances get [default: each host's name].
    #[arg(long)]
    name: Option<String>,
    /// A description.
    #[arg(long)]
    description: Option<String>,
    /// Hosts may register only from this address or CIDR block.
    #[arg(long, value_name = "CIDR")]
    ip_range: Option<String>,
    /// Hours it may be used for [server's default: 4].
    #[arg(long, value_name = "HOURS")]
    ttl_hours: Option<u32>,
    /// The server's URL as the hosts reach it, in the line printed [default: the one
    /// the server advertises (`oca serve --advertise`)].
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// `text`: the line alone on stdout (notes on stderr); `json`: the API's answer.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub async fn activations(command: ActivationsCommand) -> Result<ExitCode> {
    match command {
        ActivationsCommand::Create(a) => create(a).await,
        ActivationsCommand::List { common, limit } => list(&common, limit).await,
        ActivationsCommand::Disable {
            common,
            activation_id,
        } => {
            let (c, _) = client(&common)?;
            c.call(
                "DisableActivation",
                &[("ActivationId", activation_id.clone())],
            )
            .await?;
            eprintln!("{activation_id}: disabled");
            Ok(ExitCode::SUCCESS)
        }
        ActivationsCommand::Delete {
            common,
            activation_id,
        } => {
            let (c, _) = client(&common)?;
            c.call(
                "DeleteActivation",
                &[("ActivationId", activation_id.clone())],
            )
            .await?;
            eprintln!("{activation_id}: deleted");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn client(common: &Common) -> Result<(Client, Credentials)> {
    let creds = Credentials::load(common.config.as_deref())?;
    Ok((Client::new(creds.clone())?, creds))
}

async fn create(a: CreateArgs) -> Result<ExitCode> {
    let (c, creds) = client(&a.common)?;
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(n) = a.count {
        params.push(("InstanceCount", n.to_string()));
    }
    if let Some(n) = &a.name {
        params.push(("InstanceName", n.clone()));
    }
    if let Some(d) = &a.description {
        params.push(("Description", d.clone()));
    }
    if let Some(r) = &a.ip_range {
        params.push(("IpAddressRange", r.clone()));
    }
    if let Some(h) = a.ttl_hours {
        params.push(("TimeToLiveInHours", h.to_string()));
    }
    let mut body = c.call("CreateActivation", &params).await?;
    let id = s(&body, "ActivationId").to_string();
    let code = s(&body, "ActivationCode").to_string();
    let given = s(&body, "InstallCommand").to_string();
    // The server's URL and fingerprint, as its own line says them (a server without
    // the line: the CLI's endpoint and CA).
    let fingerprint = word_after(&given, "--fingerprint").or_else(|| {
        let ca = creds.ca_file.as_ref()?;
        let cert = oca_tls::read_certificates(ca).ok()?.into_iter().next()?;
        Some(oca_tls::Fingerprint::of(&cert).to_string())
    });
    let server = a
        .server_url
        .clone()
        .or_else(|| word_after(&given, "--server"))
        .unwrap_or_else(|| creds.endpoint.clone());
    let line = oca_proto::install::InstallLine {
        server: &server,
        activation_id: &id,
        activation_code: &code,
        fingerprint: fingerprint.as_deref(),
    }
    .to_string();
    if a.output == Output::Json {
        body["InstallCommand"] = Value::String(line);
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Activation {id}: {} host(s), for {} hour(s). Its code is shown this once. On each host, \
         as root, with oca-agent on the PATH:",
        a.count.map_or("10".to_string(), |n| n.to_string()),
        a.ttl_hours.map_or("4".to_string(), |n| n.to_string()),
    );
    println!("{line}");
    if is_loopback(&server) {
        eprintln!(
            "note: {server} reaches the server from this host only: start the server with \
             --advertise NAME (its certificate is made for NAME) or give --server-url"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The word after `flag` in a line of plain words.
fn word_after(line: &str, flag: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next().map(|w| w.trim_matches('\'').to_string())
}

fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn list(common: &Common, limit: u32) -> Result<ExitCode> {
    let (c, _) = client(common)?;
    let body = c
        .call(
            "DescribeActivations",
            &[("PageSize", limit.clamp(1, 50).to_string())],
        )
        .await?;
    println!(
        "{:<26} {:<9} {:>5} {:>5} {:>5}  {:<20} {:>6}  NAME / DESCRIPTION",
        "ACTIVATION ID", "STATE", "HOSTS", "USED", "GONE", "CREATED", "HOURS"
    );
    let list = body["ActivationList"]
        .as_array()
        .context("the answer has no ActivationList")?;
    for a in list {
        let n = |k: &str| a[k].as_i64().unwrap_or(0);
        println!(
            "{:<26} {:<9} {:>5} {:>5} {:>5}  {:<20} {:>6}  {} {}",
            s(a, "ActivationId"),
            if a["Disabled"].as_bool() == Some(true) {
                "disabled"
            } else {
                "enabled"
            },
            n("InstanceCount"),
            n("RegisteredCount"),
            n("DeregisteredCount"),
            s(a, "CreationTime"),
            n("TimeToLiveInHours"),
            s(a, "InstanceName"),
            s(a, "Description"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_line_is_read_back() {
        let line = "oca-agent install --server https://h:7070 --activation-id act-1 \
                    --activation-code C --fingerprint sha256:ab";
        assert_eq!(
            word_after(line, "--server").as_deref(),
            Some("https://h:7070")
        );
        assert_eq!(
            word_after(line, "--fingerprint").as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(word_after("", "--fingerprint"), None);
        assert!(is_loopback("https://127.0.0.1:7070"));
        assert!(is_loopback("https://[::1]:7070"));
        assert!(is_loopback("http://localhost:7070"));
        assert!(!is_loopback("https://oca.example.com:7070"));
    }
}

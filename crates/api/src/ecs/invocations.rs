//! RunCommand, InvokeCommand, StopInvocation, DescribeInvocations,
//! DescribeInvocationResults (OCA's DescribeInvocationOutput is in `output.rs`).

use super::commands::{self, content_encoding};
use super::Empty;
use crate::error::ApiError;
use crate::params::TagErrors;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::{self as cmd, ContentEncoding, RepeatMode};
use oca_domain::frequency::{Frequency, FrequencyError};
use oca_domain::params::{check_values, ParamError};
use oca_domain::status::{InstanceInvokeStatus, InvokeStatus};
use oca_domain::time::{format_api, format_api_opt, now_millis, Millis};
use oca_store::{
    ClientToken, CommandRecord, InstanceRecord, InvocationChange, InvocationFilter, InvocationKind,
    InvocationRecord, NewInvocation, PriorInvocation, ResultFilter, Tag, TagResource, TaskRecord,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// The longest `Username`.
const MAX_USERNAME_LEN: usize = 255;
/// `InstanceId.N` of StopInvocation: at most 100 (the SDK's metadata, maxItems 100).
const MAX_STOP_IDS: usize = 100;
/// `InstanceId.N` of ModifyInvocationAttribute: at most 200 (the SDK's metadata lists
/// maxItems 201 for it, as it lists 501 for RunCommand's 500 and 21 for 20 tags).
const MAX_MODIFY_IDS: usize = 200;

/// What an invocation adds to its command.
struct InvokeOptions {
    instance_ids: Vec<String>,
    parameters: BTreeMap<String, String>,
    username: String,
    working_dir: Option<String>,
    timeout_secs: Option<i64>,
    termination_mode: String,
    client_token: Option<ClientToken>,
    /// Run on the instances carrying all of these (instead of `instance_ids`).
    resource_tags: Vec<Tag>,
    /// Tags for the invocation (and for the command a RunCommand makes).
    tags: Vec<Tag>,
    /// The resource group of the invocation (and of the command a RunCommand makes):
    /// every instance it runs on must be in it.
    resource_group_id: Option<String>,
    repeat: RepeatMode,
    /// For `Period`: as the caller wrote it (stored and returned so), and parsed.
    frequency: Option<(String, Frequency)>,
}

/// The vendor's errors for `ResourceTag.N`.
pub(crate) const RESOURCE_TAG_ERRORS: TagErrors = TagErrors {
    missing_key: || {
        ApiError::Tagging(
            "MissingParameter.ResourceTagKey",
            "You must specify ResourceTag.N.Key.",
            400,
        )
    },
    bad_key: || {
        ApiError::Tagging(
            "InvalidResourceTagKey.Malformed",
            "The specified ResourceTag key is not valid.",
            400,
        )
    },
    bad_value: || {
        ApiError::Tagging(
            "InvalidResourceTagValue.Malformed",
            "The specified ResourceTag value is not valid.",
            400,
        )
    },
    duplicate: || {
        ApiError::Tagging(
            "Duplicate.ResourceTagKey",
            "The ResourceTag contains duplicate keys.",
            400,
        )
    },
    too_many: || {
        ApiError::Tagging(
            "NumberExceed.ResourceTags",
            "The maximum number of ResourceTags is exceeded.",
            400,
        )
    },
};

/// Parameters that sign a request rather than say what it asks for: a retried
/// request carries new ones, so they stay out of its digest.
const SIGNING_PARAMS: &[&str] = &[
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "AccessKeyId",
    "Format",
];

/// `ClientToken`, with a digest of everything else the request asks for.
fn client_token(ctx: &Ctx) -> Result<Option<ClientToken>, ApiError> {
    let Some(token) = ctx.params.non_empty("ClientToken") else {
        return Ok(None);
    };
    if token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidClientToken);
    }
    let mut pairs: Vec<&(String, String)> = ctx
        .params
        .pairs()
        .iter()
        .filter(|(k, _)| !SIGNING_PARAMS.contains(&k.as_str()))
        .collect();
    pairs.sort();
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(ctx.endpoint.action());
    for (k, v) in pairs {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    Ok(Some(ClientToken {
        token: token.to_string(),
        digest: hex::encode(h.finalize()),
    }))
}

/// The answer to a request whose token already made an invocation: the same ids if
/// it asks for the same thing, `IdempotentParameterMismatch` if not.
fn replay(prior: PriorInvocation, token: &ClientToken) -> Result<Started, ApiError> {
    if prior.digest == token.digest {
        Ok(Started {
            invoke_id: prior.invoke_id,
            command_id: prior.command_id,
        })
    } else {
        Err(ApiError::IdempotentParameterMismatch)
    }
}

/// A request's earlier answer, if its ClientToken was used before.
async fn replayed(api: &Api, ctx: &Ctx) -> Result<Option<Started>, ApiError> {
    let Some(token) = client_token(ctx)? else {
        return Ok(None);
    };
    match api
        .store
        .find_client_token(&ctx.scope, &token.token)
        .await?
    {
        Some(prior) => replay(prior, &token).map(Some),
        None => Ok(None),
    }
}

/// What a started (or replayed) invocation answers with.
pub(crate) struct Started {
    pub(crate) invoke_id: String,
    pub(crate) command_id: String,
}

fn invoke_options(api: &Api, ctx: &Ctx, username_param: &str) -> Result<InvokeOptions, ApiError> {
    let p = &ctx.params;
    // Each instance once, in the order given.
    let max = api.config.max_instances_per_invocation;
    let mut seen = std::collections::HashSet::new();
    let instance_ids: Vec<String> = p
        .list("InstanceId", max, || ApiError::InstanceIdsExceedLimit(max))?
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let resource_tags = p.tags("ResourceTag", 10, RESOURCE_TAG_ERRORS)?;
    match (instance_ids.is_empty(), resource_tags.is_empty()) {
        (true, true) => return Err(ApiError::MissingParam("InstanceId")),
        (false, false) => return Err(ApiError::InvalidResourceTagConflict),
        _ => {}
    }
    if instance_ids.len() > max {
        return Err(ApiError::InstanceIdsExceedLimit(max));
    }
    // The legacy `Timed=true` without a RepeatMode asks for a periodic run.
    let repeat = match p.non_empty("RepeatMode") {
        None if p.bool("Timed")? == Some(true) => RepeatMode::Period,
        None => RepeatMode::Once,
        Some(m) => RepeatMode::parse(m).ok_or(ApiError::InvalidRepeatMode)?,
    };
    let frequency = match repeat {
        RepeatMode::Period => Some(frequency(p)?),
        _ => None,
    };
    let parameters = match p.non_empty("Parameters") {
        None => BTreeMap::new(),
        Some(json) => parameter_values(json)?,
    };
    let termination_mode = match p.non_empty("TerminationMode") {
        None => cmd::TerminationMode::default(),
        Some(m) => cmd::TerminationMode::parse(m).ok_or(ApiError::InvalidTerminationMode)?,
    }
    .as_str()
    .to_string();
    Ok(InvokeOptions {
        instance_ids,
        parameters,
        username: p
            .string_max(username_param, MAX_USERNAME_LEN, || {
                ApiError::UsernameExceedLimit
            })?
            .unwrap_or_default(),
        working_dir: commands::working_dir(p)?,
        timeout_secs: commands::timeout(p)?,
        termination_mode,
        client_token: client_token(ctx)?,
        resource_tags,
        tags: p.tags("Tag", 20, super::tags::TAG_ERRORS)?,
        resource_group_id: super::resource_group(p)?,
        repeat,
        frequency,
    })
}

/// `Frequency`, required (`MissingParam.Frequency`) and well-formed: the caller's text
/// (trimmed) and what it means.
fn frequency(p: &crate::params::Params) -> Result<(String, Frequency), ApiError> {
    let text = p
        .non_empty("Frequency")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::MissingParam("Frequency"))?;
    let parsed = Frequency::parse(text).map_err(|e| ApiError::InvalidFrequency(e.to_string()))?;
    Ok((text.to_string(), parsed))
}

/// The vendor's API-side checks of a frequency against the run's timeout.
pub(crate) fn check_frequency(
    api: &Api,
    frequency: &Frequency,
    timeout_secs: i64,
) -> Result<(), ApiError> {
    let now = chrono::DateTime::from_timestamp_millis(now_millis()).unwrap_or_default();
    match frequency.validate(timeout_secs.max(0) as u64, now) {
        Ok(()) => Ok(()),
        Err(FrequencyError::CronTooFrequent { gap_secs, .. })
            if api
                .config
                .min_cron_interval_secs
                .is_some_and(|min| gap_secs >= min) =>
        {
            Ok(())
        }
        Err(e) => Err(ApiError::InvalidFrequency(e.to_string())),
    }
}

/// A JSON object read as its key/value pairs in order, duplicates kept (a map would
/// silently keep the last of two equal keys).
struct JsonPairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for JsonPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = JsonPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(JsonPairs(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// `Parameters`: a JSON object of at most 20 distinct names (each at most 64
/// characters) to strings (numbers and booleans are taken as their text).
fn parameter_values(json: &str) -> Result<BTreeMap<String, String>, ApiError> {
    use oca_domain::params::{MAX_NAME_LEN, MAX_PARAMETERS};
    let JsonPairs(pairs) = serde_json::from_str(json)
        .map_err(|_| ApiError::InvalidParameters("it must be a JSON object".into()))?;
    let mut values = BTreeMap::new();
    for (k, v) in pairs {
        if k.chars().count() > MAX_NAME_LEN {
            return Err(ApiError::ParameterKeyExceedLimit);
        }
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::InvalidParameters(format!(
                    "the value of {k:?} must be a string"
                )))
            }
        };
        if values.insert(k, text).is_some() {
            return Err(ApiError::ParameterKeyDuplicate);
        }
    }
    if values.len() > MAX_PARAMETERS {
        return Err(ApiError::ParameterCountExceedLimit);
    }
    Ok(values)
}

/// Where the invoked command comes from.
enum Source<'a> {
    /// A saved command (InvokeCommand).
    Saved(&'a CommandRecord),
    /// A command RunCommand makes; stored with the invocation, in one transaction.
    New(&'a CommandRecord),
}

/// Stores an invocation of a command and pushes it to the connected agents. Everything
/// is committed in one transaction before any task is sent.
async fn start(
    api: &Api,
    ctx: &Ctx,
    source: Source<'_>,
    opts: InvokeOptions,
) -> Result<Started, ApiError> {
    let (command, new_command) = match source {
        Source::Saved(c) => (c, None),
        Source::New(c) => (c, Some(c)),
    };
    // Parameters.
    if command.enable_parameter {
        check_values(&String::from_utf8_lossy(&command.content), &opts.parameters).map_err(
            |e| match e {
                ParamError::Missing(name) => ApiError::ParameterMissingValue(name),
                other => ApiError::ParameterNotMatched(other.to_string()),
            },
        )?;
    } else if !opts.parameters.is_empty() {
        return Err(ApiError::ParameterDisabled);
    }
    let group = opts.resource_group_id.as_deref();
    let instances = if opts.resource_tags.is_empty() {
        instances_in_group(api, ctx, &opts.instance_ids, group).await?
    } else {
        // Instances named by their tags: those of the resource group, when one is given.
        let ids = api
            .store
            .tagged(&ctx.scope, TagResource::Instance, &opts.resource_tags)
            .await?;
        let mut instances = api.store.get_instances(&ctx.scope, &ids).await?;
        if let Some(group) = group {
            instances.retain(|i| i.resource_group_id == group);
        }
        if instances.is_empty() {
            return Err(ApiError::InvalidResourceTagInstanceNotFound);
        }
        let max = api.config.max_instances_per_invocation;
        if instances.len() > max {
            return Err(ApiError::InstanceIdsExceedLimit(max));
        }
        instances
    };
    let timeout_secs = opts.timeout_secs.unwrap_or(command.timeout_secs);
    if let Some((_, f)) = &opts.frequency {
        check_frequency(api, f, timeout_secs)?;
    }
    if opts.repeat == RepeatMode::DryRun {
        // Everything is checked; nothing is stored or run.
        return Ok(Started {
            invoke_id: String::new(),
            command_id: String::new(),
        });
    }
    // `Timed` (periodic, in the legacy status: Running until stopped by hand) is a
    // schedule with no last run; a NextRebootOnly task ends with its one run.
    let repeats = matches!(opts.repeat, RepeatMode::Period | RepeatMode::EveryReboot);
    let now = now_millis();
    let invoke_id = oca_domain::ids::new_invoke_id();
    let mut tasks = new_tasks(
        api,
        ctx,
        &invoke_id,
        &command.command_id,
        &opts.username,
        &instances,
        now,
    );
    let resource_group_id = opts.resource_group_id.unwrap_or_default();
    for t in &mut tasks {
        t.timed = repeats;
        t.resource_group_id = resource_group_id.clone();
    }
    let counts = tasks.iter().map(|t| t.state.status).collect();
    let invocation = InvocationRecord {
        invoke_id: invoke_id.clone(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        command_id: command.command_id.clone(),
        command_name: command.name.clone(),
        command_description: command.description.clone(),
        command_type: command.command_type.clone(),
        command_content: command.content.clone(),
        enable_parameter: command.enable_parameter,
        parameters: serde_json::to_string(&opts.parameters).unwrap_or_else(|_| "{}".into()),
        working_dir: opts
            .working_dir
            .unwrap_or_else(|| command.working_dir.clone()),
        username: opts.username,
        timeout_secs,
        repeat_mode: opts.repeat.as_str().to_string(),
        timed: repeats,
        frequency: opts.frequency.map(|(text, _)| text).unwrap_or_default(),
        termination_mode: opts.termination_mode,
        created: now,
        stopped_by_hand: false,
        counts,
        file: None,
        revision: 0,
        resource_group_id,
    };
    let prior = api
        .store
        .create_invocation(NewInvocation {
            command: new_command,
            invocation: &invocation,
            tasks: &tasks,
            client_token: opts.client_token.as_ref(),
            tags: &opts.tags,
        })
        .await?;
    if let (Some(prior), Some(token)) = (prior, &opts.client_token) {
        // A concurrent request with the same token won the race: nothing was stored.
        return replay(prior, token);
    }
    send(api, &invocation, &tasks);
    tracing::info!(invoke_id, command_id = %command.command_id, instances = tasks.len(), "invocation started");
    Ok(Started {
        invoke_id,
        command_id: command.command_id.clone(),
    })
}

/// The instances with these ids, each of which must exist in the caller's account and
/// region.
pub(crate) async fn instances_in_scope(
    api: &Api,
    ctx: &Ctx,
    ids: &[String],
) -> Result<Vec<InstanceRecord>, ApiError> {
    let instances = api.store.get_instances(&ctx.scope, ids).await?;
    let found: std::collections::HashSet<&str> =
        instances.iter().map(|i| i.instance_id.as_str()).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id.as_str())) {
        return Err(ApiError::InvalidInstanceNotFound(missing.clone()));
    }
    Ok(instances)
}

/// [`instances_in_scope`], each of which must also belong to the resource group when
/// one is given: an instance of another group (or of none) is answered as one that
/// does not exist (`InvalidInstance.NotFound`), as an instance of another account is.
pub(crate) async fn instances_in_group(
    api: &Api,
    ctx: &Ctx,
    ids: &[String],
    group: Option<&str>,
) -> Result<Vec<InstanceRecord>, ApiError> {
    let instances = instances_in_scope(api, ctx, ids).await?;
    if let Some(group) = group {
        if let Some(outside) = instances.iter().find(|i| i.resource_group_id != group) {
            return Err(ApiError::InvalidInstanceNotFound(
                outside.instance_id.clone(),
            ));
        }
    }
    Ok(instances)
}

/// A new invocation's tasks, one per instance, each in its first state (pending, or
/// already failed when the instance's agent is away); not in any resource group (the
/// caller sets the invocation's).
pub(crate) fn new_tasks(
    api: &Api,
    ctx: &Ctx,
    invoke_id: &str,
    command_id: &str,
    username: &str,
    instances: &[InstanceRecord],
    now: Millis,
) -> Vec<TaskRecord> {
    instances
        .iter()
        .map(|i| TaskRecord {
            invoke_id: invoke_id.to_string(),
            instance_id: i.instance_id.clone(),
            account_id: ctx.scope.account_id.clone(),
            region_id: ctx.scope.region_id.clone(),
            command_id: command_id.to_string(),
            username: username.to_string(),
            timed: false,
            created: now,
            updated: now,
            state: api.dispatcher.initial_state(i, now),
            output_len: 0,
            resource_group_id: String::new(),
        })
        .collect()
}

/// Pushes a stored invocation's waiting tasks to their connected agents.
pub(crate) fn send(api: &Api, invocation: &InvocationRecord, tasks: &[TaskRecord]) {
    for t in tasks.iter().filter(|t| !t.state.status.is_terminal()) {
        api.dispatcher.send_run(invocation, &t.instance_id);
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeCommandResponse {
    request_id: String,
    invoke_id: String,
}

pub async fn invoke(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let started = match replayed(api, ctx).await? {
        Some(earlier) => earlier,
        None => invoke_new(api, ctx).await?,
    };
    ctx.created(&started.invoke_id);
    Ok(render::ok(
        "InvokeCommand",
        &InvokeCommandResponse {
            request_id: ctx.request_id.clone(),
            invoke_id: started.invoke_id,
        },
        ctx.format,
    ))
}

async fn invoke_new(api: &Api, ctx: &Ctx) -> Result<Started, ApiError> {
    let command_id = ctx.params.required("CommandId")?;
    let command = api
        .store
        .get_command(&ctx.scope, command_id)
        .await?
        .filter(|c| c.visible)
        .ok_or(ApiError::InvalidCmdIdNotFound)?;
    let opts = invoke_options(api, ctx, "Username")?;
    start(api, ctx, Source::Saved(&command), opts).await
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunCommandResponse {
    request_id: String,
    command_id: String,
    invoke_id: String,
}

pub async fn run(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let started = run_or_replay(api, ctx).await?;
    Ok(render::ok(
        "RunCommand",
        &RunCommandResponse {
            request_id: ctx.request_id.clone(),
            command_id: started.command_id,
            invoke_id: started.invoke_id,
        },
        ctx.format,
    ))
}

/// RunCommand's work (or a replayed first answer), whatever the response's shape.
pub(crate) async fn run_or_replay(api: &Api, ctx: &Ctx) -> Result<Started, ApiError> {
    let started = match replayed(api, ctx).await? {
        Some(earlier) => earlier,
        None => run_new(api, ctx).await?,
    };
    ctx.created(&started.invoke_id);
    ctx.created(&started.command_id);
    Ok(started)
}

async fn run_new(api: &Api, ctx: &Ctx) -> Result<Started, ApiError> {
    let p = &ctx.params;
    let command_type = commands::command_type(p)?;
    let encoding = content_encoding(p, ContentEncoding::PlainText)?;
    let content = commands::command_content(p.required("CommandContent")?, encoding)?;
    let enable_parameter = p.bool("EnableParameter")?.unwrap_or(false);
    let opts = invoke_options(api, ctx, "Username")?;
    let now = now_millis();
    let command = CommandRecord {
        command_id: oca_domain::ids::new_command_id(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        name: commands::name(p)?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("RunCommand-{}", format_api(now))),
        description: commands::description(p)?.unwrap_or_default(),
        command_type: command_type.as_str().to_string(),
        parameter_names: commands::names_of(&content, enable_parameter)?,
        content,
        working_dir: String::new(),
        timeout_secs: cmd::DEFAULT_TIMEOUT_SECS,
        enable_parameter,
        created: now,
        invoke_times: 0,
        visible: p.bool("KeepCommand")?.unwrap_or(false),
        resource_group_id: opts.resource_group_id.clone().unwrap_or_default(),
    };
    start(api, ctx, Source::New(&command), opts).await
}

/// The command run must exist in the caller's scope; elsewhere it is simply not
/// found, and so is a file delivery's id.
pub(crate) async fn require_invocation(
    api: &Api,
    ctx: &Ctx,
    invoke_id: &str,
) -> Result<InvocationRecord, ApiError> {
    api.store
        .get_invocation(&ctx.scope, invoke_id)
        .await?
        .filter(|inv| inv.kind() == InvocationKind::Command)
        .ok_or(ApiError::InvalidInvokeIdNotFound)
}

pub async fn stop(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let invoke_id = p.required("InvokeId")?;
    let instance_ids = p.list("InstanceId", MAX_STOP_IDS, || {
        ApiError::InstanceIdsExceedLimit(MAX_STOP_IDS)
    })?;
    require_invocation(api, ctx, invoke_id).await?;
    let only = (!instance_ids.is_empty()).then_some(instance_ids.as_slice());
    let changed = api
        .store
        .stop_invocation(&ctx.scope, invoke_id, only, now_millis())
        .await?;
    for t in &changed {
        // Cancelled runs may be on their way to the agent; stopping them is harmless.
        api.dispatcher.send_stop(&t.invoke_id, &t.instance_id);
    }
    Ok(render::ok(
        "StopInvocation",
        &Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeInstance {
    instance_id: String,
    instance_invoke_status: String,
    invocation_status: String,
    /// Always present, as the vendor's are: 0 until a run ends with one (the official
    /// agent reports 0 with a run it refused or that failed before it started:
    /// `SendError` sends its `exit_code`, still 0, in aliyun_assist_client's
    /// agent/taskengine/basetask.go).
    exit_code: i64,
    error_code: String,
    error_info: String,
    output: String,
    dropped: u64,
    repeats: u64,
    creation_time: String,
    start_time: String,
    finish_time: String,
    stop_time: String,
    update_time: String,
    timed: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeInstances {
    invoke_instance: Vec<InvokeInstance>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Invocation {
    invoke_id: String,
    command_id: String,
    command_name: String,
    command_description: String,
    command_type: String,
    command_content: String,
    parameters: String,
    invoke_status: String,
    invocation_status: String,
    timed: bool,
    repeat_mode: String,
    frequency: String,
    timeout: i64,
    working_dir: String,
    username: String,
    termination_mode: String,
    creation_time: String,
    invoke_instances: InvokeInstances,
    tags: super::tags::WireTags,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Invocations {
    invocation: Vec<Invocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInvocationsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    invocations: Invocations,
}

/// The tags of the invocations of a listing's page, by invoke id.
pub(crate) async fn tags_of_listed(
    api: &Api,
    ctx: &Ctx,
    items: &[oca_store::InvocationView],
) -> Result<std::collections::HashMap<String, Vec<Tag>>, ApiError> {
    let ids: Vec<String> = items
        .iter()
        .map(|v| v.invocation.invoke_id.clone())
        .collect();
    Ok(api
        .store
        .tags_of(&ctx.scope, TagResource::Invocation, &ids)
        .await?)
}

pub(crate) fn error_pair(t: &TaskRecord) -> (String, String) {
    match t.state.error {
        Some(e) => (e.code().to_string(), e.info().to_string()),
        None => (String::new(), String::new()),
    }
}

pub async fn describe(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging()?;
    let encoding = content_encoding(p, ContentEncoding::Base64)?;
    let include_output = p.bool("IncludeOutput")?.unwrap_or(false);
    let command_type = p.non_empty("CommandType").or_else(|| p.non_empty("Type"));
    if let Some(t) = command_type {
        cmd::CommandType::parse(t).ok_or(ApiError::InvalidCmdType)?;
    }
    let invoke_status = p.wire_enum::<InvokeStatus>(
        "InvokeStatus",
        "Running, Finished, Failed, PartialFailed or Stopped",
    )?;
    let filter = InvocationFilter {
        after: paging.after.clone(),
        invoke_id: p.non_empty("InvokeId").map(str::to_string),
        command_id: p.non_empty("CommandId").map(str::to_string),
        command_name: p.non_empty("CommandName").map(str::to_string),
        command_type: command_type.map(str::to_string),
        timed: p.bool("Timed")?,
        invoke_status,
        instance_id: p.non_empty("InstanceId").map(str::to_string),
        repeat_mode: p.non_empty("RepeatMode").map(str::to_string),
        tags: p.tags("Tag", 20, super::tags::TAG_ERRORS)?,
        resource_group_id: super::resource_group(p)?,
        ..Default::default()
    };
    let listing = api
        .store
        .list_invocations(&ctx.scope, &filter, paging.page(), include_output)
        .await?;
    let tags = tags_of_listed(api, ctx, &listing.items).await?;
    let body = DescribeInvocationsResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_position(listing.next.as_ref()),
        invocations: Invocations {
            invocation: listing
                .items
                .into_iter()
                .map(|view| {
                    let inv = view.invocation;
                    Invocation {
                        tags: super::tags::WireTags::from(tags.get(&inv.invoke_id)),
                        invoke_status: inv.invoke_status().as_str().to_string(),
                        invocation_status: inv.overall_status().as_str().to_string(),
                        command_content: encoding.render(&inv.command_content),
                        invoke_instances: InvokeInstances {
                            invoke_instance: view
                                .tasks
                                .iter()
                                .map(|t| {
                                    let (error_code, error_info) = error_pair(t);
                                    let s = &t.state;
                                    InvokeInstance {
                                        instance_id: t.instance_id.clone(),
                                        instance_invoke_status: s
                                            .status
                                            .coarse()
                                            .as_str()
                                            .to_string(),
                                        invocation_status: s.status.as_str().to_string(),
                                        exit_code: s.exit_code.unwrap_or(0),
                                        error_code,
                                        error_info,
                                        output: if include_output {
                                            encoding.render(&s.output)
                                        } else {
                                            String::new()
                                        },
                                        dropped: s.dropped,
                                        repeats: s.repeats,
                                        creation_time: format_api(t.created),
                                        start_time: format_api_opt(s.start_time),
                                        finish_time: format_api_opt(s.finish_time),
                                        stop_time: format_api_opt(s.stop_time),
                                        update_time: format_api(t.updated),
                                        timed: t.timed,
                                    }
                                })
                                .collect(),
                        },
                        invoke_id: inv.invoke_id,
                        command_id: inv.command_id,
                        command_name: inv.command_name,
                        command_description: inv.command_description,
                        command_type: inv.command_type,
                        parameters: inv.parameters,
                        timed: inv.timed,
                        repeat_mode: inv.repeat_mode,
                        frequency: inv.frequency,
                        timeout: inv.timeout_secs,
                        working_dir: inv.working_dir,
                        username: inv.username,
                        termination_mode: inv.termination_mode,
                        creation_time: format_api(inv.created),
                    }
                })
                .collect(),
        },
    };
    Ok(render::ok("DescribeInvocations", &body, ctx.format))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvocationResult {
    invoke_id: String,
    instance_id: String,
    command_id: String,
    invocation_status: String,
    invoke_record_status: String,
    /// Always present, as the vendor's are: 0 until a run ends with one (the official
    /// agent reports 0 with a run it refused or that failed before it started:
    /// `SendError` sends its `exit_code`, still 0, in aliyun_assist_client's
    /// agent/taskengine/basetask.go).
    exit_code: i64,
    error_code: String,
    error_info: String,
    output: String,
    dropped: u64,
    repeats: u64,
    start_time: String,
    finished_time: String,
    stop_time: String,
    username: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvocationResults {
    invocation_result: Vec<InvocationResult>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResultsPage {
    invocation_results: InvocationResults,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInvocationResultsResponse {
    request_id: String,
    invocation: ResultsPage,
}

pub async fn results(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging()?;
    let encoding = content_encoding(p, ContentEncoding::Base64)?;
    let record_status = p.wire_enum::<InstanceInvokeStatus>(
        "InvokeRecordStatus",
        "Running, Finished, Failed or Stopped",
    )?;
    let invoke_id = p.non_empty("InvokeId").map(str::to_string);
    if p.bool("IncludeHistory")? == Some(true) {
        let history_needs = || {
            ApiError::InvalidParameter(
                "IncludeHistory".into(),
                "IncludeHistory=true needs the InvokeId of a periodic invocation".into(),
            )
        };
        let invoke_id = invoke_id.as_deref().ok_or_else(history_needs)?;
        let inv = require_invocation(api, ctx, invoke_id).await?;
        if !inv.repeat().repeats() {
            return Err(history_needs());
        }
        return history(api, ctx, &inv, paging, encoding).await;
    }
    let filter = ResultFilter {
        after: paging.after.clone(),
        invoke_id,
        instance_id: p.non_empty("InstanceId").map(str::to_string),
        command_id: p.non_empty("CommandId").map(str::to_string),
        record_status,
        resource_group_id: super::resource_group(p)?,
        ..Default::default()
    };
    let listing = api
        .store
        .list_results(&ctx.scope, &filter, paging.page())
        .await?;
    let body = DescribeInvocationResultsResponse {
        request_id: ctx.request_id.clone(),
        invocation: ResultsPage {
            total_count: listing.total,
            page_number: paging.page_number,
            page_size: paging.page_size,
            next_token: paging.next_position(listing.next.as_ref()),
            invocation_results: InvocationResults {
                invocation_result: listing
                    .items
                    .into_iter()
                    .map(|t| {
                        let (error_code, error_info) = error_pair(&t);
                        let s = t.state;
                        InvocationResult {
                            invocation_status: s.status.as_str().to_string(),
                            invoke_record_status: s.status.coarse().as_str().to_string(),
                            exit_code: s.exit_code.unwrap_or(0),
                            error_code,
                            error_info,
                            output: encoding.render(&s.output),
                            dropped: s.dropped,
                            repeats: s.repeats,
                            start_time: format_api_opt(s.start_time),
                            finished_time: format_api_opt(s.finish_time),
                            stop_time: format_api_opt(s.stop_time),
                            invoke_id: t.invoke_id,
                            instance_id: t.instance_id,
                            command_id: t.command_id,
                            username: if t.username.is_empty() {
                                "root".to_string()
                            } else {
                                t.username
                            },
                        }
                    })
                    .collect(),
            },
        },
    };
    Ok(render::ok("DescribeInvocationResults", &body, ctx.format))
}

/// DescribeInvocationResults with `IncludeHistory=true`: one record per run of a
/// repeating invocation, newest first.
async fn history(
    api: &Api,
    ctx: &Ctx,
    inv: &InvocationRecord,
    paging: crate::params::Paging,
    encoding: ContentEncoding,
) -> Result<Response, ApiError> {
    let instance_id = ctx.params.non_empty("InstanceId");
    let listing = api
        .store
        .list_runs(&ctx.scope, &inv.invoke_id, instance_id, paging.page())
        .await?;
    let username = if inv.username.is_empty() {
        "root".to_string()
    } else {
        inv.username.clone()
    };
    let body = DescribeInvocationResultsResponse {
        request_id: ctx.request_id.clone(),
        invocation: ResultsPage {
            total_count: listing.total,
            page_number: paging.page_number,
            page_size: paging.page_size,
            next_token: paging.next_token(listing.total),
            invocation_results: InvocationResults {
                invocation_result: listing
                    .items
                    .into_iter()
                    .map(|r| {
                        let (error_code, error_info) = match r.error {
                            Some(e) => (e.code().to_string(), e.info().to_string()),
                            None => (String::new(), String::new()),
                        };
                        InvocationResult {
                            invocation_status: r.status.as_str().to_string(),
                            invoke_record_status: r.status.coarse().as_str().to_string(),
                            exit_code: r.exit_code.unwrap_or(0),
                            error_code,
                            error_info,
                            output: encoding.render(&r.output),
                            dropped: r.dropped,
                            repeats: r.run,
                            start_time: format_api_opt(r.start_time),
                            finished_time: format_api_opt(r.finish_time),
                            stop_time: String::new(),
                            invoke_id: r.invoke_id,
                            instance_id: r.instance_id,
                            command_id: inv.command_id.clone(),
                            username: username.clone(),
                        }
                    })
                    .collect(),
            },
        },
    };
    Ok(render::ok("DescribeInvocationResults", &body, ctx.format))
}

/// ModifyInvocationAttribute: changes the content, parameters or frequency of a live
/// repeating invocation; its agents get the new revision at once (or when they
/// reconnect).
pub async fn modify(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let invoke_id = p.required("InvokeId")?;
    let inv = require_invocation(api, ctx, invoke_id).await?;
    if !inv.repeat().repeats() {
        return Err(ApiError::InvalidParameter(
            "InvokeId".into(),
            "only a periodic or reboot-time invocation (RepeatMode Period, NextRebootOnly or \
             EveryReboot) can be modified"
                .into(),
        ));
    }
    use oca_domain::status::OverallStatus as O;
    if !matches!(
        inv.overall_status(),
        O::Pending | O::Running | O::Scheduled | O::Stopping
    ) {
        return Err(ApiError::InvalidInvokeIdNotRunning);
    }
    if !p
        .list("InstanceId", MAX_MODIFY_IDS, || {
            ApiError::InstanceIdsExceedLimit(MAX_MODIFY_IDS)
        })?
        .is_empty()
    {
        return Err(ApiError::InvalidParameter(
            "InstanceId".into(),
            "adding instances to an invocation is not supported by this server".into(),
        ));
    }
    let encoding = content_encoding(p, ContentEncoding::PlainText)?;
    let command_content = p
        .non_empty("CommandContent")
        .map(|c| commands::command_content(c, encoding))
        .transpose()?;
    let enable_parameter = p.bool("EnableParameter")?;
    let parameters = p
        .non_empty("Parameters")
        .map(parameter_values)
        .transpose()?;
    let frequency = match p.non_empty("Frequency") {
        None => None,
        Some(_) if inv.repeat() != RepeatMode::Period => {
            return Err(ApiError::InvalidFrequency(
                "The specified frequency is invalid: only a Period invocation has one.".into(),
            ))
        }
        Some(_) => {
            let (text, f) = frequency(p)?;
            check_frequency(api, &f, inv.timeout_secs)?;
            Some(text)
        }
    };
    // The parameters must still fit the (possibly new) content.
    let content = command_content.as_ref().unwrap_or(&inv.command_content);
    let enabled = enable_parameter.unwrap_or(inv.enable_parameter);
    let values: BTreeMap<String, String> = match &parameters {
        Some(v) => v.clone(),
        None => serde_json::from_str(&inv.parameters).unwrap_or_default(),
    };
    if enabled {
        commands::names_of(content, true)?;
        check_values(&String::from_utf8_lossy(content), &values).map_err(|e| match e {
            ParamError::Missing(name) => ApiError::ParameterMissingValue(name),
            other => ApiError::ParameterNotMatched(other.to_string()),
        })?;
    } else if parameters.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::ParameterDisabled);
    }
    let change = InvocationChange {
        command_content,
        enable_parameter,
        parameters: parameters.map(|v| serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())),
        frequency,
    };
    let changed = api
        .store
        .modify_invocation(&ctx.scope, invoke_id, &change)
        .await?
        .ok_or(ApiError::InvalidInvokeIdNotFound)?;
    let live = api
        .store
        .list_results(
            &ctx.scope,
            &ResultFilter {
                invoke_id: Some(invoke_id.to_string()),
                ..Default::default()
            },
            oca_store::Page {
                offset: 0,
                limit: u64::MAX >> 1,
            },
        )
        .await?;
    send(api, &changed, &live.items);
    Ok(render::ok(
        "ModifyInvocationAttribute",
        &Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_as_the_vendor_does() {
        let ok = parameter_values(r#"{"a":"x","n":3,"b":true}"#).unwrap();
        assert_eq!(
            (ok["a"].as_str(), ok["n"].as_str(), ok["b"].as_str()),
            ("x", "3", "true")
        );
        let code = |json: &str| parameter_values(json).unwrap_err().code();
        assert_eq!(code(r#"{"a":"1","a":"2"}"#), "ParameterKey.Duplicate");
        assert_eq!(
            code(&format!(r#"{{"{}":"1"}}"#, "k".repeat(65))),
            "ParameterKey.ExceedLimit"
        );
        let many: Vec<String> = (0..21).map(|i| format!(r#""p{i}":"v""#)).collect();
        assert_eq!(
            code(&format!("{{{}}}", many.join(","))),
            "ParameterCount.ExceedLimit"
        );
        assert_eq!(code(r#"{"a":{"nested":1}}"#), "InvalidParameter.Parameters");
        assert_eq!(code("[1,2]"), "InvalidParameter.Parameters");
        assert_eq!(code("not json"), "InvalidParameter.Parameters");
    }
}

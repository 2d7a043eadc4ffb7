//! Turns a request's `Version` and `Action` into an [`Endpoint`]: the one place that
//! knows which actions this server serves.

use crate::error::ApiError;

pub const ECS_VERSION: &str = "2014-05-26";
/// The lightweight application server (SWAS-OPEN) API, served from the same records.
pub const SWAS_VERSION: &str = "2020-06-01";

/// The SWAS-OPEN `2020-06-01` Cloud Assistant actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwasAction {
    RunCommand,
    CreateCommand,
    InvokeCommand,
    DescribeCommands,
    UpdateCommandAttribute,
    DeleteCommand,
    DescribeInvocations,
    DescribeInvocationResult,
    DescribeCommandInvocations,
    DescribeCloudAssistantStatus,
    DescribeCloudAssistantAttributes,
    InstallCloudAssistant,
}

impl SwasAction {
    pub const ALL: &'static [SwasAction] = &[
        SwasAction::RunCommand,
        SwasAction::CreateCommand,
        SwasAction::InvokeCommand,
        SwasAction::DescribeCommands,
        SwasAction::UpdateCommandAttribute,
        SwasAction::DeleteCommand,
        SwasAction::DescribeInvocations,
        SwasAction::DescribeInvocationResult,
        SwasAction::DescribeCommandInvocations,
        SwasAction::DescribeCloudAssistantStatus,
        SwasAction::DescribeCloudAssistantAttributes,
        SwasAction::InstallCloudAssistant,
    ];

    pub fn action(self) -> &'static str {
        use SwasAction::*;
        match self {
            RunCommand => "RunCommand",
            CreateCommand => "CreateCommand",
            InvokeCommand => "InvokeCommand",
            DescribeCommands => "DescribeCommands",
            UpdateCommandAttribute => "UpdateCommandAttribute",
            DeleteCommand => "DeleteCommand",
            DescribeInvocations => "DescribeInvocations",
            DescribeInvocationResult => "DescribeInvocationResult",
            DescribeCommandInvocations => "DescribeCommandInvocations",
            DescribeCloudAssistantStatus => "DescribeCloudAssistantStatus",
            DescribeCloudAssistantAttributes => "DescribeCloudAssistantAttributes",
            InstallCloudAssistant => "InstallCloudAssistant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    CreateCommand,
    DescribeCommands,
    ModifyCommand,
    DeleteCommand,
    InvokeCommand,
    RunCommand,
    StopInvocation,
    DescribeInvocations,
    DescribeInvocationResults,
    DescribeCloudAssistantStatus,
    CreateActivation,
    DescribeActivations,
    DisableActivation,
    DeleteActivation,
    DescribeManagedInstances,
    ModifyManagedInstance,
    DeregisterManagedInstance,
    /// OCA's own: the whole stored output of one run (not in the vendor's API).
    DescribeInvocationOutput,
    TagResources,
    UntagResources,
    ListTagResources,
    SendFile,
    DescribeSendFileResults,
    ModifyInvocationAttribute,
    /// A SWAS-OPEN `2020-06-01` action.
    Swas(SwasAction),
}

impl Endpoint {
    pub fn action(self) -> &'static str {
        use Endpoint::*;
        match self {
            CreateCommand => "CreateCommand",
            DescribeCommands => "DescribeCommands",
            ModifyCommand => "ModifyCommand",
            DeleteCommand => "DeleteCommand",
            InvokeCommand => "InvokeCommand",
            RunCommand => "RunCommand",
            StopInvocation => "StopInvocation",
            DescribeInvocations => "DescribeInvocations",
            DescribeInvocationResults => "DescribeInvocationResults",
            DescribeCloudAssistantStatus => "DescribeCloudAssistantStatus",
            CreateActivation => "CreateActivation",
            DescribeActivations => "DescribeActivations",
            DisableActivation => "DisableActivation",
            DeleteActivation => "DeleteActivation",
            DescribeManagedInstances => "DescribeManagedInstances",
            ModifyManagedInstance => "ModifyManagedInstance",
            DeregisterManagedInstance => "DeregisterManagedInstance",
            DescribeInvocationOutput => "DescribeInvocationOutput",
            TagResources => "TagResources",
            UntagResources => "UntagResources",
            ListTagResources => "ListTagResources",
            SendFile => "SendFile",
            DescribeSendFileResults => "DescribeSendFileResults",
            ModifyInvocationAttribute => "ModifyInvocationAttribute",
            Swas(a) => a.action(),
        }
    }

    /// Whether the action only reads (`Describe…`, `List…`): served twice, it changes
    /// nothing. The nonces of every other action are kept in the store.
    pub fn is_read_only(self) -> bool {
        let action = self.action();
        action.starts_with("Describe") || action.starts_with("List")
    }

    const ECS: &'static [Endpoint] = &[
        Endpoint::CreateCommand,
        Endpoint::DescribeCommands,
        Endpoint::ModifyCommand,
        Endpoint::DeleteCommand,
        Endpoint::InvokeCommand,
        Endpoint::RunCommand,
        Endpoint::StopInvocation,
        Endpoint::DescribeInvocations,
        Endpoint::DescribeInvocationResults,
        Endpoint::DescribeCloudAssistantStatus,
        Endpoint::CreateActivation,
        Endpoint::DescribeActivations,
        Endpoint::DisableActivation,
        Endpoint::DeleteActivation,
        Endpoint::DescribeManagedInstances,
        Endpoint::ModifyManagedInstance,
        Endpoint::DeregisterManagedInstance,
        Endpoint::DescribeInvocationOutput,
        Endpoint::TagResources,
        Endpoint::UntagResources,
        Endpoint::ListTagResources,
        Endpoint::SendFile,
        Endpoint::DescribeSendFileResults,
        Endpoint::ModifyInvocationAttribute,
    ];

    /// The endpoint for a version and action, or the vendor's error for either.
    pub fn route(version: Option<&str>, action: Option<&str>) -> Result<Endpoint, ApiError> {
        let action = action
            .filter(|a| !a.is_empty())
            .ok_or(ApiError::MissingAction)?;
        match version {
            Some(ECS_VERSION) => Self::ECS
                .iter()
                .copied()
                .find(|e| e.action() == action)
                .ok_or_else(|| ApiError::InvalidAction(action.to_string())),
            Some(SWAS_VERSION) => SwasAction::ALL
                .iter()
                .copied()
                .find(|a| a.action() == action)
                .map(Endpoint::Swas)
                .ok_or_else(|| ApiError::InvalidAction(action.to_string())),
            Some(v) => Err(ApiError::InvalidVersion(v.to_string())),
            None => Err(ApiError::MissingParameter("Version")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Endpoint::route(Some("2014-05-26"), Some("RunCommand")).unwrap(),
            Endpoint::RunCommand
        );
        for e in Endpoint::ECS {
            assert_eq!(
                Endpoint::route(Some(ECS_VERSION), Some(e.action())).unwrap(),
                *e
            );
        }
        let err = Endpoint::route(Some("2014-05-26"), Some("Nope")).unwrap_err();
        assert_eq!(
            (err.code().as_str(), err.status()),
            ("InvalidAction.NotFound", 404)
        );
        for a in SwasAction::ALL {
            assert_eq!(
                Endpoint::route(Some(SWAS_VERSION), Some(a.action())).unwrap(),
                Endpoint::Swas(*a)
            );
        }
        let err = Endpoint::route(Some(SWAS_VERSION), Some("StopInvocation")).unwrap_err();
        assert_eq!(err.code(), "InvalidAction.NotFound");
        let err = Endpoint::route(Some("1999-01-01"), Some("RunCommand")).unwrap_err();
        assert_eq!(err.code(), "InvalidVersion");
        let err = Endpoint::route(Some("2014-05-26"), None).unwrap_err();
        assert_eq!(err.code(), "MissingParameter.Action");
    }
}

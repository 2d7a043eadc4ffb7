//! The one error type of the API. Each variant knows its wire `Code`, its `Message`
//! and its HTTP status; codes and statuses are the vendor's (seeds 000/001 and the
//! vendor's error tables for RunCommand / InvokeCommand).

use crate::signature::SignatureError;
use oca_metrics::Reason;

#[derive(Debug)]
pub enum ApiError {
    MissingRegionId,
    InvalidRegionId,
    MissingAction,
    InvalidAction(String),
    /// `InvalidApi.NotFound`: nothing is served at this path (with this method); holds
    /// the method and path.
    InvalidApi(String),
    /// `UnsupportedHTTPMethod`: the API takes GET and POST (400, as the vendor's client
    /// error table at developer.aliyun.com/ask/278265 lists it).
    UnsupportedHttpMethod(String),
    /// The query string is longer than the server takes (holds the limit).
    UrlTooLarge(usize),
    /// The body is longer than the server takes (holds the limit).
    BodyTooLarge(usize),
    /// The body could not be read whole (the client hung up, or sent broken chunks).
    IncompleteBody(String),
    InvalidVersion(String),
    /// A required parameter is absent: `MissingParameter`.
    MissingParameter(&'static str),
    /// `MissingParam.<Name>`, the spelling some actions use (e.g. InstanceId).
    MissingParam(&'static str),
    /// `InvalidParameter` with the parameter's name and what is wrong.
    InvalidParameter(String, String),
    /// `InvalidParameter.<Name>`, the spelling some actions use (e.g. WorkingDir).
    InvalidParameterNamed(&'static str),
    InvalidPageNumber,
    InvalidPageSize,
    InvalidMaxResults,
    InvalidNextToken,
    InvalidCmdType,
    InvalidContentEncoding,
    CmdContentExceedLimit,
    CmdNameExceedLimit,
    CmdDescExceedLimit,
    InvalidTimeout,
    InvalidRepeatMode,
    /// `InvalidParam.Frequency`, with what is wrong.
    InvalidFrequency(String),
    InvalidTerminationMode,
    InstanceIdsExceedLimit(usize),
    UsernameExceedLimit,
    ParameterCountExceedLimit,
    ParameterKeyExceedLimit,
    ParameterKeyDuplicate,
    ParameterNotMatched(String),
    ParameterDisabled,
    ParameterMissingValue(String),
    InvalidParameters(String),
    InvalidInstanceNotFound(String),
    InvalidCmdIdNotFound,
    InvalidInvokeIdNotFound,
    InvalidInvokeIdNotRunning,
    InvalidClientToken,
    IdempotentParameterMismatch,
    /// A `Tag.N` / `ResourceTag.N` / `ResourceType` problem: (code, message, status).
    Tagging(&'static str, &'static str, u16),
    InvalidResourceTagInstanceNotFound,
    InvalidResourceTagConflict,
    /// `InvalidResourceGroup.NotFound`: a `ResourceGroupId` that cannot be one.
    InvalidResourceGroupNotFound,
    /// `ActivationId.NotFound` (DisableActivation, DeleteActivation).
    ActivationIdNotFound,
    /// `ActivationId.InUse`: DeleteActivation of an activation with registered
    /// instances.
    ActivationIdInUse,
    /// `InstanceName.ExceedLimit` (ModifyManagedInstance).
    InstanceNameExceedLimit,
    /// `InstanceName.InvalidPattern` (ModifyManagedInstance).
    InstanceNameInvalidPattern,
    /// An error one action's vendor table spells its own way: (code, message, status),
    /// e.g. DescribeActivations' paging errors.
    Listed(&'static str, &'static str, u16),
    Signature(SignatureError),
    /// `InternalError.Dispatch`: something failed while serving the request.
    Internal(String),
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        ApiError::Signature(e)
    }
}

impl From<oca_store::StoreError> for ApiError {
    fn from(e: oca_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    /// The wire `Code`.
    pub fn code(&self) -> String {
        use ApiError::*;
        match self {
            MissingRegionId => "MissingParameter.RegionId".into(),
            InvalidRegionId => "InvalidRegionId.NotFound".into(),
            MissingAction => "MissingParameter.Action".into(),
            InvalidAction(_) => "InvalidAction.NotFound".into(),
            InvalidApi(_) => "InvalidApi.NotFound".into(),
            UnsupportedHttpMethod(_) => "UnsupportedHTTPMethod".into(),
            // The vendor's API Gateway codes for these (its error code table for
            // gateway instances: I413UL "Request URL too Large", I413RL "Request body
            // too Large", both 413; I400BD "Invalid Body: ${Reason}", 400).
            UrlTooLarge(_) => "I413UL".into(),
            BodyTooLarge(_) => "I413RL".into(),
            IncompleteBody(_) => "I400BD".into(),
            InvalidVersion(_) => "InvalidVersion".into(),
            MissingParameter(_) => "MissingParameter".into(),
            MissingParam(name) => format!("MissingParam.{name}"),
            InvalidParameter(..) => "InvalidParameter".into(),
            InvalidParameterNamed(name) => format!("InvalidParameter.{name}"),
            InvalidPageNumber => "InvalidParam.PageNumber".into(),
            InvalidPageSize => "InvalidParam.PageSize".into(),
            InvalidMaxResults => "InvalidParam.MaxResults".into(),
            InvalidNextToken => "InvalidParam.NextToken".into(),
            InvalidCmdType => "InvalidCmdType.NotFound".into(),
            InvalidContentEncoding => "InvalidParameter.ContentEncoding".into(),
            CmdContentExceedLimit => "CmdContent.ExceedLimit".into(),
            CmdNameExceedLimit => "CmdName.ExceedLimit".into(),
            CmdDescExceedLimit => "CmdDesc.ExceedLimit".into(),
            InvalidTimeout => "InvalidParameter.Timeout".into(),
            InvalidRepeatMode => "InvalidRepeatMode.NotFound".into(),
            InvalidFrequency(_) => "InvalidParam.Frequency".into(),
            InvalidTerminationMode => "InvalidTerminationMode.NotFound".into(),
            InstanceIdsExceedLimit(_) => "InstanceIds.ExceedLimit".into(),
            UsernameExceedLimit => "Username.ExceedLimit".into(),
            ParameterCountExceedLimit => "ParameterCount.ExceedLimit".into(),
            ParameterKeyExceedLimit => "ParameterKey.ExceedLimit".into(),
            ParameterKeyDuplicate => "ParameterKey.Duplicate".into(),
            ParameterNotMatched(_) => "Parameter.NotMatched".into(),
            ParameterDisabled => "Parameter.Disabled".into(),
            ParameterMissingValue(_) => "Parameter.MissingValue".into(),
            InvalidParameters(_) => "InvalidParameter.Parameters".into(),
            InvalidInstanceNotFound(_) => "InvalidInstance.NotFound".into(),
            InvalidCmdIdNotFound => "InvalidCmdId.NotFound".into(),
            InvalidInvokeIdNotFound => "InvalidInvokeId.NotFound".into(),
            InvalidInvokeIdNotRunning => "InvalidInvokeId.NotRunning".into(),
            InvalidClientToken => "InvalidClientToken.Malformed".into(),
            Tagging(code, _, _) => (*code).into(),
            InvalidResourceTagInstanceNotFound => "InvalidResourceTag.InstanceNotFound".into(),
            InvalidResourceTagConflict => "InvalidResourceTag.ConflictWithInstanceIds".into(),
            InvalidResourceGroupNotFound => "InvalidResourceGroup.NotFound".into(),
            ActivationIdNotFound => "ActivationId.NotFound".into(),
            ActivationIdInUse => "ActivationId.InUse".into(),
            InstanceNameExceedLimit => "InstanceName.ExceedLimit".into(),
            InstanceNameInvalidPattern => "InstanceName.InvalidPattern".into(),
            Listed(code, _, _) => (*code).into(),
            IdempotentParameterMismatch => "IdempotentParameterMismatch".into(),
            Signature(e) => e.code().to_string(),
            Internal(_) => "InternalError.Dispatch".into(),
        }
    }

    /// The wire `Message`.
    pub fn message(&self) -> String {
        use ApiError::*;
        match self {
            MissingRegionId => "The input parameter \u{201c}RegionId\u{201d} that is mandatory for processing this request is not supplied.".into(),
            InvalidRegionId => "The RegionId provided does not exist in our records.".into(),
            MissingAction => "The input parameter \u{201c}Action\u{201d} that is mandatory for processing this request is not supplied.".into(),
            InvalidAction(a) => format!("Specified api \u{201c}{a}\u{201d} is not found, please check your url and method."),
            InvalidApi(what) => format!("Specified api is not found, please check your url and method: {what}. The API is served at / (GET or POST)."),
            UnsupportedHttpMethod(m) => format!("This http method is not supported: {m}. Use GET or POST."),
            UrlTooLarge(max) => format!("Request URL too Large: the query string may have at most {max} bytes; send large parameters in a form body (POST)."),
            BodyTooLarge(max) => format!("Request body too Large: at most {max} bytes are taken."),
            IncompleteBody(why) => format!("Invalid Body: {why}"),
            InvalidVersion(v) => format!("Specified parameter Version \u{201c}{v}\u{201d} is not valid; this server serves 2014-05-26."),
            MissingParameter(name) => format!("The input parameter \u{201c}{name}\u{201d} that is mandatory for processing this request is not supplied."),
            MissingParam(name) => format!("The parameter {name} is missing or empty."),
            InvalidParameter(name, why) => format!("The specified parameter \u{201c}{name}\u{201d} is not valid: {why}"),
            InvalidParameterNamed(name) => format!("The specified parameter {name} is not valid."),
            InvalidPageNumber | InvalidPageSize | InvalidMaxResults | InvalidNextToken => {
                "The specified parameter is invalid.".into()
            }
            InvalidCmdType => "The specified command type does not exist.".into(),
            InvalidContentEncoding => "The specified parameter ContentEncoding is not valid; use PlainText or Base64.".into(),
            CmdContentExceedLimit => "The maximum length of a command is exceeded.".into(),
            CmdNameExceedLimit => "The maximum length of a command name is exceeded.".into(),
            CmdDescExceedLimit => "The maximum length of a command description is exceeded.".into(),
            InvalidTimeout => "The specified parameter Timeout is not valid; it must be between 10 and 86400 seconds.".into(),
            InvalidRepeatMode => "The specified repeat mode does not exist.".into(),
            InvalidFrequency(why) => why.clone(),
            InvalidTerminationMode => "The specified parameter TerminationMode does not exist.".into(),
            InstanceIdsExceedLimit(max) => format!("The number of instance IDs exceeds the upper limit ({max})."),
            UsernameExceedLimit => "The length of the username exceeds the upper limit.".into(),
            ParameterCountExceedLimit => "The maximum number of parameters is exceeded.".into(),
            ParameterKeyExceedLimit => "The maximum length of a parameter name is exceeded.".into(),
            ParameterKeyDuplicate => "Parameter names cannot be duplicated.".into(),
            ParameterNotMatched(why) => format!("The passed-in parameters do not match the parameters defined when you created the command: {why}."),
            ParameterDisabled => "Parameters cannot be passed in when the command customization function is disabled.".into(),
            ParameterMissingValue(name) => format!("The parameter value of this command is required: {name}."),
            InvalidParameters(why) => format!("The specified parameter Parameters is not valid: {why}."),
            InvalidInstanceNotFound(id) => format!("The specified instance does not exist: {id}."),
            InvalidCmdIdNotFound => "The specified command ID does not exist.".into(),
            InvalidInvokeIdNotFound => "The specified invoke ID does not exist.".into(),
            InvalidInvokeIdNotRunning => "The specified invocation is not running.".into(),
            InvalidClientToken => "The specified parameter clientToken is not valid: at most 64 ASCII characters.".into(),
            Tagging(_, message, _) => (*message).into(),
            InvalidResourceTagInstanceNotFound => "InstanceIds are not found by the specified ResourceTag.".into(),
            InvalidResourceTagConflict => "The specified param ResourceTag conflicts with InstanceId.".into(),
            InvalidResourceGroupNotFound => "The ResourceGroup provided does not exist in our records: a ResourceGroupId is 1 to 64 letters, digits, hyphens (-) and underscores (_).".into(),
            ActivationIdNotFound => "The specified activation id does not exist.".into(),
            ActivationIdInUse => "The specified activation id is in use.".into(),
            InstanceNameExceedLimit => "The specified instance name exceed limit.".into(),
            InstanceNameInvalidPattern => "The specified instance name pattern invalid.".into(),
            Listed(_, message, _) => (*message).into(),
            IdempotentParameterMismatch => "The specified parameter has changed while using an already used clientToken.".into(),
            Signature(e) => e.message(),
            Internal(_) => "An error occurred when you dispatched the request.".into(),
        }
    }

    /// Why the request counts as refused to protect the server (`oca_rejected_total`),
    /// if it does: limits, unknown paths and methods, authentication. A parameter's
    /// own error is the caller's mistake and counts only by its code. (Malformed or
    /// repeated names and the parse limits are told apart where `Params::check`
    /// refuses them.)
    pub fn rejection(&self) -> Option<Reason> {
        use crate::signature::SignatureError as E;
        Some(match self {
            ApiError::UrlTooLarge(_) => Reason::UrlTooLarge,
            ApiError::BodyTooLarge(_) => Reason::BodyTooLarge,
            ApiError::IncompleteBody(_) => Reason::BodyIncomplete,
            ApiError::InvalidApi(_) => Reason::UnknownPath,
            ApiError::UnsupportedHttpMethod(_) => Reason::MethodNotAllowed,
            ApiError::Signature(e) => match e {
                E::SignatureNonceUsed | E::SignedBeforeStart | E::InvalidSignatureNonce(_) => {
                    Reason::Replay
                }
                E::InvalidTimeStampFormat(_) | E::InvalidTimeStampExpired { .. } => {
                    Reason::Timestamp
                }
                E::InvalidAccessKeyIdNotFound | E::InvalidAccessKeyIdInactive => Reason::AccessKey,
                E::MissingParameter(_)
                | E::MissingHeader(_)
                | E::IncompleteSignature(_)
                | E::InvalidSignatureMethod(_)
                | E::InvalidSignatureVersion(_)
                | E::SignatureDoesNotMatch { .. } => Reason::Signature,
            },
            _ => return None,
        })
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            UrlTooLarge(_) | BodyTooLarge(_) => 413,
            MissingRegionId
            | UnsupportedHttpMethod(_)
            | IncompleteBody(_)
            | MissingAction
            | InvalidVersion(_)
            | MissingParameter(_)
            | MissingParam(_)
            | InvalidParameter(..)
            | InvalidParameterNamed(_)
            | InvalidContentEncoding
            | InvalidTimeout
            | ParameterDisabled
            | ParameterMissingValue(_)
            | InvalidParameters(_)
            | InvalidFrequency(_)
            | CmdNameExceedLimit
            | CmdDescExceedLimit
            | InvalidClientToken
            | InvalidResourceTagInstanceNotFound
            | InvalidResourceTagConflict
            | InstanceNameExceedLimit
            | InstanceNameInvalidPattern => 400,
            Tagging(_, _, status) | Listed(_, _, status) => *status,
            InvalidPageNumber
            | InvalidPageSize
            | InvalidMaxResults
            | InvalidNextToken
            | CmdContentExceedLimit
            | InstanceIdsExceedLimit(_)
            | UsernameExceedLimit
            | ParameterCountExceedLimit
            | ParameterKeyExceedLimit
            | ParameterKeyDuplicate
            | ParameterNotMatched(_)
            | InvalidInvokeIdNotRunning
            | IdempotentParameterMismatch
            | ActivationIdInUse => 403,
            InvalidRegionId
            | InvalidAction(_)
            | InvalidApi(_)
            | InvalidCmdType
            | InvalidRepeatMode
            | InvalidTerminationMode
            | InvalidInstanceNotFound(_)
            | InvalidCmdIdNotFound
            | InvalidInvokeIdNotFound
            | InvalidResourceGroupNotFound
            | ActivationIdNotFound => 404,
            Signature(e) => e.http_status(),
            Internal(_) => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_errors_have_their_codes_and_statuses() {
        let e = ApiError::MissingRegionId;
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("MissingParameter.RegionId", 400)
        );
        assert_eq!(
            e.message(),
            "The input parameter \u{201c}RegionId\u{201d} that is mandatory for processing this request is not supplied."
        );
        let e = ApiError::InvalidRegionId;
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidRegionId.NotFound", 404)
        );
        let e = ApiError::InvalidPageSize;
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidParam.PageSize", 403)
        );
        let e = ApiError::InvalidPageNumber;
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidParam.PageNumber", 403)
        );
        let e = ApiError::Internal("x".into());
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InternalError.Dispatch", 500)
        );
        assert!(
            !e.message().contains('x'),
            "internal details stay in the log"
        );
    }
}

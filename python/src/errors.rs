//! Runtime errors as Python exceptions: one native class with a bounded `kind`, which
//! `switchboard/autogen/_errors.py` turns into AutoGen's exception types.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use switchboard_runtime::RuntimeError;
use switchboard_runtime::config::ConfigError;

create_exception!(
    _native,
    NativeError,
    PyException,
    "A Switchboard runtime error: args are (kind, message, agent)."
);

/// The kind of `e`: what the Python layer dispatches on (never an agent name).
fn kind(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::DuplicateAgentType(_) => "duplicate_agent_type",
        RuntimeError::AgentTypeTaken { .. } => "agent_type_taken",
        RuntimeError::DuplicateAgentInstance(_) => "duplicate_agent_instance",
        RuntimeError::AgentTypeConflict { .. } => "agent_type_conflict",
        RuntimeError::UnknownAgentType(_) => "unknown_agent_type",
        RuntimeError::NotLocal(_) => "not_local",
        RuntimeError::WrongAgentClass { .. } => "wrong_class",
        RuntimeError::UnknownMessageType { .. } => "unknown_message_type",
        RuntimeError::Rejected { .. } => "rejected",
        RuntimeError::Handler { .. } => "handler",
        RuntimeError::Timeout { .. } => "timeout",
        RuntimeError::Cancelled(_) => "cancelled",
        RuntimeError::SelfRpc(_) => "self_rpc",
        RuntimeError::UnknownSubscription(_) => "unknown_subscription",
        RuntimeError::Id(_) => "invalid_id",
        RuntimeError::Config(_) => "config",
        RuntimeError::Codec(_) => "codec",
        RuntimeError::Kafka { .. } | RuntimeError::Admin(_) | RuntimeError::Unavailable(_) => {
            "kafka"
        }
        RuntimeError::Task(_) => "task",
        RuntimeError::Stopped => "stopped",
    }
}

/// `e` as a `NativeError(kind, message, detail)`. For handler errors `detail` is the
/// handler's own text (without the "handler of agent X failed" wrapper), so the
/// caller can re-raise it as the handler raised it.
pub(crate) fn to_py(e: RuntimeError) -> PyErr {
    let detail = match &e {
        RuntimeError::Handler { message, .. } => message.clone(),
        RuntimeError::UnknownMessageType { message_type, .. } => message_type.clone(),
        _ => String::new(),
    };
    NativeError::new_err((kind(&e), e.to_string(), detail))
}

/// A configuration error as a `NativeError("config", ...)` naming the field.
pub(crate) fn config_to_py(e: ConfigError) -> PyErr {
    let field = e.field.clone();
    NativeError::new_err(("config", e.to_string(), field))
}

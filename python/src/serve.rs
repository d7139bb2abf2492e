//! Config-file helpers shared by `NativeRuntime` and `python -m switchboard`.
use pyo3::prelude::*;

/// Validates a runtime config file's text; returns the runtime name.
#[pyfunction]
pub fn load_config(text: &str) -> PyResult<String> {
    let (_, cfg) = crate::runtime::worker_config(text, &Default::default(), false)?;
    Ok(cfg.runtime_name)
}

//! Server-side apply of owned objects with a fixed field manager, skipped when the
//! object already is as desired: a steady state makes no write requests.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::agent_runtime::build::{APPLIED_HASH_ANNOTATION, FIELD_MANAGER, applied_hash};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Longest an API write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one API write with [`WRITE_TIMEOUT`].
pub async fn with_timeout<T>(
    what: &'static str,
    write: impl Future<Output = kube::Result<T>>,
) -> Result<T> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| Error::Timeout(what))?
        .map_err(Error::from)
}

/// True when every field set in `desired` has the same value in `actual` (objects:
/// key by key; lists: same length, element by element). Fields the server added
/// (defaults, status, managedFields) are ignored.
pub fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, dv)| match a.get(k) {
            Some(av) => is_subset(dv, av),
            // The server drops empty lists and maps: absent equals empty.
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(dv, av)| is_subset(dv, av))
        }
        (Value::Number(d), Value::Number(a)) => d.as_f64() == a.as_f64(),
        _ => desired == actual,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Who is writing, for the write counters.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    /// Metrics receiving the write counts.
    pub metrics: &'a Metrics,
    /// Controller name label.
    pub controller: &'static str,
}

/// Applies `desired` unless the live object already carries the same applied hash
/// and every desired field; returns the live object.
pub async fn apply_owned<K>(
    api: &Api<K>,
    mut desired: K,
    kind: &'static str,
    writer: Writer<'_>,
) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let hash = applied_hash(&desired);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
    if let Some(existing) = api.get_opt(&name).await? {
        let same_hash = existing.annotations().get(APPLIED_HASH_ANNOTATION) == Some(&hash);
        let want = serde_json::to_value(&desired)
            .map_err(|source| Error::Serialize { what: kind, source })?;
        let have = serde_json::to_value(&existing)
            .map_err(|source| Error::Serialize { what: kind, source })?;
        if same_hash && is_subset(&want, &have) {
            return Ok(existing);
        }
    }
    writer.metrics.write(writer.controller, kind, "apply");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    with_timeout("apply", api.patch(&name, &params, &Patch::Apply(&desired))).await
}

/// Deletes `name` if it exists (an owned object no longer wanted).
pub async fn delete_if_present<K>(
    api: &Api<K>,
    name: &str,
    kind: &'static str,
    writer: Writer<'_>,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if api.get_opt(name).await?.is_none() {
        return Ok(());
    }
    writer.metrics.write(writer.controller, kind, "delete");
    match with_timeout("delete", api.delete(name, &DeleteParams::default())).await {
        Ok(_) => Ok(()),
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_drift() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 8080}]}});
        let actual = json!({"spec": {"replicas": 2, "ports": [{"port": 8080, "protocol": "TCP"}], "x": 1}, "status": {}});
        assert!(is_subset(&desired, &actual));
        let empty_env = json!({"env": [], "x": {}});
        assert!(
            is_subset(&empty_env, &json!({})),
            "the server drops empty lists"
        );
    }

    #[test]
    fn changed_values_and_list_lengths_are_drift() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 8080}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 3, "ports": [{"port": 8080}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 2, "ports": []}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 8080}]}})
        ));
    }
}

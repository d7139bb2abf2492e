//! Which addresses the runtime's Service resolves to: its EndpointSlices on a real
//! cluster, locally the ready pods its selector matches (see
//! [`System::service_endpoints`]).

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;

use super::{RUNTIME, System};

impl System {
    /// Ready addresses behind the runtime's Service on its `http` port, as `IP:PORT`.
    ///
    /// On a real cluster: its EndpointSlices, kept by the endpoint-slice controller.
    /// Locally the API server refuses loopback addresses in EndpointSlices ("may not
    /// be in the loopback range"), so the controller cannot publish the pods' 127.x
    /// addresses; the suite resolves the Service as that controller would: the ready
    /// pods its selector matches, at the container port its `targetPort` names.
    pub(super) async fn service_endpoints(&self) -> Vec<String> {
        let service = self.api::<Service>().get_opt(RUNTIME).await.ok().flatten();
        let Some(service) = service else {
            return Vec::new();
        };
        if self.local.is_some() {
            return self.selected_endpoints(&service).await;
        }
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={RUNTIME}"));
        let slices = self
            .api::<EndpointSlice>()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        slices
            .iter()
            .filter(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Service" && Some(&o.uid) == service.metadata.uid.as_ref())
            })
            .flat_map(|s| {
                let port = s
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some("http"))
                    .and_then(|p| p.port);
                s.endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(move |e| {
                        e.addresses
                            .iter()
                            .filter_map(move |a| port.map(|p| format!("{a}:{p}")))
                    })
            })
            .collect()
    }

    /// `IP:PORT` of the ready pods `service` selects, at the port its `http` port
    /// targets (by container port name or number).
    async fn selected_endpoints(&self, service: &Service) -> Vec<String> {
        let spec = service.spec.clone().unwrap_or_default();
        let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
            return Vec::new();
        };
        let Some(target) = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .map(|p| p.target_port.clone())
        else {
            return Vec::new();
        };
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&labels))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pods.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter_map(|p| {
                let port = match &target {
                    Some(IntOrString::Int(n)) => *n,
                    Some(IntOrString::String(name)) => {
                        p.spec
                            .as_ref()?
                            .containers
                            .iter()
                            .flat_map(|c| c.ports.iter().flatten())
                            .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                            .container_port
                    }
                    None => return None,
                };
                Some(format!("{}:{port}", pod_ip(p)?))
            })
            .collect()
    }
}

/// Running, with the Ready condition True.
pub(super) fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub(super) fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

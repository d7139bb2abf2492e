//! Installing Switchboard's CRDs into the test cluster.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::wait::poll_until;

/// The field manager of the tests' applies.
pub const FIELD_MANAGER: &str = "switchboard-e2e";

/// How long a CRD may take to become Established.
const ESTABLISHED_WITHIN: Duration = Duration::from_secs(60);

/// Server-side applies every CRD of `switchboard_crds::all()` as `field_manager`
/// (forcing conflicts) and waits until each is Established, at most a minute each.
pub async fn install_crds(client: &Client, field_manager: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in switchboard_crds::all() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
        poll_until(
            &format!("CRD {name} established"),
            ESTABLISHED_WITHIN,
            || async {
                let c = crds.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

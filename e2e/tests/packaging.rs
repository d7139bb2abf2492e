//! Packaging: the Helm chart (charts/switchboard) and the kustomize base (manifests/)
//! lint, render and pass the real API server's dry run; they carry the same objects and
//! the generated CRDs; the operator's ServiceAccount can do what the operator does and
//! no more (checked with `kubectl auth can-i` and a real server-side apply as that
//! ServiceAccount).
//!
//! helm is built from the Go module proxy by `e2e/infra/helm.sh` (cached); kubectl is
//! `$KUBECTL` or the one `e2e/infra/cluster.sh` built.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};
use switchboard_e2e::binary::operator_binary;
use switchboard_e2e::env;

/// Namespace the chart is rendered for, the same as the kustomize base's.
const NS: &str = "switchboard-system";
const RELEASE: &str = "switchboard";
/// Field manager of the CRDs, the same as the operator tests' (no apply conflicts).
const CRD_MANAGER: &str = "switchboard-e2e";

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        // Written from a thread: a large input must not block on a full stdout pipe.
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_owned();
        std::thread::spawn(move || pipe.write_all(input.as_bytes()).unwrap());
    }
    child.wait_with_output().unwrap()
}

fn describe(program: &Path, args: &[&str], out: &Output) -> String {
    format!(
        "{} {}: {}\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs and returns stdout; panics with the whole output on failure.
fn ok(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin);
    assert!(out.status.success(), "{}", describe(program, args, &out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs what must fail and returns stderr.
fn fails(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin);
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        describe(program, args, &out)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = repo().join("e2e/infra/helm.sh");
        PathBuf::from(ok(&script, &["bin"], None).trim())
    })
}

/// kubectl against the test API server.
fn kube(args: &[&str], stdin: Option<&str>) -> String {
    let kubeconfig = env::kubeconfig_path();
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    ok(env::kubectl(), &all, stdin)
}

/// `helm template` of the chart for namespace `ns` with extra arguments.
fn render_in(ns: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, "charts/switchboard", "--namespace", ns];
    args.extend_from_slice(extra);
    ok(helm(), &args, None)
}

fn render(extra: &[&str]) -> String {
    render_in(NS, extra)
}

/// Multi-document YAML to JSON objects (kubectl parses it; no YAML crate needed).
fn objects(yaml: &str) -> Vec<Value> {
    let json = kube(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    // One JSON document per object, back to back.
    let mut objs = Vec::new();
    for v in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
        let v = v.unwrap();
        match v["kind"].as_str() {
            Some("List") => objs.extend(v["items"].as_array().unwrap().iter().cloned()),
            _ => objs.push(v),
        }
    }
    assert!(!objs.is_empty(), "no objects in:\n{yaml}");
    objs
}

type Key = (String, String, String);

fn key(o: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

fn by_key(objs: Vec<Value>) -> BTreeMap<Key, Value> {
    let mut map = BTreeMap::new();
    for o in objs {
        let k = key(&o);
        assert!(map.insert(k.clone(), o).is_none(), "{k:?} rendered twice");
    }
    map
}

fn find<'a>(objs: &'a BTreeMap<Key, Value>, kind: &str, ns: &str, name: &str) -> &'a Value {
    objs.get(&(kind.into(), ns.into(), name.into()))
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {ns}/{name} among {:?}",
                objs.keys().collect::<Vec<_>>()
            )
        })
}

fn keys(list: &[(&str, &str, &str)]) -> BTreeSet<Key> {
    list.iter()
        .map(|(k, ns, n)| ((*k).into(), (*ns).into(), (*n).into()))
        .collect()
}

/// What Helm adds that the kustomize base does not carry.
fn strip_helm_labels(o: &mut Value) {
    for path in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(m) = o.pointer_mut(path).and_then(Value::as_object_mut) {
            m.remove("helm.sh/chart");
            m.remove("app.kubernetes.io/managed-by");
        }
    }
}

fn yaml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Installs the CRDs from the chart (they equal crds/*.yaml, see below) for real.
fn install_chart_crds() {
    kube(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            CRD_MANAGER,
            "-f",
            "charts/switchboard/crds/",
        ],
        None,
    );
    kube(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/agentruntimes.switchboard.dev",
            "crd/agentsubscriptions.switchboard.dev",
        ],
        None,
    );
}

fn ensure_namespace(ns: &str) {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
    kube(&["apply", "-f", "-"], Some(&yaml));
}

/// Deletes what a test created, also when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let kubeconfig = env::kubeconfig_path();
        for args in &self.0 {
            let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
            all.extend(args.iter().map(String::as_str));
            all.extend(["--ignore-not-found", "--wait=false"]);
            let _ = run(env::kubectl(), &all, None);
        }
    }
}

fn delete(args: &[&str]) -> Vec<String> {
    std::iter::once("delete")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------
// One source of truth for the CRDs; chart and kustomize base agree.
// ---------------------------------------------------------------------------------

#[test]
fn the_chart_and_the_base_carry_the_generated_crds_byte_for_byte() {
    let generated = yaml_files(&repo().join("crds"));
    assert_eq!(generated.len(), 2, "{:?}", generated.keys());
    for copy in ["charts/switchboard/crds", "manifests/crds"] {
        let files = yaml_files(&repo().join(copy));
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            generated.keys().collect::<Vec<_>>(),
            "{copy} must hold exactly the CRDs of crds/"
        );
        for (name, bytes) in &generated {
            assert!(
                files[name] == *bytes,
                "{copy}/{name} differs from crds/{name}: after changing the CRDs run \
                 `cp crds/*.yaml charts/switchboard/crds/ && cp crds/*.yaml manifests/crds/`"
            );
        }
    }
}

#[test]
fn the_chart_and_the_kustomize_base_render_the_same_objects() {
    let mut chart = by_key(objects(&render(&["--include-crds"])));
    let mut base = by_key(objects(&kube(&["kustomize", "manifests/"], None)));
    // The base creates its namespace; Helm users pass --namespace/--create-namespace.
    let namespace = base
        .remove(&("Namespace".into(), String::new(), NS.into()))
        .expect("the kustomize base creates its namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    for o in chart.values_mut().chain(base.values_mut()) {
        strip_helm_labels(o);
    }
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "the chart (default values) and manifests/ must hold the same objects"
    );
    for (k, c) in &chart {
        assert!(
            c == &base[k],
            "{k:?} differs between the chart and manifests/:\nchart: {c:#}\nmanifests: {:#}",
            base[k]
        );
    }
}

// ---------------------------------------------------------------------------------
// Lint, render, values schema.
// ---------------------------------------------------------------------------------

#[test]
fn helm_lint_passes_for_all_namespaces_and_for_one() {
    for extra in [&[][..], &["--set", "watchNamespace=apps"][..]] {
        let mut args = vec!["lint", "--strict", "charts/switchboard"];
        args.extend_from_slice(extra);
        let out = ok(helm(), &args, None);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

#[test]
fn the_values_schema_rejects_unknown_keys_and_inconsistent_values() {
    let template = |set: &str| {
        fails(
            helm(),
            &["template", RELEASE, "charts/switchboard", "--set", set],
            None,
        )
    };
    let typo = template("imagee.tag=1.0");
    assert!(typo.contains("imagee"), "{typo}");
    let nested = template("metrics.service.portt=1");
    assert!(nested.contains("portt"), "{nested}");
    let bad_port = template("metrics.port=70000");
    assert!(bad_port.contains("metrics"), "{bad_port}");
    let bad_ns = template("watchNamespace=Not_A_Namespace");
    assert!(bad_ns.contains("watchNamespace"), "{bad_ns}");
    // Two replicas without leader election would be two writers.
    let two = fails(
        helm(),
        &[
            "template",
            RELEASE,
            "charts/switchboard",
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        None,
    );
    assert!(two.contains("leaderElection"), "{two}");
}

#[test]
fn the_default_render_is_the_operator_watching_all_namespaces() {
    let objs = by_key(objects(&render(&["--include-crds"])));
    let expected = keys(&[
        (
            "CustomResourceDefinition",
            "",
            "agentruntimes.switchboard.dev",
        ),
        (
            "CustomResourceDefinition",
            "",
            "agentsubscriptions.switchboard.dev",
        ),
        ("ServiceAccount", NS, "switchboard-operator"),
        ("ClusterRole", "", "switchboard-operator"),
        ("ClusterRoleBinding", "", "switchboard-operator"),
        ("Role", NS, "switchboard-operator-leader-election"),
        ("RoleBinding", NS, "switchboard-operator-leader-election"),
        ("Service", NS, "switchboard-operator-metrics"),
        ("Deployment", NS, "switchboard-operator"),
    ]);
    assert_eq!(objs.keys().cloned().collect::<BTreeSet<_>>(), expected);

    let deploy = find(&objs, "Deployment", NS, "switchboard-operator");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "switchboard-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        "ghcr.io/switchboard-dev/switchboard-operator:0.1.0"
    );
    assert_eq!(
        c["args"],
        json!([
            "run",
            "--runtime-image=ghcr.io/switchboard-dev/switchboard-runtime:0.1.0",
            "--leader-elect",
            "--lease-namespace=$(POD_NAMESPACE)",
            "--metrics-addr=0.0.0.0:8081",
        ])
    );
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        })
    );
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 8081);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert!(c["resources"]["requests"]["memory"].is_string(), "{c}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");

    let svc = find(&objs, "Service", NS, "switchboard-operator-metrics");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");

    let binding = find(&objs, "ClusterRoleBinding", "", "switchboard-operator");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "switchboard-operator", "namespace": NS }])
    );
}

#[test]
fn with_a_watched_namespace_the_permissions_are_a_role_there() {
    let cluster = by_key(objects(&render(&[])));
    let objs = by_key(objects(&render(&["--set", "watchNamespace=apps"])));
    assert!(
        !objs
            .keys()
            .any(|(k, _, _)| k == "ClusterRole" || k == "ClusterRoleBinding"),
        "{:?}",
        objs.keys()
    );
    let role = find(&objs, "Role", "apps", "switchboard-operator");
    let cluster_role = find(&cluster, "ClusterRole", "", "switchboard-operator");
    assert_eq!(role["rules"], cluster_role["rules"]);
    let binding = find(&objs, "RoleBinding", "apps", "switchboard-operator");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "switchboard-operator", "namespace": NS }])
    );
    // The Lease stays in the release namespace.
    find(&objs, "Role", NS, "switchboard-operator-leader-election");
    let deploy = find(&objs, "Deployment", NS, "switchboard-operator");
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(args.contains(&json!("--namespace=apps")), "{args:?}");

    // Without leader election there is no Lease Role and no --leader-elect.
    let single = by_key(objects(&render(&["--set", "leaderElection.enabled=false"])));
    assert!(!single.keys().any(|(k, _, _)| k == "Role"));
    let args = &find(&single, "Deployment", NS, "switchboard-operator")["spec"]["template"]["spec"]
        ["containers"][0]["args"];
    assert!(
        !args.as_array().unwrap().contains(&json!("--leader-elect")),
        "{args}"
    );
}

// ---------------------------------------------------------------------------------
// The real API server accepts them.
// ---------------------------------------------------------------------------------

#[test]
fn the_kustomize_base_passes_a_server_side_dry_run() {
    // The dry run does not create the Namespace, and the namespaced objects need it.
    ensure_namespace(NS);
    let out = kube(&["apply", "-k", "manifests/", "--dry-run=server"], None);
    for what in [
        "customresourcedefinition.apiextensions.k8s.io/agentruntimes.switchboard.dev",
        "clusterrole.rbac.authorization.k8s.io/switchboard-operator",
        "deployment.apps/switchboard-operator",
        "service/switchboard-operator-metrics",
    ] {
        assert!(out.contains(what), "{what} missing from:\n{out}");
    }
}

#[test]
fn the_chart_passes_a_server_side_dry_run_after_its_crds_are_installed() {
    install_chart_crds();
    ensure_namespace(NS);
    for extra in [&[][..], &["--set", "watchNamespace=default"][..]] {
        let yaml = render(extra);
        let out = kube(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        assert!(
            out.contains("deployment.apps/switchboard-operator"),
            "{out}"
        );
    }
}

// ---------------------------------------------------------------------------------
// RBAC: what the operator's ServiceAccount may and may not do.
// ---------------------------------------------------------------------------------

/// Applies the ServiceAccount and RBAC objects of a render for real.
fn apply_rbac(yaml: &str) {
    let items: Vec<Value> = objects(yaml)
        .into_iter()
        .filter(|o| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&o["kind"].as_str().unwrap())
        })
        .collect();
    assert!(items.len() >= 5, "{items:?}");
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
    kube(&["apply", "-f", "-"], Some(&list.to_string()));
}

/// `kubectl auth can-i` as `user`: "VERB RESOURCE[/SUBRESOURCE][ NAME]" in `ns`.
fn can(user: &str, ns: &str, what: &str) -> bool {
    let mut parts = what.split(' ');
    let verb = parts.next().unwrap();
    let target = parts.next().unwrap();
    let name = parts.next();
    let (resource, sub) = match target.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (target, None),
    };
    let kubeconfig = env::kubeconfig_path();
    let resource = match name {
        Some(n) => format!("{resource}/{n}"),
        None => resource.to_owned(),
    };
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "can-i",
        verb,
        &resource,
        "--as",
        user,
        "-n",
        ns,
    ];
    let sub_flag = sub.map(|s| format!("--subresource={s}"));
    if let Some(f) = &sub_flag {
        args.push(f);
    }
    let out = run(env::kubectl(), &args, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!("{}", describe(env::kubectl(), &args, &out)),
    }
}

/// Every API call the operator makes (operator/src): controllers list and watch the
/// CRs and owned kinds; owned objects are read, then server-side applied (patch, and
/// create when the object is new); the PDB is deleted when replicas drop to 1; finalizers are merge patches; status is applied to
/// the status subresource; Secrets are read; Events are created and patched; owner
/// references block owner deletion.
const OPERATOR_DOES: &[&str] = &[
    "get agentruntimes.switchboard.dev",
    "list agentruntimes.switchboard.dev",
    "watch agentruntimes.switchboard.dev",
    "patch agentruntimes.switchboard.dev",
    "patch agentruntimes.switchboard.dev/status",
    "update agentruntimes.switchboard.dev/finalizers",
    "list agentsubscriptions.switchboard.dev",
    "watch agentsubscriptions.switchboard.dev",
    "patch agentsubscriptions.switchboard.dev",
    "patch agentsubscriptions.switchboard.dev/status",
    "get configmaps",
    "list configmaps",
    "watch configmaps",
    "create configmaps",
    "patch configmaps",
    "get serviceaccounts",
    "list serviceaccounts",
    "watch serviceaccounts",
    "create serviceaccounts",
    "patch serviceaccounts",
    "get services",
    "list services",
    "watch services",
    "create services",
    "patch services",
    "get deployments.apps",
    "list deployments.apps",
    "watch deployments.apps",
    "create deployments.apps",
    "patch deployments.apps",
    "get poddisruptionbudgets.policy",
    "list poddisruptionbudgets.policy",
    "watch poddisruptionbudgets.policy",
    "create poddisruptionbudgets.policy",
    "patch poddisruptionbudgets.policy",
    "delete poddisruptionbudgets.policy",
    "get secrets",
    "create events.events.k8s.io",
    "patch events.events.k8s.io",
];

/// A sample of what it never does and must not be able to.
const OPERATOR_MUST_NOT: &[&str] = &[
    "list secrets",
    "watch secrets",
    "delete secrets",
    "patch secrets",
    "create pods",
    "delete pods",
    "delete configmaps",
    "update configmaps",
    "update deployments.apps",
    "delete deployments.apps",
    "delete services",
    "create agentruntimes.switchboard.dev",
    "update agentruntimes.switchboard.dev",
    "delete agentruntimes.switchboard.dev",
    "delete agentsubscriptions.switchboard.dev",
    "update agentruntimes.switchboard.dev/status",
    "delete events.events.k8s.io",
    "create rolebindings.rbac.authorization.k8s.io",
    "delete leases.coordination.k8s.io switchboard-operator",
    "patch leases.coordination.k8s.io someone-else",
    "list leases.coordination.k8s.io",
];

const LEASE_DOES: &[&str] = &[
    "create leases.coordination.k8s.io",
    "get leases.coordination.k8s.io switchboard-operator",
    "list leases.coordination.k8s.io switchboard-operator",
    "watch leases.coordination.k8s.io switchboard-operator",
    "patch leases.coordination.k8s.io switchboard-operator",
];

fn assert_can(user: &str, ns: &str, list: &[&str], expected: bool) {
    let wrong: Vec<&str> = list
        .iter()
        .copied()
        .filter(|w| can(user, ns, w) != expected)
        .collect();
    assert!(
        wrong.is_empty(),
        "{user} in {ns}: expected can-i {expected} for {wrong:?}"
    );
}

#[test]
fn the_operator_service_account_can_do_what_the_operator_does_and_no_more() {
    install_chart_crds();
    let ns = env::unique_name("pkg-rbac");
    let name = ns.clone(); // fullnameOverride: cluster-wide names unique to this run
    let operator = format!("{name}-operator");
    let _cleanup = Cleanup(vec![
        delete(&["namespace", &ns]),
        delete(&["clusterrole", &operator]),
        delete(&["clusterrolebinding", &operator]),
    ]);
    ensure_namespace(&ns);
    apply_rbac(&render_in(
        &ns,
        &["--set", &format!("fullnameOverride={name}")],
    ));
    let sa = format!("system:serviceaccount:{ns}:{operator}");

    // All namespaces: the operator's own and any other.
    for target in [ns.as_str(), "default"] {
        assert_can(&sa, target, OPERATOR_DOES, true);
        assert_can(&sa, target, OPERATOR_MUST_NOT, false);
    }
    // The Lease only in its own namespace.
    assert_can(&sa, &ns, LEASE_DOES, true);
    assert_can(&sa, "default", LEASE_DOES, false);

    // The operator's server-side apply of a new object works with these permissions
    // (it is authorized as create, not only as patch); deleting it is refused.
    let kubeconfig = env::kubeconfig_path();
    let kc = kubeconfig.to_str().unwrap();
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "applied-by-the-operator-sa", "namespace": ns },
        "data": { "k": "v" },
    });
    kube(
        &[
            "apply",
            "--server-side",
            "--field-manager=switchboard-operator",
            "--as",
            &sa,
            "-f",
            "-",
        ],
        Some(&cm.to_string()),
    );
    kube(
        &["get", "configmap", "applied-by-the-operator-sa", "-n", &ns],
        None,
    );
    let denied = fails(
        env::kubectl(),
        &[
            "--kubeconfig",
            kc,
            "delete",
            "configmap",
            "applied-by-the-operator-sa",
            "-n",
            &ns,
            "--as",
            &sa,
        ],
        None,
    );
    assert!(denied.contains("forbidden"), "{denied}");
}

#[test]
fn with_a_watched_namespace_the_service_account_is_confined_to_it() {
    install_chart_crds();
    let ns = env::unique_name("pkg-op");
    let watched = env::unique_name("pkg-watched");
    let _cleanup = Cleanup(vec![
        delete(&["namespace", &ns]),
        delete(&["namespace", &watched]),
    ]);
    ensure_namespace(&ns);
    ensure_namespace(&watched);
    apply_rbac(&render_in(
        &ns,
        &["--set", &format!("watchNamespace={watched}")],
    ));
    let sa = format!("system:serviceaccount:{ns}:switchboard-operator");
    assert_can(&sa, &watched, OPERATOR_DOES, true);
    assert_can(&sa, &watched, OPERATOR_MUST_NOT, false);
    // Nothing of it elsewhere, the operator's own namespace included.
    for other in [ns.as_str(), "default"] {
        let elsewhere: Vec<&str> = OPERATOR_DOES
            .iter()
            .copied()
            .filter(|w| can(&sa, other, w))
            .collect();
        assert!(elsewhere.is_empty(), "{sa} in {other}: {elsewhere:?}");
    }
    assert_can(&sa, &ns, LEASE_DOES, true);
    assert_can(&sa, &watched, LEASE_DOES, false);
}

// ---------------------------------------------------------------------------------
// The real operator, running as the chart's ServiceAccount.
// ---------------------------------------------------------------------------------

/// The test kubeconfig, acting as `user` (kubeconfig `as:`, i.e. impersonation).
fn impersonating_kubeconfig(user: &str, dir: &Path) -> PathBuf {
    let admin = std::fs::read_to_string(env::kubeconfig_path()).unwrap();
    assert!(
        admin.matches("\n  user:\n").count() == 1,
        "expected one user entry (as written by e2e/infra/cluster.sh) in:\n{admin}"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        admin.replace("\n  user:\n", &format!("\n  user:\n    as: {user}\n")),
    )
    .unwrap();
    path
}

/// Kills the operator when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 500 ms until it returns `Some` (at most `limit` seconds).
fn wait_until<T>(what: &str, limit: u64, log: &Path, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limit);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what} after {limit} s; operator log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn get_json(args: &[&str]) -> Option<Value> {
    let kubeconfig = env::kubeconfig_path();
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = run(env::kubectl(), &all, None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

#[test]
fn the_operator_reconciles_and_cleans_up_with_only_the_charts_permissions() {
    install_chart_crds();
    let op_ns = env::unique_name("pkg-live-op");
    let app_ns = env::unique_name("pkg-live-app");
    let _cleanup = Cleanup(vec![
        delete(&["namespace", &op_ns]),
        delete(&["namespace", &app_ns]),
    ]);
    ensure_namespace(&op_ns);
    ensure_namespace(&app_ns);
    // The namespaced variant: its Role carries the same rules as the ClusterRole
    // (checked above), and an operator watching one namespace leaves other tests alone.
    apply_rbac(&render_in(
        &op_ns,
        &["--set", &format!("watchNamespace={app_ns}")],
    ));
    let sa = format!("system:serviceaccount:{op_ns}:switchboard-operator");
    let dir = std::env::temp_dir().join(env::unique_name("packaging"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = impersonating_kubeconfig(&sa, &dir);
    let log = dir.join("operator.log");

    // The Deployment's arguments, with a local kubeconfig and metrics port.
    let _operator = Running(
        Command::new(operator_binary())
            .args([
                "run",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--namespace",
                &app_ns,
                "--runtime-image",
                "switchboard-runtime:packaging-test",
                "--leader-elect",
                "--lease-namespace",
                &op_ns,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("operator.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let prefix = env::unique_name("pkg");
    let agent = format!("{prefix}-counter");
    let ar = json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "host", "namespace": app_ns },
        "spec": {
            "replicas": 2,
            "deletionPolicy": "Delete",
            "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
            "agents": [{ "type": agent, "builtin": "counter" }],
        },
    });
    let sub = json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
        "metadata": { "name": "alerts", "namespace": app_ns },
        "spec": { "runtimeRef": { "name": "host" }, "agentType": agent, "topicType": "alerts" },
    });
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": [ar, sub] });
    kube(&["apply", "-f", "-"], Some(&list.to_string()));

    // Leadership (Lease create/get/patch), finalizer and status patches, topics, owned
    // objects created by server-side apply, the PDB for 2 replicas, Events.
    wait_until("the Lease to be held", 60, &log, || {
        get_json(&["lease", "switchboard-operator", "-n", &op_ns])?["spec"]["holderIdentity"]
            .as_str()
            .map(|_| ())
    });
    wait_until("AgentRuntime TopicsReady=True", 90, &log, || {
        let rt = get_json(&["agentruntime", "host", "-n", &app_ns])?;
        (condition(&rt, "TopicsReady")? == "True").then_some(())
    });
    let rt = get_json(&["agentruntime", "host", "-n", &app_ns]).unwrap();
    assert_eq!(
        rt["metadata"]["finalizers"],
        json!(["switchboard.dev/delete-topics"])
    );
    wait_until("the owned objects", 60, &log, || {
        let owned = get_json(&[
            "deployments,services,configmaps,serviceaccounts,poddisruptionbudgets",
            "-n",
            &app_ns,
            "-l",
            "app.kubernetes.io/managed-by=switchboard-operator",
        ])?;
        let kinds: BTreeSet<String> = owned["items"]
            .as_array()?
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect();
        (kinds.len() == 5).then_some(())
    });
    wait_until("AgentSubscription Accepted=True", 60, &log, || {
        let s = get_json(&["agentsubscription", "alerts", "-n", &app_ns])?;
        (condition(&s, "Accepted")? == "True").then_some(())
    });
    wait_until("an Event from the operator", 60, &log, || {
        let events = get_json(&["events.events.k8s.io", "-n", &app_ns])?;
        events["items"]
            .as_array()?
            .iter()
            .any(|e| e["reportingController"] == "switchboard-operator")
            .then_some(())
    });

    // One replica: the PDB is deleted.
    kube(
        &[
            "patch",
            "agentruntime",
            "host",
            "-n",
            &app_ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ],
        None,
    );
    wait_until("the PodDisruptionBudget to be deleted", 60, &log, || {
        let pdbs = get_json(&["poddisruptionbudgets", "-n", &app_ns])?;
        pdbs["items"].as_array()?.is_empty().then_some(())
    });

    // Deleting: the finalizers run (registry tombstone, topic deletion) and go.
    kube(
        &[
            "delete",
            "agentsubscription/alerts",
            "agentruntime/host",
            "-n",
            &app_ns,
            "--wait=false",
        ],
        None,
    );
    wait_until(
        "the AgentRuntime and AgentSubscription to go",
        90,
        &log,
        || {
            let left = get_json(&["agentruntimes,agentsubscriptions", "-n", &app_ns])?;
            left["items"].as_array()?.is_empty().then_some(())
        },
    );

    let text = std::fs::read_to_string(&log).unwrap();
    for denied in ["forbidden", "Forbidden", "publishing an event failed"] {
        assert!(
            !text.contains(denied),
            "{denied:?} in the operator log:\n{text}"
        );
    }
}

//! The objects the launcher makes, as typed k8s-openapi values built from the settings
//! alone (no IO): per task the Namespace, its NetworkPolicy, ResourceQuota and LimitRange
//! and the Secret `runner`; per run the Job `run`; for the task's database the
//! CloudNativePG `Cluster` `database` (a `DynamicObject`: its type is no k8s-openapi
//! one) and the NetworkPolicy `database`.

use crate::names::{
    self, CNPG_CLUSTER, DATA_DIR, DATABASE, INSTANCE_MANAGER_PORT, POSTGRES_PORT, RUN_LABEL,
    RUNNER, RUNNER_UID, TOKEN_VAR,
};
use crate::settings::{CidrEgress, KubeSettings, PodPeer, ServerEgress};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, LimitRange, LimitRangeItem,
    LimitRangeSpec, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceQuota,
    ResourceQuotaSpec, ResourceRequirements, SeccompProfile, Secret, SecretEnvSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use mainloop_domain::TaskId;
use mainloop_launch::TaskLaunch;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// The task's namespace.
#[must_use]
pub fn namespace(s: &KubeSettings, task: TaskId) -> Namespace {
    Namespace {
        metadata: meta(
            &names::namespace(&s.namespace_prefix, task),
            names::task_labels(task),
        ),
        ..Namespace::default()
    }
}

fn pods_in(peer: &PodPeer) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                peer.namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(peer.pod_labels.clone()),
            ..LabelSelector::default()
        }),
        ip_block: None,
    }
}

fn block(cidr: &str, except: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: (!except.is_empty()).then(|| except.to_vec()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

fn rule(to: NetworkPolicyPeer, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![to]),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn ingress_rule(
    from: NetworkPolicyPeer,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(vec![from]),
        ports: Some(ports),
    }
}

/// Every TCP port: the server reaches a task's preview on whichever port the task's
/// environment gave it.
fn any_tcp() -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: None,
        protocol: Some("TCP".to_owned()),
        end_port: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The task's runner pods (see [`names::runner_pods`]): the labels the Job's pod
/// template gives them, a run's name among them.
fn runner_pods(task: TaskId) -> LabelSelector {
    LabelSelector {
        match_labels: Some(names::task_labels(task)),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: RUN_LABEL.to_owned(),
            operator: "Exists".to_owned(),
            values: None,
        }]),
    }
}

/// The pods of the task's database, as CloudNativePG labels them.
fn database_pods() -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(&[(CNPG_CLUSTER, DATABASE)])),
        ..LabelSelector::default()
    }
}

/// Pods of the policy's own namespace (a peer with only a `podSelector`).
fn here(pods: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(pods),
        ..NetworkPolicyPeer::default()
    }
}

/// The server: its pods, or its address range.
fn server(s: &KubeSettings) -> (NetworkPolicyPeer, u16) {
    match &s.server {
        ServerEgress::Pods { peer, port } => (pods_in(peer), *port),
        ServerEgress::Cidr { cidr, port } => (block(cidr, &[]), *port),
    }
}

/// The task's runner pods: ingress only from the server (on any TCP port: it proxies the
/// task's preview to the pod); egress to DNS, the server, the task's database and the
/// allowed CIDRs only. Other pods of the namespace (the database's) are not selected:
/// the policy `database` fences those.
#[must_use]
pub fn network_policy(s: &KubeSettings, task: TaskId) -> NetworkPolicy {
    let (server, server_port) = server(s);
    let mut egress = Vec::new();
    if let Some(dns) = &s.dns {
        egress.push(rule(pods_in(dns), vec![port("UDP", 53), port("TCP", 53)]));
    }
    egress.push(rule(server.clone(), vec![port("TCP", server_port)]));
    egress.push(rule(
        here(database_pods()),
        vec![port("TCP", POSTGRES_PORT)],
    ));
    for CidrEgress {
        cidr,
        except,
        port: p,
    } in &s.allowed_egress
    {
        let ports = p.map(|p| vec![port("TCP", p)]).unwrap_or_default();
        egress.push(rule(block(cidr, except), ports));
    }
    NetworkPolicy {
        metadata: meta(RUNNER, names::task_labels(task)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runner_pods(task)),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![ingress_rule(server, vec![any_tcp()])]),
            egress: Some(egress),
        }),
    }
}

/// The task database's pods: ingress only from the task's runner pods (PostgreSQL) and
/// from the operator's namespace (PostgreSQL and the instance manager). Their egress is
/// left open: the instance manager talks to the API server, whose address no policy
/// here knows.
#[must_use]
pub fn database_policy(s: &KubeSettings, task: TaskId) -> NetworkPolicy {
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(labels(&[(
                NAMESPACE_NAME_LABEL,
                &s.database.operator_namespace,
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(DATABASE, names::task_labels(task)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(database_pods()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                ingress_rule(here(runner_pods(task)), vec![port("TCP", POSTGRES_PORT)]),
                ingress_rule(
                    operator,
                    vec![
                        port("TCP", POSTGRES_PORT),
                        port("TCP", INSTANCE_MANAGER_PORT),
                    ],
                ),
            ]),
            egress: None,
        }),
    }
}

/// CloudNativePG's `Cluster` (`postgresql.cnpg.io/v1`, plural `clusters`).
#[must_use]
pub fn cluster_resource() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "postgresql.cnpg.io/v1".to_owned(),
        kind: "Cluster".to_owned(),
        plural: "clusters".to_owned(),
    }
}

/// The task's database: one PostgreSQL instance with the database `app` owned by the
/// role `app` (CloudNativePG then writes the Secret `database-app`, its URL under
/// `uri`), on a volume of `database.storage_size`.
#[must_use]
pub fn cluster(s: &KubeSettings, task: TaskId) -> DynamicObject {
    let d = &s.database;
    let mut storage = json!({"size": d.storage_size});
    if let Some(class) = &d.storage_class {
        storage["storageClass"] = json!(class);
    }
    let mut spec = json!({
        "instances": 1,
        "storage": storage,
        "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
    });
    if let Some(image) = &d.image {
        spec["imageName"] = json!(image);
    }
    let mut resources = serde_json::Map::new();
    for (key, map) in [
        ("requests", &d.resources.requests),
        ("limits", &d.resources.limits),
    ] {
        if !map.is_empty() {
            resources.insert(key.to_owned(), json!(map));
        }
    }
    if !resources.is_empty() {
        spec["resources"] = Value::Object(resources);
    }
    let ar = cluster_resource();
    DynamicObject {
        types: Some(TypeMeta {
            api_version: ar.api_version,
            kind: ar.kind,
        }),
        metadata: meta(DATABASE, names::task_labels(task)),
        data: json!({"spec": spec}),
    }
}

/// The namespace's totals, or `None` when the settings set none.
#[must_use]
pub fn resource_quota(s: &KubeSettings, task: TaskId) -> Option<ResourceQuota> {
    Some(ResourceQuota {
        metadata: meta(RUNNER, names::task_labels(task)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&s.quota)?),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    })
}

/// The defaults of any container that sets none (so the quota can count it), or `None`
/// when the settings give no resources.
#[must_use]
pub fn limit_range(s: &KubeSettings, task: TaskId) -> Option<LimitRange> {
    let default = quantities(&s.resources.limits);
    let default_request = quantities(&s.resources.requests);
    if default.is_none() && default_request.is_none() {
        return None;
    }
    Some(LimitRange {
        metadata: meta(RUNNER, names::task_labels(task)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default,
                default_request,
                ..LimitRangeItem::default()
            }],
        }),
    })
}

/// The runner's environment: its token and the agent's credentials.
#[must_use]
pub fn secret(task: &TaskLaunch) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        TOKEN_VAR.to_owned(),
        ByteString(task.runner_token.expose_secret().as_bytes().to_vec()),
    );
    for (name, value) in &task.credentials {
        data.insert(
            name.clone(),
            ByteString(value.expose_secret().as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: meta(RUNNER, names::task_labels(task.task)),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The run's labels: the task's, and the run's name.
fn run_labels(task: TaskId, run: &str) -> BTreeMap<String, String> {
    let mut labels = names::task_labels(task);
    labels.insert(RUN_LABEL.to_owned(), run.to_owned());
    labels
}

/// `mainloop runner --once …` for the run's agent.
#[must_use]
pub fn runner_args(s: &KubeSettings, task: &TaskLaunch) -> Vec<String> {
    let mut args: Vec<String> = [
        "runner",
        "--once",
        "--server",
        s.server_url.trim(),
        "--data-dir",
        DATA_DIR,
        "--agent",
        task.agent.as_str(),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend(s.runner_args.iter().cloned());
    args
}

/// The run's Job: one pod, never restarted or retried, as the agent image's
/// unprivileged user, with its token and credentials from the Secret and its data
/// directory on an `emptyDir`.
#[must_use]
pub fn job(s: &KubeSettings, task: &TaskLaunch, run: &str) -> Job {
    let labels = run_labels(task.task, run);
    let container = Container {
        name: RUNNER.to_owned(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: (!s.command.is_empty()).then(|| s.command.clone()),
        args: Some(runner_args(s, task)),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: RUNNER.to_owned(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities(&s.resources.requests),
            limits: quantities(&s.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(true),
            run_as_user: Some(RUNNER_UID),
            run_as_group: Some(RUNNER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        service_account_name: s.service_account_name.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNNER_UID),
            run_as_group: Some(RUNNER_UID),
            fs_group: Some(RUNNER_UID),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "data".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    Job {
        metadata: meta(run, labels.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: s.job_ttl_secs,
            active_deadline_seconds: s.active_deadline_secs,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

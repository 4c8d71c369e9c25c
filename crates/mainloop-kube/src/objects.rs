//! The objects the launcher makes, as typed k8s-openapi values built from the settings
//! alone (no IO): per task the Namespace, its NetworkPolicy, ResourceQuota and LimitRange
//! and the Secret `runner`; per run the Job `run`.

use crate::names::{self, DATA_DIR, RUN_LABEL, RUNNER, RUNNER_UID, TOKEN_VAR};
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
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mainloop_domain::TaskId;
use mainloop_launch::TaskLaunch;
use secrecy::ExposeSecret;
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

/// Every pod in the namespace: no ingress at all; egress to DNS, the server and the
/// allowed CIDRs only.
#[must_use]
pub fn network_policy(s: &KubeSettings, task: TaskId) -> NetworkPolicy {
    let mut egress = Vec::new();
    if let Some(dns) = &s.dns {
        egress.push(rule(pods_in(dns), vec![port("UDP", 53), port("TCP", 53)]));
    }
    egress.push(match &s.server {
        ServerEgress::Pods { peer, port: p } => rule(pods_in(peer), vec![port("TCP", *p)]),
        ServerEgress::Cidr { cidr, port: p } => rule(block(cidr, &[]), vec![port("TCP", *p)]),
    });
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
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }),
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

//! The deployment files under `deploy/` (scale-out mode: several `viewpulse run` processes of
//! one consumer group), checked without a broker or a container runtime:
//!
//! - every YAML file parses; the Compose file runs Kafka in KRaft mode, creates the topics the
//!   configuration names (the changelog as wide as the input, compacted; a one-partition
//!   coordinator topic) and three members; the Kubernetes manifests have their kinds and agree
//!   with each other and with the configuration (port, probes, mounts, selectors);
//! - every shipped viewpulse configuration loads into [`RunConfig`] (which refuses unknown
//!   keys), is a valid cluster configuration, and is accepted by the binary itself;
//! - every `VIEWPULSE_*` variable the files use is one `viewpulse run --help` lists;
//! - the systemd unit is well formed, hardened, and starts with the configuration it ships;
//! - `deploy/local-cluster.sh` parses, reports an empty folder, and starts, adds, kills and
//!   stops members (a stand-in binary; no broker);
//! - the Dockerfile is multi-stage, runs as a non-root user and builds `--locked`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use viewpulse::config::RunConfig;
use viewpulse::source::kafka::{KafkaUrl, StartAt};

// ---------------------------------------------------------------------------------------------
// helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// The text of `deploy/REL`.
fn read(rel: &str) -> String {
    let p = deploy().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `deploy/`, as paths relative to it, sorted.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy(), &deploy(), &mut out);
    out.sort();
    out
}

/// Every document of the YAML file `deploy/REL` (`---`-separated), with `<<` merge keys
/// applied as Compose and Kubernetes apply them.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v = Value::deserialize(doc).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"));
        v.apply_merge()
            .unwrap_or_else(|e| panic!("deploy/{rel}: merge keys: {e}"));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

/// The one document of `deploy/REL`.
fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "deploy/{rel} should hold one document");
    docs.remove(0)
}

/// The value at `path` under `v`; fails the test naming the path when it is missing.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("no {} in {v:?}", path[..=i].join(".")));
    }
    cur
}

/// A scalar as text (strings, numbers and booleans alike: `KAFKA_NODE_ID: 1`).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{other:?} is not a scalar"),
    }
}

/// The strings of a sequence.
fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{v:?} is not a sequence"))
        .iter()
        .map(text)
        .collect()
}

/// A Compose `environment:`, as a mapping or as a list of `KEY=VALUE`.
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Some(Value::Sequence(list)) => list
            .iter()
            .map(|item| {
                let s = text(item);
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("environment: {other:?}"),
    }
}

/// The `VIEWPULSE_*` names in `text`.
fn viewpulse_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("VIEWPULSE_") {
        if i > 0 {
            let before = text.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // "VIEWPULSE_*" in prose names the family, not a variable
        if name != "VIEWPULSE_" {
            out.insert(name);
        }
    }
    out
}

/// The environment variables `viewpulse run` reads, from its `--help`: every `[env: NAME=...]`
/// and `[env: NAME]` (the form of a variable whose value is hidden, VIEWPULSE_HTTP_TOKEN).
fn run_env_vars() -> BTreeSet<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_viewpulse"));
    cmd.args(["run", "--help"]);
    // variables set around the test would show in the help (and a bad value could fail it)
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VIEWPULSE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "viewpulse run --help: {out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let names: BTreeSet<String> = help
        .match_indices("[env: ")
        .map(|(i, m)| {
            let rest = &help[i + m.len()..];
            let end = rest.find(['=', ']']).expect("[env: NAME...]");
            rest[..end].to_string()
        })
        .collect();
    names
}

/// A shipped viewpulse configuration.
fn run_config(what: &str, toml_text: &str) -> RunConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The shipped configurations: (where, TOML text).
fn shipped_configs() -> Vec<(String, String)> {
    let configmap = yaml("k8s/configmap.yaml");
    vec![
        (
            "deploy/systemd/viewpulse.toml".into(),
            read("systemd/viewpulse.toml"),
        ),
        (
            "deploy/compose/viewpulse.toml".into(),
            read("compose/viewpulse.toml"),
        ),
        (
            "deploy/k8s/configmap.yaml data.viewpulse.toml".into(),
            text(at(&configmap, &["data", "viewpulse.toml"])),
        ),
    ]
}

/// The port of a configuration's `http.listen`.
fn http_port(c: &RunConfig) -> u16 {
    c.http_listen().unwrap().expect("http.listen is set").port()
}

/// The topic of a `kafka://` URL.
fn topic(url: &str) -> String {
    KafkaUrl::parse(url).unwrap().topic
}

/// The path after `--config` in an argument list.
fn config_arg(args: &[String]) -> String {
    let i = args
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| panic!("no --config in {args:?}"));
    args.get(i + 1).expect("a path after --config").clone()
}

// ---------------------------------------------------------------------------------------------
// YAML

#[test]
fn every_yaml_file_parses_and_each_document_is_a_mapping() {
    let files: Vec<String> = deploy_files()
        .into_iter()
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    // compose.yaml and the five Kubernetes manifests at least
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let docs = yaml_docs(f);
        assert!(!docs.is_empty(), "deploy/{f} holds no document");
        for d in &docs {
            assert!(
                d.is_mapping(),
                "deploy/{f}: a document is not a mapping: {d:?}"
            );
        }
    }
}

#[test]
fn the_env_var_list_comes_from_the_binary() {
    let vars = run_env_vars();
    for v in [
        "VIEWPULSE_CONFIG",
        "VIEWPULSE_SOURCE",
        "VIEWPULSE_MODEL",
        "VIEWPULSE_HTTP_LISTEN",
        "VIEWPULSE_HTTP_TOKEN",
        "VIEWPULSE_GROUP_ID",
        "VIEWPULSE_CHANGELOG",
        "VIEWPULSE_COORDINATOR",
        "VIEWPULSE_SESSION_TIMEOUT",
        "VIEWPULSE_MEMBER",
        "VIEWPULSE_LOG_FORMAT",
    ] {
        assert!(
            vars.contains(v),
            "{v} missing from `viewpulse run --help`: {vars:?}"
        );
    }
}

/// The variables `deploy/local-cluster.sh` reads for itself (not the daemon's).
const SCRIPT_VARS: [&str; 3] = ["VIEWPULSE_CLUSTER_DIR", "VIEWPULSE_BIN", "VIEWPULSE_ARGS"];

/// The variables the broker fixture `deploy/kafka/broker.sh` reads for itself.
const FIXTURE_VARS: [&str; 2] = ["VIEWPULSE_KAFKA_CACHE", "VIEWPULSE_KAFKA_POM"];

#[test]
fn every_viewpulse_variable_in_deploy_files_is_a_real_one() {
    let real = run_env_vars();
    for v in SCRIPT_VARS.iter().chain(&FIXTURE_VARS) {
        assert!(
            !real.contains(*v),
            "{v} is the script's own variable and also the daemon's"
        );
    }
    let mut seen = BTreeSet::new();
    for f in deploy_files() {
        let Ok(content) = std::fs::read_to_string(deploy().join(&f)) else {
            continue;
        };
        for v in viewpulse_vars(&content) {
            if f == "local-cluster.sh" && SCRIPT_VARS.contains(&v.as_str()) {
                continue;
            }
            if f == "kafka/broker.sh" && FIXTURE_VARS.contains(&v.as_str()) {
                continue;
            }
            assert!(
                real.contains(&v),
                "deploy/{f} uses {v}, which `viewpulse run --help` does not list"
            );
            seen.insert(v);
        }
    }
    // the files do pass the cluster settings through the environment
    for v in [
        "VIEWPULSE_MEMBER",
        "VIEWPULSE_CHANGELOG",
        "VIEWPULSE_COORDINATOR",
        "VIEWPULSE_SOURCE",
        "VIEWPULSE_HTTP_TOKEN",
    ] {
        assert!(seen.contains(v), "no deploy file uses {v}: {seen:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Compose

/// The Compose services that run `viewpulse run`, by name.
fn compose_members(compose: &Value) -> BTreeMap<String, Value> {
    at(compose, &["services"])
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, s)| {
            s.get("command")
                .and_then(|c| c.as_sequence())
                .is_some_and(|c| c.first().and_then(|a| a.as_str()) == Some("run"))
        })
        .map(|(k, v)| (text(k), v.clone()))
        .collect()
}

#[test]
fn compose_runs_kafka_in_kraft_mode() {
    let compose = yaml("compose.yaml");
    let kafka = at(&compose, &["services", "kafka"]);
    assert_eq!(text(at(kafka, &["image"])), "apache/kafka:3.9.0");
    let env = compose_env(kafka);
    let get = |k: &str| {
        env.get(k)
            .unwrap_or_else(|| panic!("kafka has no {k}"))
            .clone()
    };
    let roles: BTreeSet<String> = get("KAFKA_PROCESS_ROLES")
        .split(',')
        .map(|r| r.trim().to_string())
        .collect();
    assert!(
        roles.contains("controller") && roles.contains("broker"),
        "{roles:?}"
    );
    // the quorum is this node, reached on the controller listener
    let node = get("KAFKA_NODE_ID");
    let voters = get("KAFKA_CONTROLLER_QUORUM_VOTERS");
    assert!(voters.starts_with(&format!("{node}@kafka:")), "{voters}");
    let listeners: BTreeMap<String, String> = get("KAFKA_LISTENERS")
        .split(',')
        .map(|l| {
            let (name, addr) = l.split_once("://").unwrap();
            (name.to_string(), addr.to_string())
        })
        .collect();
    let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
    let controller_port = listeners
        .get(&controller)
        .unwrap_or_else(|| panic!("{controller} is not among {listeners:?}"))
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(voters.ends_with(&format!(":{controller_port}")), "{voters}");
    let protocols = get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP");
    for name in listeners.keys() {
        assert!(
            protocols
                .split(',')
                .any(|p| p.starts_with(&format!("{name}:"))),
            "listener {name} has no protocol in {protocols}"
        );
    }
    // the members reach it as kafka:9092 (their configuration's brokers)
    assert!(
        get("KAFKA_ADVERTISED_LISTENERS")
            .split(',')
            .any(|l| l.ends_with("://kafka:9092")),
        "{env:?}"
    );
    assert_eq!(get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"), "1");
    assert!(
        kafka.get("healthcheck").is_some(),
        "kafka has no healthcheck"
    );
}

#[test]
fn compose_has_topics_and_three_members_of_one_group() {
    let compose = yaml("compose.yaml");
    let real = run_env_vars();
    let services = at(&compose, &["services"]);
    assert_eq!(
        text(at(
            services,
            &["topics", "depends_on", "kafka", "condition"]
        )),
        "service_healthy"
    );
    let members = compose_members(&compose);
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        ["viewpulse-1", "viewpulse-2", "viewpulse-3"],
        "the services running `viewpulse run`"
    );
    let config = run_config(
        "deploy/compose/viewpulse.toml",
        &read("compose/viewpulse.toml"),
    );
    let mut names = BTreeSet::new();
    for (name, m) in &members {
        assert_eq!(
            text(at(m, &["depends_on", "topics", "condition"])),
            "service_completed_successfully",
            "{name}"
        );
        assert_eq!(text(at(m, &["restart"])), "unless-stopped", "{name}");
        // built from the Dockerfile, with the repository root as the context
        let context = deploy().join(text(at(m, &["build", "context"])));
        let dockerfile = context.join(text(at(m, &["build", "dockerfile"])));
        assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
        assert!(context.join("Cargo.toml").is_file(), "{name}: context");
        // every variable is one the daemon reads; each member names itself
        let env = compose_env(m);
        for k in env.keys() {
            assert!(real.contains(k), "{name}: {k} is not a viewpulse variable");
        }
        names.insert(
            env.get("VIEWPULSE_MEMBER")
                .unwrap_or_else(|| panic!("{name} has no VIEWPULSE_MEMBER"))
                .clone(),
        );
        assert!(env.contains_key("VIEWPULSE_HTTP_TOKEN"), "{name}");
        // the configuration file is mounted where --config looks
        let args = strings(at(m, &["command"]));
        let path = config_arg(&args);
        let volumes = strings(at(m, &["volumes"]));
        let mount = volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(path.as_str()))
            .unwrap_or_else(|| panic!("{name}: nothing is mounted at {path}: {volumes:?}"));
        let host = mount.split(':').next().unwrap();
        assert_eq!(host, "./compose/viewpulse.toml", "{name}");
        assert!(deploy().join(host).is_file());
        // the model volume, where the configuration looks
        assert!(
            volumes
                .iter()
                .any(|v| v.split(':').nth(1) == Some(config.model.to_str().unwrap())),
            "{name}: no volume at {}: {volumes:?}",
            config.model.display()
        );
        // the published port is the configuration's
        let ports = strings(at(m, &["ports"]));
        assert!(
            ports
                .iter()
                .all(|p| p.ends_with(&format!(":{}", http_port(&config)))),
            "{name}: {ports:?}"
        );
    }
    assert_eq!(names.len(), 3, "each member needs its own name: {names:?}");
}

/// `(partitions, configs)` of each topic the `topics` service creates.
fn created_topics(compose: &Value) -> BTreeMap<String, (u32, Vec<String>)> {
    let script = strings(at(compose, &["services", "topics", "command"])).join("\n");
    let mut topics = BTreeMap::new();
    for line in script.lines().filter(|l| l.contains("--create")) {
        assert!(line.contains("kafka-topics.sh"), "{line}");
        assert!(line.contains("--bootstrap-server kafka:9092"), "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| -> Vec<String> {
            words
                .windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].to_string())
                .collect()
        };
        let name = after("--topic").pop().expect("--topic");
        let partitions: u32 = after("--partitions")
            .pop()
            .expect("--partitions")
            .parse()
            .unwrap();
        topics.insert(name, (partitions, after("--config")));
    }
    topics
}

#[test]
fn compose_creates_the_topics_the_configuration_names() {
    let compose = yaml("compose.yaml");
    let topics = created_topics(&compose);
    let c = run_config(
        "deploy/compose/viewpulse.toml",
        &read("compose/viewpulse.toml"),
    );
    let created = |url: &str| {
        let t = topic(url);
        topics
            .get(&t)
            .unwrap_or_else(|| panic!("the topics service does not create {t}: {topics:?}"))
            .clone()
    };
    let (input, _) = created(&c.source);
    let (changelog, changelog_configs) = created(&c.cluster.changelog);
    let (coordinator, _) = created(&c.cluster.coordinator);
    created(c.sinks.kafka.as_deref().expect("sinks.kafka"));
    assert_eq!(input, 6);
    assert_eq!(
        changelog, input,
        "the changelog needs as many partitions as the input"
    );
    assert!(
        changelog_configs.contains(&"cleanup.policy=compact".to_string()),
        "{changelog_configs:?}"
    );
    assert_eq!(coordinator, 1, "the coordinator topic has one partition");
    // every member can own a partition
    assert!(input as usize >= compose_members(&compose).len());
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn k8s_manifests_have_the_expected_kinds() {
    for (file, kind, api) in [
        ("k8s/configmap.yaml", "ConfigMap", "v1"),
        ("k8s/statefulset.yaml", "StatefulSet", "apps/v1"),
        ("k8s/service.yaml", "Service", "v1"),
        ("k8s/pdb.yaml", "PodDisruptionBudget", "policy/v1"),
        ("k8s/secret.example.yaml", "Secret", "v1"),
    ] {
        let docs = yaml_docs(file);
        assert_eq!(docs.len(), 1, "deploy/{file}");
        assert_eq!(text(at(&docs[0], &["kind"])), kind, "deploy/{file}");
        assert_eq!(text(at(&docs[0], &["apiVersion"])), api, "deploy/{file}");
        assert!(!text(at(&docs[0], &["metadata", "name"])).is_empty());
    }
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let labels = labels.as_mapping().unwrap();
    let selector = selector.as_mapping().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Bytes of a Kubernetes quantity such as `256Mi`.
fn quantity(q: &str) -> u64 {
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

#[test]
fn statefulset_agrees_with_its_config_service_and_budget() {
    let sts = yaml("k8s/statefulset.yaml");
    let svc = yaml("k8s/service.yaml");
    let pdb = yaml("k8s/pdb.yaml");
    let cm = yaml("k8s/configmap.yaml");
    let secret = yaml("k8s/secret.example.yaml");
    let config = run_config(
        "deploy/k8s/configmap.yaml",
        &text(at(&cm, &["data", "viewpulse.toml"])),
    );
    let real = run_env_vars();

    let spec = at(&sts, &["spec"]);
    assert_eq!(at(spec, &["replicas"]).as_u64(), Some(3));
    assert_eq!(text(at(spec, &["podManagementPolicy"])), "Parallel");
    assert_eq!(
        text(at(spec, &["serviceName"])),
        text(at(&svc, &["metadata", "name"]))
    );
    let pod = at(spec, &["template"]);
    let labels = at(pod, &["metadata", "labels"]);
    assert!(selects(at(spec, &["selector", "matchLabels"]), labels));
    assert!(selects(at(&svc, &["spec", "selector"]), labels));
    assert!(selects(
        at(&pdb, &["spec", "selector", "matchLabels"]),
        labels
    ));
    assert_eq!(at(&pdb, &["spec", "maxUnavailable"]).as_u64(), Some(1));
    assert_eq!(text(at(&svc, &["spec", "clusterIP"])), "None");

    let pod_spec = at(pod, &["spec"]);
    let grace = at(pod_spec, &["terminationGracePeriodSeconds"])
        .as_u64()
        .unwrap();
    assert_eq!(grace, 60, "time to drain on SIGTERM");
    assert_eq!(
        at(pod_spec, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    let containers = at(pod_spec, &["containers"]).as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // the member's name is the pod's name; every variable is a real one
    let env = at(c, &["env"]).as_sequence().unwrap();
    for e in env {
        let name = text(at(e, &["name"]));
        assert!(real.contains(&name), "{name} is not a viewpulse variable");
    }
    let member = env
        .iter()
        .find(|e| text(at(e, &["name"])) == "VIEWPULSE_MEMBER")
        .expect("VIEWPULSE_MEMBER");
    assert_eq!(
        text(at(member, &["valueFrom", "fieldRef", "fieldPath"])),
        "metadata.name"
    );

    // the container port is http.listen's; the probes ask /livez (startup, liveness) and
    // /readyz (readiness) there
    let port = http_port(&config);
    let ports = at(c, &["ports"]).as_sequence().unwrap();
    let http = ports
        .iter()
        .find(|p| p.get("name").map(text).as_deref() == Some("http"))
        .expect("a port named http");
    assert_eq!(at(http, &["containerPort"]).as_u64(), Some(u64::from(port)));
    let port_of = |v: &Value| -> u64 {
        match v {
            Value::String(name) => ports
                .iter()
                .find(|p| p.get("name").map(text).as_deref() == Some(name.as_str()))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no port named {name}")),
            other => other.as_u64().unwrap(),
        }
    };
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = at(c, &[probe, "httpGet"]);
        assert_eq!(text(at(get, &["path"])), path, "{probe}");
        assert_eq!(port_of(at(get, &["port"])), u64::from(port), "{probe}");
    }
    let svc_port = &at(&svc, &["spec", "ports"]).as_sequence().unwrap()[0];
    assert_eq!(text(at(svc_port, &["name"])), "http");
    assert_eq!(port_of(at(svc_port, &["targetPort"])), u64::from(port));

    // locked down
    let sc = at(c, &["securityContext"]);
    assert_eq!(at(sc, &["readOnlyRootFilesystem"]).as_bool(), Some(true));
    assert_eq!(at(sc, &["allowPrivilegeEscalation"]).as_bool(), Some(false));
    assert!(strings(at(sc, &["capabilities", "drop"])).contains(&"ALL".to_string()));

    // memory requested and limited, the limit above the request
    let request = quantity(&text(at(c, &["resources", "requests", "memory"])));
    let limit = quantity(&text(at(c, &["resources", "limits", "memory"])));
    assert!(
        request >= 128 << 20 && limit >= request,
        "{request} {limit}"
    );

    // mounts: the ConfigMap's viewpulse.toml where --config looks, the model where the
    // configuration looks, the Secret where http.token's ${file:...} looks
    let volumes = at(pod_spec, &["volumes"]).as_sequence().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| text(at(v, &["name"])) == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mounts = at(c, &["volumeMounts"]).as_sequence().unwrap();
    let mount_of = |path: &Path| {
        mounts
            .iter()
            .filter(|m| path.starts_with(text(at(m, &["mountPath"]))))
            .max_by_key(|m| text(at(m, &["mountPath"])).len())
            .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()))
    };
    let config_path = PathBuf::from(config_arg(&strings(at(c, &["args"]))));
    let m = mount_of(&config_path);
    let cm_volume = volume(&text(at(m, &["name"])));
    assert_eq!(
        text(at(cm_volume, &["configMap", "name"])),
        text(at(&cm, &["metadata", "name"]))
    );
    let items = at(cm_volume, &["configMap", "items"])
        .as_sequence()
        .unwrap();
    let rel = config_path
        .strip_prefix(text(at(m, &["mountPath"])))
        .unwrap()
        .display()
        .to_string();
    assert!(
        items
            .iter()
            .any(|i| text(at(i, &["key"])) == "viewpulse.toml" && text(at(i, &["path"])) == rel),
        "{items:?}"
    );
    let model_mount = mount_of(&config.model);
    assert_eq!(at(model_mount, &["readOnly"]).as_bool(), Some(true));
    let model_volume = volume(&text(at(model_mount, &["name"])));
    assert_eq!(
        text(at(model_volume, &["persistentVolumeClaim", "claimName"])),
        "viewpulse-model"
    );
    let token_file = config
        .http
        .token
        .strip_prefix("${file:")
        .and_then(|t| t.strip_suffix('}'))
        .expect("http.token reads a file");
    let token_mount = mount_of(Path::new(token_file));
    let secret_volume = volume(&text(at(token_mount, &["name"])));
    assert_eq!(
        text(at(secret_volume, &["secret", "secretName"])),
        text(at(&secret, &["metadata", "name"]))
    );
    let key = Path::new(token_file)
        .strip_prefix(text(at(token_mount, &["mountPath"])))
        .unwrap()
        .display()
        .to_string();
    assert!(
        at(&secret, &["stringData"]).get(key.as_str()).is_some(),
        "the example Secret has no key {key}"
    );
}

// ---------------------------------------------------------------------------------------------
// viewpulse configurations

#[test]
fn every_toml_file_under_deploy_is_tested() {
    let tomls: Vec<String> = deploy_files()
        .into_iter()
        .filter(|f| f.ends_with(".toml"))
        .collect();
    assert_eq!(
        tomls,
        [
            "compose/viewpulse.toml",
            "systemd/viewpulse.toml",
            "viewpulse.example.toml"
        ],
        "a new configuration under deploy/ belongs in shipped_configs()"
    );
}

#[test]
fn shipped_configurations_load_in_cluster_mode() {
    for (what, toml_text) in shipped_configs() {
        let c = run_config(&what, &toml_text);
        assert!(c.clustered(), "{what}: cluster.changelog is not set");
        let source = KafkaUrl::parse(&c.source).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut topics = BTreeSet::from([source.topic.clone()]);
        for (key, url) in [
            ("cluster.changelog", &c.cluster.changelog),
            ("cluster.coordinator", &c.cluster.coordinator),
        ] {
            let u = KafkaUrl::parse(url).unwrap_or_else(|e| panic!("{what}: {key}: {e}"));
            assert_eq!(u.brokers, source.brokers, "{what}: {key} on other brokers");
            assert!(topics.insert(u.topic), "{what}: {key} reuses a topic");
        }
        // what validation requires in cluster mode, checked without a model folder
        assert!(
            c.session_timeout()
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                >= Duration::from_secs(1)
        );
        assert!(
            c.trigger_interval()
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .is_some(),
            "{what}: trigger.interval is required"
        );
        assert_eq!(c.start().unwrap(), StartAt::Earliest, "{what}");
        assert_eq!(c.state.dir, None, "{what}: state.dir");
        assert!(!c.until_end, "{what}: until_end");
        // one file for every member: the name comes from each process's environment
        assert!(c.cluster.member.is_empty(), "{what}: cluster.member");
        // an absolute model path (the services' working folders differ)
        assert!(c.model.is_absolute(), "{what}: model");
        // the endpoint listens, behind a token kept out of the file
        http_port(&c);
        assert!(
            c.http.token.starts_with("${env:") || c.http.token.starts_with("${file:"),
            "{what}: http.token should be a reference, not {:?}",
            c.http.token
        );
        // the snapshots go to a Kafka topic, not a file of whichever member coordinates
        assert!(c.sinks.kafka.is_some(), "{what}: sinks.kafka");
        assert!(c.sinks.snapshots.is_none(), "{what}: sinks.snapshots");
        // the rest of validation passes with a model folder in place (it only needs to exist)
        let model = tempfile::tempdir().unwrap();
        let with_model = RunConfig {
            model: model.path().to_path_buf(),
            ..c.clone()
        };
        with_model
            .validate()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// The binary accepts each configuration: it gets as far as the broker. The brokers and the
/// file paths are pointed at this machine (a closed port, a temporary folder), the rest is as
/// shipped. 69 = no broker; 74 = the Kafka snapshot sink found no broker (it is opened before
/// the source). 2 would mean the configuration was refused.
#[test]
fn shipped_configurations_are_accepted_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(
        model.join("households.csv"),
        "household_id,cluster,distance,rank\n1,0,0.5,1\n2,1,0.25,2\n3,0,0.125,3\n",
    )
    .unwrap();
    for (i, (what, toml_text)) in shipped_configs().into_iter().enumerate() {
        let file = dir.path().join(format!("config-{i}.toml"));
        std::fs::write(&file, &toml_text).unwrap();
        let closed = "kafka://127.0.0.1:1";
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_viewpulse"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VIEWPULSE_") {
                cmd.env_remove(k);
            }
        }
        let c = run_config(&what, &toml_text);
        if c.sinks.dead_letter.is_some() {
            cmd.env("VIEWPULSE_DEAD_LETTER", dir.path().join("dead-letters.tsv"));
        }
        let out = cmd
            .args(["run", "--config"])
            .arg(&file)
            .env("VIEWPULSE_MODEL", &model)
            .env("VIEWPULSE_SOURCE", format!("{closed}/{}", topic(&c.source)))
            .env("VIEWPULSE_CHANGELOG", format!("{closed}/changelog"))
            .env("VIEWPULSE_COORDINATOR", format!("{closed}/coordinator"))
            .env("VIEWPULSE_KAFKA_SINK", format!("{closed}/snapshots"))
            .env("VIEWPULSE_STARTUP_WAIT", "0s")
            .env("VIEWPULSE_CONNECT_TIMEOUT", "1s")
            .env("VIEWPULSE_HTTP_LISTEN", "127.0.0.1:0")
            .env("VIEWPULSE_HTTP_TOKEN", "t0k3n")
            .env("VIEWPULSE_MEMBER", "deploy-test")
            .env("VIEWPULSE_NO_STDOUT", "true")
            .output()
            .unwrap();
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(code, Some(69) | Some(74)),
            "{what}: exit {code:?}, expected 69 or 74 (no broker): {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The keys the unit may use, per section.
const UNIT_KEYS: [(&str, &[&str]); 3] = [
    (
        "Unit",
        &[
            "Description",
            "Documentation",
            "Wants",
            "Requires",
            "After",
            "Before",
            "StartLimitIntervalSec",
            "StartLimitBurst",
        ],
    ),
    (
        "Service",
        &[
            "Type",
            "User",
            "Group",
            "ExecStart",
            "Environment",
            "EnvironmentFile",
            "WorkingDirectory",
            "StateDirectory",
            "StateDirectoryMode",
            "UMask",
            "Restart",
            "RestartSec",
            "RestartPreventExitStatus",
            "SuccessExitStatus",
            "KillSignal",
            "KillMode",
            "TimeoutStopSec",
            "TimeoutStartSec",
            "LimitNOFILE",
            "NoNewPrivileges",
            "ProtectSystem",
            "ReadWritePaths",
            "ReadOnlyPaths",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectClock",
            "ProtectHostname",
            "ProtectProc",
            "RestrictAddressFamilies",
            "RestrictNamespaces",
            "RestrictRealtime",
            "RestrictSUIDSGID",
            "LockPersonality",
            "MemoryDenyWriteExecute",
            "SystemCallArchitectures",
            "SystemCallFilter",
            "SystemCallErrorNumber",
            "CapabilityBoundingSet",
            "AmbientCapabilities",
        ],
    ),
    ("Install", &["WantedBy", "Alias"]),
];

/// The unit's settings, `(section, key, value)` in order.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "line {}: continuation", n + 1);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {raw}", n + 1));
        assert!(!section.is_empty(), "line {}: outside a section", n + 1);
        let known = UNIT_KEYS
            .iter()
            .find(|(s, _)| *s == section)
            .unwrap_or_else(|| panic!("line {}: unknown section [{section}]", n + 1))
            .1;
        assert!(
            known.contains(&key),
            "line {}: {key}= is not a known [{section}] key",
            n + 1
        );
        out.push((section.clone(), key.to_string(), value.to_string()));
    }
    out
}

#[test]
fn systemd_unit_is_well_formed_and_hardened() {
    let settings = unit_settings(&read("systemd/viewpulse.service"));
    let values = |key: &str| -> Vec<String> {
        settings
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    let one = |key: &str| -> String {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}= should appear once: {v:?}");
        v[0].clone()
    };
    let sections: BTreeSet<&str> = settings.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(sections, BTreeSet::from(["Unit", "Service", "Install"]));
    for (key, expected) in [
        ("Type", "simple"),
        ("User", "viewpulse"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("StateDirectory", "viewpulse"),
        ("EnvironmentFile", "-/etc/viewpulse/env"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(one(key), expected, "{key}=");
    }
    assert!(values("SystemCallFilter").contains(&"@system-service".to_string()));
    // a bad configuration (exit 2) is not restarted in a loop
    assert!(
        one("RestartPreventExitStatus")
            .split_whitespace()
            .any(|c| c == "2"),
        "RestartPreventExitStatus= must name 2"
    );
    for key in [
        "RestartSec",
        "TimeoutStopSec",
        "StartLimitIntervalSec",
        "StartLimitBurst",
    ] {
        assert!(!one(key).is_empty(), "{key}=");
    }

    // ExecStart runs `viewpulse run --config X`, X being the configuration shipped beside it
    let exec: Vec<String> = one("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(
        exec[0].starts_with('/'),
        "ExecStart= needs an absolute path"
    );
    assert!(
        exec[0].ends_with("/viewpulse") && exec[1] == "run",
        "{exec:?}"
    );
    let config_path = PathBuf::from(config_arg(&exec));
    let shipped = deploy()
        .join("systemd")
        .join(config_path.file_name().unwrap());
    assert!(shipped.is_file(), "{} is not shipped", shipped.display());
    let c = run_config(
        "deploy/systemd/viewpulse.toml",
        &std::fs::read_to_string(&shipped).unwrap(),
    );

    // under ProtectSystem=strict the service writes only below its writable paths
    let mut writable: Vec<PathBuf> = values("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(PathBuf::from).collect::<Vec<_>>())
        .collect();
    writable.push(Path::new("/var/lib").join(one("StateDirectory")));
    let written = [c.sinks.snapshots.clone(), c.sinks.dead_letter.clone()];
    for file in written.iter().flatten() {
        assert!(
            writable.iter().any(|w| file.starts_with(w)),
            "{} is not writable under ProtectSystem=strict ({writable:?})",
            file.display()
        );
    }
    assert!(
        c.model
            .starts_with(Path::new("/var/lib").join(one("StateDirectory"))),
        "the model belongs in the state folder"
    );
}

// ---------------------------------------------------------------------------------------------
// local-cluster.sh

fn script() -> PathBuf {
    deploy().join("local-cluster.sh")
}

/// `deploy/local-cluster.sh ARGS` in a clean environment plus `env`.
fn local_cluster(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn local_cluster_script_parses_and_reports_an_empty_folder() {
    let meta = std::fs::metadata(script()).unwrap();
    assert_ne!(meta.permissions().mode() & 0o111, 0, "not executable");
    let body = read("local-cluster.sh");
    assert!(body.starts_with("#!/usr/bin/env bash\n"), "shebang");
    assert!(body.contains("\nset -euo pipefail\n"));
    let check = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");

    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let out = local_cluster(
        &["status"],
        &[("VIEWPULSE_CLUSTER_DIR", cluster.to_str().unwrap())],
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_eq!(text.trim(), "broker stopped", "{text}");
    assert!(!cluster.exists(), "status created {}", cluster.display());

    // a mistake is refused with the usage
    let out = local_cluster(
        &["start", "zero"],
        &[("VIEWPULSE_CLUSTER_DIR", cluster.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// A cluster folder with a stand-in `viewpulse` (it prints its arguments and the cluster
/// variables, and drains on SIGTERM); stopped on drop.
struct FakeCluster {
    dir: tempfile::TempDir,
}

impl FakeCluster {
    fn new() -> FakeCluster {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("viewpulse");
        std::fs::write(
            &bin,
            "#!/usr/bin/env bash\n\
             echo \"args: $*\"\n\
             echo \"source=$VIEWPULSE_SOURCE changelog=$VIEWPULSE_CHANGELOG \
             coordinator=$VIEWPULSE_COORDINATOR interval=${VIEWPULSE_TRIGGER_INTERVAL:-} \
             listen=${VIEWPULSE_HTTP_LISTEN:-}\"\n\
             trap 'echo drained; exit 0' TERM\n\
             while :; do sleep 0.1; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCluster { dir }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let dir = self.cluster_dir();
        let bin = self.dir.path().join("viewpulse");
        let mut env = vec![
            ("VIEWPULSE_CLUSTER_DIR", dir.to_str().unwrap()),
            ("VIEWPULSE_BIN", bin.to_str().unwrap()),
            ("BROKER", "127.0.0.1:1"),
            ("HTTP_PORT_BASE", "19898"),
            ("STOP_TIMEOUT", "10"),
        ];
        env.extend_from_slice(extra);
        local_cluster(args, &env)
    }

    fn status(&self) -> String {
        let out = self.run(&["status"], &[]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    }

    fn log(&self, i: u32) -> String {
        std::fs::read_to_string(self.cluster_dir().join(format!("member-{i}.log"))).unwrap()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let out = self.run(&["stop"], &[]);
        if !out.status.success() {
            // the script failed: end the stand-ins it started by their pid files
            for i in 1..=9 {
                let pidfile = self.cluster_dir().join(format!("member-{i}.pid"));
                if let Ok(pid) = std::fs::read_to_string(pidfile) {
                    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                }
            }
        }
    }
}

#[test]
fn local_cluster_script_starts_adds_kills_and_stops_members() {
    let c = FakeCluster::new();
    let out = c.run(
        &["start", "2"],
        &[("VIEWPULSE_ARGS", "--shards 2 --model /m")],
    );
    assert!(out.status.success(), "start: {out:?}");
    let status = c.status();
    assert!(
        status.contains("member-1 running pid ") && status.contains("member-2 running pid "),
        "{status}"
    );
    assert!(status.contains("broker external 127.0.0.1:1"), "{status}");
    let log = c.log(1);
    assert!(
        log.contains("args: run --member member-1 --shards 2 --model /m"),
        "{log}"
    );
    assert!(
        log.contains(
            "source=kafka://127.0.0.1:1/viewstream \
             changelog=kafka://127.0.0.1:1/viewstream-changelog \
             coordinator=kafka://127.0.0.1:1/viewstream-coordinator interval=5s"
        ),
        "{log}"
    );
    assert!(c.log(2).contains("listen=127.0.0.1:19899"), "{}", c.log(2));

    // a second start is refused and changes nothing
    let again = c.run(&["start", "2"], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already started"));
    assert_eq!(c.status(), status);

    // add: member 3, with a configuration file (so no interval default)
    let out = c.run(&["add"], &[("CONFIG", "/etc/viewpulse/cluster.toml")]);
    assert!(out.status.success(), "add: {out:?}");
    let log = c.log(3);
    assert!(
        log.contains("args: run --config /etc/viewpulse/cluster.toml --member member-3"),
        "{log}"
    );
    assert!(log.contains(" interval= "), "{log}");

    // kill 2 (SIGKILL): gone at once, without draining
    let out = c.run(&["kill", "2"], &[]);
    assert!(out.status.success(), "kill: {out:?}");
    assert!(c.status().contains("member-2 stopped"));
    assert!(!c.log(2).contains("drained"));
    let out = c.run(&["kill", "2"], &[]);
    assert!(!out.status.success(), "killing a stopped member");

    // kill 1 TERM: it drains
    let out = c.run(&["kill", "1", "TERM"], &[]);
    assert!(out.status.success(), "kill TERM: {out:?}");
    assert!(c.log(1).contains("drained"));

    // add numbers after the highest, even a stopped one
    let out = c.run(&["add"], &[]);
    assert!(out.status.success(), "add: {out:?}");
    assert!(c.status().contains("member-4 running pid "));

    // stop: every member drains
    let out = c.run(&["stop"], &[]);
    assert!(out.status.success(), "stop: {out:?}");
    let status = c.status();
    for i in 1..=4 {
        assert!(status.contains(&format!("member-{i} stopped")), "{status}");
    }
    assert!(!status.contains("running"), "{status}");
    assert!(c.log(3).contains("drained") && c.log(4).contains("drained"));
}

#[test]
fn local_cluster_script_reports_a_member_that_exits_at_once() {
    let c = FakeCluster::new();
    // a binary that refuses its configuration, as viewpulse does with exit code 2
    let bin = c.dir.path().join("viewpulse");
    std::fs::write(
        &bin,
        "#!/bin/sh\necho 'viewpulse: error: trigger.interval: is required' >&2\nexit 2\n",
    )
    .unwrap();
    let out = c.run(&["start", "1"], &[]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("member-1 exited at once") && stderr.contains("trigger.interval"),
        "{stderr}"
    );
    assert!(c.status().contains("member-1 stopped"));
}

// ---------------------------------------------------------------------------------------------
// Docker

#[test]
fn dockerfile_is_multi_stage_non_root_and_locked() {
    let text = read("docker/Dockerfile");
    // instructions, with continuation lines joined
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    let of = |op: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let froms = of("FROM");
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(froms[0].starts_with("rust:"), "{froms:?}");
    assert!(froms.last().unwrap().starts_with("debian:"), "{froms:?}");

    // the last USER (the one the container runs as) is not root
    let user = of("USER").pop().expect("a USER");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "USER {user}");
    // and it comes after the last FROM
    let last_from = instructions.iter().rposition(|(o, _)| o == "FROM").unwrap();
    let last_user = instructions.iter().rposition(|(o, _)| o == "USER").unwrap();
    assert!(last_user > last_from, "USER belongs to the runtime stage");

    assert!(
        of("RUN").iter().any(|r| r.contains("cargo build")
            && r.contains("--release")
            && r.contains("--locked")),
        "cargo build --release --locked"
    );
    assert_eq!(of("ENTRYPOINT"), [r#"["viewpulse"]"#]);
    assert!(of("EXPOSE").contains(&"9898".to_string()));

    // what the build copies exists in the repository and is not ignored
    let ignore = read("docker/Dockerfile.dockerignore");
    let kept: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "an allow-list");
    for copy in of("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: missing");
            assert!(kept.contains(src), "COPY {src}: left out of the context");
        }
    }
}

/// Every metric name in an expression (PromQL identifiers of viewpulse's and the process's).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("viewpulse_") || t.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// Every `expr` and templating `query` of a Grafana dashboard.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// The Grafana dashboard and the Prometheus alert rules in deploy/ reference only metrics
/// that `/metrics` exposes: every metric name in their expressions is a sample name of the
/// real exposition (the library's, with a Kafka source, a position, a checkpoint and a merge,
/// so that every family has its samples). And they hold what an operator looks for first.
#[test]
fn dashboards_and_alerts_reference_only_exposed_metrics() {
    let m = viewpulse::pipeline::Metrics::new(2);
    let k = m.watch_kafka();
    k.started(false);
    k.assigned(1);
    m.set_next(0, 5);
    m.set_high(0, 9);
    m.last_checkpoint.mark();
    m.merged(0.01);
    let text = viewpulse::sink::http::exposition(&m, &viewpulse::sink::http::Probes::default());
    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "viewpulse_build_info",
        "viewpulse_ready",
    ] {
        assert!(exposed.contains(family), "{family} is not exposed:\n{text}");
    }

    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/viewpulse-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    let titles: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for want in [
        "throughput",
        "lag",
        "snapshot age",
        "merge",
        "malformed",
        "memory",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no {want} panel: {titles:?}"
        );
    }

    let rules: Value = serde_yaml::from_str(&read("prometheus/alerts.yaml")).unwrap();
    let mut alerts = Vec::new();
    for g in at(&rules, &["groups"]).as_sequence().unwrap() {
        for r in at(g, &["rules"]).as_sequence().unwrap() {
            alerts.push(text_of(at(r, &["alert"])));
            exprs.push(text_of(at(r, &["expr"])));
        }
    }
    for want in [
        "LagGrowing",
        "SnapshotStale",
        "NotReady",
        "DeadLettersRising",
    ] {
        assert!(
            alerts.iter().any(|a| a.contains(want)),
            "no {want} alert: {alerts:?}"
        );
    }
    let mut referenced = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(
            !names.is_empty() || e.starts_with("label_values"),
            "an expression naming no metric: {e}"
        );
        for n in names {
            assert!(
                exposed.contains(&n),
                "{n} (in {e:?}) is not in the exposition:\n{text}"
            );
            referenced.insert(n);
        }
    }
    assert!(referenced.len() >= 10, "{referenced:?}");
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

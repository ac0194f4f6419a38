"""Offline checks of the deployment files in fixtures/deploy (Kubernetes, Compose, Dockerfile).

No cluster, Docker engine or network: every Kubernetes object is validated against the
official OpenAPI-derived JSON schemas (strict: unknown fields fail, so a misspelt
`readinesProbe` cannot slip through), then the objects are checked against each other the
way a cluster would wire them: selectors find pods, Service ports reach container ports,
every gateway edge runs through a Toxiproxy proxy whose upstream is a real Service, and
Prometheus scrapes targets that exist. The Compose file and the Dockerfile get the same
cross-checks in their own terms.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import typer.main
import yaml
from conftest import REPO

from aichaos.experiments import catalog
from aichaos.experiments.policy import Permissions
from aichaos.fixtures.llm_sim.profiles import profile_names
from aichaos.harness.cli import app as cli_app

DEPLOY = REPO / "fixtures" / "deploy"
K8S = DEPLOY / "kubernetes"
# The oldest Kubernetes release the manifests promise to work on.
K8S_VERSION = "1.30.0"
NAMESPACE = "aichaos"
VARIANTS = ["gpu", "sim"]
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
# Label selectors the Kubernetes experiments (chaostoolkit-kubernetes) act on, with the
# number of replicas each must find: killing one LLM pod must leave another serving.
CHAOS_SELECTORS = {
    "app=vllm": 2,
    "app=gateway": 1,
    "app=retriever": 1,
    "app=fallback": 1,
    "app=toxiproxy": 1,
}
# Every dependency the gateway must reach through a proxy, and the Service behind it.
SCRAPED_JOBS = {"vllm", "fallback", "gateway", "retriever", "toxiproxy"}
THIRD_PARTY_IMAGES = ["vllm/vllm-openai", "ghcr.io/shopify/toxiproxy", "prom/prometheus",
                      "locustio/locust"]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Loading


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomize_files(directory: Path) -> list[Path]:
    """The manifest files a kustomization directory renders, following `resources`."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        files.extend(kustomize_files(target) if target.is_dir() else [target])
    return files


def obj_id(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass
class Workload:
    """A Deployment and what a cluster derives from it: its pods' labels, spec, replicas."""

    obj: dict

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def labels(self) -> dict[str, str]:
        return self.obj["spec"]["template"]["metadata"]["labels"]

    @property
    def pod(self) -> dict:
        return self.obj["spec"]["template"]["spec"]

    @property
    def containers(self) -> list[dict]:
        return self.pod["containers"]

    @property
    def replicas(self) -> int:
        return self.obj["spec"].get("replicas", 1)

    def port_number(self, port: int | str) -> int | None:
        """A container port given by number or by name, if some container declares it."""
        for container in self.containers:
            for declared in container.get("ports", []):
                if port in (declared["containerPort"], declared.get("name")):
                    return declared["containerPort"]
        return None


class Stack:
    """Every object one variant (gpu or sim) deploys."""

    def __init__(self, variant: str):
        self.variant = variant
        self.objects = [doc for f in kustomize_files(K8S / variant) for doc in load_docs(f)]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert found, f"{self.variant}: no {kind} named {name!r}"
        return found[0]

    @property
    def workloads(self) -> list[Workload]:
        return [Workload(o) for o in self.of_kind("Deployment")]

    def workload(self, name: str) -> Workload:
        return Workload(self.get("Deployment", name))

    def selected(self, selector: dict[str, str]) -> list[Workload]:
        return [w for w in self.workloads if selector.items() <= w.labels.items()]

    def service_port(self, host: str, port: int) -> tuple[dict, list[Workload], int]:
        """Resolve `host:port` as a pod in the namespace would: Service, pods, container port."""
        service = self.get("Service", host.removesuffix(f".{NAMESPACE}.svc.cluster.local"))
        ports = [p for p in service["spec"]["ports"] if p["port"] == port]
        assert ports, f"{self.variant}: Service {host} has no port {port}"
        pods = self.selected(service["spec"]["selector"])
        assert pods, f"{self.variant}: Service {host} selects no pod"
        target = ports[0].get("targetPort", port)
        numbers = {w.port_number(target) for w in pods}
        assert len(numbers) == 1 and None not in numbers, (
            f"{self.variant}: Service {host} port {port} -> targetPort {target!r} is not a "
            f"container port of {[w.name for w in pods]}"
        )
        return service, pods, numbers.pop()


@pytest.fixture(scope="module", params=VARIANTS)
def stack(request) -> Stack:
    return Stack(request.param)


def option_values(args: list[str], option: str) -> list[str]:
    """Values of a repeatable `--option value` or `-option=value` in an argument list."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]
    values += [a.split("=", 1)[1] for a in args if a.startswith(option + "=")]
    return values


def one_option(args: list[str], option: str) -> str:
    values = option_values(args, option)
    assert len(values) == 1, f"expected one {option} in {args}"
    return values[0]


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def gateway_edges(args: list[str]) -> dict[str, list[str]]:
    """The gateway's dependency URLs by kind: llm (one per --llm name=url), fallback, retriever."""
    return {
        "llm": [v.split("=", 1)[1] for v in option_values(args, "--llm")],
        "fallback": option_values(args, "--fallback"),
        "retriever": option_values(args, "--retriever"),
    }


def configmap_json(stack: Stack, name: str, key: str):
    return json.loads(stack.get("ConfigMap", name)["data"][key])


# ---------------------------------------------------------------------------------------
# Kubernetes: each object on its own


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_a_valid_kubernetes_object(path):
    docs = load_docs(path)
    assert docs, f"{path}: no object"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{path.name}: {obj_id(doc)}: {exc.message} (at {where})")
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{obj_id(doc)}: namespace"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aichaos"


def test_kustomizations_list_every_manifest_and_only_existing_ones():
    for directory in (K8S / "base", *(K8S / v for v in VARIANTS)):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert kustomization["kind"] == "Kustomization"
        listed = kustomization["resources"]
        for entry in listed:
            assert (directory / entry).exists(), f"{directory.name}: {entry} does not exist"
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= set(listed), f"{directory.name}: not deployed: {files - set(listed)}"
    for variant in VARIANTS:
        resources = yaml.safe_load((K8S / variant / "kustomization.yaml").read_text())
        assert "../base" in resources["resources"]


def test_objects_are_unique_and_deployments_select_their_own_pods(stack):
    ids = Counter(obj_id(o) for o in stack.objects)
    assert not [i for i, n in ids.items() if n > 1], f"{stack.variant}: duplicated objects"
    assert stack.get("Namespace", NAMESPACE)
    for workload in stack.workloads:
        match = workload.obj["spec"]["selector"]["matchLabels"]
        assert match.items() <= workload.labels.items(), f"{workload.name}: selector"
        others = [w.name for w in stack.selected(match) if w.name != workload.name]
        assert not others, f"{workload.name}: its selector also takes the pods of {others}"
        names = [c["name"] for c in workload.containers]
        assert len(names) == len(set(names))


def test_services_select_pods_and_reach_container_ports(stack):
    for service in stack.of_kind("Service"):
        name = service["metadata"]["name"]
        assert service["spec"]["selector"], f"Service {name}: no selector"
        for port in service["spec"]["ports"]:
            stack.service_port(name, port["port"])  # asserts pods and a matching container port


def test_probes_and_references_resolve_inside_each_pod(stack):
    configmaps = {c["metadata"]["name"]: c["data"] for c in stack.of_kind("ConfigMap")}
    for w in stack.workloads:
        volumes = {v["name"]: v for v in w.pod.get("volumes", [])}
        account = w.pod.get("serviceAccountName")
        if account:
            stack.get("ServiceAccount", account)
            bound = {s["name"] for b in stack.of_kind("RoleBinding") for s in b["subjects"]}
            assert account in bound, f"{w.name}: {account} has no RoleBinding"
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{w.name}: volume {v['name']}"
        for c in w.containers:
            where = f"{w.name}/{c['name']}"
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in c and "httpGet" in c[kind]:
                    assert w.port_number(c[kind]["httpGet"]["port"]), f"{where}: {kind} port"
            env = {e["name"]: e for e in c.get("env", [])}
            for e in env.values():
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    key = ref["configMapKeyRef"]
                    assert key["key"] in configmaps.get(key["name"], {}), f"{where}: {e['name']}"
                if "secretKeyRef" in ref:  # no Secret is shipped: each must be optional
                    assert ref["secretKeyRef"].get("optional"), f"{where}: {e['name']}"
            words = [*c.get("command", []), *c.get("args", [])]
            # The port a process is told to listen on is the one its container declares.
            for flag in ("--port", "-port"):
                for port in option_values(words, flag):
                    assert w.port_number(int(port)), f"{where}: listens on undeclared {port}"
            for var in re.findall(r"\$\((\w+)\)", " ".join(words)):
                assert var in env, f"{where}: $({var}) is not in env"
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            # A file a container is told to read from a mounted ConfigMap must be a key of it.
            for word in words:
                path = word.split("=", 1)[-1]
                for mount, volume in mounts.items():
                    if "configMap" in volume and path.startswith(mount + "/"):
                        key = path.removeprefix(mount + "/")
                        assert key in configmaps[volume["configMap"]["name"]], f"{where}: {path}"


# ---------------------------------------------------------------------------------------
# Kubernetes: the LLM replicas in both variants


def llm_pods(stack: Stack) -> list[Workload]:
    pods = stack.selected({"app": "vllm"})
    assert pods, f"{stack.variant}: no pod labelled app=vllm"
    return pods


def assert_health_probes(w: Workload, container: dict) -> None:
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container.get(kind, {}).get("httpGet")
        assert probe, f"{w.name}: no HTTP {kind}"
        assert probe["path"] == "/health", f"{w.name}: {kind} path"
        assert w.port_number(probe["port"]) == 8000, f"{w.name}: {kind} port"


def test_vllm_replicas_request_a_gpu_and_probe_health():
    stack = Stack("gpu")
    for w in llm_pods(stack):
        assert w.replicas >= 2, f"{w.name}: one replica cannot survive a pod kill"
        (c,) = w.containers
        assert c["image"].startswith("vllm/vllm-openai:"), c["image"]
        resources = c["resources"]
        assert str(resources["requests"]["nvidia.com/gpu"]) == "1"
        # Extended resources cannot be overcommitted: a limit, if set, must equal the request.
        assert str(resources["limits"].get("nvidia.com/gpu", 1)) == "1"
        assert_health_probes(w, c)
        assert one_option(c["args"], "--model") == "$(MODEL)"
        assert w.port_number(int(one_option(c["args"], "--port"))) == 8000


def test_simulated_replicas_stand_in_for_vllm_without_gpus():
    stack = Stack("sim")
    for w in llm_pods(stack):
        assert w.replicas >= 2
        (c,) = w.containers
        assert c["image"].startswith("aichaos:"), c["image"]
        assert "nvidia.com/gpu" not in json.dumps(c.get("resources", {}))
        assert c["args"][:2] == ["sim", "serve"]
        assert one_option(c["args"], "--model") == "$(MODEL)"
        assert_health_probes(w, c)


def test_both_variants_deploy_the_llm_replicas_under_one_name_and_selector():
    gpu, sim = Stack("gpu").workload("vllm"), Stack("sim").workload("vllm")
    # Same name and selector: switching variants updates the Deployment in place.
    assert gpu.obj["spec"]["selector"] == sim.obj["spec"]["selector"]
    assert [c["name"] for c in gpu.containers] == [c["name"] for c in sim.containers]
    assert gpu.port_number("http") == sim.port_number("http") == 8000


@pytest.mark.parametrize("selector", CHAOS_SELECTORS)
def test_labels_the_chaos_experiments_select_exist(stack, selector):
    key, value = selector.split("=")
    pods = stack.selected({key: value})
    assert pods, f"{stack.variant}: no pod matches {selector}"
    assert sum(w.replicas for w in pods) >= CHAOS_SELECTORS[selector]
    assert all(w.obj["metadata"]["namespace"] == NAMESPACE for w in pods)


# ---------------------------------------------------------------------------------------
# Kubernetes: Toxiproxy, the gateway's edges, Prometheus, Locust


def test_toxiproxy_proxies_listen_on_its_ports_and_reach_existing_services(stack):
    proxies = configmap_json(stack, "toxiproxy-config", "toxiproxy.json")
    toxiproxy = stack.workload("toxiproxy")
    (container,) = toxiproxy.containers
    assert container["image"].startswith("ghcr.io/shopify/toxiproxy:")
    assert one_option(container["args"], "-config") == "/etc/toxiproxy/toxiproxy.json"
    assert len({p["name"] for p in proxies}) == len(proxies)
    assert len({p["listen"] for p in proxies}) == len(proxies)
    service_ports = {p["port"] for p in stack.get("Service", "toxiproxy")["spec"]["ports"]}
    for proxy in proxies:
        _, listen = host_port(proxy["listen"])
        assert toxiproxy.port_number(listen) == listen, f"proxy {proxy['name']}: container port"
        assert listen in service_ports, f"proxy {proxy['name']}: not on the toxiproxy Service"
        stack.service_port(*host_port(proxy["upstream"]))


def test_gateway_reaches_each_dependency_through_its_own_proxy(stack):
    proxies = {
        host_port(p["listen"])[1]: p
        for p in configmap_json(stack, "toxiproxy-config", "toxiproxy.json")
    }
    expected_upstream = {"llm": {"app": "vllm"}, "fallback": {"app": "fallback"},
                         "retriever": {"app": "retriever"}}  # fmt: skip
    (gateway,) = stack.workload("gateway").containers
    edges = gateway_edges(gateway["args"])
    assert all(edges.values()), f"gateway args miss a dependency: {edges}"
    used = []
    for kind, urls in edges.items():
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname == "toxiproxy", f"gateway --{kind} {url} bypasses Toxiproxy"
            _, _, listen = stack.service_port(parts.hostname, parts.port)
            proxy = proxies[listen]
            _, upstream_pods, _ = stack.service_port(*host_port(proxy["upstream"]))
            wanted = expected_upstream[kind].items()
            reached = [w.name for w in upstream_pods if not wanted <= w.labels.items()]
            assert not reached, f"--{kind} {url} reaches {reached} via {proxy['upstream']}"
            used.append(proxy["name"])
    assert sorted(used) == sorted(p["name"] for p in proxies.values()), "an unused proxy"


def test_prometheus_scrapes_targets_that_exist(stack):
    config = yaml.safe_load(stack.get("ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= SCRAPED_JOBS, f"not scraped: {SCRAPED_JOBS - set(jobs)}"
    for name, job in jobs.items():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                stack.service_port(*host_port(target))
        for sd in job.get("kubernetes_sd_configs", []):
            assert sd["role"] == "pod" and sd["namespaces"]["names"] == [NAMESPACE]
            keep = {
                r["source_labels"][0]: r["regex"]
                for r in job.get("relabel_configs", [])
                if r.get("action") == "keep"
            }
            labels = {
                k.removeprefix("__meta_kubernetes_pod_label_"): v
                for k, v in keep.items()
                if k.startswith("__meta_kubernetes_pod_label_")
            }
            pods = stack.selected(labels)
            assert labels and pods, f"job {name}: keeps no pod"
            port_name = keep["__meta_kubernetes_pod_container_port_name"]
            assert all(w.port_number(port_name) for w in pods), f"job {name}: port {port_name}"
    role = stack.get("Role", "prometheus")
    assert any("pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"])
               for r in role["rules"])  # fmt: skip
    (container,) = stack.workload("prometheus").containers
    assert container["image"].startswith("prom/prometheus:")


def test_locust_workers_find_their_master_and_the_master_loads_the_gateway(stack):
    (master,) = stack.workload("locust-master").containers
    (worker,) = stack.workload("locust-worker").containers
    assert "--master" in master["args"] and "--worker" in worker["args"]
    service = stack.get("Service", "locust-master")
    assert {p["port"] for p in service["spec"]["ports"]} >= {5557, 8089}
    for port in (5557, 8089):
        _, pods, _ = stack.service_port("locust-master", port)
        assert [w.name for w in pods] == ["locust-master"]
    host = one_option(worker["args"], "--master-host")
    _, pods, _ = stack.service_port(host, int(one_option(worker["args"], "--master-port")))
    assert [w.name for w in pods] == ["locust-master"]
    target = urlsplit(one_option(master["args"], "--host"))
    _, pods, _ = stack.service_port(target.hostname, target.port)
    assert [w.name for w in pods] == ["gateway"]
    for c in (master, worker):
        assert c["image"].startswith("locustio/locust:")
    assert stack.workload("locust-worker").replicas >= 1


def test_the_locustfile_configmap_is_the_shipped_locustfile():
    shipped = (DEPLOY / "locustfile.py").read_text()
    compile(shipped, "locustfile.py", "exec")
    for variant in VARIANTS:
        assert Stack(variant).get("ConfigMap", "locustfile")["data"]["locustfile.py"] == shipped


# ---------------------------------------------------------------------------------------
# Compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dotenv() -> dict[str, str]:
    lines = (DEPLOY / ".env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return dict(pairs)


def enabled(compose: dict, profile: str) -> dict[str, dict]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if not svc.get("profiles") or profile in svc["profiles"]
    }


def hostnames(services: dict[str, dict]) -> dict[str, str]:
    """Network name -> service, for service names and their network aliases."""
    names = {name: name for name in services}
    for name, svc in services.items():
        for net in (svc.get("networks") or {}).values():
            for alias in (net or {}).get("aliases", []):
                assert alias not in names, f"{alias} is both {names[alias]} and {name}"
                names[alias] = name
    return names


def listening(svc: dict) -> set[int]:
    ports = {int(p) for p in svc.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])}
    return ports


def words(svc: dict) -> list[str]:
    return [*(svc.get("entrypoint") or []), *(svc.get("command") or [])]


def compose_resolve(services: dict[str, dict], address: str) -> str:
    host, port = host_port(address)
    names = hostnames(services)
    assert host in names, f"{address}: no service or alias {host}"
    assert port in listening(services[names[host]]), f"{address}: {names[host]} has no {port}"
    return names[host]


def test_compose_depends_on_existing_services(compose):
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):  # the short form: names only
            deps = {dep: {} for dep in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            # A dependency that only some profile enables must be optional, or the other
            # profile's `up` fails.
            if services[dep].get("profiles") and not svc.get("profiles"):
                assert spec.get("required") is False, f"{name} requires profiled {dep}"


def test_compose_profiles_run_the_simulator_unless_gpu_is_chosen(compose):
    assert dotenv()["COMPOSE_PROFILES"] == "sim"
    for profile in ("sim", "gpu"):
        services = enabled(compose, profile)
        names = hostnames(services)
        for replica in ("llm-1", "llm-2"):
            assert replica in names, f"profile {profile}: nothing answers as {replica}"
            assert 8000 in listening(services[names[replica]])
    sim = [n for n, s in compose["services"].items() if "sim" in s.get("profiles", [])]
    gpu = [n for n, s in compose["services"].items() if "gpu" in s.get("profiles", [])]
    assert sim and gpu
    assert all(compose["services"][n]["command"][:2] == ["sim", "serve"] for n in sim)
    devices = []
    for name in gpu:
        svc = compose["services"][name]
        assert svc["image"].startswith("vllm/vllm-openai:")
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        devices += device["device_ids"]
        assert "--model" in svc["command"]
    assert len(devices) == len(set(devices)), "two vLLM replicas on one GPU"


def test_compose_ports_agree(compose):
    published = []
    for name, svc in compose["services"].items():
        args = words(svc)
        for flag in ("--port", "-port"):
            for port in option_values(args, flag):
                assert int(port) in listening(svc), f"{name} listens on {port}, not exposed"
        for check in svc.get("healthcheck", {}).get("test", [])[1:]:
            for port in re.findall(r"127\.0\.0\.1:(\d+)", check):
                assert int(port) in listening(svc), f"{name}: healthcheck on {port}"
        published += [str(p).split(":")[0] for p in svc.get("ports", [])]
    assert len(published) == len(set(published)), f"a host port twice: {published}"


def test_compose_gateway_edges_run_through_toxiproxy(compose):
    proxies = json.loads((DEPLOY / "toxiproxy.json").read_text())
    by_listen = {host_port(p["listen"])[1]: p for p in proxies}
    toxiproxy = compose["services"]["toxiproxy"]
    assert toxiproxy["image"].startswith("ghcr.io/shopify/toxiproxy:")
    config = one_option(words(toxiproxy), "-config")
    assert f"./toxiproxy.json:{config}:ro" in toxiproxy["volumes"]
    for profile in ("sim", "gpu"):
        services = enabled(compose, profile)
        for proxy in proxies:
            assert host_port(proxy["listen"])[1] in listening(toxiproxy)
            compose_resolve(services, proxy["upstream"])
    edges = gateway_edges(words(compose["services"]["gateway"]))
    assert len(edges["llm"]) == 2 and edges["fallback"] and edges["retriever"]
    expected = {"llm": ("llm-1", "llm-2"), "fallback": ("fallback",),
                "retriever": ("retriever",)}  # fmt: skip
    used = []
    for kind, urls in edges.items():
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname == "toxiproxy", f"gateway --{kind} {url} bypasses Toxiproxy"
            proxy = by_listen[parts.port]
            assert host_port(proxy["upstream"])[0] in expected[kind], f"--{kind} {url}"
            used.append(proxy["name"])
    assert sorted(used) == sorted(p["name"] for p in proxies)


def test_compose_prometheus_scrapes_targets_that_exist(compose):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= SCRAPED_JOBS
    for profile in ("sim", "gpu"):
        services = enabled(compose, profile)
        for job in jobs.values():
            for static in job["static_configs"]:
                for target in static["targets"]:
                    compose_resolve(services, target)
    prometheus = compose["services"]["prometheus"]
    path = one_option(words(prometheus), "--config.file")
    assert f"./prometheus.yml:{path}:ro" in prometheus["volumes"]


def test_compose_locust_workers_find_their_master(compose):
    services = enabled(compose, "sim")
    master, worker = words(services["locust-master"]), words(services["locust-worker"])
    assert "--master" in master and "--worker" in worker
    host = one_option(worker, "--master-host")
    assert compose_resolve(services, f"{host}:{one_option(worker, '--master-port')}") == (
        "locust-master"
    )
    target = urlsplit(one_option(master, "--host"))
    assert compose_resolve(services, f"{target.hostname}:{target.port}") == "gateway"


def test_compose_files_and_build_context_exist(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert context == REPO
            assert (context / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_the_model_defaults_agree_everywhere(compose):
    model = dotenv()["MODEL"]
    for variant in VARIANTS:
        assert Stack(variant).get("ConfigMap", "llm-model")["data"]["MODEL"] == model
    assert f"${{MODEL:-{model}}}" in json.dumps(compose)
    assert f'"MODEL", "{model}"' in (DEPLOY / "locustfile.py").read_text()


# ---------------------------------------------------------------------------------------
# Images: the Dockerfile and the images every file names


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip()
    ]


def test_dockerfile_installs_aichaos_and_runs_it():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    entrypoints = [json.loads(arg) for op, arg in instructions if op == "ENTRYPOINT"]
    assert entrypoints[-1] == ["aichaos"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "aichaos" in scripts
    install = re.compile(r"pip install '?\.(\[k8s\])?'?")  # the k8s extra: the nightly job
    assert any(op == "RUN" and install.search(arg) for op, arg in instructions)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    # setup.py maps these folders onto subpackages: each must be in the build context.
    tree = ast.parse((REPO / "setup.py").read_text())
    folders = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS"
    )
    copied = {src.rstrip("/") for op, arg in instructions if op == "COPY"
              for src in arg.split()[:-1]}  # fmt: skip
    needed = {*folders, "src", "pyproject.toml", "setup.py", "README.md"}
    assert needed <= copied, f"not copied into the image: {needed - copied}"


def all_containers(compose: dict) -> list[tuple[str, str, list[str]]]:
    """(where, image, command words after the image's entrypoint) for every container."""
    found = [(f"compose {name}", svc["image"], words(svc))
             for name, svc in compose["services"].items()]  # fmt: skip
    for variant in VARIANTS:
        for w in Stack(variant).workloads:
            for c in w.containers:
                words_ = [*c.get("command", []), *c.get("args", [])]
                found.append((f"{variant} {w.name}", c["image"], words_))
    return found


def test_images_are_pinned_and_the_same_everywhere(compose):
    tags: dict[str, set[str]] = {}
    for where, image, _ in all_containers(compose):
        repo, _, tag = image.rpartition(":")
        if repo == "aichaos":
            continue  # built locally from the Dockerfile
        assert repo in THIRD_PARTY_IMAGES, f"{where}: unexpected image {image}"
        assert tag and tag != "latest", f"{where}: {image} is not pinned"
        tags.setdefault(repo, set()).add(tag)
    assert set(tags) == set(THIRD_PARTY_IMAGES)
    assert all(len(t) == 1 for t in tags.values()), f"one image, several tags: {tags}"


def test_simulator_invocations_use_options_the_cli_has(compose):
    serve = typer.main.get_command(cli_app).commands["sim"].commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    seen = 0
    for where, image, args in all_containers(compose):
        if not image.startswith("aichaos:") or args[:2] != ["sim", "serve"]:
            continue
        seen += 1
        unknown = [a for a in args if a.startswith("--") and a not in options]
        assert not unknown, f"{where}: aichaos sim serve has no {unknown}"
        assert one_option(args, "--profile") in profile_names(), where
        assert one_option(args, "--host") == "0.0.0.0", f"{where}: unreachable from other pods"
    assert seen >= 5  # compose llm-1, llm-2, fallback; k8s fallback (x2), sim replicas


def test_simulator_fault_apis_are_never_published_or_proxied(compose):
    """Each simulator's admin port is named (to be reached with exec or port-forward) and
    bound to loopback in its container: no port, Service or proxy leads to it."""
    admin_ports: set[int] = set()
    for where, image, args in all_containers(compose):
        if image.startswith("aichaos:") and args[:2] == ["sim", "serve"]:
            admin = one_option(args, "--admin-port")
            assert admin != one_option(args, "--port"), where
            admin_ports.add(int(admin))
    published: set[int] = set()
    for svc in compose["services"].values():
        for entry in [*svc.get("expose", []), *svc.get("ports", [])]:
            published.add(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    upstreams = json.loads((DEPLOY / "toxiproxy.json").read_text())
    for variant in VARIANTS:
        stack = Stack(variant)
        for w in stack.workloads:
            published |= {p["containerPort"] for c in w.containers for p in c.get("ports", [])}
        for service in stack.of_kind("Service"):
            for port in service["spec"]["ports"]:
                numbers = (port["port"], port.get("targetPort"))
                published |= {v for v in numbers if isinstance(v, int)}
        upstreams += configmap_json(stack, "toxiproxy-config", "toxiproxy.json")
    published |= {host_port(p["upstream"])[1] for p in upstreams}
    assert admin_ports and not admin_ports & published


def test_the_nightly_cronjob_runs_a_game_day_the_cli_accepts():
    docs = load_docs(K8S / "nightly" / "cronjob.yaml")
    job = next(d for d in docs if d["kind"] == "CronJob")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["aichaos"] and container["args"][0] == "run"
    run = typer.main.get_command(cli_app).commands["run"]
    options = {opt for param in run.params for opt in param.opts}
    flags = [a for a in container["args"][1:] if a.startswith("--")]
    assert flags and set(flags) <= options, set(flags) - options
    args = container["args"]
    experiment = args[args.index("--experiment") + 1]
    assert (REPO / "experiments" / "library" / f"{experiment}.json").exists()
    named = {flag: [args[i + 1] for i, a in enumerate(args) if a == flag] for flag in flags}
    allowed = Permissions(
        targets=tuple(named.get("--allow", [])),
        extensions=tuple(named.get("--allow-extension", [])),
    )
    catalog.load_experiment(experiment, allowed)  # the blast-radius policy lets it run
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] in roles
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]} <= claims

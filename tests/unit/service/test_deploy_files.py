"""Every file under deploy/ (except deploy/configs, tested with the configs) parses and hangs
together: orchestrator configs validate, compose files mount the config the command reads,
Kubernetes objects reference each other by the right names, the Ray cluster config matches
Ray's own schema. Docker, Kubernetes and a cloud account are not needed (nor used) here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from tts_orchestrator.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
SETTINGS_KEYS = set(Settings.model_fields)


@pytest.fixture(autouse=True)
def _no_tts_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_settings` layers TTS_* variables over the file; test the files alone."""
    import os

    for key in list(os.environ):
        if key.startswith("TTS_"):
            monkeypatch.delenv(key)


def _yaml_files() -> list[Path]:
    return sorted(
        p for p in DEPLOY.rglob("*.yaml") if p.is_file() and (DEPLOY / "configs") not in p.parents
    )


def _kind(docs: list[Any]) -> str:
    first = docs[0] if docs else None
    if not isinstance(first, dict):
        return "unknown"
    if "services" in first:
        return "compose"
    if all(isinstance(d, dict) and {"apiVersion", "kind"} <= d.keys() for d in docs):
        return "k8s"
    if {"cluster_name", "provider"} <= first.keys():
        return "ray-cluster"
    if first.keys() <= SETTINGS_KEYS:
        return "orchestrator"
    return "unknown"


def _load(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


FILES = {p.relative_to(DEPLOY).as_posix(): p for p in _yaml_files()}
KINDS = {name: _kind(_load(p)) for name, p in FILES.items()}


def _of_kind(kind: str) -> list[Any]:
    return [pytest.param(FILES[n], id=n) for n, k in KINDS.items() if k == kind]


def _settings_from_text(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path)


# -- inventory ---------------------------------------------------------------------------------
def test_every_deploy_yaml_is_a_known_kind() -> None:
    unknown = [n for n, k in KINDS.items() if k == "unknown"]
    assert not unknown, f"unclassified files under deploy/: {unknown}"
    # the deliverables named in deploy/README.md
    for name in (
        "compose/docker-compose.yaml",
        "compose/config.yaml",
        "compose/ascend/docker-compose.yaml",
        "ray/cluster.yaml",
        "ray/config.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/api.yaml",
        "kuberay/ascend/vllm-ascend.yaml",
    ):
        assert name in FILES, name


def test_readme_names_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    others = [p for p in DEPLOY.rglob("*") if p.is_file() and (DEPLOY / "configs") not in p.parents]
    missing = [
        p.relative_to(DEPLOY).as_posix()
        for p in others
        if p.name != "README.md" and p.relative_to(DEPLOY).as_posix() not in readme
    ]
    assert not missing, f"deploy/README.md does not mention {missing}"


# -- orchestrator configs ----------------------------------------------------------------------
@pytest.mark.parametrize("path", _of_kind("orchestrator"))
def test_orchestrator_config_validates(path: Path) -> None:
    settings = load_settings(path)
    assert settings.pools, "a deployment config serves at least one pool"
    assert settings.redis.url is not None, "a multi-service deployment shares one Redis"


def test_ray_config_launches_gpu_replicas_on_the_cluster() -> None:
    settings = load_settings(DEPLOY / "ray" / "config.yaml")
    assert settings.ray.address == "auto"
    for pool in settings.pools:
        assert pool.engine == "vllm", pool.name
        assert pool.launch is not None, pool.name
        assert pool.launch.num_gpus == 1, pool.name
        assert pool.launch.bind_host == "0.0.0.0", pool.name


# -- compose -----------------------------------------------------------------------------------
def _command_config_path(command: list[str] | str) -> str:
    args = command.split() if isinstance(command, str) else list(command)
    for flag in ("--config", "-c"):
        if flag in args:
            return args[args.index(flag) + 1]
    raise AssertionError(f"no --config in {command!r}")


@pytest.mark.parametrize("path", _of_kind("compose"))
def test_compose_stack_hangs_together(path: Path) -> None:
    (compose,) = _load(path)
    services: dict[str, Any] = compose["services"]
    assert {"api", "redis"} <= services.keys()
    workers = [n for n in services if n.startswith("vllm")]
    assert len(workers) == 1, "one vLLM worker"
    for name, svc in services.items():
        assert svc.get("image"), f"{name} has an image"

    api = services["api"]
    dockerfile = (path.parent / api["build"]["context"] / api["build"]["dockerfile"]).resolve()
    assert dockerfile.is_file(), dockerfile
    assert 'ENTRYPOINT ["tts-orchestrator"]' in dockerfile.read_text()
    assert any(str(p).startswith("127.0.0.1:") for p in api["ports"]), "published on loopback"
    assert not services["redis"].get("ports"), "Redis stays on the compose network"

    config_path = _command_config_path(api["command"])
    mounts = dict(reversed(v.split(":")[:2]) for v in api["volumes"])
    assert config_path in mounts, f"{config_path} is not mounted: {api['volumes']}"
    host_file = path.parent / mounts[config_path]
    settings = load_settings(host_file)

    assert settings.server.host == "0.0.0.0"
    assert str(settings.server.port) in str(api["ports"][0]).split(":")[-1]
    redis_host = re.match(r"redis://([^:/]+)", settings.redis.url or "")
    assert redis_host
    assert redis_host.group(1) == "redis"
    worker = services[workers[0]]
    served = worker["command"][worker["command"].index("--served-model-name") + 1]
    port = worker["command"][worker["command"].index("--port") + 1]
    (pool,) = settings.pools
    assert pool.urls == [f"http://{workers[0]}:{port}"]
    assert pool.model == served, "the pool's model is the worker's served name"


def test_compose_worker_reserves_a_gpu() -> None:
    (compose,) = _load(DEPLOY / "compose" / "docker-compose.yaml")
    devices = compose["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_ascend_compose_worker_gets_npu_devices_and_matching_speculation() -> None:
    (compose,) = _load(DEPLOY / "compose" / "ascend" / "docker-compose.yaml")
    worker = compose["services"]["vllm-ascend"]
    assert "/dev/davinci_manager" in worker["devices"]
    spec = json.loads(worker["command"][worker["command"].index("--speculative-config") + 1])
    (pool,) = load_settings(DEPLOY / "compose" / "ascend" / "config.yaml").pools
    assert spec["method"] == pool.speculative.method
    assert spec["num_speculative_tokens"] == pool.speculative.num_speculative_tokens


# -- Kubernetes / KubeRay ----------------------------------------------------------------------
def _k8s_objects() -> dict[str, list[dict[str, Any]]]:
    """Objects per manifest directory (the unit `kubectl apply -f DIR` works on)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, kind in KINDS.items():
        if kind == "k8s":
            out.setdefault(FILES[name].parent.name, []).extend(_load(FILES[name]))
    return out


K8S = _k8s_objects()


def _workloads(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for o in objs:
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield o, o["spec"]["template"]
        elif o["kind"] == "RayCluster":
            yield o, o["spec"]["headGroupSpec"]["template"]
            for group in o["spec"]["workerGroupSpecs"]:
                yield o, group["template"]


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind} {name}")


@pytest.mark.parametrize("path", _of_kind("k8s"))
def test_k8s_objects_are_complete(path: Path) -> None:
    for obj in _load(path):
        assert obj["metadata"]["name"], obj["kind"]
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")
    for obj, template in _workloads(_load(path)):
        for c in template["spec"]["containers"]:
            assert c.get("image"), f"{obj['metadata']['name']}/{c['name']} has an image"


@pytest.mark.parametrize("directory", [pytest.param(d, id=d) for d in ("kuberay", "ascend")])
def test_services_select_a_workload(directory: str) -> None:
    objs = K8S[directory] + (K8S["kuberay"] if directory == "ascend" else [])
    labels = [t.get("metadata", {}).get("labels", {}) for _, t in _workloads(objs)]
    for svc in (o for o in K8S[directory] if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= lab.items() for lab in labels), svc["metadata"]["name"]


@pytest.mark.parametrize(
    ("directory", "deployment"),
    [
        pytest.param("kuberay", "tts-api", id="kuberay-gpu"),
        pytest.param("ascend", "tts-api-ascend", id="kuberay-ascend"),
    ],
)
def test_api_deployment_mounts_the_config_it_serves(
    directory: str, deployment: str, tmp_path: Path
) -> None:
    objs = K8S[directory]
    api = _find(objs, "Deployment", deployment)
    assert api["spec"]["replicas"] >= 2, "several API replicas behind one Service"
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = " ".join(container.get("command", []) + container.get("args", []))
    config_path = _command_config_path(command)
    mount = next(
        m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = _find(objs, "ConfigMap", volume["configMap"]["name"])
    key = config_path.removeprefix(mount["mountPath"] + "/")
    settings = _settings_from_text(cm["data"][key], tmp_path)
    assert settings.server.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.server.port
    redis_host = re.match(r"redis://([^:/]+)", settings.redis.url or "")
    assert redis_host
    _find(K8S["kuberay"], "Service", redis_host.group(1))


def test_kuberay_api_pods_join_the_raycluster(tmp_path: Path) -> None:
    objs = K8S["kuberay"]
    cluster = _find(objs, "RayCluster", "tts-ray")
    api = _find(objs, "Deployment", "tts-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["args"])
    assert f"--address={cluster['metadata']['name']}-head-svc:6379" in script
    assert "--num-cpus=0" in script
    assert (
        container["image"]
        == cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    ), "API pods run the cluster's image (same Python and Ray)"
    settings = _settings_from_text(
        _find(objs, "ConfigMap", "tts-orchestrator-config")["data"]["config.yaml"], tmp_path
    )
    assert settings.ray.address == "auto"
    gpu_replicas = sum(p.launch.replicas for p in settings.pools if p.launch and p.launch.num_gpus)
    gpu_group = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    limits = gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert gpu_group["minReplicas"] >= gpu_replicas, "one GPU node per launched vLLM replica"
    models = gpu_group["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    _find(objs, "PersistentVolumeClaim", models)
    for pool in settings.pools:
        assert pool.launch is not None
        assert pool.launch.model_path.startswith("/models/")


def test_ascend_pool_urls_name_statefulset_pods(tmp_path: Path) -> None:
    objs = K8S["ascend"]
    sts = _find(objs, "StatefulSet", "vllm-ascend")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["huawei.com/Ascend910"] == "1"
    settings = _settings_from_text(
        _find(objs, "ConfigMap", "tts-orchestrator-ascend-config")["data"]["config.yaml"],
        tmp_path,
    )
    (pool,) = settings.pools
    service, port = sts["spec"]["serviceName"], container["ports"][0]["containerPort"]
    expected = [f"http://vllm-ascend-{i}.{service}:{port}" for i in range(sts["spec"]["replicas"])]
    assert pool.urls == expected
    assert _find(objs, "Service", service)["spec"]["clusterIP"] == "None"
    args = container["args"]
    assert args[args.index("--served-model-name") + 1] == pool.model
    spec = json.loads(args[args.index("--speculative-config") + 1])
    assert (spec["method"], spec["num_speculative_tokens"]) == (
        pool.speculative.method,
        pool.speculative.num_speculative_tokens,
    )


# -- Ray cluster launcher ----------------------------------------------------------------------
def test_ray_cluster_config_matches_rays_schema() -> None:
    (cluster,) = _load(DEPLOY / "ray" / "cluster.yaml")
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    gpu_types = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types, "a GPU worker node type"
    settings = load_settings(DEPLOY / "ray" / "config.yaml")
    replicas = sum(p.launch.replicas for p in settings.pools if p.launch)
    assert sum(t["min_workers"] for t in gpu_types) >= replicas
    mounted = cluster["file_mounts"]["/etc/tts-orchestrator/config.yaml"]
    assert (REPO / mounted).resolve() == (DEPLOY / "ray" / "config.yaml").resolve()
    redis_port = (settings.redis.url or "").rsplit(":", 1)[1].split("/")[0]
    assert any(f"--port {redis_port}" in c for c in cluster["head_start_ray_commands"])
    assert any("--port=6379" in c for c in cluster["head_start_ray_commands"]), "Ray's GCS"
    assert redis_port != "6379"

"""clusters/: the Ray cluster-launcher config, the KubeRay manifest, the Dockerfile and the README agree with each
other, with Ray's own config schema, and with the Ray version pinned in pyproject.toml."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CLUSTERS = REPO / "clusters"
AWS = CLUSTERS / "aws-gpu.yaml"
KUBERAY = CLUSTERS / "kuberay-raycluster.yaml"
README = CLUSTERS / "README.md"
DOCKERFILE = CLUSTERS / "Dockerfile"

# Entry points that DESIGN.md assigns to work in progress: referenced by the README before they land.
PLANNED_PATHS = {
    "jobs/sweep.py": "jobs/sweep.py (the `ray job submit` entry point) is being written with the sweeps work"
}
PLANNED_COMMANDS = {"sweep", "train", "analyze", "report", "formats", "doctor", "sync"}

RAY_IMAGE = re.compile(r"^(?:docker\.io/)?rayproject/ray:(?P<version>\d+\.\d+\.\d+)(?P<suffix>[-\w.]*)$")


def _ray_pin() -> SpecifierSet:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"ray\[[^\]]+\]\s*(?P<spec>[<>=!~,.\d\s]+)", dep.strip())
        if m:
            return SpecifierSet(m.group("spec").replace(" ", ""))
    raise AssertionError("pyproject.toml has no `ray[...]>=X,<Y` dependency")


def _image_version(image: str) -> Version:
    m = RAY_IMAGE.match(image)
    assert m, f"{image!r} is not a rayproject/ray:X.Y.Z[-pyNNN-cuNNN] image"
    return Version(m.group("version"))


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


# --------------------------------------------------------------------------------------- cluster launcher (AWS)


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return yaml.safe_load(AWS.read_text())


def test_launcher_top_level_keys(aws):
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in aws, f"aws-gpu.yaml lacks {key}"
    assert aws["provider"]["type"] == "aws"
    assert aws["head_node_type"] in aws["available_node_types"], "head_node_type names no entry"


def test_launcher_node_types_are_complete_and_bounded(aws):
    types = aws["available_node_types"]
    head = aws["head_node_type"]
    for name, nt in types.items():
        assert isinstance(nt.get("resources"), dict), f"{name}: resources missing (Ray's schema requires it)"
        assert nt.get("node_config", {}).get("InstanceType"), f"{name}: node_config.InstanceType missing"
        if name == head:
            continue
        lo, hi = nt.get("min_workers", 0), nt.get("max_workers", aws["max_workers"])
        assert 0 <= lo <= hi <= aws["max_workers"], (
            f"{name}: need 0 <= min_workers <= max_workers <= global max"
        )
    assert sum(nt.get("min_workers", 0) for n, nt in types.items() if n != head) <= aws["max_workers"]


def test_launcher_gpu_workers_set_a_buildable_arch_list(aws):
    gpu_types = {n: nt for n, nt in aws["available_node_types"].items() if nt["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no worker node type offers GPUs"
    global_opts = " ".join(aws.get("docker", {}).get("run_options", []))
    for name, nt in gpu_types.items():
        opts = " ".join(nt.get("docker", {}).get("worker_run_options", [])) + " " + global_opts
        m = re.search(r"TORCH_CUDA_ARCH_LIST=(\S+)", opts)
        assert m, f"{name}: TORCH_CUDA_ARCH_LIST not set (the image's 9.0a crashes DeepSpeed's op builder)"
        assert not m.group(1).endswith("a"), (
            f"{name}: TORCH_CUDA_ARCH_LIST={m.group(1)} crashes DeepSpeed's op builder"
        )
    assert "TORCH_EXTENSIONS_DIR=" in global_opts


def test_launcher_keeps_dashboard_on_and_auth_consistent(aws):
    head_cmds = " ".join(aws["head_start_ray_commands"])
    assert "ray start --head" in head_cmds
    assert "--include-dashboard=true" in head_cmds and "--include-dashboard=false" not in head_cmds
    assert "--dashboard-host=0.0.0.0" in head_cmds
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_cmds
    assert "$RAY_HEAD_IP:6379" in " ".join(aws["worker_start_ray_commands"])
    # Token auth on every node: the mode in the container env, the token from the local ~/.ray.
    assert "-e RAY_AUTH_MODE=token" in aws["docker"]["run_options"]
    assert aws["file_mounts"].get("/home/ray/.ray") == "~/.ray"


def test_launcher_installs_the_synced_repo(aws):
    mounts = {remote: local for remote, local in aws["file_mounts"].items() if local == "."}
    assert len(mounts) == 1, "the repository root must be file-mounted once"
    (repo_path,) = mounts
    setup = " ".join(aws["setup_commands"])
    assert f'pip install -q -e "{repo_path}[fp8]"' in setup
    assert setup.index("torch") < setup.index(f"{repo_path}[fp8]"), (
        "torch must be installed before the project"
    )
    assert ".gitignore" in aws.get("rsync_filter", []), "without it .venv and runs/ are synced to every node"


def test_launcher_image_matches_pinned_ray(aws):
    assert _image_version(aws["docker"]["image"]) in _ray_pin()


def test_launcher_passes_rays_own_validation(aws):
    pytest.importorskip("jsonschema")
    util = pytest.importorskip("ray.autoscaler._private.util")
    util.validate_config(copy.deepcopy(aws))
    util.validate_config(util.prepare_config(copy.deepcopy(aws)))


# --------------------------------------------------------------------------------------------- KubeRay manifest


@pytest.fixture(scope="module")
def kuberay_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]


@pytest.fixture(scope="module")
def raycluster(kuberay_docs) -> dict[str, Any]:
    clusters = [d for d in kuberay_docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    return clusters[0]


def _groups(rc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = rc["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]


def test_raycluster_kind_version_and_auth(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    assert raycluster["spec"].get("authOptions", {}).get("mode") == "token"
    assert raycluster["spec"].get("enableInTreeAutoscaling") is True


def test_raycluster_head_has_dashboard_and_ports(raycluster):
    params = raycluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert params.get("dashboard-host") == "0.0.0.0" or params.get("include-dashboard") == "true"
    assert params.get("include-dashboard", "true") != "false"
    ports = {p["containerPort"] for p in _ray_container(raycluster["spec"]["headGroupSpec"])["ports"]}
    assert {6379, 8265, 10001} <= ports


def test_raycluster_gpu_workers_and_replicas(raycluster):
    workers = raycluster["spec"]["workerGroupSpecs"]
    assert workers
    for g in workers:
        c = _ray_container(g)
        assert int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0, f"{g['groupName']}: no GPU limit"
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]
        arch = _env(c).get("TORCH_CUDA_ARCH_LIST")
        assert arch and not arch.endswith("a"), (
            f"{g['groupName']}: TORCH_CUDA_ARCH_LIST must be set, not 9.0a"
        )
        assert _env(c).get("TORCH_EXTENSIONS_DIR")


def test_raycluster_containers_have_requests_and_limits(raycluster):
    for name, g in _groups(raycluster):
        res = _ray_container(g).get("resources", {})
        assert res.get("requests") and res.get("limits"), f"{name}: resources.requests/limits missing"


def test_raycluster_overwritten_commands_still_start_ray(raycluster):
    for name, g in _groups(raycluster):
        annotations = g["template"].get("metadata", {}).get("annotations", {})
        if annotations.get("ray.io/overwrite-container-cmd") == "true":
            args = " ".join(_ray_container(g).get("args", []))
            assert "$KUBERAY_GEN_RAY_START_CMD" in args, f"{name}: the overwritten command never starts Ray"


def test_raycluster_shared_volume_is_rwx_and_mounted_everywhere(kuberay_docs, raycluster):
    pvcs = {d["metadata"]["name"]: d for d in kuberay_docs if d.get("kind") == "PersistentVolumeClaim"}
    mount_paths = set()
    for name, g in _groups(raycluster):
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in g["template"]["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        mounts = {
            m["name"]: m["mountPath"]
            for m in _ray_container(g).get("volumeMounts", [])
            if m["name"] in volumes
        }
        assert mounts, f"{name}: no PVC-backed volume mounted"
        for vol, path in mounts.items():
            claim = volumes[vol]
            assert claim in pvcs, f"{name}: claim {claim} is not defined in the manifest"
            assert "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], f"{claim} must be ReadWriteMany"
            mount_paths.add((claim, path))
    assert len(mount_paths) == 1, f"the shared volume must be mounted at one path on every pod: {mount_paths}"


def test_raycluster_images_match_each_other_and_the_pin(raycluster):
    images = {name: _ray_container(g)["image"] for name, g in _groups(raycluster)}
    assert len(set(images.values())) == 1, f"groups use different images: {images}"
    version = _image_version(next(iter(images.values())))
    assert version in _ray_pin()
    assert Version(str(raycluster["spec"]["rayVersion"])) == version


def test_dockerfile_and_configs_share_the_ray_image(aws, raycluster):
    m = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert m
    assert (
        m.group(1) == aws["docker"]["image"] == _ray_container(raycluster["spec"]["headGroupSpec"])["image"]
    )


# ---------------------------------------------------------------------------------------------------- README


def _readme_paths() -> list[str]:
    text = README.read_text()
    found = re.findall(
        r"(?<![\w/.$-])((?:jobs|configs|clusters|scripts|benchmarks|docs|tests)/[\w.<>-]+)", text
    )
    return sorted({p.rstrip(".") for p in found if "<" not in p})


@pytest.mark.parametrize("path", _readme_paths())
def test_readme_paths_exist(path):
    if not (REPO / path).exists() and path in PLANNED_PATHS:
        pytest.skip(f"{PLANNED_PATHS[path]}; not in the repository yet")
    assert (REPO / path).exists(), f"clusters/README.md refers to {path}, which does not exist"


def test_readme_file_table_lists_existing_files():
    table = re.findall(r"^\| `([^`]+)` \|", README.read_text(), re.MULTILINE)
    assert {"aws-gpu.yaml", "kuberay-raycluster.yaml"} <= set(table)
    for name in table:
        assert (CLUSTERS / name).exists(), f"clusters/README.md lists {name}, which does not exist"


def _readme_commands() -> list[str]:
    text = README.read_text()
    code = re.findall(r"```.*?```", text, re.DOTALL) + re.findall(r"`([^`\n]+)`", text)
    pattern = r"(?:^|[\s;&|(])(?:\.venv/bin/)?robustprec ([a-z][a-z-]*)"
    return sorted({cmd for block in code for cmd in re.findall(pattern, block, re.MULTILINE)})


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_robustprec_commands_exist(command):
    from robustprec.cli import main

    if command not in main.commands and command in PLANNED_COMMANDS:
        pytest.skip(f"`robustprec {command}` is a planned CLI command (DESIGN.md); not in robustprec.cli yet")
    assert command in main.commands, f"clusters/README.md uses `robustprec {command}`, which the CLI lacks"

"""The Kubernetes configuration (deploy/k8s/): the definitions load with its profile, and the pods that
dagster-k8s would launch for each step (rendered by its own functions, no cluster) request a GPU
exactly for the GPU assets, with the object-store secrets and the profile's resources."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

from mt_assets.definitions import build_definitions
from mt_assets.defs.profiles import load_profile
from mt_assets.lib.lora.staging import WorkFolder, checkpoint_mirror, staging_root

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
GPU_ASSETS = {"adapter_B", "adapter_C", "adapter_D", "adapter_E", "translations"}
HELM_RUN_LAUNCHER = SimpleNamespace(  # what the Helm chart's K8sRunLauncher gives every step pod
    job_image=None, dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance",
    postgres_password_secret="dagster-postgresql-secret")


@dg.op
def _noop() -> None:
    pass


@dg.job(executor_def=k8s_job_executor)
def _k8s_probe():
    _noop()


def executor_config(profile: dict) -> dict:
    """The profile's executor settings as k8s_job_executor receives them (validated, defaults filled)."""
    run_config = dg.validate_run_config(_k8s_probe, {"execution": {"config": profile["executor"]["config"]}})
    return run_config["execution"]["k8s"]


def render_step_pod(defs: dg.Definitions, config: dict, asset: str):
    """The Kubernetes Job of the step of `asset`, assembled as K8sStepHandler.launch_step does it:
    executor config, then the op's dagster-k8s/config tag, then per_step_k8s_config."""
    context = K8sContainerContext(
        image_pull_policy=config.get("image_pull_policy"), image_pull_secrets=config.get("image_pull_secrets"),
        service_account_name=config.get("service_account_name"), env_config_maps=config.get("env_config_maps"),
        env_secrets=config.get("env_secrets"), env_vars=config.get("env_vars"),
        volume_mounts=config.get("volume_mounts"), volumes=config.get("volumes"), labels=config.get("labels"),
        namespace=config.get("job_namespace"), resources=config.get("resources"),
        scheduler_name=config.get("scheduler_name"), security_context=config.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})))
    op = defs.resolve_assets_def(asset).op
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op.tags))).merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            config["per_step_k8s_config"].get(op.name, {}))))
    job_config = context.get_k8s_job_config(config.get("job_image") or "registry.example.com/mt-assets:0.1.0",
                                            HELM_RUN_LAUNCHER)
    assert isinstance(job_config, DagsterK8sJobConfig)
    job = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"], job_name=f"step-{asset}",
                                    pod_name=f"step-{asset}", component="step_worker",
                                    user_defined_k8s_config=context.run_k8s_config)
    return context.namespace, job.spec.template.spec


@pytest.fixture(scope="module")
def k8s():
    profile = load_profile(str(DEPLOY / "profile.yaml"))
    return profile, build_definitions(profile), executor_config(profile)


def test_definitions_load_with_the_k8s_executor_and_object_storage(k8s):
    profile, defs, config = k8s
    assert defs.executor.name == "k8s"
    assert profile["data_lake"].startswith("s3://")
    assert defs.resources["io_manager"].base_path == profile["data_lake"]
    assert profile["base_model"]["type"] == "hub"  # extends: paper
    assert config["job_namespace"] == "mt-assets"
    # what a restarted pod resumes from is on the lake, not on the pod's disk
    assert profile["synthesis"]["cache_dir"].startswith(profile["data_lake"] + "/")
    assert "staging_dir" not in profile["training"]
    training = defs.resources["training"]
    root = staging_root(training.staging_dir, profile["data_lake"])
    assert root.is_relative_to(tempfile.gettempdir())  # trains on the pod's disk
    work = WorkFolder.for_work(root, "adapter_B", "table", {}, {})
    assert checkpoint_mirror(profile["data_lake"], work) == f"{profile['data_lake']}/.staging/{work.folder.name}/checkpoints"


@pytest.mark.parametrize("asset", sorted(GPU_ASSETS))
def test_gpu_step_pods_request_a_gpu(k8s, asset):
    _, defs, config = k8s
    namespace, pod = render_step_pod(defs, config, asset)
    [container] = pod.containers
    assert namespace == "mt-assets"
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.requests["memory"] == "24Gi" and container.resources.limits["memory"] == "32Gi"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.tolerations)
    assert {s.secret_ref.name for s in container.env_from} == {"mt-assets-object-store", "mt-assets-teacher"}
    assert container.image == "registry.example.com/mt-assets:0.1.0"
    assert container.args == ["dagster", "api", "execute_step"]


@pytest.mark.parametrize("asset", ["opus_sample", "train_A", "synth_B", "bleu_table", "bleu_chart"])
def test_cpu_step_pods_request_no_gpu(k8s, asset):
    _, defs, config = k8s
    _, pod = render_step_pod(defs, config, asset)
    [container] = pod.containers
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.requests == {"cpu": "1", "memory": "4Gi"}
    assert not pod.tolerations


def test_several_gpus_per_adapter_by_profile(k8s):
    profile, defs, _ = k8s
    ddp = copy.deepcopy(profile)
    ddp["training"]["num_processes"] = 4
    ddp["executor"]["config"]["per_step_k8s_config"]["adapter_B"] = {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "4"}}}}
    defs = build_definitions(ddp)
    assert defs.resources["training"].num_processes == 4
    _, pod = render_step_pod(defs, executor_config(ddp), "adapter_B")
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations)


def test_helm_values_run_the_code_location_with_this_profile():
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mt_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert Path(env["MT_ASSETS_PROFILE"]).relative_to("/app") == DEPLOY.joinpath("profile.yaml").relative_to(
        DEPLOY.parent.parent)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ENV MT_ASSETS_PROFILE={env['MT_ASSETS_PROFILE']}" in dockerfile

"""Scheduled cloud deployment of flows/tall_flow.py, for real but offline.

moto serves S3 (and IAM, EC2, Batch, Step Functions, EventBridge) on 127.0.0.1; Metaflow itself
builds and uploads the code package and renders the deployment:

* ``argo-workflows create --only-json``: the WorkflowTemplate (Metaflow needs the ``kubernetes``
  client to render it, but no cluster): weekly cron, ``nvidia.com/gpu`` on ``base`` / ``train``,
  the ``@project`` naming, and the code package it points at, downloaded back from S3.
* ``scripts/deploy.sh argo --only-json --production``: the same through the deploy script, which
  also bakes the settings file in, ships the embedded dataset and wires image / shared volume.
* ``step-functions create --only-json``, then a full ``step-functions create`` against the mocked
  account: the state machine's GPU requests, the Batch job definition, and the weekly EventBridge
  rule (Step Functions keeps the schedule outside the state machine JSON).

Run: ``python -m pytest -q tests/deploy``. Skipped when moto[server] (or, for Argo, kubernetes)
is not installed: ``pip install -e '.[dev]'``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server]: pip install 'moto[server]'")

REPO = Path(__file__).resolve().parents[2]
FLOW = "flows/tall_flow.py"
BUCKET = "recsys-ci"
SYSROOT = f"s3://{BUCKET}/metaflow"
REGION = "us-east-1"
# @schedule(weekly=True): Sundays 00:00 UTC, in EventBridge's (Quartz) cron syntax; Argo gets the
# first five fields, Step Functions the whole expression inside an EventBridge rule.
WEEKLY_CRON = "0 0 ? * SUN"
GPU_STEPS = ("base", "train")
CPU_STEPS = ("start", "join", "end")
# Where the flows/recsys symlink puts the package inside the code package (paths relative to flows/).
PACKAGE_FILES = ("recsys/__init__.py", "recsys/pipeline/local.py", "recsys/models/local/tall.py",
                 "recsys/protocols/split.py")
TIMEOUT = 300  # seconds per Metaflow command; each takes ~2 s on an idle machine


# ----------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def aws(tmp_path, monkeypatch):
    """A moto server on a free port of 127.0.0.1 with an empty bucket; dummy credentials only."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        # no developer profile or credentials file may leak in
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        client = lambda service: boto3.client(service, endpoint_url=url, region_name=REGION)  # noqa: E731
        # moto's backends live in this process and outlive a server: start from a clean account.
        _reset(url)
        client("s3").create_bucket(Bucket=BUCKET)
        yield SimpleNamespace(url=url, client=client, creds=creds)
    finally:
        try:
            _reset(url)
        finally:
            server.stop()


def _reset(url: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).read()


def _flow_env(aws, tmp_path: Path, **extra: str) -> dict:
    """The Metaflow command's environment: S3 datastore on moto, user 'ci', no outside config."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "METAFLOW_", "RECSYS_", "KUBECONFIG")) and k not in ("PYTHON",)}
    env.update(aws.creds)
    env.update({
        "AWS_ENDPOINT_URL": aws.url,  # every boto3 client Metaflow makes (SFN, Batch, ...) hits moto
        "METAFLOW_S3_ENDPOINT_URL": aws.url,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": SYSROOT,
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "local"),
        "METAFLOW_HOME": str(tmp_path / "mfhome"),  # no ~/.metaflowconfig profile
        "METAFLOW_KUBERNETES_NAMESPACE": "default",
        "METAFLOW_KUBERNETES_CONTAINER_IMAGE": "python:3.11",
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "USERNAME": "ci",
        "METAFLOW_USER": "ci",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{' '.join(cmd[:6])} ... exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-4000:]}"
        f"\n--- stdout ---\n{proc.stdout[-2000:]}")
    return proc.stdout


def _json_document(text: str) -> dict:
    """The first JSON object in `text` that starts a line (log lines may come before it)."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            raise AssertionError(f"no JSON document in the output:\n{text[:2000]}")
        if start == 0 or text[start - 1] == "\n":
            try:
                doc, _ = decoder.raw_decode(text, start)
                if isinstance(doc, dict):
                    return doc
            except json.JSONDecodeError:
                pass
        pos = start + 1


def _code_package(aws, url: str, sha: str) -> tarfile.TarFile:
    """Download the code package Metaflow uploaded; it must be the content-addressed tarball."""
    assert url.startswith(f"{SYSROOT}/TallFlow/data/"), url
    bucket, key = url[len("s3://"):].split("/", 1)
    assert key == f"metaflow/TallFlow/data/{sha[:2]}/{sha}", key
    blob = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha1(blob).hexdigest() == sha
    return tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")


def _assert_package_carries_recsys(tar: tarfile.TarFile) -> set[str]:
    names = set(tar.getnames())
    for path in PACKAGE_FILES:
        assert path in names, f"{path} missing from the code package"
        # the package's bytes, not a stale copy: same as the working tree's file
        assert tar.extractfile(path).read() == (REPO / path).read_bytes(), path
    assert "tall_flow.py" in names
    assert not any(n.startswith("flows/") for n in names)  # paths are relative to flows/
    return names


def _argo_templates(doc: dict) -> dict:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def _mem_mb(value: str) -> float:
    return float(value.rstrip("Mi"))


# ----------------------------------------------------------------------------------------------
# Argo Workflows


def _assert_argo_gpu_steps(templates: dict) -> None:
    for step in GPU_STEPS:
        res = templates[step]["container"]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "1", (step, res)
        assert float(res["requests"]["cpu"]) == 4, (step, res)
        assert _mem_mb(res["requests"]["memory"]) == 16000, (step, res)
        assert int(templates[step]["retryStrategy"]["limit"]) == 1  # @retry(times=1)
    for step in CPU_STEPS:
        res = templates[step]["container"]["resources"]
        assert "nvidia.com/gpu" not in (res.get("limits") or {}), (step, res)
        assert "nvidia.com/gpu" not in (res.get("requests") or {}), (step, res)


def test_argo_workflow_template(aws, tmp_path):
    pytest.importorskip("kubernetes", reason="Metaflow renders Argo templates with the kubernetes client")
    env = _flow_env(aws, tmp_path)
    out = _run([sys.executable, FLOW, "--datastore", "s3", "argo-workflows", "create", "--only-json"], env)
    doc = _json_document(out)

    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert doc["kind"] == "WorkflowTemplate"
    meta = doc["metadata"]
    ann = meta["annotations"]

    # @project(name="recsys_pipelines"): a per-user branch unless --branch / --production
    assert meta["name"] == "recsyspipelines.user.ci.tallflow"
    assert ann["metaflow/project_name"] == "recsys_pipelines"
    assert ann["metaflow/branch_name"] == "user.ci"
    assert ann["metaflow/project_flow_name"] == "recsys_pipelines.user.ci.TallFlow"
    assert ann["metaflow/flow_name"] == "TallFlow"

    # @schedule(weekly=True): `--only-json` prints only the WorkflowTemplate; the CronWorkflow that
    # a real `create` registers is built from this annotation.
    assert json.loads(ann["metaflow/cron"]) == {"schedule": WEEKLY_CRON, "tz": ""}
    assert json.loads(doc["spec"]["workflowMetadata"]["annotations"]["metaflow/cron"])["schedule"] == WEEKLY_CRON

    templates = _argo_templates(doc)
    assert set(GPU_STEPS + CPU_STEPS) <= set(templates)
    assert json.loads(ann["metaflow/dag"])["graph_structure"] == ["start", "base", [["train"]], "join", "end"]
    _assert_argo_gpu_steps(templates)

    # every step downloads one code package from the datastore: the S3 bucket on moto
    envs = [_env(templates[s]["container"]) for s in GPU_STEPS + CPU_STEPS]
    assert len({e["METAFLOW_CODE_URL"] for e in envs}) == 1
    first = envs[0]
    assert first["METAFLOW_DEFAULT_DATASTORE"] == "s3"
    assert first["METAFLOW_DATASTORE_SYSROOT_S3"] == SYSROOT
    with _code_package(aws, first["METAFLOW_CODE_URL"], first["METAFLOW_CODE_SHA"]) as tar:
        names = _assert_package_carries_recsys(tar)
        assert ".mf_meta/INFO" in names
        assert any(n.startswith(".mf_code/metaflow/") for n in names)  # Metaflow ships itself too


def test_deploy_script_argo_production(aws, tmp_path):
    """scripts/deploy.sh argo: @project --production, settings baked in, data + image + volume."""
    pytest.importorskip("kubernetes", reason="Metaflow renders Argo templates with the kubernetes client")
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    import yaml

    image = "registry.example.com/recsys:gpu"
    env = _flow_env(aws, tmp_path, PYTHON=sys.executable, RECSYS_IMAGE=image, RECSYS_K8S_PVC="recsys-shared")
    out = _run(["bash", "scripts/deploy.sh", "argo", "--only-json", "--production"], env)
    doc = _json_document(out)
    ann = doc["metadata"]["annotations"]

    assert doc["metadata"]["name"] == "recsyspipelines.prod.tallflow"
    assert ann["metaflow/project_flow_name"] == "recsys_pipelines.prod.TallFlow"
    assert json.loads(ann["metaflow/cron"])["schedule"] == WEEKLY_CRON

    templates = _argo_templates(doc)
    _assert_argo_gpu_steps(templates)
    for step in GPU_STEPS + CPU_STEPS:
        tpl = templates[step]
        container = tpl["container"]
        assert container["image"] == image
        assert {"name": "recsys-shared", "persistentVolumeClaim": {"claimName": "recsys-shared"}} in tpl["volumes"]
        assert any(m["name"] == "recsys-shared" and m["mountPath"] == "/mnt/recsys"
                   for m in container["volumeMounts"])
        assert _env(container)["RECSYS_OUTPUT_DIR"] == "/mnt/recsys/outputs"
        assert "retryStrategy" in tpl  # --with retry reaches the steps without their own @retry

    first = _env(templates["start"]["container"])
    with _code_package(aws, first["METAFLOW_CODE_URL"], first["METAFLOW_CODE_SHA"]) as tar:
        names = _assert_package_carries_recsys(tar)
        assert "recsys/data/embedded/amusic.rating.gz" in names  # --package-suffixes .py,.gz,.md
        assert "recsys/data/embedded/ATTRIBUTION.md" in names
        # params/ is outside flows/, so the settings travel as the `cfg` Config value
        config = json.loads(tar.extractfile(".mf_meta/CONFIG").read())
    baked = config["user_configs"]["cfg"][0]
    assert baked == yaml.safe_load((REPO / "params" / "tall_amazon-digital-music.yaml").read_text())
    assert "tall" in baked["methods"]


# ----------------------------------------------------------------------------------------------
# AWS Step Functions (on AWS Batch)


def _batch_account(aws) -> dict:
    """IAM role, instance profile and a GPU-less managed Batch compute environment + job queue."""
    iam = aws.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"Service": ["batch.amazonaws.com", "states.amazonaws.com", "events.amazonaws.com",
                                  "ecs-tasks.amazonaws.com"]}}]})
    role = iam.create_role(RoleName="metaflow-ci", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="metaflow-ci")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="metaflow-ci", RoleName="metaflow-ci")
    ec2 = aws.client("ec2")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:1]
    groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]][:1]
    batch = aws.client("batch")
    env_arn = batch.create_compute_environment(
        computeEnvironmentName="metaflow-ci", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 16, "instanceTypes": ["optimal"],
                          "subnets": subnets, "securityGroupIds": groups, "instanceRole": profile},
    )["computeEnvironmentArn"]
    batch.create_job_queue(jobQueueName="metaflow-ci", state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env_arn}])
    return {
        "METAFLOW_BATCH_JOB_QUEUE": "metaflow-ci",
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role,
        "METAFLOW_SFN_IAM_ROLE": role,
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE": role,
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "metaflow-ci",  # foreach cardinality; read at run time only
        "METAFLOW_BATCH_CONTAINER_IMAGE": "python:3.11",
    }


def _sfn_tasks(states: dict, found: dict | None = None) -> dict:
    """Batch task states by step name, through the foreach's Map iterator."""
    found = {} if found is None else found
    for name, state in states.items():
        if state.get("Resource") == "arn:aws:states:::batch:submitJob.sync":
            found[name] = state
        for inner in ("Iterator", "ItemProcessor"):
            if inner in state:
                _sfn_tasks(state[inner]["States"], found)
    return found


def _batch_resources(state: dict) -> dict:
    reqs = state["Parameters"]["ContainerOverrides"]["ResourceRequirements"]
    return {r["Type"]: r["Value"] for r in reqs}


def _assert_sfn_gpu_steps(definition: dict) -> dict:
    tasks = _sfn_tasks(definition["States"])
    assert set(GPU_STEPS + CPU_STEPS) <= set(tasks), sorted(tasks)
    for step in GPU_STEPS:
        res = _batch_resources(tasks[step])
        assert res["GPU"] == "1", (step, res)
        assert float(res["VCPU"]) == 4 and float(res["MEMORY"]) == 16000, (step, res)
    for step in CPU_STEPS:
        assert "GPU" not in _batch_resources(tasks[step]), step
    return tasks


def test_step_functions_state_machine_and_schedule(aws, tmp_path):
    env = _flow_env(aws, tmp_path, **_batch_account(aws))
    role = env["METAFLOW_SFN_IAM_ROLE"]

    # 1. the state machine JSON
    out = _run([sys.executable, FLOW, "--datastore", "s3", "step-functions", "create", "--only-json"], env)
    definition = _json_document(out)
    assert definition["StartAt"] == "start"
    tasks = _assert_sfn_gpu_steps(definition)
    assert all(t["Parameters"]["JobQueue"] == "metaflow-ci" for t in tasks.values())
    for step in GPU_STEPS:  # @retry(times=1): one retry, two Batch attempts
        assert tasks[step]["Parameters"]["RetryStrategy"] == {"Attempts": 2}
    assert WEEKLY_CRON not in out  # the schedule is not part of the state machine

    step_env = {e["Name"]: e.get("Value") for e in tasks["base"]["Parameters"]["ContainerOverrides"]["Environment"]}
    with _code_package(aws, step_env["METAFLOW_CODE_URL"], step_env["METAFLOW_CODE_SHA"]) as tar:
        _assert_package_carries_recsys(tar)

    # 2. the real deployment, to the mocked account: state machine + EventBridge rule
    _run([sys.executable, FLOW, "--datastore", "s3", "step-functions", "create"], env)
    name = "recsys_pipelines.user.ci.TallFlow"  # @project's name for the state machine and the rule
    sfn = aws.client("stepfunctions")
    machine = next(m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == name)
    described = sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])
    assert described["roleArn"] == role
    _assert_sfn_gpu_steps(json.loads(described["definition"]))

    events = aws.client("events")
    rule = events.describe_rule(Name=name)
    assert rule["ScheduleExpression"] == f"cron({WEEKLY_CRON} *)"
    assert rule["State"] == "ENABLED"
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    assert [(t["Arn"], t["RoleArn"]) for t in targets] == [(machine["stateMachineArn"], role)]

    # the Batch job definition Metaflow registered for the steps
    job_def_arn = tasks["base"]["Parameters"]["JobDefinition"]
    job_defs = aws.client("batch").describe_job_definitions(jobDefinitions=[job_def_arn])["jobDefinitions"]
    assert [d["containerProperties"]["jobRoleArn"] for d in job_defs] == [role]
    assert job_defs[0]["containerProperties"]["image"] == "python:3.11"


def test_deploy_script_sfn_branch(aws, tmp_path):
    """scripts/deploy.sh sfn: @project --branch, --with retry, image and EFS volume on the job definition."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    image = "registry.example.com/recsys:gpu"
    env = _flow_env(aws, tmp_path, PYTHON=sys.executable, RECSYS_IMAGE=image, RECSYS_BATCH_EFS="fs-12345678",
                    **_batch_account(aws))
    out = _run(["bash", "scripts/deploy.sh", "sfn", "--only-json", "--branch", "weekly"], env)
    tasks = _assert_sfn_gpu_steps(_json_document(out))

    batch = aws.client("batch")
    for step, task in tasks.items():
        params = task["Parameters"]
        step_env = {e["Name"]: e.get("Value") for e in params["ContainerOverrides"]["Environment"]}
        assert step_env["SFN_STATE_MACHINE"] == "recsys_pipelines.test.weekly.TallFlow"
        assert step_env["RECSYS_OUTPUT_DIR"] == "/mnt/recsys/outputs"
        # @retry(times=1) on the GPU steps; --with retry (3 retries) on the others
        assert params["RetryStrategy"] == {"Attempts": 2 if step in GPU_STEPS else 4}, step
        (job_def,) = batch.describe_job_definitions(jobDefinitions=[params["JobDefinition"]])["jobDefinitions"]
        props = job_def["containerProperties"]
        assert props["image"] == image
        assert {"name": "efs_fs-12345678", "efsVolumeConfiguration": {
            "fileSystemId": "fs-12345678", "transitEncryption": "ENABLED"}} in props["volumes"]
        assert {"containerPath": "/mnt/recsys", "sourceVolume": "efs_fs-12345678"} in props["mountPoints"]


# ----------------------------------------------------------------------------------------------
# the data-parallel flow: its @torchrun step on Kubernetes (a JobSet) and on Step Functions


def test_argo_renders_the_torchrun_step_as_a_jobset_of_gpu_replicas(aws, tmp_path):
    """flows/ddp_flow.py: ``train`` (``num_parallel=--nodes``) becomes a JobSet with one control
    replica and nodes - 1 worker replicas, each asking for the step's GPU."""
    pytest.importorskip("kubernetes", reason="Metaflow renders Argo templates with the kubernetes client")
    pytest.importorskip("metaflow_extensions.torchrun", reason="needs metaflow-torchrun: pip install -e '.[dev]'")
    env = _flow_env(aws, tmp_path)
    doc = _json_document(_run([sys.executable, "flows/ddp_flow.py", "--datastore", "s3", "argo-workflows",
                               "create", "--only-json"], env))
    templates = _argo_templates(doc)
    train = templates["train"]["resource"]
    manifest = train["manifest"]
    assert train["action"] == "create" and "status.terminalState == Completed" in train["successCondition"]
    assert manifest.startswith("apiVersion: jobset.x-k8s.io/") and "\nkind: JobSet\n" in manifest
    jobs = manifest.split("\n  - name: ")[1:]
    assert [j.split("\n")[0] for j in jobs] == ["control", "worker"]
    assert "\n    replicas: 1\n" in jobs[0]
    assert "replicas: {{=asInt(inputs.parameters.workerCount)}}" in jobs[1]
    for job in jobs:
        assert "nvidia.com/gpu: '1'" in job  # @resources(gpu=cfg.gpu): one per node by default
        assert "step train" in job and "gpu=1" in job
    # workerCount = num-parallel - 1, num-parallel = --nodes (a run-time parameter of the template)
    call = next(t for t in templates.values() if "dag" in t and any(x["name"] == "train" for x in t["dag"]["tasks"]))
    args = {p["name"]: p["value"] for p in call["dag"]["tasks"][0]["arguments"]["parameters"]}
    assert args["workerCount"] == "{{=sprig.int(sprig.sub(sprig.int(inputs.parameters['num-parallel']),1))}}"
    params = json.loads(doc["metadata"]["annotations"]["metaflow/parameters"])
    assert params["nodes"]["value"] == "2" and params["nodes"]["type"] == "int"
    for step in ("start", "join", "end"):
        assert "nvidia.com/gpu" not in json.dumps(templates[step]["container"]["resources"]), step


def test_step_functions_refuses_the_parallel_step_with_metaflows_message(aws, tmp_path):
    """Metaflow cannot deploy @parallel / @torchrun steps to Step Functions; on AWS the parallel
    step runs with ``run --with batch`` (Batch multi-node jobs) instead (docs/deployment.md)."""
    pytest.importorskip("metaflow_extensions.torchrun", reason="needs metaflow-torchrun: pip install -e '.[dev]'")
    env = _flow_env(aws, tmp_path)
    proc = subprocess.run([sys.executable, "flows/ddp_flow.py", "--datastore", "s3", "step-functions", "create",
                           "--only-json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "Deploying flows with @parallel decorator(s) to AWS Step Functions is not supported" in proc.stdout + proc.stderr

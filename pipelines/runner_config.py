"""Check the Beam runner options of a mining job before any work starts.

A misconfigured cluster job fails late and expensively: after the driver has
read 118K captions, staged a container and booted GPU VMs. These checks read
the flags only (no network, no cloud API) and turn what would go wrong into
one ``UserError`` that lists every problem:

* any runner: Beam options nobody recognises (a typo such as
  ``--dask_client_adress`` would otherwise be dropped by Beam with a log line
  and the job would quietly run on this machine);
* DirectRunner: worker count and running mode;
* DaskRunner: scheduler address form, partition settings;
* DataflowRunner: project, region, gs:// temp location, gs:// images and
  output folders (workers read and write there), a way to ship maskmine
  (``--sdk_container_image`` or ``--setup_file``), and for GPU workers the
  ``worker_accelerator`` service option (type, count, ``install-nvidia-driver``)
  with a machine type that can carry that GPU;
* Flink, Spark and PortableRunner: a job server that needs no download from
  Maven (``--job_endpoint`` of a running one, or a local job-server jar),
  the cluster address, and an SDK environment whose workers can import
  maskmine.

Warnings (returned, and logged by ``run_mining``) flag settings that run but
are probably not meant, such as CPU-only Dataflow workers for MaskFormer.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
    _BeamArgumentParser,
)

from maskmine.transforms.errors import UserError

DATAFLOW_NAMES = ("DataflowRunner", "dataflow", "TestDataflowRunner")
FLINK_NAMES = ("FlinkRunner", "flink")
SPARK_NAMES = ("SparkRunner", "spark")
PORTABLE_NAMES = ("PortableRunner", "portable")
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")
FLINK_MAGIC_MASTERS = ("[local]", "[auto]")

# GPU type -> machine-type families that can carry it on Compute Engine
# (https://cloud.google.com/compute/docs/gpus): the older GPUs attach to N1
# VMs, A100 / L4 / H100 come with their own accelerator-optimised families.
GPU_MACHINE_FAMILIES: dict[str, tuple[str, ...]] = {
    "nvidia-tesla-t4": ("n1-",),
    "nvidia-tesla-p4": ("n1-",),
    "nvidia-tesla-p100": ("n1-",),
    "nvidia-tesla-v100": ("n1-",),
    "nvidia-tesla-a100": ("a2-highgpu-", "a2-megagpu-"),
    "nvidia-a100-80gb": ("a2-ultragpu-",),
    "nvidia-l4": ("g2-",),
    "nvidia-h100-80gb": ("a3-highgpu-",),
    "nvidia-h100-mega-80gb": ("a3-megagpu-",),
}


@dataclass
class Findings:
    """What the checks found: errors stop the job, warnings are logged."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Accelerator:
    """A parsed ``worker_accelerator=type:T;count:N;install-nvidia-driver`` value."""

    type: str
    count: int
    install_driver: bool


def unknown_beam_args(beam_args: Sequence[str]) -> list[str]:
    """Flags no PipelineOptions class defines, parsed the way Beam parses them."""
    _register_dask_options()
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    _, unknown = parser.parse_known_args(list(beam_args))
    return [a for a in unknown if a.startswith("-")]


def _register_dask_options() -> None:
    """Importing the DaskRunner module defines the --dask_* flags (when dask is installed)."""
    try:
        from apache_beam.runners.dask import dask_runner  # noqa: F401
    except ImportError:
        pass


def parse_accelerator(value: str) -> Accelerator:
    """Parse the part after ``worker_accelerator=``; ValueError with the reason when malformed."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for part in parts:
        if ":" in part:
            k, v = part.split(":", 1)
            fields[k.strip()] = v.strip()
        else:
            flags.add(part)
    if "type" not in fields:
        raise ValueError("no type:GPU_TYPE")
    try:
        count = int(fields.get("count", ""))
    except ValueError:
        raise ValueError(f"count must be a whole number, got {fields.get('count')!r}") from None
    if count < 1:
        raise ValueError("count must be at least 1")
    unknown = (set(fields) - {"type", "count"}) | (flags - {"install-nvidia-driver"})
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}")
    return Accelerator(fields["type"], count, "install-nvidia-driver" in flags)


def dataflow_accelerators(options: PipelineOptions) -> list[str]:
    """The ``worker_accelerator=`` values of --dataflow_service_options and --experiments."""
    values = list(options.view_as(GoogleCloudOptions).dataflow_service_options or [])
    values += list(options.view_as(DebugOptions).experiments or [])
    return [v.split("=", 1)[1] for v in values if v.startswith("worker_accelerator=")]


def _wants_gpu(device: str) -> bool:
    return device.startswith("cuda")


def check_dataflow(options: PipelineOptions, out: str, images: str, device: str, found: Findings) -> None:
    gcp = options.view_as(GoogleCloudOptions)
    for name, value in (("--project", gcp.project), ("--region", gcp.region), ("--temp_location", gcp.temp_location)):
        if not value:
            found.errors.append(f"DataflowRunner needs {name}")
    for name, value in (("--temp_location", gcp.temp_location), ("--staging_location", gcp.staging_location)):
        if value and not value.startswith("gs://"):
            found.errors.append(f"{name} must be a gs:// path on Dataflow, got {value!r}")
    for name, value in (("--out", out), ("--images", images)):
        if not value.startswith("gs://"):
            found.errors.append(
                f"{name} must be a gs:// path on Dataflow (the workers read images and write shards there), got {value!r}"
            )
    setup = options.view_as(SetupOptions)
    image = options.view_as(WorkerOptions).sdk_container_image
    if not image and not setup.setup_file:
        hint = " (a --requirements_file installs dependencies but does not ship maskmine itself)" if setup.requirements_file else ""
        found.errors.append(
            "the Dataflow workers must import maskmine: pass --sdk_container_image with maskmine installed, "
            f"or --setup_file ./pyproject.toml{hint}"
        )
    if setup.setup_file and not os.path.isfile(setup.setup_file):
        found.errors.append(f"--setup_file not found: {setup.setup_file}")
    elif setup.setup_file and os.path.basename(setup.setup_file) not in ("setup.py", "pyproject.toml"):
        found.errors.append(f"--setup_file must name a setup.py or pyproject.toml, got {setup.setup_file}")
    if setup.requirements_file and not os.path.isfile(setup.requirements_file):
        found.errors.append(f"--requirements_file not found: {setup.requirements_file}")
    machine = options.view_as(WorkerOptions).machine_type
    accelerators = dataflow_accelerators(options)
    if len(accelerators) > 1:
        found.errors.append(f"worker_accelerator is given {len(accelerators)} times; give it once")
    if not accelerators:
        if _wants_gpu(device):
            found.errors.append(
                f"--device {device} on Dataflow needs GPU workers: add "
                "--dataflow_service_options 'worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver'"
            )
        elif device == "auto":
            found.warnings.append("Dataflow workers have no GPU (no worker_accelerator): proposals and CLIP run on CPU")
        return
    try:
        acc = parse_accelerator(accelerators[0])
    except ValueError as exc:
        found.errors.append(
            f"worker_accelerator={accelerators[0]!r} is malformed ({exc}); "
            "expected e.g. worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
        )
        return
    if device == "cpu":
        found.warnings.append("GPU workers requested but --device cpu: the GPUs would sit idle")
    if not acc.install_driver:
        found.errors.append(
            "worker_accelerator lacks install-nvidia-driver: without it the workers have no NVIDIA driver "
            "and torch sees no GPU"
        )
    families = GPU_MACHINE_FAMILIES.get(acc.type)
    if families is None:
        found.errors.append(f"unknown GPU type {acc.type!r}; known: {', '.join(sorted(GPU_MACHINE_FAMILIES))}")
    elif not machine:
        found.errors.append(
            f"GPU workers need --machine_type from a family that carries {acc.type} ({', '.join(f + '*' for f in families)})"
        )
    elif not machine.startswith(families):
        found.errors.append(
            f"--machine_type {machine} cannot carry {acc.type}; use a {' or '.join(f + '*' for f in families)} machine type"
        )
    if not image:
        found.warnings.append(
            "GPU workers without --sdk_container_image install torch and CUDA libraries at every worker start; "
            "a custom container is faster and reproducible"
        )


def _job_server_source(options: PipelineOptions, jar: str | None, runner: str, found: Findings) -> bool:
    """True when a job server is reachable without Maven: --job_endpoint or a local jar file."""
    portable = options.view_as(PortableOptions)
    if portable.job_endpoint:
        if portable.job_endpoint != "embed" and not re.fullmatch(r"[\w.\-\[\]:]+:\d+", portable.job_endpoint):
            found.errors.append(f"--job_endpoint must be HOST:PORT, got {portable.job_endpoint!r}")
        return True
    if jar:
        if re.match(r"https?://", jar):
            found.errors.append(f"{runner}: the job-server jar {jar} would be downloaded; pass a local file")
        elif not os.path.isfile(jar):
            found.errors.append(f"{runner}: job-server jar not found: {jar}")
        return True
    return False


def _environment_config(portable: PortableOptions) -> dict[str, str]:
    """--environment_options key=value pairs."""
    pairs = {}
    for option in portable.environment_options or []:
        key, _, value = option.partition("=")
        pairs[key] = value
    return pairs


def check_environment(options: PipelineOptions, runner: str, default_type: str, found: Findings) -> None:
    """The SDK harness environment: its workers must import maskmine, torch and the models."""
    portable = options.view_as(PortableOptions)
    env_type = (portable.environment_type or default_type).upper()
    extra = _environment_config(portable)
    if env_type not in ENVIRONMENT_TYPES:
        found.errors.append(f"--environment_type must be one of {', '.join(ENVIRONMENT_TYPES)}, got {env_type!r}")
        return
    if env_type == "DOCKER":
        image = (
            options.view_as(WorkerOptions).sdk_container_image
            or portable.environment_config
            or extra.get("docker_container_image")
        )
        if not image:
            found.errors.append(
                f"{runner} with --environment_type DOCKER runs Beam's stock Python image, which lacks maskmine "
                "and torch: pass --sdk_container_image IMAGE built FROM apache/beam_python3.11_sdk with maskmine installed"
            )
    elif env_type == "PROCESS":
        command = extra.get("process_command")
        if not command and portable.environment_config:
            try:
                command = json.loads(portable.environment_config).get("command")
            except (ValueError, AttributeError):
                found.errors.append("--environment_config for PROCESS must be JSON such as {\"command\": \"/opt/beam/boot\"}")
                return
        if not command:
            found.errors.append(
                f"{runner} with --environment_type PROCESS needs --environment_options process_command=PATH "
                "(the Beam boot executable on every worker, in an environment with maskmine installed)"
            )
    elif env_type == "EXTERNAL":
        if not (extra.get("external_service_address") or portable.environment_config):
            found.errors.append(
                f"{runner} with --environment_type EXTERNAL needs --environment_options external_service_address=HOST:PORT "
                "(a Beam worker pool started with `python -m apache_beam.runners.worker.worker_pool_main`)"
            )
    elif env_type == "LOOPBACK":
        found.warnings.append(
            f"{runner} with LOOPBACK runs all user code in this process: fine for a smoke test, not for a cluster"
        )


def check_flink(options: PipelineOptions, found: Findings) -> None:
    flink = options.view_as(FlinkRunnerOptions)
    has_server = _job_server_source(options, flink.flink_job_server_jar, "FlinkRunner", found)
    master = flink.flink_master
    if not has_server:
        found.errors.append(
            "FlinkRunner would download Beam's Flink job-server jar from Maven: start a job server "
            "(e.g. the apache/beam_flink1.20_job_server image) and pass --job_endpoint HOST:8099, "
            "or pass --flink_job_server_jar PATH to a local jar"
        )
    if master in FLINK_MAGIC_MASTERS and not options.view_as(PortableOptions).job_endpoint:
        found.errors.append(
            f"--flink_master {master} starts Flink inside the job server on this machine: "
            "pass --flink_master HOST:8081 of the cluster's JobManager"
        )
    elif master not in FLINK_MAGIC_MASTERS and not re.fullmatch(r"(https?://)?[\w.\-]+:\d+/?", master):
        found.errors.append(f"--flink_master must be HOST:PORT (e.g. jobmanager:8081), got {master!r}")
    if flink.flink_submit_uber_jar and master in FLINK_MAGIC_MASTERS:
        found.errors.append("--flink_submit_uber_jar needs --flink_master HOST:PORT of a running cluster")
    default_type = "LOOPBACK" if master in FLINK_MAGIC_MASTERS else "DOCKER"
    check_environment(options, "FlinkRunner", default_type, found)


def check_spark(options: PipelineOptions, found: Findings) -> None:
    spark = options.view_as(SparkRunnerOptions)
    has_server = _job_server_source(options, spark.spark_job_server_jar, "SparkRunner", found)
    if not has_server:
        found.errors.append(
            "SparkRunner would download Beam's Spark job-server jar from Maven: start a job server "
            "(e.g. the apache/beam_spark3_job_server image) and pass --job_endpoint HOST:8099, "
            "or pass --spark_job_server_jar PATH to a local jar"
        )
    master = spark.spark_master_url
    if master.startswith("local") and not options.view_as(PortableOptions).job_endpoint:
        found.errors.append(
            f"--spark_master_url {master} runs Spark on this machine: pass --spark_master_url spark://HOST:7077"
        )
    elif not master.startswith("local") and not re.fullmatch(r"(spark|yarn|k8s)://\S+|yarn", master):
        found.errors.append(f"--spark_master_url must look like spark://HOST:7077, got {master!r}")
    if spark.spark_submit_uber_jar and not spark.spark_rest_url:
        found.errors.append("--spark_submit_uber_jar needs --spark_rest_url http://HOST:6066")
    default_type = "LOOPBACK" if master.startswith("local") else "DOCKER"
    check_environment(options, "SparkRunner", default_type, found)


def check_portable(options: PipelineOptions, found: Findings) -> None:
    if not options.view_as(PortableOptions).job_endpoint:
        found.errors.append("PortableRunner needs --job_endpoint HOST:PORT of a running Beam job server")
    else:
        _job_server_source(options, None, "PortableRunner", found)
    check_environment(options, "PortableRunner", "DOCKER", found)


def check_direct(options: PipelineOptions, found: Findings) -> None:
    direct = options.view_as(DirectOptions)
    if direct.direct_num_workers is not None and direct.direct_num_workers < 0:
        found.errors.append("--direct_num_workers must be 0 (one per CPU) or more")
    workers = direct.direct_num_workers or os.cpu_count() or 1
    if direct.direct_running_mode == "multi_processing" and workers > (os.cpu_count() or 1):
        found.warnings.append(
            f"--direct_num_workers {workers} on {os.cpu_count()} CPUs: each worker process loads its own models"
        )


def check_dask(options: PipelineOptions, found: Findings) -> None:
    try:
        from apache_beam.runners.dask.dask_runner import DaskOptions
    except ImportError as exc:
        found.errors.append(f"--runner DaskRunner needs dask[distributed]: {exc}")
        return
    dask = options.view_as(DaskOptions)
    if dask.address and not re.fullmatch(r"(tcp|tls|ucx|inproc|ws|wss)://\S+", dask.address):
        found.errors.append(f"--dask_client_address must look like tcp://HOST:8786, got {dask.address!r}")
    if dask.scheduler_file and not os.path.isfile(dask.scheduler_file):
        found.errors.append(f"--dask_scheduler_file not found: {dask.scheduler_file}")
    for name, value in (("--dask_npartitions", dask.npartitions), ("--dask_partition_size", dask.partition_size)):
        if value is not None and value < 1:
            found.errors.append(f"{name} must be at least 1")
    if not dask.address and not dask.scheduler_file:
        found.warnings.append("DaskRunner without --dask_client_address starts a throwaway local Dask cluster")


def find_problems(beam_args: Sequence[str], out: str, images: str, device: str = "auto") -> Findings:
    """Every problem and warning in ``beam_args`` for a job writing to ``out`` from ``images``."""
    from maskmine.pipelines import runners

    found = Findings()
    unknown = unknown_beam_args(beam_args)
    if unknown:
        found.errors.append(f"unrecognised Beam options: {' '.join(unknown)} (check the spelling)")
    options = PipelineOptions(list(beam_args))
    runner = options.view_as(StandardOptions).runner
    if runners.is_local(options):
        check_direct(options, found)
    elif runners.is_dask(options):
        check_dask(options, found)
    elif runner in DATAFLOW_NAMES:
        check_dataflow(options, out, images, device, found)
    elif runner in FLINK_NAMES:
        check_flink(options, found)
    elif runner in SPARK_NAMES:
        check_spark(options, found)
    elif runner in PORTABLE_NAMES:
        check_portable(options, found)
    elif runner in ("PrismRunner", "prism"):
        found.warnings.append("PrismRunner downloads Beam's Prism binary on first use; offline, use DirectRunner")
    elif runner:
        check_runner_name(runner, found)
    return found


def check_runner_name(runner: str, found: Findings) -> None:
    """A runner name Beam cannot resolve is an error here, in words, not Beam's ValueError mid-launch."""
    from apache_beam.runners.runner import create_runner

    try:
        create_runner(runner)
    except (ValueError, ImportError, AttributeError) as exc:
        known = "DirectRunner, DaskRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, PrismRunner"
        found.errors.append(f"unknown --runner {runner!r} ({known}, or a PipelineRunner's full class name): "
                            f"{str(exc).splitlines()[0][:120]}")


def check_runner_options(beam_args: Sequence[str], out: str, images: str, device: str = "auto") -> list[str]:
    """Raise one UserError listing every problem; return the warnings."""
    found = find_problems(beam_args, out, images, device)
    if len(found.errors) == 1:
        raise UserError(found.errors[0])
    if found.errors:
        listing = "\n  - ".join(found.errors)
        raise UserError(f"the runner options have {len(found.errors)} problem(s):\n  - {listing}")
    return found.warnings

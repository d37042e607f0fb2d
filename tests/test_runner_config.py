"""Runner flag checks: each misconfiguration is named before any work starts; good setups pass."""
from __future__ import annotations

from pathlib import Path

import pytest

from maskmine.pipelines.mine import MineConfig, run_mining
from maskmine.pipelines.runner_config import check_runner_options, find_problems, parse_accelerator, unknown_beam_args
from maskmine.transforms.errors import UserError

GS = dict(out="gs://bucket/run", images="gs://bucket/train2017")
ACC = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
DATAFLOW_GPU = [
    "--runner", "DataflowRunner", "--project", "p", "--region", "us-central1",
    "--temp_location", "gs://bucket/tmp", "--sdk_container_image", "us-docker.pkg.dev/p/r/maskmine:1",
    "--machine_type", "n1-standard-8", "--dataflow_service_options", ACC,
]


def errors(args, device="auto", **paths) -> list[str]:
    return find_problems(args, **{**GS, **paths}, device=device).errors


def test_local_and_dask_defaults_pass():
    assert errors([], out="/tmp/x", images="/tmp/y") == []
    assert errors(["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                   "--direct_num_workers", "2"], out="/tmp/x", images="/tmp/y") == []
    assert errors(["--runner", "DaskRunner", "--dask_client_address", "tcp://10.0.0.1:8786"]) == []


def test_typo_in_a_beam_flag_is_an_error_not_a_silent_local_run():
    assert unknown_beam_args(["--runner", "DaskRunner", "--dask_client_adress", "tcp://h:8786"]) == ["--dask_client_adress"]
    with pytest.raises(UserError, match="unrecognised Beam options: --dask_client_adress"):
        check_runner_options(["--runner", "DaskRunner", "--dask_client_adress", "tcp://h:8786"], **GS)


def test_dask_address_form():
    assert any("tcp://HOST:8786" in e for e in errors(["--runner", "DaskRunner", "--dask_client_address", "10.0.0.1:8786"]))


def test_dataflow_gpu_configuration_passes():
    assert errors(DATAFLOW_GPU, device="cuda") == []
    # the older --experiments spelling is understood too
    old = [a if a != "--dataflow_service_options" else "--experiments" for a in DATAFLOW_GPU]
    assert errors(old, device="cuda") == []


def test_dataflow_missing_basics_listed_together():
    found = errors(["--runner", "DataflowRunner"], out="/local/run", images="/local/images")
    text = "\n".join(found)
    for needle in ("--project", "--region", "--temp_location", "--out must be a gs://", "--images must be a gs://",
                   "must import maskmine"):
        assert needle in text
    with pytest.raises(UserError, match=r"problem\(s\)"):
        check_runner_options(["--runner", "DataflowRunner"], out="/local/run", images="/local/images")


def test_dataflow_gpu_mistakes():
    def swap(flag, value):
        args = list(DATAFLOW_GPU)
        args[args.index(flag) + 1] = value
        return args

    assert any("install-nvidia-driver" in e for e in errors(swap("--dataflow_service_options", "worker_accelerator=type:nvidia-tesla-t4;count:1")))
    assert any("cannot carry nvidia-l4" in e and "g2-*" in e
               for e in errors(swap("--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver")))
    assert any("unknown GPU type" in e for e in errors(swap("--dataflow_service_options", "worker_accelerator=type:gtx-1080;count:1;install-nvidia-driver")))
    assert any("malformed" in e for e in errors(swap("--dataflow_service_options", "worker_accelerator=type:nvidia-tesla-t4;count:two")))
    no_machine = [a for i, a in enumerate(DATAFLOW_GPU) if a != "--machine_type" and DATAFLOW_GPU[i - 1] != "--machine_type"]
    assert any("need --machine_type" in e for e in errors(no_machine))
    no_gpu = DATAFLOW_GPU[:-2]
    assert any("--device cuda on Dataflow needs GPU workers" in e for e in errors(no_gpu, device="cuda"))
    assert errors(no_gpu, device="cpu") == []


def test_dataflow_requirements_file_alone_does_not_ship_maskmine(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("torch\n")
    args = [a for i, a in enumerate(DATAFLOW_GPU) if "--sdk_container_image" not in (a, DATAFLOW_GPU[i - 1])]
    found = errors(args + ["--requirements_file", str(req)])
    assert any("does not ship maskmine" in e for e in found)
    repo_pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert errors(args + ["--requirements_file", str(req), "--setup_file", str(repo_pyproject)]) == []
    assert any("--setup_file not found" in e for e in errors(args + ["--setup_file", str(tmp_path / "nope.py")]))


def test_accelerator_parsing():
    assert parse_accelerator("type:nvidia-l4;count:2;install-nvidia-driver").count == 2
    assert not parse_accelerator("type:nvidia-l4;count:1").install_driver
    with pytest.raises(ValueError, match="count must be at least 1"):
        parse_accelerator("type:nvidia-l4;count:0")


def test_flink_needs_a_job_server_without_maven_and_a_worker_image(tmp_path):
    found = errors(["--runner", "FlinkRunner"])
    assert any("download Beam's Flink job-server jar" in e for e in found)
    assert any("--flink_master [auto]" in e for e in found)
    good = ["--runner", "FlinkRunner", "--flink_master", "jobmanager:8081", "--job_endpoint", "jobserver:8099",
            "--environment_type", "DOCKER", "--sdk_container_image", "registry/maskmine-beam:1"]
    assert errors(good) == []
    no_image = good[:-2]
    assert any("lacks maskmine" in e for e in errors(no_image))
    jar = tmp_path / "beam-runners-flink-job-server.jar"
    jar.write_bytes(b"PK")
    with_jar = ["--runner", "FlinkRunner", "--flink_master", "jobmanager:8081", "--flink_job_server_jar", str(jar),
                "--environment_type", "PROCESS", "--environment_options", "process_command=/opt/apache/beam/boot"]
    assert errors(with_jar) == []
    assert any("would be downloaded" in e for e in errors(with_jar[:4] + ["--flink_job_server_jar", "https://repo1.maven.org/x.jar"] + with_jar[6:]))
    assert any("process_command" in e for e in errors(with_jar[:-2]))


def test_spark_and_portable():
    found = errors(["--runner", "SparkRunner"])
    assert any("Spark job-server jar" in e for e in found) and any("local[4] runs Spark on this machine" in e for e in found)
    good = ["--runner", "SparkRunner", "--spark_master_url", "spark://master:7077", "--job_endpoint", "jobserver:8099",
            "--environment_type", "EXTERNAL", "--environment_options", "external_service_address=pool:50000"]
    assert errors(good) == []
    assert any("spark_rest_url" in e for e in errors(good + ["--spark_submit_uber_jar"]))
    assert any("needs --job_endpoint" in e for e in errors(["--runner", "PortableRunner"]))
    assert any("--environment_type must be one of" in e for e in errors(
        ["--runner", "PortableRunner", "--job_endpoint", "js:8099", "--environment_type", "KUBERNETES"]))


def test_run_mining_checks_before_any_work(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "run"
    config = MineConfig(captions=str(tmp_path / "never-read.json"), images=str(images), out=str(out),
                        instances=str(tmp_path / "i.json"))
    with pytest.raises(UserError, match="DataflowRunner needs --project"):
        run_mining(config, ["--runner", "DataflowRunner"], progress=False)
    assert not out.exists()  # failed before reading captions or creating the run folder

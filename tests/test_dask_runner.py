"""DaskRunner: Beam 2.77 loses finish_bundle outputs there; maskmine's fix keeps them all.

Starts a local dask.distributed cluster of 2 worker processes on 127.0.0.1
(module fixture) and stops it at the end. The workers import maskmine from
the repo root, passed to them through PYTHONPATH.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import uuid
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from maskmine.pipelines import dask_bundle_fix, runners
from maskmine.pipelines.cli import main
from maskmine.pipelines.verify import verify_run
from mining_helpers import mine_command

distributed = pytest.importorskip("distributed")
REPO = Path(__file__).resolve().parents[1]


def test_probe_shows_the_loss_in_beams_function_and_none_with_the_fix():
    upstream = dask_bundle_fix.upstream_function()
    # 7 elements in groups of 3: 1+2+3, 4+5+6 from process(), 7 from finish_bundle()
    assert dask_bundle_fix.probe(upstream, range(1, 8)) == [6, 15]  # the 7 is lost
    assert dask_bundle_fix.probe(dask_bundle_fix.apply_dofn_to_bundle, range(1, 8)) == [6, 7, 15]
    assert dask_bundle_fix.upstream_drops_outputs()


def test_install_is_guarded_and_reversible():
    from apache_beam.runners.dask import transform_evaluator

    upstream = dask_bundle_fix.upstream_function()
    try:
        assert dask_bundle_fix.install() and dask_bundle_fix.installed()
        assert transform_evaluator.apply_dofn_to_bundle is dask_bundle_fix.apply_dofn_to_bundle
        assert dask_bundle_fix.install()  # idempotent
    finally:
        dask_bundle_fix.uninstall()
    assert transform_evaluator.apply_dofn_to_bundle is upstream
    assert not dask_bundle_fix.installed()


@pytest.fixture(scope="module")
def cluster():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    if os.environ.get("NLTK_DATA"):
        env["NLTK_DATA"] = os.environ["NLTK_DATA"]
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, env=env
    ) as local:
        yield local.scheduler_address
    dask_bundle_fix.uninstall()


def test_cluster_workers_import_maskmine(cluster):
    assert runners.check_dask_cluster(cluster) == 2
    with distributed.Client(cluster) as client:
        files = client.run(lambda: importlib.import_module("maskmine.pipelines.stages").__file__)
    assert len(files) == 2 and all(Path(f).resolve().parent.parent == REPO for f in files.values())


class _WriteEach(beam.DoFn):
    """Records every element it sees as a file, so the test can count what reached it on the workers."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, value: int):
        Path(self.folder, uuid.uuid4().hex).write_text(str(value))
        yield value


def _run_probe_pipeline(address: str, folder: Path, bundle_fix: bool) -> list[int]:
    options = PipelineOptions(["--runner", "DaskRunner", "--dask_client_address", address, "--dask_npartitions", "4"])
    runner = runners.make_dask_runner(options, bundle_fix=bundle_fix)
    with beam.Pipeline(runner=runner, options=options) as p:
        (
            p
            | beam.Create(list(range(40)))
            | "Buffer" >> beam.ParDo(dask_bundle_fix.FinishBundleProbe(group=3))
            | "Record" >> beam.ParDo(_WriteEach(str(folder)))
        )
    return sorted(int(f.read_text()) for f in folder.iterdir())


def test_buffering_dofn_loses_outputs_without_the_fix_and_none_with_it(cluster, tmp_path):
    lost, kept = tmp_path / "without", tmp_path / "with"
    lost.mkdir()
    kept.mkdir()
    without = _run_probe_pipeline(cluster, lost, bundle_fix=False)
    with_fix = _run_probe_pipeline(cluster, kept, bundle_fix=True)
    # 4 partitions of 10: three sums of 3 from process() and the sum of the last one from finish_bundle each
    assert len(with_fix) == 16 and sum(with_fix) == sum(range(40))
    assert len(without) == 12 and sum(without) < sum(range(40))


MINE_ARGS = ("--num-shards", "3", "--limit", "24", "--batch-size", "4")


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


def test_dask_workers_size_torch_threads_to_their_share(cluster):
    from maskmine.transforms.torch_threads import local_cpu_count, resolve_torch_threads

    with distributed.Client(cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        threads = client.gather([client.submit(resolve_torch_threads, None, None, workers=[w], pure=False) for w in workers])
    assert threads == [max(1, local_cpu_count() // 2)] * 2  # 2 single-thread worker processes on this host
    assert resolve_torch_threads(3, None) == 3 and resolve_torch_threads(None, 1) == local_cpu_count()


def test_mine_on_dask_equals_direct_runner(cluster, coco_mini, nltk_data, tmp_path):
    # Both runs in fresh processes (a subprocess; Dask's worker processes) with 1 torch thread:
    # CPU float32 results depend on the thread count, and byte-identical tars need the same one.
    direct, dask = tmp_path / "direct", tmp_path / "dask"
    done = subprocess.run(mine_command(coco_mini, direct, *MINE_ARGS, "--runner", "DirectRunner"), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    dask_args = mine_command(coco_mini, dask, *MINE_ARGS, "--runner", "DaskRunner", "--dask_client_address", cluster)
    assert main(dask_args[dask_args.index("mine"):]) == 0
    assert dask_bundle_fix.installed()
    assert len(_digests(direct)) == 3
    assert _digests(dask) == _digests(direct)
    assert pd.read_parquet(dask / "parquet").equals(pd.read_parquet(direct / "parquet"))
    assert verify_run(str(dask)).ok
    assert (dask / "vocabulary.json").read_text() == (direct / "vocabulary.json").read_text()

"""DaskRunner: mining there equals the DirectRunner; a DoFn emitting from finish_bundle is refused.

Beam 2.77's DaskRunner loses what a DoFn emits from ``finish_bundle``; the
mining graph emits from ``process`` only, and maskmine's Dask runner refuses
any pipeline that would lose outputs that way.

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

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from maskmine.pipelines import runners
from maskmine.transforms.errors import UserError
from maskmine.pipelines.cli import main
from maskmine.transforms.verify_run import verify_run
from mining_helpers import mine_command

distributed = pytest.importorskip("distributed")
REPO = Path(__file__).resolve().parents[1]


class FinishBundleProbe(beam.DoFn):
    """Emits the sum of every ``group`` elements; the remainder's sum from ``finish_bundle``."""

    def __init__(self, group: int = 3) -> None:
        self.group = group
        self._buffer: list[int] = []

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, element: int):
        self._buffer.append(element)
        if len(self._buffer) == self.group:
            yield sum(self._buffer)
            self._buffer = []

    def finish_bundle(self):
        if self._buffer:
            yield WindowedValue(sum(self._buffer), 0, (GlobalWindow(),))
        self._buffer = []


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


def test_cluster_workers_import_maskmine(cluster):
    assert runners.check_dask_cluster(cluster) == 2
    with distributed.Client(cluster) as client:
        files = client.run(lambda: importlib.import_module("maskmine.pipelines.mine_dofn").__file__)
    assert len(files) == 2 and all(Path(f).resolve().parent.parent == REPO for f in files.values())


class _WriteEach(beam.DoFn):
    """Records every element it sees as a file, so the test can count what reached it on the workers."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, value: int):
        Path(self.folder, uuid.uuid4().hex).write_text(str(value))
        yield value


def _probe_pipeline(p: beam.Pipeline, folder: Path) -> None:
    (
        p
        | beam.Create(list(range(40)))
        | "Buffer" >> beam.ParDo(FinishBundleProbe(group=3))
        | "Record" >> beam.ParDo(_WriteEach(str(folder)))
    )


def test_beams_dask_runner_still_drops_finish_bundle_outputs(cluster, tmp_path):
    """Why maskmine refuses such DoFns on Dask; when this fails, upstream fixed it and the refusal can go."""
    from apache_beam.runners.dask.dask_runner import DaskRunner

    options = PipelineOptions(["--dask_client_address", cluster, "--dask_npartitions", "4"])
    p = beam.Pipeline(runner=DaskRunner(), options=options)
    _probe_pipeline(p, tmp_path)
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        result.client.close()
    got = sorted(int(f.read_text()) for f in tmp_path.iterdir())
    # 4 partitions of 10: three sums of 3 from process() each; the sum of the 10th from finish_bundle is lost
    assert len(got) == 12 and sum(got) == sum(range(40)) - sum(range(9, 40, 10))


def test_maskmine_dask_runner_refuses_a_dofn_emitting_from_finish_bundle(cluster, tmp_path):
    options = PipelineOptions(["--runner", "DaskRunner", "--dask_client_address", cluster, "--dask_npartitions", "4"])
    p = beam.Pipeline(runner=runners.make_dask_runner(options), options=options)
    _probe_pipeline(p, tmp_path)
    with pytest.raises(UserError, match=r"finish_bundle.*Buffer \(FinishBundleProbe\)"):
        p.run()
    assert not any(tmp_path.iterdir())  # refused before anything ran
    batching = beam.Pipeline()
    _ = batching | beam.Create([1, 2, 3]) | beam.BatchElements(min_batch_size=2)
    assert runners.finish_bundle_dofns(batching) == ["BatchElements/ParDo(_GlobalWindowsBatchingDoFn) (_GlobalWindowsBatchingDoFn)"]


def test_mining_graph_emits_nothing_from_finish_bundle():
    from maskmine.pipelines.mine import build_pipeline

    p = beam.Pipeline()
    build_pipeline(p, [0, 1, 2], job=None)
    assert runners.finish_bundle_dofns(p) == []


MINE_ARGS = ("--num-shards", "3", "--limit", "24", "--batch-size", "4")


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


def test_dask_workers_size_torch_threads_to_their_share(cluster):
    from maskmine.transforms.worker_threads import local_cpu_count, resolve_torch_threads

    with distributed.Client(cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        threads = client.gather([client.submit(resolve_torch_threads, None, None, workers=[w], pure=False) for w in workers])
    assert threads == [max(1, local_cpu_count() // 2)] * 2  # 2 single-thread worker processes on this host
    assert resolve_torch_threads(3, None) == 3 and resolve_torch_threads(None, 1) == local_cpu_count()


def test_mine_on_dask_equals_direct_runner(cluster, coco_cc_by, nltk_data, tmp_path):
    # Both runs in fresh processes (a subprocess; Dask's worker processes) with 1 torch thread:
    # CPU float32 results depend on the thread count, and byte-identical tars need the same one.
    direct, dask = tmp_path / "direct", tmp_path / "dask"
    done = subprocess.run(mine_command(coco_cc_by, direct, *MINE_ARGS, "--runner", "DirectRunner"), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    dask_args = mine_command(coco_cc_by, dask, *MINE_ARGS, "--runner", "DaskRunner", "--dask_client_address", cluster)
    assert main(dask_args[dask_args.index("mine"):]) == 0
    assert len(_digests(direct)) == 3
    assert _digests(dask) == _digests(direct)
    assert pd.read_parquet(dask / "parquet").equals(pd.read_parquet(direct / "parquet"))
    assert verify_run(str(dask)).ok
    assert (dask / "vocabulary.json").read_text() == (direct / "vocabulary.json").read_text()

"""Several processes on one cache: a run is built once, and processes walking the same runs split them."""

import dataclasses
import json
import multiprocessing
import os
import time

import pytest

from sepo.cache import RunBusy, cached_run, exclusive, lock_path, numerics, share_work
from sepo.config import StageConfig


@dataclasses.dataclass
class ToyConfig(StageConfig):
    value: int = 0
    output_dir: str = ""


def toy_run(config: ToyConfig) -> dict:
    """A stage run that takes a while and leaves a record of which process built it."""
    time.sleep(0.5)
    metrics = {"value": config.value * 2, "pid": os.getpid()}
    from pathlib import Path

    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def build(cache_dir: str, values: list[int], shared: bool) -> list[int]:
    calls = [lambda v=v: cached_run("toy", ToyConfig, {"value": v}, toy_run, cache_dir, code="c")[1]["value"] for v in values]
    return share_work(calls) if shared else [call() for call in calls]


def hold_lock(path: str, seconds: float, ready) -> None:
    with exclusive(path):
        ready.set()
        time.sleep(seconds)


def built_lines(cache_dir) -> list[dict]:
    lines = (cache_dir / "usage.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if json.loads(line)["built"]]


def test_share_work_returns_results_in_call_order_and_retries_what_was_busy():
    busy = {"first": True}

    def sometimes_busy():
        if busy.pop("first", False):
            raise RunBusy("held elsewhere")
        return "second pass"

    assert share_work([lambda: 1, sometimes_busy, lambda: 3]) == [1, "second pass", 3]


def test_busy_outside_share_work_waits_for_the_lock(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=hold_lock, args=(str(tmp_path / "x.lock"), 1.0, ready))
    holder.start()
    assert ready.wait(60)
    start = time.perf_counter()
    with exclusive(tmp_path / "x.lock"):
        waited = time.perf_counter() - start
    holder.join()
    assert waited > 0.3  # it waited for the holder instead of building beside it


def test_a_busy_run_is_put_off_inside_share_work(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=hold_lock, args=(str(tmp_path / "x.lock"), 1.0, ready))
    holder.start()
    assert ready.wait(60)
    order = []

    def needs_the_lock():
        with exclusive(tmp_path / "x.lock"):
            order.append("locked")
        return "locked"

    def free():
        order.append("free")
        return "free"

    assert share_work([needs_the_lock, free]) == ["locked", "free"]
    holder.join()
    assert order == ["free", "locked"]  # the free call ran while the other process held the lock


def test_two_processes_build_each_run_once_and_split_the_work(tmp_path):
    cache_dir = tmp_path / "cache"
    values = list(range(6))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(build, [(str(cache_dir), values, True), (str(cache_dir), values, True)])
    assert results == [[2 * v for v in values]] * 2
    built = built_lines(cache_dir)
    assert sorted(line["key"] for line in built) == sorted({line["key"] for line in built})  # each run built once
    assert len(built) == len(values)
    builders = {json.loads(path.read_text())["pid"] for path in (cache_dir / "toy").glob("*/metrics.json")}
    assert len(builders) == 2  # both processes built some of the runs: neither waited for the other's
    assert lock_path(cache_dir, "toy", built[0]["key"]).exists()


def test_cached_run_reads_a_run_another_process_finished_while_it_waited(tmp_path):
    cache_dir = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:  # both ask for the same run at once, outside share_work: one builds, one waits
        results = pool.starmap(build, [(str(cache_dir), [7], False), (str(cache_dir), [7], False)])
    assert results == [[14], [14]]
    assert len(built_lines(cache_dir)) == 1


def test_the_thread_count_is_part_of_the_numerics():
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = numerics()
        torch.set_num_threads(2)
        assert numerics() != one and "threads 2" in numerics()
        assert numerics().rsplit(" ", 1)[-1] == torch.backends.cpu.get_cpu_capability()  # the kernel set comes last
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    pytest.main([__file__])

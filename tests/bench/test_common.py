"""bench.common: the timing, thread and result helpers every benchmark uses."""

from __future__ import annotations

import argparse
import json
import os

from bench.common import THREAD_VARIABLES, add_json_option, benchmark_main, best_of_rounds, one_core_threads


def test_best_of_rounds_alternates_the_runs_and_keeps_each_fastest():
    calls: list[str] = []
    times = {"a": iter([3.0, 1.0, 2.0]), "b": iter([0.5, 0.7, 0.6])}

    def run(name: str):
        def timed() -> tuple[float, str]:
            calls.append(name)
            seconds = next(times[name])
            return seconds, f"{name}@{seconds}"
        return timed

    best = best_of_rounds(3, {"a": run("a"), "b": run("b")})
    assert calls == ["a", "b"] * 3
    assert best == {"a": (1.0, "a@1.0"), "b": (0.5, "b@0.5")}


def test_one_core_threads_keeps_what_the_caller_set(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    one_core_threads()
    assert [os.environ[name] for name in THREAD_VARIABLES] == ["4", "1", "1"]


def test_benchmark_main_prints_the_summary_then_the_result_line_and_writes_the_json(tmp_path, capsys):
    def parse_args(argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--size", type=int, default=2)
        add_json_option(parser)
        return parser.parse_args(argv)

    main = benchmark_main(parse_args, lambda args: {"size": args.size, "shapes_per_s": 1.5},
                          lambda result: print(f"{result['shapes_per_s']} shapes/s"))
    path = tmp_path / "result.json"
    assert main(["--size", "3", "--json", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1.5 shapes/s"
    assert json.loads(lines[-1].removeprefix("RESULT ")) == json.loads(path.read_text()) == {
        "size": 3, "shapes_per_s": 1.5}

"""Runs the parts of the check in order under one time budget and gathers their results into one report.

Every part is a process of its own (`runner`), a module run from the project root: the environment
probe, the CUDA-marked tests, one `bench.model_step` per configuration, `bench.patchify_placement`, the
sharding job with `--in-process` (started first, in the background: it needs only a CPU core) and
`bench.train_throughput` on those shards. Results come back as JSON files; logs stay in `<out>/logs/`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.gpucheck import placement, pytest_output, runner
from bench.gpucheck.runner import Clock, Outcome
from bench.gpucheck.settings import Settings, StepConfig

ROOT = Path(__file__).resolve().parents[2]


def cuda_test_files() -> list[str]:
    """Test files holding CUDA-marked tests; only these are collected (the others import more packages)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "pytest.mark.cuda" in p.read_text())


class Check:
    def __init__(self, settings: Settings, out: Path, budget_s: float | None = None) -> None:
        self.s = settings
        self.out = out
        self.results = out / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.clock = Clock(budget_s or settings.budget_s)
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))  # shards: large, never part of the output
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **settings.env}
        self.report: dict = {"mode": settings.mode, "budget_s": self.clock.budget_s, "not_run": []}

    # -- running -------------------------------------------------------------------------------------

    def _limit(self, key: str, part: str) -> float | Outcome:
        """Seconds this part may run, or the skipped outcome when the budget has too little left."""
        limit, left = self.s.limits[part], self.clock.left()
        if left < limit.least_s:
            outcome = Outcome("skipped", reason=f"time budget: {max(left, 0):.0f} s left, the part needs "
                                                f"{limit.least_s:.0f} s to start")
            self.report["not_run"].append({"part": key, **outcome.as_dict()})
            return outcome
        return min(limit.most_s, left)

    def _argv(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def _log(self, key: str) -> Path:
        return self.out / "logs" / f"{key.replace('/', '_')}.log"

    def _run(self, key: str, part: str, argv: list[str]) -> Outcome:
        limit = self._limit(key, part)
        if isinstance(limit, Outcome):
            return limit
        print(f"[gpu-check] {key} (up to {limit:.0f} s, {self.clock.left():.0f} s of the budget left)", flush=True)
        outcome = runner.run(argv, self._log(key), limit, ROOT, self.env)
        self._note(key, outcome)
        return outcome

    def _note(self, key: str, outcome: Outcome) -> None:
        print(f"[gpu-check] {key}: {outcome.status} in {outcome.seconds:.0f} s", flush=True)
        if outcome.status == "timed_out":
            self.report["not_run"].append({"part": key, **outcome.as_dict()})

    @staticmethod
    def _read(path: Path) -> dict | None:
        return json.loads(path.read_text()) if path.is_file() else None

    # -- parts ---------------------------------------------------------------------------------------

    def environment(self) -> dict | None:
        path = self.results / "environment.json"
        outcome = self._run("environment", "environment",
                            self._argv("bench.gpucheck.environment", "--json", str(path)))
        self.report["environment"] = {**outcome.as_dict(), "result": self._read(path)}
        return self.report["environment"]["result"]

    def start_shards(self) -> runner.Running | Outcome:
        limit = self._limit("shards", "shards")
        if isinstance(limit, Outcome):
            return limit
        argv = self._argv("sharding.shard_corpus", "--source", self.s.shard_source, "--output", str(self.shards),
                          "--shard-size", str(self.s.shard_size), "--num-points", str(self.s.shard_points),
                          "--in-process", "--no-progress")
        print(f"[gpu-check] shards in the background (up to {limit:.0f} s)", flush=True)
        return runner.start(argv, self._log("shards"), limit, ROOT, self.env)

    @property
    def shards(self) -> Path:
        return self.work / "shards"

    def finish_shards(self, started: runner.Running | Outcome) -> bool:
        outcome = started if isinstance(started, Outcome) else started.wait()
        if not isinstance(started, Outcome):
            self._note("shards", outcome)
        result = None
        if outcome.status == "ok":
            manifest = json.loads((self.shards / "manifest.json").read_text())
            stats = json.loads((self.shards / "stats.json").read_text())
            result = {"samples": manifest["total_samples"], "shards": len(manifest["shardlist"]),
                      "failed": manifest["total_failed"], "points": self.s.shard_points, **stats}
        self.report["shards"] = {**outcome.as_dict(), "result": result}
        return outcome.status == "ok"

    def cuda_tests(self) -> None:
        files = cuda_test_files()
        outcome = self._run("cuda_tests", "cuda_tests", self._argv(
            "pytest", "-v", "-rfE", "-p", "no:cacheprovider", "-m", "cuda", *files))
        result = None
        if outcome.log:
            result = {"files": files, **pytest_output.parse(Path(outcome.log).read_text(errors="replace"))}
        self.report["cuda_tests"] = {**outcome.as_dict(), "result": result}

    def model_step(self, config: StepConfig) -> None:
        path = self.results / f"{config.key.replace('/', '_')}.json"
        warmup = self.s.warmup_fp16 if config.precision == "fp16" else self.s.warmup
        argv = self._argv("bench.model_step", "--config", self.s.models[config.model], "--device", self.s.device,
                          "--batch-size", str(self.s.batch_size), "--precision", config.precision,
                          "--warmup", str(warmup), "--steps", str(self.s.steps), "--json", str(path),
                          *(["--compile"] if config.compile else []))
        outcome = self._run(config.key, "model_step_compiled" if config.compile else "model_step", argv)
        self._add_step(config, outcome, self._read(path))

    def _add_step(self, config: StepConfig, outcome: Outcome, result: dict | None) -> None:
        self.report.setdefault("model_step", []).append({
            "model": config.model, "config": self.s.models[config.model], "precision": config.precision,
            "compile": config.compile, **outcome.as_dict(), "result": result})

    def listed_only(self, config: StepConfig, status: str, reason: str) -> None:
        outcome = Outcome(status, reason=reason)
        self._add_step(config, outcome, None)
        self.report["not_run"].append({"part": config.key, **outcome.as_dict()})

    def patchify(self) -> None:
        path = self.results / "patchify.json"
        outcome = self._run("patchify", "patchify", self._argv(
            "bench.patchify_placement", "--config", self.s.patchify_config, "--device", self.s.device,
            "--batch-size", str(self.s.patchify_batch), "--repeats", str(self.s.patchify_repeats), "--json", str(path)))
        self.report["patchify"] = {**outcome.as_dict(), "result": self._read(path)}

    def training(self, have_shards: bool) -> None:
        path = self.results / "training.json"
        if not have_shards:
            outcome = Outcome("skipped", reason="no shards: the shards part did not finish")
            self.report["not_run"].append({"part": "training", **outcome.as_dict()})
        else:
            outcome = self._run("training", "training", self._argv(
                "bench.train_throughput", "--config", self.s.train_config, "--warmup", str(self.s.train_warmup),
                "--steps", str(self.s.train_steps), "--json", str(path), f"data.datasets.0.url={self.shards}",
                *self.s.train_overrides))
        self.report["training"] = {**outcome.as_dict(), "result": self._read(path)}

    def placement(self) -> None:
        """The patchify decision, from the model's pace and the loader's cost per shape measured here."""
        patch = self.report.get("patchify", {}).get("result")
        if patch is None:
            self.report["patchify_placement"] = {"decision": None, "reason": "the patchify part has no result",
                                                 "rule": placement.RULE}
            return
        train = self.report.get("training", {}).get("result")
        eager = [e["result"] for e in self.report.get("model_step", [])
                 if e["result"] and e["model"] == self.s.train_model and e["precision"] == self.s.train_precision
                 and not e["compile"]]
        if train:
            pace, pace_from = train["model_shapes_per_s"], "training: shapes/s without data wait"
            loader_ms = 1e3 * train["num_workers"] / train["loader_capacity_shapes_per_s"]
            loader_from = "training: the whole loader's worker time per shape"
        elif eager:
            pace = eager[0]["shapes_per_s"]
            pace_from = f"model step {self.s.train_model} {self.s.train_precision} eager"
            loader_ms = patch["cpu_crops_ms_per_shape"] + patch["cpu_patchify_ms_per_shape"]
            loader_from = "patchify part: crops + patchify per shape"
        else:
            self.report["patchify_placement"] = {
                "decision": None, "rule": placement.RULE,
                "reason": "no model pace: neither training nor its eager model step ran"}
            return
        cores = (self.report.get("environment", {}).get("result") or {}).get("cpu_count") or os.cpu_count()
        self.report["patchify_placement"] = {
            **placement.decide(pace, loader_ms, patch["cpu_patchify_ms_per_shape"], patch["device_ms_per_shape"],
                               cores),
            "model_shapes_per_s_from": pace_from, "loader_ms_per_shape_from": loader_from, "cpu_cores": cores,
            "device": patch["device"]}

    # -- the whole check -----------------------------------------------------------------------------

    def run(self) -> dict:
        try:
            env = self.environment()
            if self.s.device == "cuda" and not (env or {}).get("cuda_available"):
                self.report["error"] = ("no CUDA device visible: the full check needs one "
                                        "(`python -m bench.gpu_check --smoke` runs the CPU smoke check)")
                return self._finish()
            shards = self.start_shards()
            self.cuda_tests()
            for config in self.s.first_steps:
                self.model_step(config)
            self.patchify()
            self.training(self.finish_shards(shards))
            for config in self.s.later_steps:
                self.model_step(config)
            for config, status, reason in self.s.not_run:
                self.listed_only(config, status, reason)
            self.placement()
            return self._finish()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def _finish(self) -> dict:
        self.report["seconds"] = round(self.clock.elapsed(), 1)
        return self.report

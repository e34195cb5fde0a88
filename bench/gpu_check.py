"""One command that checks and measures the project on one GPU, within 7.5 minutes: `make gpu-check`.

It writes `<out>/gpu_check.json` and `<out>/gpu_check.md` (logs of every part in `<out>/logs/`):

* the CUDA-marked tests (pytest in a subprocess): passed / failed, and the failures by name;
* the training step of S and B at batch 128 in fp32, bf16 and fp16, eager and compiled: shapes/s,
  first-step (compile) seconds, peak memory and MFU (`bench.model_step`: the trainer's `TrainStep`);
* the real loader feeding the DeepSpeed engine (`bench.train_throughput`, MLflow off) on shards
  made on the spot without Ray (`sharding.shard_corpus --in-process`): shapes/s, data-wait fraction;
* patchify on the GPU against the loader's CPU kernels per shape and per core, and where it belongs
  by the rule stated in the report (`bench.patchify_placement`, `bench.gpucheck.placement`).

Each part has a time limit and the whole check a budget (bench/gpucheck/settings.py); a part that
did not run, or was cut short, is listed with the reason. --smoke runs every part on the CPU with the
`tiny` model in a few minutes (fp16 is reported as not available on CPU).

    python -m bench.gpu_check --out gpu-check-output            # on the GPU machine, from the project root
    python -m bench.gpu_check --smoke --out /tmp/gpu-check      # anywhere

Exits 1 when a part failed or ran out of time, 2 when the full check finds no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.gpucheck.check import Check
from bench.gpucheck.report import markdown
from bench.gpucheck.settings import FULL, SMOKE


def problems(report: dict) -> list[str]:
    """Parts that failed or ran out of time (skipped parts are listed in the report, not problems)."""
    parts = [report.get(name) or {} for name in ("environment", "cuda_tests", "shards", "training", "patchify")]
    bad = [p for p in parts + report.get("model_step", []) if p.get("status") in ("failed", "timed_out")]
    return [p.get("log", "?") for p in bad]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-output"), help="where the report goes")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke check: tiny model, every part, a few minutes")
    parser.add_argument("--budget-s", type=float, help="override the time budget of the whole check")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Check(SMOKE if args.smoke else FULL, args.out.resolve(), args.budget_s).run()
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text + "\n")
    print(text)
    if report.get("error"):
        return 2
    bad = problems(report)
    if bad:
        print(f"[gpu-check] parts failed or ran out of time; logs: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

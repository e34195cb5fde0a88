"""The check's report as Markdown: tables of what ran, what it measured, and what did not run and why."""

from __future__ import annotations


def num(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def one_line(text: str | None) -> str:
    """The last line of a reason (a traceback's ends with the error), safe inside a table cell."""
    lines = (text or "").strip().splitlines()
    return lines[-1].replace("|", "/") if lines else ""


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def status(part: dict) -> str:
    text = part.get("status", "-")
    if part.get("seconds"):
        text += f" ({part['seconds']:.0f} s)"
    return text


def environment(report: dict) -> list[str]:
    env = (report.get("environment") or {}).get("result") or {}
    if not env:
        return ["Environment: no result (" + status(report.get("environment") or {}) + ")", ""]
    device = env.get("device_name", "no CUDA device")
    missing = [f"{name} ({version})" for name, version in env.get("modules", {}).items()
               if version.startswith("missing")]
    lines = [f"Machine: {device}, {env.get('cpu_count')} CPU cores, Python {env.get('python')}, "
             f"torch {env.get('torch')} (CUDA {env.get('cuda_version')})."]
    lines.append("Missing packages: " + "; ".join(missing) + "." if missing
                 else "Every package the check imports is there.")
    return lines + [""]


def cuda_tests(report: dict) -> list[str]:
    part = report.get("cuda_tests") or {}
    r = part.get("result") or {}
    lines = ["## CUDA tests", "", f"Status: {status(part)}. " + (
        f"{r.get('passed', 0)} passed, {r.get('failed', 0)} failed, {r.get('errors', 0)} errors, "
        f"{r.get('skipped', 0)} skipped" + (f", {r['not_run']} not run" if r.get("not_run") else "") + "."
        if r else "")]
    for failure in r.get("failures", []):
        lines.append(f"- `{failure['test']}`: {failure['message']}")
    return lines + [""]


def model_steps(report: dict) -> list[str]:
    rows = []
    for e in report.get("model_step", []):
        r = e.get("result") or {}
        rows.append([e["model"], e["precision"], "compiled" if e["compile"] else "eager", status(e),
                     num(r.get("shapes_per_s")), num(r.get("step_ms")), num(r.get("first_step_s")),
                     num(r.get("peak_memory_mib"), ".0f"), num(None if r.get("mfu") is None else 100 * r["mfu"]),
                     num(r.get("skipped_steps"), "d") if e["precision"] == "fp16" else "",
                     one_line(e.get("reason")) if e.get("status") != "ok" else ""])
    batch = next((e["result"]["batch_size"] for e in report.get("model_step", []) if e.get("result")), None)
    return [f"## Training step (`bench/model_step.py`, batch {batch}, synthetic crops, patchify in the model)", "",
            *table(["model", "precision", "mode", "status", "shapes/s", "ms/step", "first step s", "peak MiB",
                    "MFU %", "fp16 skipped", "note"], rows), ""]


def training(report: dict) -> list[str]:
    shards, part = report.get("shards") or {}, report.get("training") or {}
    s, r = shards.get("result") or {}, part.get("result") or {}
    lines = ["## Real loader into the DeepSpeed engine (`bench/train_throughput.py`)", "",
             f"Shards made here without Ray (`--in-process`): {status(shards)}, {s.get('samples', '-')} shapes of "
             f"{s.get('points', '-')} points in {s.get('shards', '-')} shards, "
             f"{num(s.get('shapes_per_s'))} shapes/s.", ""]
    lines += table(["config", "model", "precision", "status", "batch", "workers", "shapes/s", "data-wait %",
                    "loader capacity", "model pace", "bottleneck", "MFU %"],
                   [[str(r.get("config", "-")), str(r.get("model", "-")), str(r.get("precision", "-")), status(part),
                     str(r.get("global_batch", "-")), str(r.get("num_workers", "-")), num(r.get("shapes_per_s")),
                     num(None if r.get("data_wait_fraction") is None else 100 * r["data_wait_fraction"]),
                     num(r.get("loader_capacity_shapes_per_s")), num(r.get("model_shapes_per_s")),
                     str(r.get("bottleneck", "-")), num(None if r.get("mfu") is None else 100 * r["mfu"])]])
    if part.get("status") not in (None, "ok"):
        lines.append(f"\nTraining: {one_line(part.get('reason'))}")
    return lines + [""]


def patchify(report: dict) -> list[str]:
    part = report.get("patchify") or {}
    r = part.get("result") or {}
    p = report.get("patchify_placement") or {}
    lines = ["## Patchify: GPU or loader workers (`bench/patchify_placement.py`)", "", f"Status: {status(part)}.", ""]
    if r:
        lines += table(["side", "ms per batch", "ms per shape", "shapes/s per core"], [
            [f"model FPS + kNN on {r['device']}", num(r["device_ms_per_batch"], ".2f"),
             num(r["device_ms_per_shape"], ".3f"), ""],
            ["loader FPS + kNN (one CPU core)", "", num(r["cpu_patchify_ms_per_shape"], ".3f"),
             num(r["cpu_patchify_shapes_per_s_per_core"], ".0f")],
            ["loader crops (one CPU core)", "", num(r["cpu_crops_ms_per_shape"], ".3f"), ""]])
        lines += ["", f"Batch of {r['batch_size']} shapes; identical indices on {r['indices_identical_crops']} of "
                      f"{r['crops_total']} crops, the same centres and neighbour sets on "
                      f"{r['same_neighbour_sets_crops']}.", ""]
    if p.get("decision"):
        lines += [f"**Decision: {p['decision']}.** At {p['model_shapes_per_s']:.1f} model shapes/s "
                  f"({p['model_shapes_per_s_from']}), the loader at {p['loader_ms_per_shape']:.3f} ms per shape "
                  f"({p['loader_ms_per_shape_from']}) needs {p['loader_cores_needed']:.2f} of "
                  f"{p['loader_cores_available']} cores; on the GPU patchify would take "
                  f"{100 * p['gpu_time_share_if_on_gpu']:.1f}% of its time and free "
                  f"{p['cores_freed_if_on_gpu']:.2f} cores.",
                  ""]
    elif p:
        lines += [f"No decision: {p.get('reason')}.", ""]
    return lines + [f"Rule: {p.get('rule', '')}", ""]


def not_run(report: dict) -> list[str]:
    rows = [[e["part"], e["status"], one_line(e.get("reason"))] for e in report.get("not_run", [])]
    if not rows:
        return ["Every part ran.", ""]
    return ["## Not run or cut short", "", *table(["part", "status", "why"], rows), ""]


def markdown(report: dict) -> str:
    title = "GPU check" if report["mode"] == "full" else "GPU check, CPU smoke mode (tiny model; not GPU numbers)"
    lines = [f"# {title}", "", f"Finished in {report.get('seconds', 0):.0f} s of a {report['budget_s']:.0f} s budget.",
             ""]
    lines += environment(report)
    if report.get("error"):
        return "\n".join(lines + [f"**Stopped:** {report['error']}", ""])
    for section in (cuda_tests, model_steps, training, patchify, not_run):
        lines += section(report)
    return "\n".join(lines)

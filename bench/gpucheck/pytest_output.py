"""Counts and failures from the output of `pytest -v -rfE`, also when the run was cut short."""

from __future__ import annotations

import re

RESULT = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.MULTILINE)
SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.MULTILINE)
SELECTED = re.compile(r"\bcollected (\d+) items?(?: / (\d+) deselected)?(?: / (\d+) selected)?")
FINAL = re.compile(r"^=+ .*\bin [\d.]+s\b.* =+$", re.MULTILINE)


def parse(output: str) -> dict:
    """{"passed", "failed", "skipped", "errors", "selected", "not_run", "finished", "failures": [{test, message}]}.

    A test's last status wins (an error in teardown follows its PASSED line). Collection errors are
    errors with the file as the test. `not_run` is the selected tests without a result: the run was cut
    short (or could not collect them).
    """
    status: dict[str, str] = {}
    for test, result in RESULT.findall(output):
        status[test] = result
    messages = {test: message or "" for kind, test, message in SUMMARY.findall(output)}
    for test in messages:  # collection errors have no per-test line
        status.setdefault(test, "ERROR")
    counts = {name: sum(s in kinds for s in status.values())
              for name, kinds in (("passed", ("PASSED", "XPASS")), ("failed", ("FAILED",)),
                                  ("skipped", ("SKIPPED", "XFAIL")), ("errors", ("ERROR",)))}
    selected = None
    match = SELECTED.search(output)
    if match:
        collected, deselected, chosen = (int(g) if g else None for g in match.groups())
        selected = chosen if chosen is not None else collected - (deselected or 0)
    tests_with_result = sum(1 for test in status if "::" in test)
    return {
        **counts,
        "selected": selected,
        "not_run": None if selected is None else max(selected - tests_with_result, 0),
        "finished": bool(FINAL.search(output)),
        "failures": [{"test": test, "message": messages.get(test, "")}
                     for test, s in status.items() if s in ("FAILED", "ERROR")],
    }

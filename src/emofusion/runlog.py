"""The end of a Snakemake run on the console: the failed jobs, one line each, and the warnings the run's jobs logged.

With keep-going a failed job's message scrolls away among hundreds of others, and warnings (a set-aside resume.pt,
a clip without audio) reach only the job logs. Snakemake's own log of the run (.snakemake/log/*.snakemake.log,
handed to the Snakefile's onsuccess/onerror handlers) lists every job it started (``rule …:`` with its ``log:``) and
every job that failed (``Error in rule …:``); each rule writes emofusion's log lines to its log file, so the
last ERROR line of a failed job's log is its message.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (?P<rule>\S+):$")
ERROR_HEADER = re.compile(r"^Error in rule (?P<rule>\S+):$")
FIELD = re.compile(r"^ {4}(?P<key>[a-z_]+): (?P<value>.*)$")
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>ERROR|WARNING|CRITICAL) emofusion: (?P<message>.*)$")
FRAME = re.compile(r'^\s*File "[^"]*", line \d+|^\s|^Traceback \(most recent call last\)')
MAX_WARNINGS = 20
MAX_MESSAGE = 400  # characters of a failed job's line


@dataclass
class Job:
    """A job of the run as Snakemake's log describes it."""

    rule: str
    failed: bool = False
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> list[str]:
        value = self.fields.get("log", "").split(" (check log file", 1)[0]
        return [p.strip() for p in value.split(",") if p.strip()]

    @property
    def what(self) -> str:
        """Which job: its wildcards, else its output."""
        detail = self.fields.get("wildcards") or self.fields.get("output", "").replace(" (update)", "")
        return f"{self.rule} ({detail})" if detail else self.rule


def jobs_of(snakemake_log: str) -> list[Job]:
    """Every job block (started or failed) of a Snakemake log, in order."""
    jobs: list[Job] = []
    current: Job | None = None
    for line in snakemake_log.splitlines():
        header = JOB_HEADER.match(line) or ERROR_HEADER.match(line)
        if header:
            current = Job(header["rule"], failed=line.startswith("Error in rule"))
            jobs.append(current)
        elif current is not None and (f := FIELD.match(line)):
            current.fields.setdefault(f["key"], f["value"])
        elif not line.startswith(" "):
            current = None
    return jobs


def failure_message(log: Path) -> str:
    """A failed job's message: the last emofusion ERROR line of its log, else the last line that is not part of a
    stack trace (a crash outside emofusion's handling)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"no log ({log} cannot be read)"
    errors = [(i, m) for i, line in enumerate(lines) if (m := LOG_LINE.match(line)) and m["level"] != "WARNING"]
    if errors:
        first, match = errors[-1]
        message = match["message"]
        if message.endswith(":"):  # a list follows on indented lines (e.g. every bad video): joined into the line
            details = []
            for line in lines[first + 1 :]:
                if not line.startswith("  "):
                    break
                details.append(line.strip())
            message = f"{message} {'; '.join(details)}"
        return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
    rest = [line.strip() for line in lines if line.strip() and not FRAME.match(line)]
    return rest[-1] if rest else "its log is empty (killed, or out of memory or time?)"


def warnings_of(logs: list[Path]) -> dict[str, Path]:
    """Every emofusion WARNING line in ``logs``, once, with the first log that holds it."""
    found: dict[str, Path] = {}
    for log in logs:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            m = LOG_LINE.match(line)
            if m and m["level"] == "WARNING":
                found.setdefault(m["message"], log)
    return found


def summary(snakemake_log: str, root: Path) -> str:
    """What a run's end prints (empty when no job failed and none warned); job log paths are read under ``root``."""
    jobs = jobs_of(snakemake_log)
    started = {j.fields["jobid"]: j for j in jobs if not j.failed and "jobid" in j.fields}
    failed = list({j.fields.get("jobid", str(i)): j for i, j in enumerate(jobs) if j.failed}.values())
    for job in failed:  # an error block has no wildcards: the block of the job's start has them
        if job.fields.get("jobid") in started:
            job.fields = {**started[job.fields["jobid"]].fields, **job.fields}
    lines = []
    if failed:
        lines.append(f"{len(failed)} job{'s' if len(failed) > 1 else ''} failed:")
        for job in failed:
            logs = job.logs
            message = failure_message(root / logs[0]) if logs else "no log file"
            lines.append(f"  {job.what}: {message}" + (f" [{', '.join(logs)}]" if logs else ""))
    warned = warnings_of(list(dict.fromkeys(root / p for j in jobs for p in j.logs)))
    if warned:
        lines.append(f"{len(warned)} warning{'s' if len(warned) > 1 else ''} in the job logs of this run:")
        for message, log in list(warned.items())[:MAX_WARNINGS]:
            lines.append(f"  {message} [{log.relative_to(root) if log.is_relative_to(root) else log}]")
        if len(warned) > MAX_WARNINGS:
            lines.append(f"  … and {len(warned) - MAX_WARNINGS} more (grep WARNING logs/)")
    return "\n".join(lines)


def print_summary(snakemake_logs: str | list[str] | None, *, out: TextIO | None = None) -> None:
    """Print :func:`summary` of the run whose Snakemake log file(s) are ``snakemake_logs`` (the ``log`` an
    onsuccess/onerror handler gets: a list in Snakemake 9). Job logs are relative to the working directory, where
    Snakemake runs the handlers."""
    paths = [snakemake_logs] if isinstance(snakemake_logs, str) else list(snakemake_logs or [])
    text = ""
    for path in paths:
        try:
            text += Path(path).read_text(errors="replace") + "\n"
        except OSError:
            continue
    found = summary(text, Path.cwd())
    if found:
        print(found, file=out or sys.stderr)

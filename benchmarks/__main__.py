"""``python -m benchmarks --out benchmarks/results/cpu.json``: run the suite, print a table, write JSON.

See benchmarks/README.md for what each section measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.report import REPO, SectionResult, command_line, machine, write_json
from benchmarks.timing import progress

SECTIONS = {
    1: "policies_per_image",
    2: "repeated_image",
    3: "worker_overhead",
    4: "overlap",
    5: "gpu",
    6: "review_console",
    7: "api_load",
    8: "specialists",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--repeats", type=int, help="measured runs per figure (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs before each figure (1)")
    parser.add_argument(
        "--sections", default=",".join(map(str, SECTIONS)), help="comma-separated, e.g. 1,3 (all)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (smoke test)")
    parser.add_argument(
        "--gpu-section-on-cpu",
        action="store_true",
        help="run section 5 on the CPU with a scaled-down config when there is no GPU (exercises its code)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the worker's log level (WARNING: its per-event lines would flood stderr)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".bench-cache",
        help="built models and photos are kept here (default .bench-cache/, git-ignored)",
    )
    return parser


def parse_sections(text: str) -> list[int]:
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--sections: expected numbers like 1,3, got {text!r}") from None
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown or not chosen:
        raise SystemExit(f"--sections: choose from {sorted(SECTIONS)}, got {text!r}")
    return chosen


def _quiet_libraries(level: str) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    from moderation_worker.logging_setup import configure_logging

    # The worker logs one line per event at INFO: thousands of lines over a run. Warnings stay.
    configure_logging(level, "console")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _machine_line(document: dict) -> str:
    m = document["machine"]
    gpus = ", ".join(m["gpu_names"]) or "no GPU"
    load = ", ".join(f"{x:.2f}" for x in document["load_average_at_start"])
    return (
        f"machine: {m['cpu_model']}, {m['cpu_cores_usable']} cores, {m['ram_gib']} GiB, {gpus}; "
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}; "
        f"load average {load}; {m['date']}\n"
    )


def _targets_summary(document: dict) -> str:
    lines = ["== Targets"]
    for number, section in document["sections"].items():
        if "skipped" in section:
            lines.append(f"{number}. {section['title']}: skipped ({section['skipped']})")
        for target in section["targets"]:
            state = "met" if target["met"] else "MISSED"
            lines.append(
                f"{number}. {target['name']}: {target['value']:.3g} (wanted {target['wanted']})  {state}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = parse_sections(args.sections)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be at least 1 and --warmup at least 0")
    _quiet_libraries(args.log_level)

    from importlib import import_module

    from benchmarks.fixtures import Context

    ctx = Context(
        cache_dir=args.cache_dir,
        repeats=repeats,
        warmup=args.warmup,
        quick=args.quick,
        gpu_section_on_cpu=args.gpu_section_on_cpu,
    )
    document = {
        "schema": 1,
        "command": command_line(),
        "machine": machine(),
        "options": {
            "repeats": repeats,
            "warmup": args.warmup,
            "quick": args.quick,
            "sections": sections,
            "gpu_section_on_cpu": args.gpu_section_on_cpu,
        },
        "load_average_at_start": list(os.getloadavg()),
        "sections": {},
    }
    print(_machine_line(document), flush=True)
    started = time.perf_counter()
    failed = []
    try:
        for number in sections:
            name = SECTIONS[number]
            progress(f"section {number} ({name})")
            section_started = time.perf_counter()
            try:
                result: SectionResult = import_module(f"benchmarks.{name}").run(ctx)
            except Exception as exc:  # one broken section must not cost the figures of the others
                traceback.print_exc()
                failed.append(number)
                result = SectionResult(number, name, name.replace("_", " "))
                result.info["error"] = f"{type(exc).__name__}: {exc}"
            body = result.to_json()
            body["seconds"] = round(time.perf_counter() - section_started, 1)
            document["sections"][str(number)] = body
            print(result.render(), flush=True)
            if "error" in result.info:
                print(f"   FAILED: {result.info['error']}\n", flush=True)
    finally:
        ctx.close()
    document["load_average_at_end"] = list(os.getloadavg())
    print(_targets_summary(document), flush=True)
    document["seconds"] = round(time.perf_counter() - started, 1)
    if args.out is not None:
        write_json(args.out, document)
        progress(f"wrote {args.out}")
    progress(f"done in {document['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

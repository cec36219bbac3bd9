"""Our compressor against sharp (Node.js) and libjpeg-turbo (simplejpeg), as ratios.

    python -m benchmarks.compressor [--quick] [--rounds N] [--cache .bench-cache]

Everything runs side by side in one run: every engine gets two cores (a pool of two spawned
processes for Python; one node process with several images in flight for sharp), the corpus
(`benchmarks.corpus`) sits in each engine's memory, and every round times each engine on each
size class in a rotated order. A ratio is the median over rounds of the ratio measured within
the same round, so drift of a shared machine cancels out. Our compressor is the real
`chalicelib.imaging.compress_to_jpeg`; its variants only change process start-up or the
arguments of its JPEG `save()` (see `benchmarks._workers.Variant`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _workers, corpus
from benchmarks._sharp import SHARP_VERSION, Sharp, SharpUnavailable, install
from benchmarks._workers import Setup, Variant

if str(_workers.FUNCTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(_workers.FUNCTIONS_DIR))

QUALITY = 50
MIN_ROUNDS = 5

# How many times each size class's files are repeated in one timed batch (about 24 MP each,
# so a batch lasts long enough to time and still splits evenly over two workers).
REPEATS = {"1MP": 6, "3MP": 4, "12MP": 2, "PNG": 3}
QUICK_REPEATS = {"1MP": 3, "3MP": 2, "12MP": 1, "PNG": 2}
JPEG_GROUPS = ("1MP", "3MP", "12MP")

VARIANTS: tuple[Variant, ...] = (
    Variant("ours", "ours, optimize=False (simplejpeg's settings)", save={"optimize": False}),
    Variant(
        "ours+blocks",
        "ours, optimize=False + set_blocks_max(16)",
        blocks_max=16,
        save={"optimize": False},
    ),
    Variant("ours+opt", "ours as shipped (q50, optimize=True)", save={"optimize": True}),
    Variant(
        "ours+opt+blocks",
        "ours as shipped + set_blocks_max(16)",
        blocks_max=16,
        save={"optimize": True},
    ),
    Variant(
        "ours+prog",
        "ours + progressive=True (+ blocks)",
        blocks_max=16,
        save={"progressive": True, "optimize": True},
    ),
)


_SAVE_CHANGES = {v.key: bool(v.save) for v in VARIANTS}


# -- arithmetic (pure, unit-tested) -----------------------------------------------------------


def paired_ratio(faster: Sequence[float], slower: Sequence[float]) -> float:
    """Throughput of A over B from per-round times of the same work: median of B_i / A_i."""
    if len(faster) != len(slower) or not faster:
        raise ValueError("need the same, non-zero number of rounds for both")
    return statistics.median(b / a for a, b in zip(faster, slower, strict=True))


def summed(times: dict[str, list[float]], groups: Sequence[str]) -> list[float]:
    """Per-round time of several size classes together."""
    return [sum(parts) for parts in zip(*(times[g] for g in groups), strict=True)]


def throughput(megapixels: float, times: Sequence[float]) -> float:
    """Megapixels per second at the median time."""
    return megapixels / statistics.median(times)


# -- engines ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    label: str
    times: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # output bytes of one batch per class
    rss: dict[int, int] = field(default_factory=dict)  # pid -> peak RSS bytes


class PoolEngine:
    """A Python engine on a pool of spawned worker processes."""

    def __init__(self, name: str, label: str, setup: Setup, workers: int) -> None:
        self.result = Result(name, label)
        self.setup = setup
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_workers.init, initargs=(setup,)
        )

    def run(self, indices: list[int]) -> tuple[float, list[int], list[tuple[int, int]]]:
        started = time.perf_counter()
        answers = list(self.pool.map(_workers.task, indices))
        seconds = time.perf_counter() - started
        for _, _, _, pid, rss in answers:
            self.result.rss[pid] = max(rss, self.result.rss.get(pid, 0))
        return seconds, [a[0] for a in answers], [(a[1], a[2]) for a in answers]

    def run_tagged(self, work: list[tuple[int, str]]) -> float:
        """Seconds to compress these corpus files, each with its tag (`benchmarks._distinct`:
        the bytes the pipeline's image host serves for it)."""
        started = time.perf_counter()
        list(self.pool.map(_workers.task_tagged, work))
        return time.perf_counter() - started

    def pids(self) -> list[int]:
        """The pool's processes (for their CPU time)."""
        return [p.pid for p in self.pool._processes.values() if p.pid]

    def outputs(self, indices: list[int]) -> list[bytes]:
        return list(self.pool.map(_workers.output, indices))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SharpEngine:
    def __init__(self, folder: Path, paths: list[str], inflight: int) -> None:
        self.sharp = Sharp(folder, paths, inflight)
        versions = self.sharp.info.get("versions", {})
        self.result = Result(
            "sharp",
            f"sharp {versions.get('sharp', '?')} .jpeg({{quality: {QUALITY}}}), "
            f"{inflight} in flight",
        )

    def run(self, indices: list[int]) -> tuple[float, list[int], list[tuple[int, int]]]:
        done = self.sharp.run(indices, QUALITY)
        return done.seconds, done.sizes, done.dims

    def outputs(self, indices: list[int]) -> list[bytes]:
        return self.sharp.run(indices, QUALITY, keep=True).outputs

    def close(self) -> None:
        pid_rss = self.sharp.peak_rss()
        self.result.rss[0] = pid_rss
        self.sharp.close()


Engine = PoolEngine | SharpEngine


# -- the run ---------------------------------------------------------------------------------


def batches(items: Sequence[corpus.Item], repeats: dict[str, int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for group in corpus.GROUPS:
        members = [i for i, item in enumerate(items) if item.spec.group == group]
        out[group] = members * repeats[group]
    return out


def megapixels(items: Sequence[corpus.Item], indices: Sequence[int]) -> float:
    return sum(items[i].spec.megapixels for i in indices)


def check(
    engines: dict[str, Engine], items: Sequence[corpus.Item], say: Callable[[str], None]
) -> list[str]:
    """Every engine keeps width and height; our variants keep the shipped pixels."""
    problems: list[str] = []
    everything = list(range(len(items)))
    reference = engines["ours"].outputs(everything)
    for name, engine in engines.items():
        groups = everything if name != "simplejpeg" else _jpeg_only(items)
        outputs = engine.outputs(groups)
        for index, data in zip(groups, outputs, strict=True):
            spec = items[index].spec
            size = _jpeg_size(data)
            if size != (spec.width, spec.height):
                problems.append(f"{name}: {spec.name} came out {size}, not its own size")
            if name.startswith("ours+"):
                same = _workers.decoded(data) == _workers.decoded(reference[index])
                if not same:
                    problems.append(f"{name}: {spec.name} decodes to other pixels than ours")
                if not _SAVE_CHANGES.get(name) and data != reference[index]:
                    problems.append(f"{name}: {spec.name} bytes differ from ours")
    say(
        "check: every engine kept every image's width and height; every ours+ variant decodes "
        "to the shipped pixels (blocks: byte-identical)"
        if not problems
        else "check FAILED:\n  " + "\n  ".join(problems)
    )
    return problems


def _jpeg_only(items: Sequence[corpus.Item]) -> list[int]:
    return [i for i, item in enumerate(items) if item.spec.fmt == "JPEG"]


def _jpeg_size(data: bytes) -> tuple[int, int]:
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG":
            raise ValueError("not a JPEG")
        return image.size


def measure(
    engines: dict[str, Engine],
    items: Sequence[corpus.Item],
    plan: dict[str, list[int]],
    rounds: int,
    say: Callable[[str], None],
) -> None:
    names = list(engines)
    jpeg = {i for i in _jpeg_only(items)}
    work = {
        name: [g for g in corpus.GROUPS if name != "simplejpeg" or set(plan[g]) <= jpeg]
        for name in names
    }
    # Warm-up: first allocations, lazy imports, sharp's first libvips calls.
    for name in names:
        for group in work[name]:
            engines[name].run(plan[group])
    for r in range(rounds):
        started = time.perf_counter()
        for g, group in enumerate(corpus.GROUPS):
            shift = (r + g) % len(names)
            for name in names[shift:] + names[:shift]:
                if group not in work[name]:
                    continue
                seconds, sizes, _ = engines[name].run(plan[group])
                result = engines[name].result
                result.times.setdefault(group, []).append(seconds)
                result.sizes[group] = sum(sizes)
        say(f"round {r + 1}/{rounds}: {time.perf_counter() - started:.1f}s")


def report(
    results: dict[str, Result],
    items: Sequence[corpus.Item],
    plan: dict[str, list[int]],
    rounds: int,
) -> list[str]:
    lines: list[str] = []
    mp = {g: megapixels(items, plan[g]) for g in corpus.GROUPS}
    all_groups = tuple(corpus.GROUPS)
    head = f"{'':44}" + "".join(f"{g:>8}" for g in (*corpus.GROUPS, "JPEG", "all"))
    lines += ["", f"throughput, MP/s at the median of {rounds} rounds (two cores each)", head]
    for res in results.values():
        cells = [
            f"{throughput(mp[g], res.times[g]):8.1f}" if g in res.times else f"{'n/a':>8}"
            for g in corpus.GROUPS
        ]
        for groups in (JPEG_GROUPS, all_groups):
            if all(g in res.times for g in groups):
                total = sum(mp[g] for g in groups)
                cells.append(f"{throughput(total, summed(res.times, groups)):8.1f}")
            else:
                cells.append(f"{'n/a':>8}")
        lines.append(f"{res.label[:44]:44}" + "".join(cells))

    def ratio_row(label: str, a: str, b: str, kind: str) -> str | None:
        if a not in results or b not in results:
            return None
        ra, rb = results[a], results[b]
        cells = []
        for g in corpus.GROUPS:
            if g in ra.times and g in rb.times:
                if kind == "speed":
                    cells.append(f"{paired_ratio(ra.times[g], rb.times[g]):8.3f}")
                else:
                    cells.append(f"{ra.sizes[g] / rb.sizes[g]:8.3f}")
            else:
                cells.append(f"{'n/a':>8}")
        for groups in (JPEG_GROUPS, all_groups):
            if all(g in ra.times and g in rb.times for g in groups):
                if kind == "speed":
                    value = paired_ratio(summed(ra.times, groups), summed(rb.times, groups))
                else:
                    value = sum(ra.sizes[g] for g in groups) / sum(rb.sizes[g] for g in groups)
                cells.append(f"{value:8.3f}")
            else:
                cells.append(f"{'n/a':>8}")
        return f"{label[:44]:44}" + "".join(cells)

    speed_rows = [
        ("ours / simplejpeg (equal settings)", "ours", "simplejpeg"),
        ("ours+blocks / simplejpeg (equal settings)", "ours+blocks", "simplejpeg"),
        ("ours / sharp (both defaults)", "ours", "sharp"),
        ("ours+opt / sharp (equal bytes)", "ours+opt", "sharp"),
        ("ours+opt+blocks / sharp (equal bytes)", "ours+opt+blocks", "sharp"),
        ("ours+blocks / ours", "ours+blocks", "ours"),
        ("ours+opt / ours", "ours+opt", "ours"),
        ("ours+opt+blocks / ours", "ours+opt+blocks", "ours"),
        ("ours+prog / ours+blocks", "ours+prog", "ours+blocks"),
        ("sharp / simplejpeg", "sharp", "simplejpeg"),
    ]
    lines += ["", "speed ratios (A / B throughput; median of per-round ratios)", head]
    lines += [row for spec in speed_rows if (row := ratio_row(*spec, "speed"))]
    byte_rows = [
        ("ours / sharp", "ours", "sharp"),
        ("ours+opt / sharp", "ours+opt", "sharp"),
        ("ours+prog / sharp", "ours+prog", "sharp"),
        ("ours / simplejpeg", "ours", "simplejpeg"),
        ("ours+opt / ours", "ours+opt", "ours"),
    ]
    lines += ["", "output bytes ratios (A / B, same inputs)", head]
    lines += [row for spec in byte_rows if (row := ratio_row(*spec, "bytes"))]

    lines += ["", "peak RSS (MB)                                  per process   all processes"]
    for res in results.values():
        if res.rss:
            per = max(res.rss.values()) / 1e6
            total = sum(res.rss.values()) / 1e6
            procs = "1 node process" if res.name == "sharp" else f"{len(res.rss)} workers"
            lines.append(f"{res.label[:44]:44}{per:12.0f}{total:14.0f}   ({procs})")

    lines += ["", "targets"]

    def target(label: str, a: str, b: str, groups: tuple[str, ...], floor: float) -> None:
        if a in results and b in results:
            ra, rb = results[a], results[b]
            if all(g in ra.times and g in rb.times for g in groups):
                value = paired_ratio(summed(ra.times, groups), summed(rb.times, groups))
                verdict = "PASS" if value >= floor else "FAIL"
                lines.append(f"  {label:58} {value:6.3f} >= {floor:.2f}  {verdict}")

    target("ours (optimize=False) vs simplejpeg, JPEG, equal settings", "ours", "simplejpeg",
           JPEG_GROUPS, 0.95)  # fmt: skip
    target("ours as shipped vs sharp, all, equal bytes", "ours+opt", "sharp",
           all_groups, 1.10)  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--rounds", type=int, default=None, help="at least 5 (default 7)")
    parser.add_argument("--quick", action="store_true", help="5 rounds of smaller batches")
    parser.add_argument("--workers", type=int, default=2, help="processes per Python engine")
    parser.add_argument("--inflight", type=int, default=4, help="sharp images in flight")
    parser.add_argument("--no-sharp", action="store_true", help="leave sharp out")
    parser.add_argument(
        "--variants",
        default=",".join(v.key for v in VARIANTS),
        help="comma-separated subset of: " + ", ".join(v.key for v in VARIANTS),
    )
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (MIN_ROUNDS if args.quick else 7)
    if rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    wanted = set(args.variants.split(",")) | {"ours"}
    variants = [v for v in VARIANTS if v.key in wanted]

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    items = corpus.build(args.cache, log=True)
    paths = [str(item.path.resolve()) for item in items]
    plan = batches(items, QUICK_REPEATS if args.quick else REPEATS)
    engines: dict[str, Engine] = {}
    sharp_note = "sharp: left out (--no-sharp)"
    try:
        for variant in variants:
            engines[variant.key] = PoolEngine(
                variant.key,
                variant.label,
                Setup("ours", tuple(paths), QUALITY, variant),
                args.workers,
            )
        engines["simplejpeg"] = PoolEngine(
            "simplejpeg",
            f"simplejpeg decode+encode (q{QUALITY}, 4:2:0)",
            Setup("simplejpeg", tuple(paths), QUALITY),
            args.workers,
        )
        if not args.no_sharp:
            try:
                folder = install(args.cache, SHARP_VERSION)
                sharp = SharpEngine(folder, paths, args.inflight)
                engines["sharp"] = sharp
                info = sharp.sharp.info
                sharp_note = (
                    f"sharp {info['versions'].get('sharp')} (libvips "
                    f"{info['versions'].get('vips')}) on node {info['node']}: "
                    f"{args.inflight} images in flight, sharp.concurrency()={info['concurrency']}, "
                    f"UV_THREADPOOL_SIZE={info['uvThreads']}, cache off"
                )
            except SharpUnavailable as exc:
                sharp_note = f"sharp: unavailable ({exc})"
                say(sharp_note)
        load_before = os.getloadavg()[0]
        say("checking outputs")
        problems = check(engines, items, say)
        say(f"measuring: {rounds} rounds x {len(engines)} engines x {len(plan)} size classes")
        measure(engines, items, plan, rounds, say)
        load_after = os.getloadavg()[0]
    finally:
        for engine in engines.values():
            engine.close()

    results = {name: engine.result for name, engine in engines.items()}
    print(_header(items, plan, rounds, args.workers, sharp_note))
    lines = report(results, items, plan, rounds)
    cpus = os.cpu_count() or 1
    lines += ["", f"load average (1 min) before {load_before:.1f}, after {load_after:.1f}"]
    if max(load_before, load_after) > cpus + 0.5:
        lines.append(
            f"WARNING: the machine was busy with other work (load > {cpus} cpus); engines with "
            "more threads than cores (sharp) gain share under contention: rerun when idle"
        )
    if problems:
        lines += ["", "CHECK FAILED:", *problems]
    print("\n".join(lines))
    record = {
        name: {"label": r.label, "times": r.times, "sizes": r.sizes, "rss": list(r.rss.values())}
        for name, r in results.items()
    }
    (args.cache / "compressor-results.json").write_text(json.dumps(record, indent=1))
    return 1 if problems else 0


def _header(
    items: Sequence[corpus.Item], plan: dict[str, list[int]], rounds: int, workers: int, note: str
) -> str:
    import PIL  # noqa: PLC0415
    import simplejpeg  # type: ignore[import-untyped]  # noqa: PLC0415
    from PIL import features  # noqa: PLC0415

    batch = ", ".join(
        f"{g} {len(plan[g])} images/{megapixels(items, plan[g]):.0f} MP" for g in corpus.GROUPS
    )
    turbo = features.version("libjpeg_turbo")
    return "\n".join(
        [
            f"python -m benchmarks.compressor: {platform.machine()} "
            f"{multiprocessing.cpu_count()} cpus, Python {platform.python_version()}",
            f"Pillow {PIL.__version__} (libjpeg-turbo {turbo}), simplejpeg "
            f"{simplejpeg.__version__}; Python engines: {workers} spawned processes each",
            note,
            f"corpus: {len(items)} files; one batch per size class: {batch}",
            f"{rounds} rounds, engines in rotated order within each round; quality {QUALITY}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

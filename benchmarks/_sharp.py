"""sharp on Node.js for the benchmarks: installed from npm into the cache, driven over a pipe.

One long-lived `node` process loads the corpus once, then answers one JSON line per command:
`run` compresses a list of corpus files with `sharp(input).jpeg({quality})`, or with the
pipeline an `op` describes (`Op`: flatten, resize to fit a box, raw pixels or any format with
its options), several images in flight (libuv's pool runs them on both cores; libvips may
also split one image across its own threads). sharp's operation cache is turned off: a bulk
job never sees the same input twice, and the benchmark feeds the same buffers every round.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SHARP_VERSION = "0.35.5"

SCRIPT = r"""'use strict';
const fs = require('fs');
const readline = require('readline');
const sharp = require('sharp');
sharp.cache(false);
let buffers = [];
function reply(o) { process.stdout.write(JSON.stringify(o) + '\n'); }
function build(buf, op) {
  let p = sharp(buf);
  if (op.flatten) p = p.flatten({ background: '#ffffff' });
  if (op.box) {
    p = p.resize({ width: op.box[0], height: op.box[1], fit: 'inside', withoutEnlargement: true });
  }
  return op.format === 'raw' ? p.raw() : p.toFormat(op.format, op.options || {});
}
async function one(buf, quality, keep, op) {
  const pipeline = op ? build(buf, op) : sharp(buf).jpeg({ quality });
  const { data, info } = await pipeline.toBuffer({ resolveWithObject: true });
  return [data.length, info.width, info.height, keep ? data.toString('base64') : null];
}
async function run(indices, quality, inflight, keep, op) {
  const results = new Array(indices.length);
  let next = 0;
  async function lane() {
    for (;;) {
      const i = next++;
      if (i >= indices.length) return;
      results[i] = await one(buffers[indices[i]], quality, keep, op);
    }
  }
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: Math.min(inflight, indices.length) }, lane));
  const cpu = process.cpuUsage(cpu0);  // every thread of the process: libuv's and libvips'
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9,
           cpu: (cpu.user + cpu.system) / 1e6, results };
}
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const msg = JSON.parse(line);
  try {
    if (msg.cmd === 'load') {
      buffers = msg.paths.map((p) => fs.readFileSync(p));
      reply({ versions: sharp.versions, concurrency: sharp.concurrency(),
              uvThreads: Number(process.env.UV_THREADPOOL_SIZE || 4), node: process.version });
    } else if (msg.cmd === 'run') {
      reply(await run(msg.indices, msg.quality, msg.inflight, !!msg.keep, msg.op || null));
    } else if (msg.cmd === 'rss') {
      // VmHWM: this process's own peak; resourceUsage().maxRSS starts at the parent's
      const status = fs.readFileSync('/proc/self/status', 'ascii');
      const hwm = /VmHWM:\s+(\d+)/.exec(status);
      const now = /VmRSS:\s+(\d+)/.exec(status);
      const maxRSS = hwm ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
      if (msg.reset) {
        try { fs.writeFileSync('/proc/self/clear_refs', '5'); } catch (e) { /* kept */ }
      }
      reply({ pid: process.pid, maxRSS, rss: now ? Number(now[1]) * 1024 : 0 });
    } else {
      process.exit(0);
    }
  } catch (e) {
    reply({ error: String((e && e.stack) || e) });
  }
});
"""


class SharpUnavailable(RuntimeError):
    """node/npm missing, or sharp could not be installed."""


def install(cache: Path, version: str = SHARP_VERSION, log: bool = True) -> Path:
    """Install sharp@version (falling back to the latest) under `cache/node`; return the dir."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SharpUnavailable("node and npm are needed for the sharp comparison")
    folder = (cache / "node").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_sharp.js").write_text(SCRIPT)
    manifest = folder / "node_modules" / "sharp" / "package.json"
    if manifest.exists():
        return folder
    if not (folder / "package.json").exists():
        (folder / "package.json").write_text('{"private": true}\n')
    for spec in (f"sharp@{version}", "sharp@latest"):
        if log:
            print(f"npm install {spec} (into {folder})", file=sys.stderr)
        done = subprocess.run(  # noqa: S603 - fixed arguments
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", spec],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and manifest.exists():
            return folder
        if log:
            print(done.stderr.strip()[-2000:], file=sys.stderr)
    raise SharpUnavailable("npm could not install sharp")


@dataclass(frozen=True)
class Op:
    """What `run` does to each image instead of `.jpeg({quality})`: `format` "raw" (the
    pixels) or a sharp output format with its `options`; `box` (width, height) to fit inside,
    never enlarged; `flatten` transparency on white first."""

    format: str
    options: dict[str, Any] = field(default_factory=dict)
    box: tuple[int, int] | None = None
    flatten: bool = False


@dataclass
class SharpRun:
    seconds: float  # measured inside node, from the first image started to the last done
    sizes: list[int]
    dims: list[tuple[int, int]]
    outputs: list[bytes]
    cpu: float = 0.0  # CPU seconds of the node process (all its threads) over the same span


class Sharp:
    """A `node` process holding the corpus in memory and compressing on request."""

    def __init__(self, folder: Path, paths: list[str], inflight: int) -> None:
        node = shutil.which("node")
        if not node:
            raise SharpUnavailable("node is not on PATH")
        self.inflight = inflight
        self._proc = subprocess.Popen(  # noqa: S603 - fixed arguments
            [node, str(folder / "bench_sharp.js")],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        self.info: dict[str, Any] = self._ask({"cmd": "load", "paths": paths})

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise SharpUnavailable(f"node exited with {proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise SharpUnavailable(answer["error"])
        return answer

    def run(
        self, indices: list[int], quality: int = 0, keep: bool = False, op: Op | None = None
    ) -> SharpRun:
        answer = self._ask(
            {
                "cmd": "run",
                "indices": indices,
                "quality": quality,
                "inflight": self.inflight,
                "keep": keep,
                "op": asdict(op) if op is not None else None,
            }
        )
        results = answer["results"]
        return SharpRun(
            seconds=float(answer["seconds"]),
            sizes=[int(r[0]) for r in results],
            dims=[(int(r[1]), int(r[2])) for r in results],
            outputs=[base64.b64decode(r[3]) for r in results] if keep else [],
            cpu=float(answer.get("cpu", 0.0)),
        )

    def peak_rss(self) -> int:
        return int(self._ask({"cmd": "rss"})["maxRSS"])

    def resident(self, reset: bool = False) -> tuple[int, int]:
        """(resident set size now, its peak so far) in bytes; `reset` then starts the peak
        again from the resident size (Linux's clear_refs)."""
        answer = self._ask({"cmd": "rss", "reset": reset})
        return int(answer["rss"]), int(answer["maxRSS"])

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            assert proc.stdin is not None
            try:
                proc.stdin.write('{"cmd": "exit"}\n')
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()

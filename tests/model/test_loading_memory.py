"""Loading a model holds at most one copy of it in host memory, and none beyond a margin on a GPU.

Measured in a child process (so nothing this test session loaded counts): its peak RSS is reset once
torch and transformers are imported, the scorer is loaded through the production path
(HFScorer.from_pretrained), and the peak growth is compared with the size of the weights on disk.
Loading on the host and then moving to the device would need the whole model in host memory first,
which on a GPU machine is an out-of-memory kill at start for a 9B model on 16 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moderation_worker.model.tiny import build_tiny_glm4v

_MARGIN_BYTES = 160 * 2**20  # the tokenizer, the processor, allocator slack, the probe's activations

_MEASURE = r"""
import json, sys
import torch, transformers  # imported before the peak is reset: their own memory is not the model's
from moderation_worker.model.hf import HFScorer

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM, the peak resident set, to the current one
before = status("VmRSS")
scorer = HFScorer.from_pretrained(sys.argv[1], device=sys.argv[2], local_files_only=True)
params = next(scorer.model.parameters())
print(json.dumps({"growth": status("VmHWM") - before, "device": str(params.device)}))
"""


@pytest.fixture(scope="module")
def mid_sized_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A tiny-architecture model big enough (about 200 MB) that a second copy would stand out."""
    path = build_tiny_glm4v(tmp_path_factory.mktemp("mid-model"), hidden_size=768, num_layers=8)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    assert size > 150 * 2**20, "the model must dwarf the margin, or the check cannot fail"
    return path, size


def _load_in_child(path: Path, device: str) -> dict:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident set")
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), device],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loading_on_the_cpu_holds_one_copy_of_the_weights(mid_sized_model):
    path, size = mid_sized_model
    measured = _load_in_child(path, "cpu")
    assert measured["device"] == "cpu"
    assert measured["growth"] < size + _MARGIN_BYTES, (
        f"peak host memory grew {measured['growth'] / 2**20:.0f} MiB"
        f" loading {size / 2**20:.0f} MiB of weights"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loading_on_a_gpu_does_not_stage_the_weights_in_host_memory(mid_sized_model):
    path, size = mid_sized_model
    measured = _load_in_child(path, "cuda")
    assert measured["device"].startswith("cuda")
    # CUDA's own context takes a few hundred MB of host memory; the weights must not come on top.
    assert measured["growth"] < size // 2 + 512 * 2**20

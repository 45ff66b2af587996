"""sparsify 1.3.3 trained as its Trainer does, in a plain loop over `sae_core.data`'s batches
(the same rows in the same order as `clipsae train --seed 0`): b_dec = mean of the first
batch, FVU loss, the gradient parallel to the decoder rows removed, rows renormalised after
each step, Adam at a constant lr (or, with "optimizer": "signum", sparsify's default:
schedule-free sign SGD at its own lr rule). On CUDA: its Trainer's `set_float32_matmul_precision
("high")`, its bf16-autocast forward and its Triton sparse decoder (unless
SPARSIFY_DISABLE_TRITON=1). Prints one JSON line: import_s, loop_s, steps, decoder.

    python benchmarks/gpu/sparsify_loop.py '{"acts": ..., "out": ..., "d_sae": ..., "k": ..., ...}'
"""

import json
import sys
import time

t0 = time.perf_counter()
a = json.loads(sys.argv[1])
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, a["repo"])
sys.path.insert(0, a["repo"] + "/benchmarks/gpu")
from common import import_sparsify  # noqa: E402

note = import_sparsify()
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402
from sparsify.utils import decoder_impl  # noqa: E402

from sae_core.data import ActivationSource, iter_batches, make_plan  # noqa: E402

t_import = time.perf_counter()
dev = a["device"]
if dev.startswith("cuda"):
    torch.set_float32_matmul_precision("high")  # sparsify/trainer.py, Trainer.fit
x = np.load(a["acts"], mmap_mode="r")
torch.manual_seed(0)
sae = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=a["d_sae"], k=a["k"]), device=dev)
if a.get("optimizer", "adam") == "adam":
    opt = torch.optim.Adam(sae.parameters(), lr=a["lr"])
else:  # sparsify's default: schedule-free sign SGD at its own lr rule (sparsify/trainer.py)
    from schedulefree import ScheduleFreeWrapper
    from sparsify.sign_sgd import SignSGD

    opt = ScheduleFreeWrapper(SignSGD(sae.parameters(), lr=5e-3 / (a["d_sae"] / 2**14) ** 0.5), momentum=0.95)
    opt.train()
src = ActivationSource(a["acts"])
plan = make_plan(src.n_rows, a["batch"], 262_144, 1_024)
sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
sync()
t_loop, step = time.perf_counter(), 0
for epoch in range(a["epochs"]):
    for xb in iter_batches(src, plan, 0, epoch, device=dev):
        if step == 0:
            sae.b_dec.data = xb.mean(0)
        out = sae(xb)
        opt.zero_grad()
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        step += 1
sync()
t_end = time.perf_counter()
if a.get("optimizer", "adam") != "adam":
    opt.eval()
sae.save_to_disk(a["out"])
print(
    json.dumps(
        {
            "import_s": t_import - t0,
            "loop_s": t_end - t_loop,
            "steps": step,
            "decoder": decoder_impl.__name__,
            "note": note,
        }
    )
)

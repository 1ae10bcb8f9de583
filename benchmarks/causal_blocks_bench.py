"""SDPA alone, forward + backward: one `is_causal` call against the same attention as blocks of 256
queries with explicit causal masks (`workers.erase.blocked_sdpa_attention`, called here).

    PYTHONPATH=. .venv/bin/python benchmarks/causal_blocks_bench.py

Prints, per shape `[B, H, L, D]`, the largest output difference and the median seconds of 5 turns
in fp32 and bf16. A scratch check of why erase mode on blocked SDPA measured faster than stream
mode on the causal kernel (BENCHMARKS.md "Blocked SDPA"); run it on an idle machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from workers.erase import blocked_sdpa_attention

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def one_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`blocked_sdpa_attention` with the causal mask training gives it, as `[B, H, L, D]`."""
    length = q.shape[2]
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    out, _ = blocked_sdpa_attention(torch.nn.Module(), q, k, v, mask)
    return out.transpose(1, 2)


def median_s(fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
    times = []
    for _ in range(5):
        qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
        t = time.perf_counter()
        fn(qq, kk, vv).sum().backward()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    for shape in ((16, 4, 512, 64), (4, 4, 2048, 64), (4, 8, 1024, 40)):
        q, k, v = (torch.randn(*shape) for _ in range(3))
        gap = float((one_call(q, k, v) - blocked(q, k, v)).abs().max())
        print(shape, "max diff", gap)
        for dtype in (torch.float32, torch.bfloat16):
            qd, kd, vd = (x.to(dtype) for x in (q, k, v))
            a, b = median_s(one_call, qd, kd, vd), median_s(blocked, qd, kd, vd)
            ms = f"one causal call {a * 1e3:.1f} ms, blocked {b * 1e3:.1f} ms"
            print(f"  {dtype}: {ms}, {b / a:.2f}x")


if __name__ == "__main__":
    main()

"""CUDA's `torch.randn` computed on the CPU: Philox4x32-10 with curand's Box-Muller transform, in numpy.

With a generator seeded by `manual_seed(seed)`, PyTorch's CUDA kernel for normal samples gives output element `i`
its own Philox stream: thread `i` calls `curand_init(seed, subsequence=i, offset)` and takes the first value of one
`curand_normal4`. The counter of that first call is (offset / 4 as 64 bits, i as 64 bits), the key is the seed's
two 32-bit halves; `curand_normal4` turns the first two 32-bit outputs into a normal value through Box-Muller
(`sqrt(-2 log u) * sin(2 pi v)`). After each call the generator's offset advances by 4 (one counter step).

That mapping holds while the tensor fits in one wave of the kernel's launch grid (256 threads per block, at most
`multiProcessorCount * maxThreadsPerMultiProcessor / 256` blocks): 159,744 elements on an H20, 270,336 on an H100,
more than every latent Easel draws for 1024x1024 SDXL (65,536). Beyond it, PyTorch's own values depend on the
GPU's SM count; `PhiloxRandn` keeps the one-thread-per-element mapping there.
"""
from __future__ import annotations

import numpy as np

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)

# curand's constants, as float32: 2^-32 and 2^-32 * 2 pi
_TWO_POW32_INV = np.float32(2.3283064e-10)
_TWO_POW32_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Philox4x32 with `rounds` rounds. `counter`: uint32 [4, N]; `key`: uint32 [2, N]. Returns uint32 [4, N]."""
    c = [np.asarray(counter[i], dtype=np.uint32).copy() for i in range(4)]
    k0, k1 = np.asarray(key[0], dtype=np.uint32).copy(), np.asarray(key[1], dtype=np.uint32).copy()
    for r in range(rounds):
        if r:  # the key is bumped before every round but the first
            k0 = k0 + PHILOX_W0
            k1 = k1 + PHILOX_W1
        p0 = PHILOX_M0 * c[0].astype(np.uint64)
        p1 = PHILOX_M1 * c[2].astype(np.uint64)
        hi0, lo0 = (p0 >> _32).astype(np.uint32), (p0 & _LOW32).astype(np.uint32)
        hi1, lo1 = (p1 >> _32).astype(np.uint32), (p1 & _LOW32).astype(np.uint32)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return np.stack(c)


def box_muller_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """curand's Box-Muller on two uint32 arrays, the first (sine) value of each pair, float32."""
    u = x.astype(np.float32) * _TWO_POW32_INV + _TWO_POW32_INV / np.float32(2)
    v = y.astype(np.float32) * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / np.float32(2)
    s = np.sqrt(np.float32(-2.0) * np.log(u))
    return (s * np.sin(v)).astype(np.float32)


class PhiloxRandn:
    """Normal samples as a seeded CUDA generator gives them: `PhiloxRandn(seed).randn(shape)` equals
    `torch.randn(shape, generator=torch.Generator("cuda").manual_seed(seed), device="cuda")`; a second call
    continues as the CUDA generator does."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = 0  # counter steps used: the CUDA generator's philox offset / 4

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) if shape else 1
        index = np.arange(n, dtype=np.uint64)
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset & 0xFFFFFFFF
        counter[1] = (self.offset >> 32) & 0xFFFFFFFF
        counter[2] = (index & _LOW32).astype(np.uint32)  # the subsequence: this element's thread
        counter[3] = (index >> _32).astype(np.uint32)
        key = np.empty((2, n), dtype=np.uint32)
        key[0] = self.seed & 0xFFFFFFFF
        key[1] = self.seed >> 32
        self.offset += 1
        out = philox4x32(counter, key)
        return box_muller_first(out[0], out[1]).reshape(shape)

"""NV, the random number source that computes CUDA's `torch.randn` on the CPU (webui.engine.rng_philox).

The Philox4x32-10 core is checked against the Random123 library's published known-answer vectors (its
`kat_vectors` file). The whole `randn` is checked against values printed by `torch.randn` / `normal_` on NVIDIA
GPUs in public PyTorch issue reports (4 decimals, as torch prints them); no GPU was at hand to compute more. Each
case names its source. Those reports compare GPUs; the values used here are the ones every GPU agrees on (within
one wave of the kernel's launch grid, see the module's docstring).
"""
import numpy as np
import pytest

from webui.engine.rng_philox import PhiloxRandn, philox4x32

KAT = [  # counter (4 words), key (2 words) -> output (4 words); Random123 kat_vectors, "philox4x32 10" lines
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox4x32_10_matches_the_random123_known_answers(counter, key, expected) -> None:
    out = philox4x32(np.array(counter, dtype=np.uint32)[:, None], np.array(key, dtype=np.uint32)[:, None])
    assert [int(v) for v in out[:, 0]] == list(expected)


def test_philox_is_vectorised_per_column() -> None:
    counters = np.array([c for c, _, _ in KAT], dtype=np.uint32).T  # [4, 3]
    keys = np.array([k for _, k, _ in KAT], dtype=np.uint32).T  # [2, 3]
    assert philox4x32(counters, keys).T.tolist() == [list(e) for _, _, e in KAT]


def close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, atol=6e-5, rtol=0)


def test_randn_matches_cuda_for_a_short_tensor() -> None:
    # pytorch/pytorch#79496: torch.manual_seed(10); torch.randn(3, device="cuda") (PyTorch 1.11, CUDA 11.3)
    close(PhiloxRandn(10).randn((3,)), [-0.1029, 1.6810, -0.2708])
    # pytorch/pytorch#143086: Generator("cuda").manual_seed(1); torch.randn(1, 9483264), its first values on an
    # H100 and an A100 alike (element i depends on i only within the first wave)
    close(PhiloxRandn(1).randn((1, 3))[0], [-0.2963, 2.6764, -0.1408])


def test_randn_matches_cuda_across_rows() -> None:
    # pytorch/pytorch#158398: torch.randn([1, 64, 2048], generator=Generator("cuda").manual_seed(42)); the
    # first three rows as printed (the last rows there differ between the reporter's two GPUs)
    noise = PhiloxRandn(42).randn((1, 64, 2048))[0]
    close(noise[0, :3], [0.1940, 2.1614, -0.1721])
    close(noise[0, -3:], [1.4540, -2.7733, -0.8932])
    close(noise[1, :3], [-0.4574, 0.8063, 0.1580])
    close(noise[2, :3], [1.1346, -0.6329, -0.9147])
    close(noise[2, -3:], [-1.0001, -1.1552, -0.6955])


def test_randn_matches_cuda_for_a_latent_shaped_tensor() -> None:
    # pytorch/pytorch#62467: Generator("cuda:0").manual_seed(43); empty(1, 3, 128, 128).normal_() on an RTX A6000,
    # noise[..., 0, 0]
    close(PhiloxRandn(43).randn((1, 3, 128, 128))[0, :, 0, 0], [1.9983, 0.8704, 2.1127])
    # pytorch/pytorch#97097: torch.manual_seed(14); cuda.FloatTensor(1000, 100).normal_(5, 5 ** .5), rows 0 and 1
    # as an RTX A4000 and an RTX 2070 Super both printed them
    values = PhiloxRandn(14).randn((1000, 100)) * np.float32(5 ** 0.5) + np.float32(5)
    close(values[0, :3], [2.8731, 5.2727, 2.9889])
    close(values[0, -3:], [1.6853, 9.6331, 6.6319])
    close(values[1, :3], [3.9968, 3.8097, 5.7328])
    close(values[1, -3:], [4.4029, 3.9804, 7.4698])


def test_a_second_draw_continues_the_stream() -> None:
    rng = PhiloxRandn(7)
    first, second = rng.randn((16,)), rng.randn((16,))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, PhiloxRandn(7).randn((16,)))
    assert first.dtype == np.float32
    big = PhiloxRandn(0).randn((4, 64, 64))
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 1.0) < 0.05


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device to compare with")
@pytest.mark.parametrize("seed,shape", [(0, (1, 4, 64, 64)), (1234567890123, (2, 4, 128, 128)), (42, (3, 5))])
def test_randn_equals_torch_on_this_cuda_device(seed, shape) -> None:
    import torch

    rng = PhiloxRandn(seed)
    generator = torch.Generator("cuda").manual_seed(seed)
    for _ in range(2):  # a second draw continues both streams alike
        expected = torch.randn(shape, generator=generator, device="cuda").cpu().numpy()
        np.testing.assert_allclose(rng.randn(shape), expected, atol=2e-6, rtol=0)

"""Schedule types: the noise levels (sigmas) a sampler steps through, computed from each schedule's formula.

A schedule maps a step count `n` and a model's training noise levels to `n + 1` descending sigmas (the last is
0, except for KL Optimal, which ends at the smallest training sigma). The formulas are the ones AUTOMATIC1111 and
k-diffusion users know: Karras (rho 7), exponential, polyexponential (rho 1), SGM uniform, KL optimal, Align Your
Steps (the published SD 1.5 and SDXL lists, log-linearly interpolated to the step count), simple, normal, DDIM
(uniform training timesteps) and beta (alpha = beta = 0.6). "Uniform" is the model's own discretisation: evenly
spaced (continuous) training timesteps. `ScheduledSampler` hands them to a diffusers scheduler.
"""
from __future__ import annotations

import math

import numpy as np

KARRAS_RHO = 7.0
POLYEXPONENTIAL_RHO = 1.0
BETA_ALPHA = BETA_BETA = 0.6

# Align Your Steps: the 10-step sigma lists published for SD 1.5 and SDXL (the sigmas of 11 steps, before the final 0).
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

# label -> default rho, as GET /sdapi/v1/schedulers reports it (-1: none)
DEFAULT_RHO = {"Karras": KARRAS_RHO, "Polyexponential": POLYEXPONENTIAL_RHO}
# the schedules computed from the model's own table of training sigmas (AUTOMATIC1111's "need_inner_model")
NEEDS_MODEL = ("Uniform", "SGM Uniform", "Simple", "Normal", "DDIM", "Beta")


def training_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """The noise level of each training timestep, ascending: sigma_t = sqrt((1 - a_t) / a_t)."""
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - a) / a)


def t_to_sigma(t: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    """Sigma at a continuous timestep, interpolating log sigma between the two nearest training timesteps."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0, len(sigmas) - 1)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(sigmas) - 1)
    w = t - low
    log_sigmas = np.log(sigmas)
    return np.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high])


def sigma_to_t(sigma: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    """The continuous timestep of a sigma (the inverse of `t_to_sigma`), clamped to the training range."""
    log_sigmas = np.log(sigmas)
    log_sigma = np.log(np.maximum(np.asarray(sigma, dtype=np.float64), sigmas[0]))
    return np.interp(log_sigma, log_sigmas, np.arange(len(sigmas), dtype=np.float64))


def _with_zero(values: np.ndarray) -> np.ndarray:
    return np.append(np.asarray(values, dtype=np.float64), 0.0)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    return _with_zero(np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n)))


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = POLYEXPONENTIAL_RHO) -> np.ndarray:
    ramp = np.linspace(1, 0, n) ** rho
    return _with_zero(np.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    """tan of evenly spaced angles from atan(sigma_max) to atan(sigma_min): n + 1 values ending at sigma_min."""
    k = np.arange(n + 1) / n
    return np.tan(k * math.atan(sigma_min) + (1 - k) * math.atan(sigma_max))


def align_your_steps(n: int, sdxl: bool) -> np.ndarray:
    """The published list (its 11 values are the sigmas of 11 steps), log-linearly interpolated to n values."""
    points = np.asarray(AYS_SDXL if sdxl else AYS_SD15, dtype=np.float64)
    if n != len(points):
        xs = np.linspace(0, 1, len(points))
        ys = np.log(points[::-1])
        points = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
    return _with_zero(points)


def uniform(n: int, sigmas: np.ndarray) -> np.ndarray:
    return _with_zero(t_to_sigma(np.linspace(len(sigmas) - 1, 0, n), sigmas))


def normal(n: int, sigmas: np.ndarray, sgm: bool = False) -> np.ndarray:
    start, end = sigma_to_t(sigmas[-1], sigmas), sigma_to_t(sigmas[0], sigmas)
    ts = np.linspace(start, end, n + 1)[:-1] if sgm else np.linspace(start, end, n)
    return _with_zero(t_to_sigma(ts, sigmas))


def simple(n: int, sigmas: np.ndarray) -> np.ndarray:
    stride = len(sigmas) / n
    return _with_zero([sigmas[-(1 + int(i * stride))] for i in range(n)])


def ddim(n: int, sigmas: np.ndarray) -> np.ndarray:
    stride = max(len(sigmas) // n, 1)
    return _with_zero(sigmas[1::stride][::-1])


def beta(n: int, sigmas: np.ndarray, alpha: float = BETA_ALPHA, b: float = BETA_BETA) -> np.ndarray:
    from scipy import stats

    last = len(sigmas) - 1
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), alpha, b) * last).astype(int)
    return _with_zero(sigmas[ts])


def schedule_sigmas(label: str, n: int, sigmas: np.ndarray, sdxl: bool = False) -> np.ndarray:
    """The n + 1 sigmas of schedule `label` for n steps of a model whose training sigmas (ascending) are `sigmas`.

    Raises ValueError for "Automatic" (the sampler's own schedule, not computed here) or an unknown label."""
    if n < 1:
        raise ValueError(f"steps: a schedule needs at least 1 step, got {n}")
    lo, hi = float(sigmas[0]), float(sigmas[-1])
    formulas = {
        "Uniform": lambda: uniform(n, sigmas),
        "Karras": lambda: karras(n, lo, hi),
        "Exponential": lambda: exponential(n, lo, hi),
        "Polyexponential": lambda: polyexponential(n, lo, hi),
        "SGM Uniform": lambda: normal(n, sigmas, sgm=True),
        "KL Optimal": lambda: kl_optimal(n, lo, hi),
        "Align Your Steps": lambda: align_your_steps(n, sdxl),
        "Simple": lambda: simple(n, sigmas),
        "Normal": lambda: normal(n, sigmas),
        "DDIM": lambda: ddim(n, sigmas),
        "Beta": lambda: beta(n, sigmas),
    }
    if label not in formulas:
        raise ValueError(f"scheduler: no formula for the schedule {label!r}")
    return formulas[label]()

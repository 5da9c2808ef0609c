"""Language-model fidelity: a quantized decoder's next-token distributions against the fp32 export of the same
checkpoint, teacher-forced over the same held-out token sequences. One set of figures and one judgement, used by
the build gate (pipeline/builder/decoder.py) and by verification on every CPU (pipeline/verify/decoder.py).

Figures over every predicted position (all tokens of every sequence but its last): `kl_divergence` (mean KL(fp32 ||
quantized) of the next-token distributions, nats per token), `next_token_agreement` (share of positions whose top-1
next token is the same), `perplexity_fp32`, `perplexity` and `perplexity_increase` (relative, on the held-out text's
actual next tokens).
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def figures(reference: list[np.ndarray], quantized: list[np.ndarray], sequences: list[np.ndarray]) -> dict:
    """The figures over sequences: each logits array is [tokens, vocab] for the tokens of one sequence."""
    kl, agree, nll_ref, nll_q = [], [], [], []
    for ref, q, ids in zip(reference, quantized, sequences):
        ref_lp, q_lp = log_softmax(ref[:-1]), log_softmax(q[:-1])
        targets = np.asarray(ids[1:], dtype=np.int64)
        kl.append((np.exp(ref_lp) * (ref_lp - q_lp)).sum(axis=-1))
        agree.append(ref_lp.argmax(-1) == q_lp.argmax(-1))
        nll_ref.append(-ref_lp[np.arange(len(targets)), targets])
        nll_q.append(-q_lp[np.arange(len(targets)), targets])
    kl_all, nll_ref_all, nll_q_all = np.concatenate(kl), np.concatenate(nll_ref), np.concatenate(nll_q)
    ppl_ref, ppl_q = float(np.exp(nll_ref_all.mean())), float(np.exp(nll_q_all.mean()))
    return {"kl_divergence": float(kl_all.mean()), "kl_divergence_worst": float(kl_all.max()),
            "next_token_agreement": float(np.concatenate(agree).mean()), "perplexity_fp32": ppl_ref,
            "perplexity": ppl_q, "perplexity_increase": ppl_q / ppl_ref - 1.0, "positions": int(len(kl_all)),
            "sequences": len(sequences)}


def greedy_agreement(reference: list[list[int]], quantized: list[list[int]]) -> float:
    """Greedy generation from the same prompts: the mean share of generated tokens before the first that differs
    from fp32's (a greedy path that flips once then continues elsewhere; reported, not budgeted)."""
    shares = []
    for ref, q in zip(reference, quantized):
        same = next((i for i, (a, b) in enumerate(zip(ref, q)) if a != b), min(len(ref), len(q)))
        shares.append(same / max(len(ref), 1))
    return float(np.mean(shares)) if shares else float("nan")


def cpu_difference(reference_cpu: list[np.ndarray], here: list[np.ndarray], name: str = "native") -> dict:
    """The same artifact on two CPUs (MatMulNBits' kernels differ by ISA): the largest logit difference, the mean
    KL between their next-token distributions (reference CPU || here; budgeted: cpu_problem), and the share of
    positions whose top-1 differs."""
    diff = max(float(np.abs(a - b).max()) for a, b in zip(reference_cpu, here))
    kl = np.concatenate([(np.exp(log_softmax(a)) * (log_softmax(a) - log_softmax(b))).sum(-1)
                         for a, b in zip(reference_cpu, here)])
    flips = np.concatenate([a.argmax(-1) != b.argmax(-1) for a, b in zip(reference_cpu, here)])
    return {"reference_cpu": name, "status": "measured", "max_abs_logit_difference": diff,
            "kl_divergence": float(kl.mean()), "top1_flips": float(flips.mean()), "positions": int(len(kl))}


def cpu_problem(comparison: dict, max_kl: float) -> str | None:
    """The per-CPU budget broken, in words with the figure; None within it."""
    if comparison["kl_divergence"] <= max_kl:
        return None
    return (f"its next-token distributions differ from the same file's on the reference CPU "
            f"{comparison['reference_cpu']} by KL {comparison['kl_divergence']:.2g} nats/token (largest logit "
            f"difference {comparison['max_abs_logit_difference']:.3g}, top-1 flips {comparison['top1_flips']:.1%}) > "
            f"verify.max_cpu_kl_divergence {max_kl:g}: this CPU's MatMulNBits kernels compute differently; try "
            f"target.accuracy_level=1 (fp32 activations)")


def thresholds(verify_cfg) -> dict:
    return {"max_kl_divergence": float(verify_cfg.max_kl_divergence),
            "min_next_token_agreement": float(verify_cfg.min_next_token_agreement),
            "max_perplexity_increase": float(verify_cfg.max_perplexity_increase)}


def problems(found: dict, limits: dict) -> list[str]:
    """Each budget the figures break, in words with the figure."""
    wrong = []
    if found["kl_divergence"] > limits["max_kl_divergence"]:
        wrong.append(f"KL divergence to fp32 {found['kl_divergence']:.4f} nats/token > verify.max_kl_divergence "
                     f"{limits['max_kl_divergence']:g}")
    if found["next_token_agreement"] < limits["min_next_token_agreement"]:
        wrong.append(f"next-token agreement with fp32 {found['next_token_agreement']:.3f} < "
                     f"verify.min_next_token_agreement {limits['min_next_token_agreement']:g}")
    if found["perplexity_increase"] > limits["max_perplexity_increase"]:
        wrong.append(f"perplexity {found['perplexity']:.3f} vs fp32 {found['perplexity_fp32']:.3f} "
                     f"(+{found['perplexity_increase']:.1%}) > verify.max_perplexity_increase "
                     f"{limits['max_perplexity_increase']:.0%}")
    return wrong

"""The build gate holds a labelled classifier to what verification holds it to: top-1 agreement with fp32 and the
accuracy drop. It used to budget the accuracy drop alone, so a model near chance (untrained image classifiers:
accuracy 0.125 in fp32 and int8) passed the gate while int8 changed a fifth of its answers, and verification then
failed the published build on top-1 agreement."""
import numpy as np

from pipeline.builder.budget import budget_text, heldout_accuracy, metrics, within_budget
from pipeline.config import compose_config

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 4, 40)
FP32 = RNG.standard_normal((40, 4)).astype(np.float32)


def test_agreement_is_held_even_when_accuracy_does_not_move():
    verify_cfg = compose_config([]).verify
    changed = FP32.copy()
    wrong = np.flatnonzero(FP32.argmax(1) != LABELS)[:8]  # answers that were wrong stay wrong, but change
    for row in wrong:
        choices = [c for c in range(4) if c not in (FP32[row].argmax(), LABELS[row])]
        changed[row, choices[0]] = FP32[row].max() + 1
    fp32, int8 = metrics("classifier", FP32, FP32, LABELS), metrics("classifier", changed, FP32, LABELS)
    assert int8["accuracy"] == fp32["accuracy"] and int8["top1_agreement"] == 32 / 40
    assert budget_text(fp32, verify_cfg) == (f"top-1 agreement >= {verify_cfg.min_top1_agreement}; accuracy drop <= "
                                             f"{verify_cfg.max_accuracy_drop}, macro-F1 drop <= "
                                             f"{verify_cfg.max_macro_f1_drop}")
    ok, words = within_budget("classifier", int8, fp32, verify_cfg)
    assert not ok and words.startswith(f"top-1 agreement 0.8000 (budget >= {verify_cfg.min_top1_agreement}); "
                                       f"accuracy {fp32['accuracy']:.4f} vs fp32")
    assert within_budget("classifier", fp32, fp32, verify_cfg)[0]


def test_heldout_accuracy_is_judged_as_the_gate_judges_logits():
    """Per labelled, non-padding token for a token classifier; none for a model that is not a classifier, even
    when an output's argmax happens to have the labels' shape."""
    assert heldout_accuracy("classifier", [FP32], LABELS, None) == float((FP32.argmax(1) == LABELS).mean())
    tokens = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    labels = tokens.argmax(-1)
    labels[0, 0] = (labels[0, 0] + 1) % 3  # wrong, but on padding
    labels[1, 1] = -100  # ignored
    labels[1, 2] = (labels[1, 2] + 1) % 3  # wrong and counted
    mask = np.array([[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert heldout_accuracy("classifier", [tokens], labels, mask) == 6 / 7
    assert heldout_accuracy("embedding", [FP32], LABELS, None) is None

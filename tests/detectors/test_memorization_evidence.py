"""Evidence: on a model that really memorized four images, the detectors find them.

The model is trained in this session (see conftest.py). Nothing here is tuned on the scores:
the assertions are the detector's published claims (AUC >= 0.9 from one step and one seed)
and that the trigger word of a memorized caption is its made-up word.
"""

from __future__ import annotations

import pytest

from pytest_memorization.detectors import noise_magnitude, rank_auc, trigger_tokens

pytestmark = pytest.mark.slow


def _scores(trained, prompts, seeds):
    return noise_magnitude(trained.pipe, prompts, seeds, trained.gen, steps=1).mean(dim=1).tolist()


def test_training_converged(memorized_pipe):
    losses = memorized_pipe.losses
    print(f"\ntraining: {len(losses)} steps in {memorized_pipe.train_seconds:.1f}s, "
          f"loss {sum(losses[:20]) / 20:.3f} -> {sum(losses[-20:]) / 20:.3f}")
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_memorized_captions_score_higher_one_step(memorized_pipe, seeds):
    mem = _scores(memorized_pipe, memorized_pipe.memorized, seeds)
    held = _scores(memorized_pipe, memorized_pipe.heldout, seeds)
    auc = rank_auc(mem, held)
    mean_o = sum(held) / len(held)
    print(f"\nseeds={seeds}: memorized d {[round(v, 3) for v in mem]}; held-out ordinary (n={len(held)}) "
          f"mean {mean_o:.3f} max {max(held):.3f}; AUC {auc:.3f}; mean ratio {sum(mem) / len(mem) / mean_o:.2f}")
    assert auc >= 0.9
    assert sum(mem) / len(mem) > 1.5 * mean_o  # clearly higher on average, not just ranked higher


def test_trained_but_unmemorized_captions_score_low(memorized_pipe):
    """Captions seen in training with many different images are not memorized; they score like held-out ones."""
    mem = _scores(memorized_pipe, memorized_pipe.memorized, [0])
    seen = _scores(memorized_pipe, memorized_pipe.trained_ordinary, [0])
    print(f"\ntrained ordinary captions: max {max(seen):.3f}; memorized min {min(mem):.3f}")
    assert rank_auc(mem, seen) >= 0.9


@pytest.mark.parametrize("index", range(4))
def test_trigger_token_is_the_made_up_word(memorized_pipe, index):
    caption = memorized_pipe.memorized[index]
    words = trigger_tokens(memorized_pipe.pipe, caption, [0], memorized_pipe.gen, steps=1, top=3)
    print(f"\n{caption!r}: {[(w, round(s, 3)) for w, s in words]}")
    assert len(words) == 3 and all(w in caption.split() for w, _ in words)
    common = {w for p in memorized_pipe.trained_ordinary for w in p.split()}
    distinctive = [w for w in caption.split() if w not in common]  # e.g. drops "a", "of"
    assert words[0][0] in distinctive
    assert memorized_pipe.rare[index] in [w for w, _ in words]
    assert 0 < words[-1][1] <= words[0][1] <= 1


def test_trigger_tokens_input_embeddings(memorized_pipe):
    """The input-embedding variant, for the record (not asserted on): with stop words ranked it put
    the leading "a" first, since through causal attention the first token reaches every later row;
    with them left out (the default) it measured the made-up word first for 4 of 4 captions."""
    for caption in memorized_pipe.memorized:
        words = trigger_tokens(memorized_pipe.pipe, caption, [0], memorized_pipe.gen, top=4, wrt="input")
        print(f"\ninput-embedding gradients {caption!r}: {[(w, round(s, 3)) for w, s in words]}")

"""``restlit.data``: batches are a pure function of the step, and ranks split a step's prompts."""

from __future__ import annotations

from restlit.training.data import PromptItem, StepBatches


def items(n: int) -> list[PromptItem]:
    return [PromptItem(id=f"s{i}", prompt_ids=[i + 1], target={}, target_text="") for i in range(n)]


def test_a_step_batch_is_a_function_of_the_step():
    data = items(5)
    batches = StepBatches(data, per_rank=2, world=1, rank=0, seed=3)
    it = iter(StepBatches(data, per_rank=2, world=1, rank=0, seed=3, start=4))
    assert next(it) == batches.batch(4) and next(it) == batches.batch(5)  # resume from a step
    first_epoch = [item.id for s in (0, 1) for item in batches.batch(s)] + [batches.batch(2)[0].id]
    assert sorted(first_epoch) == sorted(item.id for item in data)  # each prompt once per epoch


def test_ranks_split_the_prompts_one_process_sees():
    data = items(7)
    one = StepBatches(data, per_rank=4, world=1, rank=0, seed=0)
    ranks = [StepBatches(data, per_rank=2, world=2, rank=r, seed=0) for r in (0, 1)]
    for step in range(3):
        assert one.batch(step) == ranks[0].batch(step) + ranks[1].batch(step)

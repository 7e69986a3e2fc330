"""Task registry. Run: pytest tests/test_tasks.py"""

import pytest

from llmft import LlmftError, get_task, register_task, task_names
from llmft.data import load_examples
from llmft.tasks import CLASSIFICATION, SEQ2SEQ, Preset, TaskSpec


def test_the_three_origin_tasks_are_registered():
    # Task files loaded by other tests in this process are registered too; the built-in ones are these.
    assert [n for n in task_names() if get_task(n).definition is None] == ["dialogue", "document", "sentiment"]


@pytest.mark.parametrize("name", ["dialogue", "document", "sentiment"])
def test_every_task_loads_its_bundled_sample(name):
    task = get_task(name)
    train = load_examples(task, None, "train")
    test = load_examples(task, "sample", "test")
    assert len(train) >= 100 and len(test) >= 50
    assert {ex.id for ex in train}.isdisjoint({ex.id for ex in test})
    if task.kind == CLASSIFICATION:
        assert {ex.label for ex in train} == set(range(len(task.labels)))
    else:
        assert all(ex.references for ex in train)


def test_origin_presets_are_kept():
    dialogue, document, sentiment = (get_task(n).preset("full") for n in ("dialogue", "document", "sentiment"))
    assert (
        dialogue.lora_r,
        dialogue.lora_alpha,
        dialogue.lora_dropout,
        dialogue.learning_rate,
        dialogue.max_steps,
    ) == (16, 8, 0.10, 1e-3, 150)
    assert (document.lora_r, document.lora_alpha, document.learning_rate, document.max_steps) == (32, 64, 1e-4, 100)
    assert get_task("document").max_input_tokens == 1024
    assert sentiment.target_modules == ("q_lin",) and sentiment.train_samples == 1000 and sentiment.eval_n == 500


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_task(get_task("dialogue"))


def test_unknown_task_and_preset_name_the_choices():
    # (own tasks other tests made known in this process may sort among them: alice.topics, ...)
    with pytest.raises(
        LlmftError, match=r"unknown task 'poetry'; choose from (.*, )?dialogue, document, (.*, )?sentiment"
    ):
        get_task("poetry")
    with pytest.raises(LlmftError, match="unknown preset 'huge'"):
        get_task("dialogue").preset("huge")


def test_invalid_specs_are_rejected():
    preset = Preset(8, 16, 0.1, ("q",), 1e-3, 10)
    with pytest.raises(ValueError, match="prompt"):
        TaskSpec("x", SEQ2SEQ, "", "m", "d", "t", ("s",), prompt="no slot", presets={"quick": preset, "full": preset})
    with pytest.raises(ValueError, match="labels"):
        TaskSpec(
            "x",
            CLASSIFICATION,
            "",
            "m",
            "d",
            "t",
            label_column="l",
            labels=("one",),
            presets={"quick": preset, "full": preset},
        )


def test_prompt_keeps_braces_in_user_text():
    assert get_task("dialogue").format_prompt("a {b} c").count("{b}") == 1

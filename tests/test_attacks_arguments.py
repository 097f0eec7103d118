"""npo_trl.attacks.arguments: AttackArguments' refusals, its attack names in order, and the attacks make_attacks
builds from them (rows, budgets, the benign rows cut to the relearn rows' count)."""

import pytest

from helpers import toy_qa
from npo_trl.attacks.arguments import ATTACKS, AttackArguments, make_attacks
from npo_trl.attacks.quantize import QuantizeAttack
from npo_trl.attacks.relearn import RELEARN_FRACTION, RELEARN_LEARNING_RATE, RELEARN_STEPS, RelearnAttack


def test_defaults_run_no_attack_and_none_is_dropped():
    args = AttackArguments()
    assert (args.attacks, args.relearn_steps, args.relearn_learning_rate, args.relearn_fraction) == \
        ([], [RELEARN_STEPS], RELEARN_LEARNING_RATE, RELEARN_FRACTION)
    assert args.attack_names() == [] and not args.relearns
    assert AttackArguments(attacks=["none"]).attacks == []
    args = AttackArguments(attacks=["none", "quantize8"])
    assert args.attacks == ["quantize8"] and args.attack_names() == ["quantize8"] and not args.relearns
    assert AttackArguments(attacks=["relearn_benign"]).relearns


def test_attack_names_follow_the_attacks_with_one_relearn_per_budget():
    args = AttackArguments(attacks=["relearn", "quantize4", "relearn_benign"], relearn_steps=[2, 5])
    assert args.attack_names() == ["relearn2", "relearn5", "quantize4", "relearn_benign2", "relearn_benign5"]
    assert args.relearns


@pytest.mark.parametrize("kwargs, message", [
    ({"attacks": ["relearn", "quantise4"]},
     r"attacks: unknown \['quantise4'\]; choose among \['relearn', 'relearn_benign', 'quantize8', 'quantize4'\]"),
    ({"attacks": ["quantize8", "relearn", "quantize8"]}, r"attacks=\['quantize8', 'relearn', 'quantize8'\]: name"),
    ({"relearn_steps": []}, r"relearn_steps=\[\]: give distinct whole numbers of steps >= 1"),
    ({"relearn_steps": [0]}, r"relearn_steps=\[0\]: give distinct"),
    ({"relearn_steps": [10, 10]}, r"relearn_steps=\[10, 10\]: give distinct"),
    ({"relearn_steps": [2.5]}, r"relearn_steps=\[2.5\]: give distinct"),
    ({"relearn_steps": [True]}, r"relearn_steps=\[True\]: give distinct"),
    ({"relearn_fraction": 0}, r"relearn_fraction=0: .*strictly between 0 and 1"),
    ({"relearn_fraction": 1}, r"relearn_fraction=1: .*strictly between 0 and 1"),
    ({"relearn_learning_rate": 0.0}, r"relearn_learning_rate=0.0, .*positive learning rate"),
    ({"relearn_learning_rate": -1e-5}, r"relearn_learning_rate=-1e-05, .*positive learning rate"),
    ({"relearn_batch_size": 0}, r"relearn_batch_size=0: .*batch of >= 1 rows"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttackArguments(**kwargs)


def test_every_known_attack_is_accepted():
    assert AttackArguments(attacks=list(ATTACKS)).attacks == list(ATTACKS)


def test_make_attacks_builds_each_attack_with_its_budget(tokenizer):
    relearn_rows, benign_rows = toy_qa(0, 2), toy_qa(4, 8)  # 4 relearn rows, 8 retain rows
    args = AttackArguments(attacks=["relearn", "quantize4", "relearn_benign", "quantize8"], relearn_steps=[2, 5],
                           relearn_learning_rate=3e-4, relearn_batch_size=2, relearn_seed=7)
    attacks = make_attacks(args, tokenizer, relearn_rows, benign_rows, peft_config="lora")
    assert list(attacks) == ["relearn2", "relearn5", "quantize4", "relearn_benign2", "relearn_benign5", "quantize8"]
    assert sorted(attacks) == sorted(args.attack_names())
    for name in ("quantize4", "quantize8"):
        assert type(attacks[name]) is QuantizeAttack
        assert (attacks[name].bits, attacks[name].name, attacks[name].kwargs) == (int(name[-1]), name, {})
    for name in ("relearn2", "relearn5", "relearn_benign2", "relearn_benign5"):
        attack = attacks[name]
        assert type(attack) is RelearnAttack and attack.name == name and attack.processing_class is tokenizer
        assert attack.kwargs == {"steps": int(name[-1]), "learning_rate": 3e-4, "batch_size": 2, "seed": 7,
                                 "peft_config": "lora"}
    assert attacks["relearn2"].rows is relearn_rows and attacks["relearn5"].rows is relearn_rows
    # the benign attack relearns as many rows as the forget attack: the first retain rows
    for name in ("relearn_benign2", "relearn_benign5"):
        assert list(attacks[name].rows["prompt"]) == list(benign_rows["prompt"][:4])


def test_make_attacks_cuts_a_list_of_benign_rows():
    relearn_rows, benign_rows = list(toy_qa(0, 1)), list(toy_qa(4, 6))
    attacks = make_attacks(AttackArguments(attacks=["relearn_benign"], relearn_steps=[3]), None, relearn_rows,
                           benign_rows)
    assert list(attacks) == ["relearn_benign3"]
    assert attacks["relearn_benign3"].rows == benign_rows[:2]
    # no attack, no rows needed
    assert make_attacks(AttackArguments()) == {}


def test_make_attacks_refuses_missing_or_too_few_rows():
    rows = toy_qa(0, 2)
    with pytest.raises(ValueError, match=r"The relearn attack needs its rows: pass relearn_rows \(a split of the "
                                         r"forget rows\)\.$"):
        make_attacks(AttackArguments(attacks=["relearn"]), None)
    with pytest.raises(ValueError, match=r"The relearn_benign attack needs its rows: .* and benign_rows"):
        make_attacks(AttackArguments(attacks=["relearn_benign"]), None, relearn_rows=rows)
    with pytest.raises(ValueError, match=r"The relearn_benign attack needs its rows: pass relearn_rows"):
        make_attacks(AttackArguments(attacks=["relearn_benign"]), None, benign_rows=rows)
    with pytest.raises(ValueError, match=r"benign_rows has 2 rows, fewer than the 4 relearn rows .* more retain rows"):
        make_attacks(AttackArguments(attacks=["relearn_benign"]), None, rows, toy_qa(4, 5))

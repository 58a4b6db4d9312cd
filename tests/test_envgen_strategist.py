"""DataStrategist.mutate: determinism, validity, structure kept, budget and pitfalls."""

import pytest

from sandmle.envgen.dna import METRIC_DIRECTIONS
from sandmle.envgen.seeds import load_seeds
from sandmle.envgen import domains
from sandmle.envgen.dna import MAX_TEST_ROWS
from sandmle.envgen.strategist import allowed_pitfalls, mutate
from sandmle.envgen.synth import generate

SEEDS = load_seeds()


def test_mutate_is_deterministic_and_varies_with_seed():
    seed = SEEDS["spooky-author-identification"]
    assert mutate(seed, 5).to_json() == mutate(seed, 5).to_json()
    variants = {mutate(seed, r).to_json() for r in range(6)}
    assert len(variants) == 6


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutants_keep_structure_and_generate(name):
    seed = SEEDS[name]
    for r in range(2):
        dna = mutate(seed, r)
        assert dna.validate() is dna
        assert (dna.modality, dna.task_type, dna.label_structure, dna.metric) == (
            seed.modality, seed.task_type, seed.label_structure, seed.metric)
        assert dna.is_lower_better == METRIC_DIRECTIONS[dna.metric]
        assert 50 <= dna.n_train <= 200 and dna.source == name
        # a catalogue domain whose columns and classes fit the structure
        assert domains.for_dna(dna) is not None, dna.domain
        # the test set is sized for a stable score, separately from the training budget
        low = {"reconstruction": 40, "sequence": 400}.get(dna.task_type, 400)
        assert low <= dna.n_test <= MAX_TEST_ROWS
        assert dna.n_test > dna.n_train or dna.task_type == "reconstruction"  # images of pixels
        assert set(dna.pitfalls) <= allowed_pitfalls(seed)
        if dna.task_type not in ("reconstruction",):
            assert dna.pitfalls, "a mutant carries at least one adversarial pitfall"
        data = generate(dna, r)
        assert len(data.answers) == len(data.test) > 0


def test_class_counts_fit_the_budget():
    dna = mutate(SEEDS["dog-breed-identification"], 0)
    assert 3 <= dna.n_classes <= 12
    assert dna.n_classes <= max(3, dna.n_train // 12)

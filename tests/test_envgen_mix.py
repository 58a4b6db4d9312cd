"""Mix weights: quotas follow the weights, the plan is deterministic and proportional, the
quick start covers several modalities; the domain catalogue and spoken forms are sound."""

import collections
import itertools

import pytest

from configs.envgen import get_config
from sandmle.envgen import domains, mix
from sandmle.envgen.seeds import load_seeds
from sandmle.envgen.synth.language import Speaker, common_words

SEEDS = sorted(load_seeds().items())


def _cells(config):
    return mix.cells(SEEDS, config.mix.modality, config.mix.task_type)


def test_default_weights_are_the_papers():
    cells = _cells(get_config())
    shares = mix.modality_targets(cells)
    paper = {"image": 0.49, "tabular": 0.25, "text": 0.10, "multimodal": 0.10, "graph": 0.04,
             "audio": 0.02}
    assert shares["tabular"] + shares["timeseries"] == pytest.approx(paper["tabular"])
    for m in ("image", "text", "multimodal", "graph", "audio"):
        assert shares[m] == pytest.approx(paper[m])
    assert sum(c.weight for c in cells) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [6, 24, 64, 200])
def test_quotas_match_weights(n):
    cells = _cells(get_config())
    quota = mix.quotas(cells, n)
    assert sum(quota.values()) == n
    by_mod = collections.Counter()
    for c in cells:
        by_mod[c.modality] += quota[c.key]
    for m, w in mix.modality_targets(cells).items():
        assert abs(by_mod[m] - n * w) < 1.0  # largest remainders: off by less than one task


def test_quick_start_covers_four_modalities():
    config = get_config("runlocal")
    quota = mix.quotas(_cells(config), config.target_accepted)
    assert len({k.split("/")[0] for k, v in quota.items() if v}) >= 4


def test_plan_is_deterministic_and_proportional():
    cells = _cells(get_config())
    a = [(i, c.key, s) for i, c, s, _ in itertools.islice(mix.plan(cells), 2000)]
    b = [(i, c.key, s) for i, c, s, _ in itertools.islice(mix.plan(cells), 2000)]
    assert a == b and [i for i, _, _ in a] == list(range(2000))
    counts = collections.Counter(k for _, k, _ in a)
    for c in cells:
        assert abs(counts[c.key] / 2000 - c.weight) < 0.002
    image_seeds = {s for _, k, s in a if k == "image/classification"}
    assert len(image_seeds) > 3  # a cell walks all of its seeds


def test_bad_weights_are_named():
    with pytest.raises(mix.MixError, match="unknown modality 'video'"):
        mix.cells(SEEDS, {"video": 1.0}, mix.DEFAULT_TASK_TYPE_WEIGHTS)
    with pytest.raises(mix.MixError, match="no seed"):
        mix.cells(SEEDS, {"image": 0.0}, mix.DEFAULT_TASK_TYPE_WEIGHTS)


def test_domain_catalogue_is_consistent():
    for dom in domains.catalog().values():
        names = [f.name for f in domains.numeric_features(dom, 60)] + \
            [c.name for c in domains.categorical_columns(dom, 10)]
        assert len(set(names)) == len(names), dom.name
        for spec in dom.targets.values():
            targets = list(spec.get("names", [])) + ([spec["name"]] if "name" in spec else [])
            assert domains.safe_names(targets + list(spec.get("classes", []))), dom.name
            assert not set(targets) & set(names), dom.name
            if "classes" in spec:
                assert len(set(spec["classes"])) == len(spec["classes"]) >= 12, dom.name
    for _, seed in SEEDS:  # every seed structure can be dressed by some domain
        from sandmle.envgen.strategist import mutate
        assert domains.candidates(mutate(seed, 0)), seed.name


def test_spoken_forms_are_real_language():
    en, ru = Speaker("en"), Speaker("ru")
    assert en.cardinal(1234) == "one thousand two hundred thirty four"
    assert en.year(1987) == "nineteen eighty seven" and en.year(1905) == "nineteen oh five"
    assert en.year(2003) == "two thousand three" and en.money(1) == "one dollar"
    assert ru.cardinal(2541) == "две тысячи пятьсот сорок один"
    assert ru.money(22) == "двадцать два доллара" and ru.money(5) == "пять долларов"
    assert ru.abbreviation("ФСБ") == "эф эс бэ"
    words = common_words("en", 500)
    assert {"water", "house", "people"} <= set(words)

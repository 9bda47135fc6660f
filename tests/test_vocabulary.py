import numpy as np
import pytest

from ovdet.data.vocabulary import QuerySampler
from ovdet.text.templates import template_sets

NAMES = [f"class{i}" for i in range(20)]


def test_positives_kept_negatives_fill_up_to_max_and_labels_point_at_the_box_names():
    sampler = QuerySampler(NAMES, max_queries=8)
    rng = np.random.default_rng(0)
    for _ in range(50):
        box_names = list(rng.choice(NAMES, size=int(rng.integers(0, 5))))
        q = sampler(box_names, rng)
        assert len(q.texts) == 8 and len(set(q.names)) == 8
        assert set(box_names) <= set(q.names) and set(q.names) <= set(NAMES)
        assert [q.names[k] for k in q.labels] == box_names
        assert q.labels.dtype == np.int64


def test_negatives_are_random_and_queries_shuffled():
    sampler = QuerySampler(NAMES, max_queries=5)
    rng = np.random.default_rng(0)
    draws = {tuple(sampler(["class3"], rng).names) for _ in range(30)}
    assert len(draws) > 20  # different negatives and orders
    assert {d.index("class3") for d in draws} == set(range(5))  # the positive is not always first


def test_more_positives_than_max_queries_keeps_them_all():
    q = QuerySampler(NAMES, max_queries=2)(["class1", "class2", "class3", "class1"], np.random.default_rng(0))
    assert sorted(q.names) == ["class1", "class2", "class3"]
    assert [q.names[k] for k in q.labels] == ["class1", "class2", "class3", "class1"]


def test_full_vocabulary_in_order_when_max_queries_is_none():
    q = QuerySampler(NAMES, max_queries=None)(["class7"], np.random.default_rng(0))
    assert q.names == NAMES and q.texts == NAMES and q.labels.tolist() == [7]


def test_a_random_template_per_query():
    templates = template_sets()["clip80"]
    sampler = QuerySampler(NAMES, max_queries=20, templates="clip80")
    q = sampler(["class0"], np.random.default_rng(0))
    used = set()
    for text, name in zip(q.texts, q.names):
        matching = [t for t in templates if t.format(name) == text]
        assert matching, text
        used.add(matching[0])
    assert len(used) > 5


@pytest.mark.parametrize(
    "names, kwargs, message",
    [([], {}, "empty"), (["a", "a"], {}, "unique"), (["a"], {"max_queries": 0}, "max_queries"),
     (["a"], {"templates": ["no placeholder"]}, "{}")],
)
def test_bad_arguments_raise(names, kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuerySampler(names, **kwargs)


def test_box_name_outside_the_vocabulary_raises():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        QuerySampler(["a", "b"])(["zebra"], np.random.default_rng(0))

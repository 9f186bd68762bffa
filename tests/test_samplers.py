"""The hierarchical, paddle_triplet and class_blocks samplers: layout, determinism, edge cases."""
import itertools
from collections import Counter

import numpy as np
import pytest

from dmltf import data
from dmltf.data import ArraySplit, samplers


def make_split(labels, super_labels=None, name="synthetic"):
    """Each image stores its own index in two pixels, so the pipeline's batches can be traced back."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    images = np.stack([idx // 256, idx % 256], axis=1).astype(np.uint8).reshape(-1, 2, 1, 1)
    extra = None if super_labels is None else {"super_labels": np.asarray(super_labels)}
    return ArraySplit(images, labels, extra, name=name)


def assert_deterministic(sampler, split):
    first = sampler.batches(split, seed=3, epoch=1)
    assert first.dtype == np.int64 and first.shape == (sampler.steps_per_epoch(split), sampler.batch_size)
    assert np.array_equal(first, sampler.batches(split, seed=3, epoch=1))
    assert not np.array_equal(first, sampler.batches(split, seed=3, epoch=2))
    assert not np.array_equal(first, sampler.batches(split, seed=4, epoch=1))


# --- hierarchical ----------------------------------------------------------------------------

def sop_like(num_super=12, classes_per_super=3, seed=0):
    """Super-classes of a few classes each; class sizes 1..5, so some have fewer than K images."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, num_super * classes_per_super)
    labels = np.repeat(np.arange(len(sizes)) * 7 + 100, sizes)  # non-consecutive class ids
    super_of_class = np.repeat(np.arange(num_super), classes_per_super)
    super_labels = np.repeat(super_of_class, sizes)
    order = rng.permutation(len(labels))
    return make_split(labels[order], super_labels[order], name="sop_like")


def hierarchical(P=4, K=3, **kwargs):
    return samplers.get("hierarchical", classes_per_batch=P, samples_per_class=K, **kwargs)


def test_hierarchical_660_batches_from_every_super_class_pair():
    split, P, K = sop_like(), 4, 3
    sampler = hierarchical(P, K)
    batches = sampler.batches(split, seed=0, epoch=0)
    assert sampler.steps_per_epoch(split) == 660 and batches.shape == (660, P * K) and batches.dtype == np.int64
    pairs = Counter()
    for batch in batches:
        supers = Counter(split.extra_labels["super_labels"][batch].tolist())
        assert len(supers) == 2 and set(supers.values()) == {P * K // 2}, "two half-batches of two super-classes"
        pairs[tuple(sorted(supers))] += 1
        classes = Counter(split.labels[batch].tolist())
        assert len(classes) == P and set(classes.values()) == {K}, "P / 2 classes of K images per half"
        for c in classes:
            drawn = batch[split.labels[batch] == c]
            if np.sum(split.labels == c) >= K:
                assert len(set(drawn.tolist())) == K, "K distinct images when the class has K"
    assert pairs == {pair: 10 for pair in itertools.combinations(range(12), 2)}


def test_hierarchical_batches_and_their_order_are_shuffled():
    split, P, K = sop_like(), 4, 3
    batches = hierarchical(P, K).batches(split, seed=0, epoch=0)
    supers = split.extra_labels["super_labels"][batches]
    halves_in_order = np.all(supers[:, :P * K // 2] == supers[:, :1], axis=1)
    assert not halves_in_order.all(), "the batch is permuted (the reference shuffles it)"
    first_pairs = [tuple(sorted(set(row.tolist()))) for row in supers[:10]]
    assert len(set(first_pairs)) > 1, "the list of batches is permuted"
    assert hierarchical(P, K).group_size == 1


def test_hierarchical_unshuffled_keeps_halves_and_class_groups():
    split, P, K = sop_like(), 4, 3
    sampler = hierarchical(P, K, shuffle_batch=False)
    assert sampler.group_size == K
    for batch in sampler.batches(split, seed=0, epoch=0):
        supers = split.extra_labels["super_labels"][batch].reshape(2, -1)
        assert (supers == supers[:, :1]).all() and supers[0, 0] < supers[1, 0]
        groups = split.labels[batch].reshape(P, K)
        assert (groups == groups[:, :1]).all()


def test_hierarchical_batches_per_pair_and_determinism():
    split = sop_like(num_super=4)
    sampler = hierarchical(batches_per_pair=2)
    assert sampler.steps_per_epoch(split) == 2 * 6
    assert_deterministic(sampler, split)


def test_hierarchical_refusals():
    with pytest.raises(ValueError, match="classes_per_batch=45 must be even"):
        hierarchical(45, 4)  # LM-Metric's --bs 180 --samples_per_class 4: a half of 90 is not whole classes
    no_super = make_split(np.repeat(np.arange(6), 2), name="cars_train")
    for call in (lambda s: s.check(no_super), lambda s: s.steps_per_epoch(no_super),
                 lambda s: s.batches(no_super, seed=0, epoch=0)):
        with pytest.raises(ValueError, match=r"'super_labels'.*'cars_train'.*sop_converter"):
            call(hierarchical())
    few_classes = make_split(np.arange(6), [0, 0, 0, 1, 1, 2])  # super-class 2 has one class
    with pytest.raises(ValueError, match="super-class 2 has 1"):
        hierarchical(P=4).check(few_classes)
    one_super = make_split(np.arange(6), np.zeros(6, int))
    with pytest.raises(ValueError, match="at least 2 super-classes"):
        hierarchical(P=2).batches(one_super, seed=0, epoch=0)


def test_hierarchical_check_shares():
    split = sop_like()
    shuffled, grouped = hierarchical(4, 3), hierarchical(4, 3, shuffle_batch=False)  # batch 12
    for shares in (1, 2, 3, 4, 6, 12):
        shuffled.check(split, shares)
    for shares in (1, 2, 4):
        grouped.check(split, shares)
    for sampler, shares in ((shuffled, 5), (grouped, 3), (grouped, 6)):
        with pytest.raises(ValueError, match="cannot be cut"):
            sampler.check(split, shares)


# --- paddle_triplet --------------------------------------------------------------------------

TRIPLET_LABELS = np.repeat([4, 9, 2, 7, 5], [1, 6, 2, 4, 3])  # class 4 has a single image


def triplets(P=4, K=3):
    return samplers.get("paddle_triplet", classes_per_batch=P, samples_per_class=K)


def test_paddle_triplet_anchor_positive_negative():
    split = make_split(np.concatenate([TRIPLET_LABELS, np.tile(TRIPLET_LABELS[1:], 9)]))  # class 4 still single
    sampler = triplets(4, 3)
    batches = sampler.batches(split, seed=0, epoch=0)
    assert batches.shape == (split.num_examples // 12, 12) == (sampler.steps_per_epoch(split), sampler.batch_size)
    a, p, n = batches.reshape(-1, 3).T
    labels = split.labels
    assert (labels[a] == labels[p]).all() and (a != p).all(), "anchor and positive: two images of one class"
    assert (labels[n] != labels[a]).all(), "negative: another class"
    singleton = set(np.flatnonzero(labels == 4).tolist())
    assert not singleton & (set(a.tolist()) | set(p.tolist())), "a single-image class is never the anchor class"
    assert singleton & set(n.tolist()), "but it is drawn as a negative"
    assert sampler.group_size == 3
    assert_deterministic(sampler, split)


def test_paddle_triplet_refusals_and_shares():
    with pytest.raises(ValueError, match="multiple of 3"):
        triplets(4, 2)
    for labels in ([3, 3, 3], [0, 1, 2, 3]):  # one class; only single-image classes
        with pytest.raises(ValueError, match="at least 2 classes, one of them with 2 images"):
            triplets(2, 3).check(make_split(labels))
    split = make_split(TRIPLET_LABELS)
    sampler = triplets(4, 3)  # 4 triples
    for shares in (1, 2, 4):
        sampler.check(split, shares)
    for shares in (3, 8):
        with pytest.raises(ValueError, match="cannot be cut"):
            sampler.check(split, shares)


# --- class_blocks ----------------------------------------------------------------------------

BLOCK_LABELS = np.repeat([30, 10, 20, 50, 40, 60], [4, 2, 1, 5, 3, 2])  # class 20 has a single image


def blocks(P=3, K=2):
    return samplers.get("class_blocks", classes_per_batch=P, samples_per_class=K)


def test_class_blocks_p_distinct_classes_of_k_distinct_images():
    split = make_split(np.random.default_rng(1).permutation(np.tile(BLOCK_LABELS, 3)))
    P, K = 3, 2
    sampler = blocks(P, K)
    batches = sampler.batches(split, seed=0, epoch=0)
    assert batches.shape == (split.num_examples // (P * K), P * K) and batches.dtype == np.int64
    for batch in batches:
        groups = split.labels[batch].reshape(P, K)
        assert (groups == groups[:, :1]).all(), "class blocks are contiguous"
        assert len(set(groups[:, 0].tolist())) == P, "P distinct classes"
        assert all(len(set(block.tolist())) == K for block in batch.reshape(P, K)), "K distinct images"
    assert sampler.group_size == K
    assert_deterministic(sampler, split)


def test_class_blocks_skip_classes_smaller_than_k():
    split = make_split(BLOCK_LABELS)
    drawn = blocks(3, 2).batches(split, seed=0, epoch=0)
    assert 20 not in split.labels[drawn]
    assert set(split.labels[blocks(2, 3).batches(split, seed=0, epoch=0)].ravel().tolist()) <= {30, 40, 50}
    with pytest.raises(ValueError, match="classes_per_batch=4 classes with at least samples_per_class=3"):
        blocks(4, 3).check(split)
    with pytest.raises(ValueError, match="has 5"):
        blocks(6, 2).batches(split, seed=0, epoch=0)


def test_class_blocks_check_shares():
    split = make_split(np.tile(BLOCK_LABELS, 3))
    sampler = blocks(4, 2)
    for shares in (1, 2, 4):
        sampler.check(split, shares)
    for shares in (3, 8):
        with pytest.raises(ValueError, match="cannot be cut"):
            sampler.check(split, shares)


# --- the pipeline ----------------------------------------------------------------------------

@pytest.mark.parametrize("sampler, split", [
    (hierarchical(4, 3), sop_like(num_super=3)),
    (triplets(2, 3), make_split(TRIPLET_LABELS)),
    (blocks(2, 2), make_split(BLOCK_LABELS)),
], ids=["hierarchical", "paddle_triplet", "class_blocks"])
def test_train_dataset_yields_the_sampler_batches(sampler, split):
    expected = sampler.batches(split, seed=0, epoch=0)
    got = list(data.train_dataset(split, sampler, seed=0, epoch=0, preprocessing="raw"))
    assert len(got) == len(expected) == sampler.steps_per_epoch(split)
    for (images, labels), batch in zip(got, expected):
        images = np.asarray(images).reshape(len(batch), 2).astype(int)
        assert np.array_equal(images[:, 0] * 256 + images[:, 1], batch)
        assert np.array_equal(labels.numpy(), np.searchsorted(split.class_ids, split.labels[batch]))

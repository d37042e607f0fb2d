import torch

from maskmine.transforms.matching import match_nouns


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_each_noun_takes_its_most_similar_proposal():
    crops = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    texts = unit([0.1, 0.9, 0], [0, 0.2, 0.8])  # "dog" ~ crop 1, "grass" ~ crop 2
    matches = match_nouns(crops, texts, ["dog", "grass"], logit_scale=100.0)
    assert [m.proposal_index for m in matches] == [1, 2]
    dog = matches[0]
    expected_scores = texts[0] @ crops.T
    assert abs(dog.score - float(expected_scores[1])) < 1e-6
    assert abs(dog.margin - float(expected_scores[1] - expected_scores[0])) < 1e-6
    assert abs(dog.probability - float(torch.softmax(expected_scores * 100, 0)[1])) < 1e-6


def test_single_proposal_has_no_margin():
    matches = match_nouns(unit([1, 0]), unit([1, 1]), ["cat"], logit_scale=10.0)
    assert matches[0].proposal_index == 0 and matches[0].margin is None
    assert abs(matches[0].probability - 1.0) < 1e-6

"""runner.faithfulness.road: noisy linear imputation on images whose answer is known, the linear system it
must satisfy, and MoRF / LeRF on the quadrant model."""

from __future__ import annotations

import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.faithfulness import ClassProbability, evaluate, noisy_linear_imputation, road, road_images
from runner.faithfulness.road import NEIGHBOURS, removal_masks
from tests.test_explain import quadrant_images
from tests.test_faithfulness import quadrant_map
from tests.test_gradcam import quadrant_model


@pytest.fixture(scope="module")
def quadrants():
    return quadrant_model()


def neighbour_mean(image: np.ndarray, row: int, col: int) -> np.ndarray:
    """The reference's weighting written out for one pixel: 1/6 direct, 1/12 diagonal, over the neighbours
    inside the image, renormalized."""
    total, weights = np.zeros(image.shape[-1]), 0.0
    for (row_step, col_step), weight in NEIGHBOURS:
        r, c = row + row_step, col + col_step
        if 0 <= r < image.shape[0] and 0 <= c < image.shape[1]:
            total, weights = total + weight * image[r, c], weights + weight
    return total / weights


def test_the_weights_are_the_references_and_sum_to_one():
    assert sorted(weight for _, weight in NEIGHBOURS) == pytest.approx([1 / 12] * 4 + [1 / 6] * 4)
    assert sum(weight for _, weight in NEIGHBOURS) == pytest.approx(1.0)


def test_imputed_pixels_solve_the_linear_system_and_known_pixels_stay():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (9, 11, 3)).astype(np.float32)
    removed = rng.uniform(size=(9, 11)) < 0.6  # scattered and clustered holes, the border included
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    np.testing.assert_array_equal(filled[~removed], image[~removed])
    for row, col in zip(*np.nonzero(removed)):
        np.testing.assert_allclose(filled[row, col], neighbour_mean(filled, row, col), rtol=1e-5, atol=1e-3)


def test_one_removed_pixel_is_the_weighted_mean_of_its_eight_neighbours():
    image = np.arange(9, dtype=np.float32).reshape(3, 3, 1) * 10  # 0 10 20 / 30 [40] 50 / 60 70 80
    image[0, 0] = 100  # break the ramp: the answer is not just the centre's old value
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    expected = (10 + 30 + 50 + 70) / 6 + (100 + 20 + 60 + 80) / 12
    assert noisy_linear_imputation(image, removed, noise=0.0)[1, 1, 0] == pytest.approx(expected, rel=1e-6)


def test_a_constant_image_stays_constant_and_a_ramp_is_reproduced_inside():
    flat = np.full((10, 10, 3), 77.0, np.float32)
    removed = np.zeros((10, 10), bool)
    removed[:6, :4] = True  # touches the border
    np.testing.assert_allclose(noisy_linear_imputation(flat, removed, noise=0.0), 77.0, rtol=1e-6)

    rows, cols = np.mgrid[0:12, 0:12].astype(np.float32)
    ramp = np.stack([3 * rows + 2 * cols + 5, 200 - 7 * cols, 1.5 * rows], axis=-1)
    hole = np.zeros((12, 12), bool)
    hole[3:9, 2:8] = True  # away from the border: every removed pixel's neighbours are inside the image
    np.testing.assert_allclose(noisy_linear_imputation(ramp, hole, noise=0.0), ramp, atol=1e-3)


def test_noise_is_added_to_the_removed_pixels_only_with_the_requested_spread():
    flat = np.full((64, 64, 3), 100.0, np.float32)
    removed = np.random.default_rng(1).uniform(size=(64, 64)) < 0.5
    filled = noisy_linear_imputation(flat, removed, noise=2.55, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(filled[~removed], 100.0)
    assert np.std(filled[removed] - 100.0) == pytest.approx(2.55, rel=0.05)


def test_removal_masks_take_the_floor_of_the_percentage_most_or_least_relevant_first():
    saliency = np.arange(10, dtype=np.float32).reshape(2, 5)  # 9 is the most relevant
    morf = removal_masks(saliency, [30, 55], most_relevant_first=True)
    lerf = removal_masks(saliency, [30, 55], most_relevant_first=False)
    assert morf.sum(axis=(1, 2)).tolist() == [3, 5] and lerf.sum(axis=(1, 2)).tolist() == [3, 5]
    assert sorted(saliency[morf[0]]) == [7, 8, 9] and sorted(saliency[lerf[0]]) == [0, 1, 2]


def test_a_map_ranking_the_class_quadrant_first_has_the_lower_morf_and_the_higher_lerf(quadrants):
    images = quadrant_images()[:1].repeat(2, axis=0)  # class 0 lives in the top-left quadrant
    maps = np.stack([quadrant_map(0, 1.0, 0.0), quadrant_map(0, 0.0, 1.0)])  # first, last
    scores = road(ClassProbability(quadrants), images, maps, targets=0)
    assert scores.morf[0] < scores.morf[1] - 0.1
    assert scores.lerf[0] > scores.lerf[1] + 0.1
    assert scores.combined[0] > scores.combined[1] and scores.morf_curves.shape == (2, 9)


def test_batched_road_equals_one_forward_call_per_imputed_image(quadrants):
    from runner.explain.targets import class_probabilities

    images = quadrant_images()[[1, 2]]
    maps = np.random.default_rng(3).uniform(size=(2, 32, 32))
    scores = road(ClassProbability(quadrants, batch_size=3), images, maps, targets=[1, 2], percentiles=[20, 60])
    for index, (image, saliency) in enumerate(zip(images, maps)):
        one_by_one = [float(class_probabilities(quadrants(x[None], training=False))[0, index + 1])
                      for x in road_images(image, saliency, [20, 60])]
        np.testing.assert_allclose(np.concatenate([scores.morf_curves[index], scores.lerf_curves[index]]),
                                   one_by_one, atol=1e-5)


def test_evaluate_adds_road_to_the_means_and_the_per_image_record(quadrants):
    scores = evaluate(quadrants, quadrant_images()[:1], quadrant_map(0, 1.0, 0.0)[None], targets=0, steps=4,
                      road_percentiles=[50])
    assert {"road_morf", "road_lerf", "road_combined", "deletion_auc"} <= set(scores.means())
    record = scores.per_image(["q"])[0]
    assert record["road_morf"] == pytest.approx(record["road_morf_curve"][0], abs=1e-6)
    assert "road_morf" not in evaluate(quadrants, quadrant_images()[:1], np.ones((1, 4, 4)), targets=0,
                                       steps=4).means()


@pytest.mark.parametrize(("percentiles", "message"), [
    ([0, 50], "must be in (0, 100)"), ([50, 100], "must be in (0, 100)"),
    ([60, 20], "increasing order"), ([], "non-empty"),
])
def test_bad_percentiles_are_rejected_at_check_time_and_by_the_library(percentiles, message, quadrants):
    from runner.validation import ConfigError, check_config
    from tests.conftest import compose_config

    override = f"task.faithfulness.road_percentiles=[{','.join(map(str, percentiles))}]"
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["task=explain", "task.faithfulness.road=true", override]))
    assert message in str(error.value) and "task.faithfulness.road_percentiles" in error.value.fix
    with pytest.raises(ConvlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        road(ClassProbability(quadrants), quadrant_images()[:1], np.ones((1, 32, 32)), 0, percentiles)


def test_road_is_off_by_default_with_the_references_percentiles():
    from runner.validation import check_config
    from tests.conftest import compose_config

    cfg = compose_config(["task=explain"])
    assert cfg.task.faithfulness.road is False and list(cfg.task.faithfulness.road_percentiles) == [
        10, 20, 30, 40, 50, 60, 70, 80, 90]
    check_config(compose_config(["task=explain", "task.faithfulness.road=true",
                                 "task.faithfulness.road_percentiles=[5,50.5,95]"]))
